//! `check = "dns"`: a real query over UDP, TCP, TLS, HTTPS or QUIC (the
//! transport set in
//! the health table, or the backend's: see
//! [`HealthConfig::for_backend`]), with a random ID, whose answer must carry
//! the same ID and question and an acceptable RCODE.
//!
//! Building the query and judging the answer are pure functions
//! ([`DnsCheck::query`], [`DnsCheck::judge`]), shared with `doh`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dnsha_core::config::{CheckTransport, HealthConfig, RANDOM_LABEL};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rand::Rng;

use super::doq::DoqClient;
use super::tls::{TlsCheck, ALPN_H2};
use super::{dot, exchange, https, ProbeFailure, ProbeResult};
use crate::error::Result;
use crate::state::FailureReason;

/// Largest answer read over UDP.
const MAX_ANSWER: usize = 65_535;

/// A `dns` check (also the DNS half of `doh`).
#[derive(Debug, Clone)]
pub struct DnsCheck {
    query_name: String,
    query_type: RecordType,
    must_resolve: bool,
    expect_address: Option<IpAddr>,
    cd_flag: bool,
    wire: Wire,
}

/// How the query travels.
#[derive(Debug, Clone)]
enum Wire {
    Udp,
    Tcp,
    /// RFC 7858, a new connection per probe.
    Tls(TlsCheck),
    /// RFC 8484 over HTTP/2, a new connection per probe: POST to `path`,
    /// `host` naming the backend.
    Https {
        tls: TlsCheck,
        path: String,
        host: Option<String>,
    },
    /// RFC 9250, a new connection per probe.
    Quic(DoqClient),
}

impl DnsCheck {
    /// The check `config` describes (reading the CA file of a DoT check). A
    /// `transport` left unset is UDP: resolve it against the backend first
    /// with [`HealthConfig::for_backend`].
    pub fn new(config: &HealthConfig) -> Result<Self> {
        let wire = match config.transport.unwrap_or_default() {
            CheckTransport::Udp => Wire::Udp,
            CheckTransport::Tcp => Wire::Tcp,
            CheckTransport::Dot => Wire::Tls(TlsCheck::dot(config)?),
            CheckTransport::Doh => Wire::Https {
                tls: TlsCheck::with_alpn(config, vec![ALPN_H2.to_vec()])?,
                path: config.path.clone(),
                host: config.tls_name.clone(),
            },
            CheckTransport::Doq => Wire::Quic(DoqClient::new(config)?),
        };
        Ok(Self {
            query_name: config.query_name.clone(),
            query_type: RecordType::from(config.query_type.0),
            must_resolve: config.must_resolve,
            expect_address: config.expect_address,
            cd_flag: config.cd_flag,
            wire,
        })
    }

    /// The transport the probes use.
    pub fn transport(&self) -> CheckTransport {
        match self.wire {
            Wire::Udp => CheckTransport::Udp,
            Wire::Tcp => CheckTransport::Tcp,
            Wire::Tls(_) => CheckTransport::Dot,
            Wire::Https { .. } => CheckTransport::Doh,
            Wire::Quic(_) => CheckTransport::Doq,
        }
    }

    /// A query with ID `id`: RD set, CD as configured, `{random}` replaced by
    /// a fresh random label. Returns the wire bytes and the question.
    pub fn query(
        &self,
        id: u16,
        rng: &mut impl Rng,
    ) -> std::result::Result<(Vec<u8>, Query), ProbeFailure> {
        let text = if self.query_name.contains(RANDOM_LABEL) {
            let label: String = (0..16)
                .map(|_| {
                    let n = rng.gen_range(0..36u8);
                    char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
                })
                .collect();
            self.query_name.replace(RANDOM_LABEL, &label)
        } else {
            self.query_name.clone()
        };
        let mut name = Name::from_ascii(&text).map_err(|e| {
            ProbeFailure::new(FailureReason::Local, format!("query name {text}: {e}"))
        })?;
        name.set_fqdn(true);
        let question = Query::query(name, self.query_type);
        let mut msg = Message::new();
        msg.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .set_checking_disabled(self.cd_flag)
            .add_query(question.clone());
        let bytes = msg
            .to_vec()
            .map_err(|e| ProbeFailure::new(FailureReason::Local, format!("encode query: {e}")))?;
        Ok((bytes, question))
    }

    /// Judges an answer to the query with `id` and `question`.
    pub fn judge(&self, answer: &[u8], id: u16, question: &Query) -> ProbeResult {
        let msg = Message::from_vec(answer).map_err(|e| {
            ProbeFailure::new(FailureReason::BadAnswer, format!("undecodable answer: {e}"))
        })?;
        if msg.id() != id {
            return Err(ProbeFailure::new(
                FailureReason::BadAnswer,
                format!("answer ID {} does not match query ID {id}", msg.id()),
            ));
        }
        if msg.message_type() != MessageType::Response {
            return Err(ProbeFailure::new(
                FailureReason::BadAnswer,
                "answer has QR=0",
            ));
        }
        match msg.queries() {
            [q] if same_question(q, question) => {}
            qs => {
                return Err(ProbeFailure::new(
                    FailureReason::BadAnswer,
                    format!("answer question {qs:?} does not match {question}"),
                ))
            }
        }
        let rcode = msg.response_code();
        if rcode == ResponseCode::ServFail {
            return Err(ProbeFailure::new(FailureReason::ServFail, "SERVFAIL"));
        }
        if self.must_resolve && rcode != ResponseCode::NoError {
            return Err(ProbeFailure::new(
                FailureReason::Rcode(u16::from(rcode)),
                format!("must_resolve and the answer is {rcode}"),
            ));
        }
        if let Some(want) = self.expect_address {
            let found = msg.answers().iter().any(|r| match r.data() {
                RData::A(a) => IpAddr::V4(a.0) == want,
                RData::AAAA(a) => IpAddr::V6(a.0) == want,
                _ => false,
            });
            if !found {
                return Err(ProbeFailure::new(
                    FailureReason::MissingAddress,
                    format!("{want} is not in the answer ({rcode})"),
                ));
            }
        }
        Ok(())
    }

    /// One probe of `backend`.
    pub async fn probe(&self, backend: SocketAddr, timeout: Duration) -> ProbeResult {
        let id: u16 = rand::random();
        let (query, question) = self.query(id, &mut rand::thread_rng())?;
        let answer = match &self.wire {
            Wire::Udp => return self.udp(backend, &query, id, &question, timeout).await,
            Wire::Tcp => exchange::tcp(backend, &query, timeout).await?,
            Wire::Tls(tls) => dot::exchange(tls, backend, &query, timeout).await?,
            Wire::Https { tls, path, host } => {
                https::exchange(tls, host.as_deref(), path, backend, query, timeout)
                    .await?
                    .to_vec()
            }
            Wire::Quic(client) => client.exchange(backend, &query, timeout).await?,
        };
        self.judge(&answer, id, &question)
    }

    /// Over UDP a stray datagram (another ID, garbage) is not the answer:
    /// keep waiting for the real one, and report the stray one if that never
    /// comes.
    async fn udp(
        &self,
        backend: SocketAddr,
        query: &[u8],
        id: u16,
        question: &Query,
        timeout: Duration,
    ) -> ProbeResult {
        let sock = exchange::udp_send(backend, query, timeout).await?;
        let mut buf = vec![0u8; MAX_ANSWER];
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stray: Option<ProbeFailure> = None;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(ProbeFailure::io("receive", &e, timeout)),
                Err(_) => return Err(stray.unwrap_or_else(|| ProbeFailure::timeout(timeout))),
            };
            match self.judge(buf.get(..n).unwrap_or_default(), id, question) {
                Err(f) if f.reason == FailureReason::BadAnswer => stray = Some(f),
                other => return other,
            }
        }
    }
}

fn same_question(a: &Query, b: &Query) -> bool {
    a.query_type() == b.query_type()
        && a.query_class() == b.query_class()
        // Name equality ignores ASCII case.
        && a.name() == b.name()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use dnsha_core::config::QueryType;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::Record;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn check(f: impl FnOnce(&mut HealthConfig)) -> DnsCheck {
        let mut c = HealthConfig::default();
        f(&mut c);
        DnsCheck::new(&c).unwrap()
    }

    fn answer_to(query: &[u8], rcode: ResponseCode, a: Option<Ipv4Addr>) -> Message {
        let q = Message::from_vec(query).unwrap();
        let mut m = Message::new();
        m.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_response_code(rcode);
        for question in q.queries() {
            m.add_query(question.clone());
        }
        if let Some(ip) = a {
            m.add_answer(Record::from_rdata(
                q.queries()[0].name().clone(),
                60,
                RData::A(A(ip)),
            ));
        }
        m
    }

    #[test]
    fn query_has_the_configured_shape() {
        let c = check(|c| {
            c.query_name = "{random}.example.test".into();
            c.query_type = QueryType(28);
            c.cd_flag = true;
        });
        let mut rng = StdRng::seed_from_u64(7);
        let (bytes, q1) = c.query(0x1234, &mut rng).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.id(), 0x1234);
        assert!(m.recursion_desired());
        assert!(m.checking_disabled());
        assert_eq!(m.queries()[0].query_type(), RecordType::AAAA);
        let name = m.queries()[0].name().to_ascii();
        assert!(name.ends_with(".example.test."), "{name}");
        assert_eq!(name.len(), 16 + ".example.test.".len());
        // Every probe asks a fresh name, so no cache answers for a dead backend.
        let (_, q2) = c.query(1, &mut rng).unwrap();
        assert_ne!(q1.name(), q2.name());
        // The default: ". SOA", CD clear.
        let (bytes, _) = check(|_| {}).query(9, &mut rng).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.queries()[0].name().to_ascii(), ".");
        assert_eq!(m.queries()[0].query_type(), RecordType::SOA);
        assert!(!m.checking_disabled());
    }

    #[test]
    fn answers_are_judged() {
        let mut rng = StdRng::seed_from_u64(1);
        let lenient = check(|_| {});
        let (q, question) = lenient.query(42, &mut rng).unwrap();
        let ok = |m: &Message| m.to_vec().unwrap();
        // Any RCODE but SERVFAIL is healthy by default (as dnsdist).
        for rcode in [
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::Refused,
        ] {
            assert_eq!(
                lenient.judge(&ok(&answer_to(&q, rcode, None)), 42, &question),
                Ok(())
            );
        }
        let e = lenient
            .judge(
                &ok(&answer_to(&q, ResponseCode::ServFail, None)),
                42,
                &question,
            )
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::ServFail);
        // must_resolve: only NOERROR (as keepalived's DNS_CHECK).
        let strict = check(|c| c.must_resolve = true);
        let e = strict
            .judge(
                &ok(&answer_to(&q, ResponseCode::Refused, None)),
                42,
                &question,
            )
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::Rcode(5));
        assert_eq!(
            strict.judge(
                &ok(&answer_to(&q, ResponseCode::NoError, None)),
                42,
                &question
            ),
            Ok(())
        );
        // Wrong ID, wrong question, garbage, a query instead of an answer.
        let e = lenient
            .judge(
                &ok(&answer_to(&q, ResponseCode::NoError, None)),
                43,
                &question,
            )
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::BadAnswer);
        let mut other = answer_to(&q, ResponseCode::NoError, None);
        other.take_queries();
        other.add_query(Query::query(
            Name::from_ascii("example.org.").unwrap(),
            RecordType::SOA,
        ));
        let e = lenient.judge(&ok(&other), 42, &question).unwrap_err();
        assert_eq!(e.reason, FailureReason::BadAnswer);
        let e = lenient.judge(&[0, 42, 0x80], 42, &question).unwrap_err();
        assert_eq!(e.reason, FailureReason::BadAnswer);
        let e = lenient.judge(&q, 42, &question).unwrap_err();
        assert_eq!(e.reason, FailureReason::BadAnswer);
    }

    #[test]
    fn expect_address_must_be_in_the_answer() {
        let mut rng = StdRng::seed_from_u64(2);
        let c = check(|c| {
            c.query_name = "www.example.test".into();
            c.query_type = QueryType(1);
            c.expect_address = Some("10.0.0.1".parse().unwrap());
        });
        let (q, question) = c.query(5, &mut rng).unwrap();
        let good = answer_to(&q, ResponseCode::NoError, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.judge(&good.to_vec().unwrap(), 5, &question), Ok(()));
        let bad = answer_to(&q, ResponseCode::NoError, Some(Ipv4Addr::new(10, 0, 0, 2)));
        let e = c.judge(&bad.to_vec().unwrap(), 5, &question).unwrap_err();
        assert_eq!(e.reason, FailureReason::MissingAddress);
    }

    #[test]
    fn question_case_is_ignored() {
        let a = Query::query(
            Name::from_ascii("WwW.Example.TEST.").unwrap(),
            RecordType::A,
        );
        let b = Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        );
        assert!(same_question(&a, &b));
        let c = Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::AAAA,
        );
        assert!(!same_question(&a, &c));
    }
}
