//! One query's life through the pool, as a state value the drivers feed.

use std::net::SocketAddr;
use std::sync::Arc;

use dnsha_core::config::Protocol;
use dnsha_core::dynblock::EventKind;
use dnsha_core::policy::{hash_client, hash_labels};
use dnsha_core::{FailureKind, HashKey, Millis, OnNoBackend};
use hickory_proto::op::ResponseCode;
use hickory_proto::serialize::binary::BinEncodable;

use super::{record_answer, Admitted, Attempt, Attempts, ListenerShared, Target};
use crate::accesslog::LogRecord;
use crate::cache::Key;
use crate::error::RetryType;
use crate::metrics::{inc, ListenerMetrics};
use crate::wire::dns::{
    answer_matches, rcode_label, rewrite_id, synth_reply, truncated, AnswerInfo, DropReason,
    QueryInfo, HEADER_LEN,
};

/// What the driver does next with a query.
#[derive(Debug)]
pub enum Next {
    /// Send the query to this backend (under an upstream ID of the
    /// driver's choosing) and feed back its answer or failure.
    Send(Attempt),
    /// Send the query once more to the same backend, on another socket,
    /// within what is left of the current attempt's time.
    Resend(Attempt),
    /// Send the client these bytes (the pool's SERVFAIL); the query is
    /// finished.
    Reply(Vec<u8>),
    /// Send nothing (the pool says `drop`); the query is finished and was
    /// counted.
    Drop,
}

/// Why an attempt failed, as the upstream side reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Whether the query may be tried again, and where.
    pub retry: RetryType,
    /// Whether passive health counts it against the backend.
    pub blame: bool,
}

impl Failure {
    /// The backend failed: counted against it, another backend may be
    /// tried.
    pub fn retry(kind: FailureKind) -> Self {
        Self {
            kind,
            retry: RetryType::Retry,
            blame: true,
        }
    }

    /// The upstream socket was refused as a whole (an ICMP error, which an
    /// outsider can spoof): each query on it is sent once more to the same
    /// backend on a new socket (a new random port), and nothing counts
    /// against the backend until that resend is refused too
    /// ([`Flight::failed`]).
    pub fn refused_socket() -> Self {
        Self {
            kind: FailureKind::Refused,
            retry: RetryType::Resend,
            blame: false,
        }
    }
}

/// One query from a client, from its admission to its ending.
///
/// ```
/// # use dnsha_proxy::pipeline::{Flight, Next};
/// # use dnsha_core::config::Protocol;
/// # fn drive(shared: &dnsha_proxy::pipeline::ListenerShared,
/// #          m: &dnsha_proxy::metrics::ListenerMetrics,
/// #          admitted: dnsha_proxy::pipeline::Admitted) {
/// let now = dnsha_core::Millis::now();
/// let mut flight = Flight::new("192.0.2.9:5300".parse().unwrap(), Protocol::Udp, admitted, now);
/// match flight.start(shared, m, now) {
///     Next::Send(attempt) => { /* send to attempt.backend, then feed the outcome */ }
///     Next::Resend(_) => { /* only ever after a failure */ }
///     Next::Reply(servfail) => { /* no backend: answer the client */ }
///     Next::Drop => {}
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Flight {
    client: SocketAddr,
    protocol: Protocol,
    info: QueryInfo,
    /// The pool it goes to, its routes and cache.
    target: Arc<Target>,
    received: Millis,
    attempts: Attempts,
    /// Whether the query was already sent again to the same backend.
    resent: bool,
    /// Its key in the pool's cache: the answer is stored under it, and a
    /// stale answer looked up when the pool cannot answer.
    cache_key: Option<Key>,
}

impl Flight {
    /// A query admitted at `now` (see [`super::admit`]).
    pub fn new(client: SocketAddr, protocol: Protocol, admitted: Admitted, now: Millis) -> Self {
        // A `chash` pool places the query by its name or its client.
        let key = admitted
            .target
            .pool
            .with_snapshot(|s| s.hash_key())
            .map(|k| match k {
                HashKey::Qname => hash_labels(admitted.info.question.name().iter()),
                HashKey::Client => hash_client(client.ip()),
            });
        Self {
            client,
            protocol,
            info: admitted.info,
            target: admitted.target,
            received: now,
            attempts: Attempts::keyed(key),
            resent: false,
            cache_key: None,
        }
    }

    /// The same, with the key its answer is cached under (the cache step
    /// missed: see [`super::cache`]).
    pub fn with_cache_key(mut self, key: Option<Key>) -> Self {
        self.cache_key = key;
        self
    }

    /// The query as admitted: the client's ID and question.
    pub fn info(&self) -> &QueryInfo {
        &self.info
    }

    /// Where the answer goes.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The pool the query goes to.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The first step: a backend to send to, or the pool's answer when none
    /// is available.
    pub fn start(&mut self, shared: &ListenerShared, m: &ListenerMetrics, now: Millis) -> Next {
        match self.attempts.first(&self.target.pool, now) {
            Some(a) => Next::Send(a),
            None => self.give_up(shared, m, now),
        }
    }

    /// Whether a backend answer belongs to this query (same question; a
    /// truncated answer without one is accepted). A mismatch is dropped and
    /// counted by the driver, and the query keeps waiting.
    pub fn check_answer(&self, answer: &AnswerInfo) -> Result<(), DropReason> {
        if answer_matches(answer, &self.info.question) {
            Ok(())
        } else {
            Err(DropReason::WrongQuestion)
        }
    }

    /// The current backend answered with `answer` (response code `rcode`):
    /// passive health records it, the client's ID is written back into
    /// `answer`, and the query is finished (counted, logged). The driver
    /// sends `answer` to the client.
    pub fn answered(
        &mut self,
        shared: &ListenerShared,
        m: &ListenerMetrics,
        answer: &mut [u8],
        rcode: ResponseCode,
        now: Millis,
    ) {
        if let Some((f, window_ms, started)) = self.attempts.answered() {
            record_answer(&self.target.pool, f.backend(), rcode, now, window_ms);
            f.backend().record_latency(now.0.saturating_sub(started.0));
        }
        m.latency.record_ms(now.0.saturating_sub(self.received.0));
        inc(&m.answers);
        if let Some(d) = &shared.dynblocks {
            let bytes = u32::try_from(answer.len()).unwrap_or(u32::MAX);
            let rcode = u16::from(rcode);
            d.record(self.client.ip(), EventKind::Answer { rcode, bytes }, now);
        }
        rewrite_id(answer, self.info.id);
        if let (Some(key), Some(cache)) = (&self.cache_key, &self.target.cache) {
            // What may not be stored (truncated, no TTL...) is counted there.
            let _ = cache.insert(key, answer, now);
        }
        self.log(shared, Some(answer), now);
    }

    /// The current attempt failed: passive health records it (when the
    /// failure blames the backend, or is a second refusal after a resend),
    /// then the query is sent again to the same backend once when the
    /// failure asks for it ([`RetryType::Resend`]) and the backend is still
    /// up, or to another backend when the failure and the pool's `retries`
    /// allow, else the pool's `on_no_backend` ends it.
    pub fn failed(
        &mut self,
        shared: &ListenerShared,
        m: &ListenerMetrics,
        failure: Failure,
        now: Millis,
    ) -> Next {
        // A refusal that follows the resend on a fresh port is confirmed:
        // an off-path forger could not have known that port.
        let blame = failure.blame || (failure.retry == RetryType::Resend && self.resent);
        self.attempts
            .failed(&self.target.pool, m, failure.kind, blame, now);
        if failure.retry == RetryType::Resend && !self.resent {
            if let Some(a) = self.attempts.again() {
                self.resent = true;
                inc(&m.resent);
                return Next::Resend(a);
            }
        }
        if failure.retry != RetryType::NoRetry {
            if let Some(a) = self.attempts.next(&self.target.pool, m, now) {
                return Next::Send(a);
            }
        }
        self.attempts.succeeded();
        self.give_up(shared, m, now)
    }

    /// The query could not be sent for a reason that is not the backend's
    /// (nothing is recorded against it): the pool's `on_no_backend` ends it.
    pub fn abandon(&mut self, shared: &ListenerShared, m: &ListenerMetrics, now: Millis) -> Next {
        self.attempts.succeeded();
        self.give_up(shared, m, now)
    }

    fn give_up(&mut self, shared: &ListenerShared, m: &ListenerMetrics, now: Millis) -> Next {
        if let Some(stale) = self.stale(shared, m, now) {
            m.latency.record_ms(now.0.saturating_sub(self.received.0));
            self.log(shared, Some(&stale), now);
            return Next::Reply(stale);
        }
        let on_no_backend = self
            .target
            .pool
            .with_snapshot(|s| s.settings().on_no_backend);
        let next = match on_no_backend {
            OnNoBackend::Servfail => {
                inc(&m.servfail);
                Next::Reply(synth_reply(&self.info, ResponseCode::ServFail))
            }
            OnNoBackend::Drop => {
                m.dropped(DropReason::NoBackend);
                Next::Drop
            }
        };
        let sent = match &next {
            Next::Reply(b) => Some(b.as_slice()),
            _ => None,
        };
        if sent.is_some() {
            m.latency.record_ms(now.0.saturating_sub(self.received.0));
        }
        self.log(shared, sent, now);
        next
    }

    /// The pool cannot answer (no backend up, or every one tried failed):
    /// an expired answer from the cache, when serve-stale allows (RFC
    /// 8767), cut to TC=1 for a UDP client that takes less.
    fn stale(&self, shared: &ListenerShared, m: &ListenerMetrics, now: Millis) -> Option<Vec<u8>> {
        let (key, cache) = (self.cache_key.as_ref()?, self.target.cache.as_ref()?);
        if cache.config().stale_ttl == 0 {
            return None;
        }
        // The query as the client asked it: its ID and question (the cache
        // keeps the client's casing and writes the rest).
        let question = self.info.question.to_bytes().ok()?;
        let mut query = Vec::with_capacity(HEADER_LEN + question.len());
        query.extend_from_slice(&self.info.id.to_be_bytes());
        query.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        query.extend_from_slice(&question);
        let mut answer = cache.stale(key, &query, now)?;
        inc(&m.cache_hits);
        let limit = key.udp_limit(shared.config.max_udp_size);
        if self.protocol == Protocol::Udp && answer.len() > limit {
            inc(&m.udp_truncated);
            answer = truncated(&self.info);
        }
        Some(answer)
    }

    /// The access-log record of this query, finished at `now` with `sent`
    /// (what the client got, if anything).
    pub fn record(&self, sent: Option<&[u8]>, now: Millis) -> LogRecord {
        LogRecord {
            client: self.client,
            backend: self.attempts.last_backend(),
            protocol: self.protocol,
            rcode: rcode_label(sent),
            duration: now.since(self.received),
            qname: self.info.question.name().to_ascii(),
            qtype: self.info.question.query_type().to_string(),
        }
    }

    fn log(&self, shared: &ListenerShared, sent: Option<&[u8]>, now: Millis) {
        if let Some(log) = &shared.access_log {
            log.log(self.record(sent, now));
        }
    }
}
