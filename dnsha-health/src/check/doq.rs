//! `check = "dns"` over DNS over QUIC (RFC 9250): a new QUIC connection per
//! probe (its own endpoint), ALPN `doq`, TLS 1.3, SNI and verification as
//! the backend's `tls_name`, `tls_verify` and `tls_ca` say; one query on one
//! bidirectional stream, sent with message ID 0 as RFC 9250 §4.2.1 asks,
//! the probe's own ID written back into the answer before it is judged
//! (so an answer with another ID than 0 fails as a wrong ID). The query and
//! the judgement are [`DnsCheck`]'s.
//!
//! The framing is a 2-byte length and the message, as in
//! `dnsha_proxy::wire::doq` (which this crate cannot use: the proxy depends
//! on it).
//!
//! [`DnsCheck`]: super::dns::DnsCheck

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::HealthConfig;

use super::tls::TlsCheck;
use super::ProbeFailure;
use crate::error::{Error, Result};
use crate::state::FailureReason;

/// The largest response stream read: the prefix and a 64 KiB message.
const MAX_STREAM: usize = 2 + 65_535;

/// DOQ_NO_ERROR, closing after the probe.
const NO_ERROR: u32 = 0;

/// The QUIC client of a `dns` check over DoQ.
#[derive(Clone)]
pub(crate) struct DoqClient {
    tls: TlsCheck,
    config: quinn::ClientConfig,
}

impl std::fmt::Debug for DoqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoqClient")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl DoqClient {
    /// The client `config` describes.
    pub(crate) fn new(config: &HealthConfig) -> Result<Self> {
        let tls = TlsCheck::doq(config)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_config())
            .map_err(|e| Error::Tls {
                message: e.to_string(),
            })?;
        Ok(Self {
            tls,
            config: quinn::ClientConfig::new(Arc::new(crypto)),
        })
    }

    /// Sends `query` to `backend` on a new connection and returns the
    /// answer, with the query's ID restored.
    pub(crate) async fn exchange(
        &self,
        backend: SocketAddr,
        query: &[u8],
        timeout: Duration,
    ) -> std::result::Result<Vec<u8>, ProbeFailure> {
        let local: SocketAddr = if backend.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(local)
            .map_err(|e| ProbeFailure::io("quic socket", &e, timeout))?;
        let name = self.tls.server_name(backend).to_str().into_owned();
        let conn = endpoint
            .connect_with(self.config.clone(), backend, &name)
            .map_err(|e| ProbeFailure::new(FailureReason::Local, format!("quic connect: {e}")))?
            .await
            .map_err(|e| handshake_failure(&e, timeout))?;
        let result = ask(&conn, query).await;
        conn.close(quinn::VarInt::from_u32(NO_ERROR), b"");
        endpoint.close(quinn::VarInt::from_u32(NO_ERROR), b"");
        result
    }
}

/// One query on a new stream of `conn`.
async fn ask(conn: &quinn::Connection, query: &[u8]) -> std::result::Result<Vec<u8>, ProbeFailure> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        ProbeFailure::new(FailureReason::BadAnswer, format!("doq {what}: {e}"))
    };
    let (frame, id) = frame_query(query)
        .ok_or_else(|| ProbeFailure::new(FailureReason::Local, "query too large"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| bad("stream", &e))?;
    send.write_all(&frame).await.map_err(|e| bad("write", &e))?;
    send.finish().map_err(|e| bad("finish", &e))?;
    let stream = recv
        .read_to_end(MAX_STREAM)
        .await
        .map_err(|e| bad("read", &e))?;
    answer_of(&stream, id).ok_or_else(|| {
        ProbeFailure::new(
            FailureReason::BadAnswer,
            format!(
                "doq answer stream of {} bytes does not frame one message",
                stream.len()
            ),
        )
    })
}

/// Why the handshake failed: a TLS alert is [`FailureReason::Tls`], silence
/// a timeout, anything else a refusal.
fn handshake_failure(e: &quinn::ConnectionError, timeout: Duration) -> ProbeFailure {
    use quinn::ConnectionError as E;
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    let reason = match e {
        E::TransportError(t) if crypto(t.code) => FailureReason::Tls,
        E::ConnectionClosed(c) if crypto(c.error_code) => FailureReason::Tls,
        E::TimedOut => FailureReason::Timeout(timeout),
        _ => FailureReason::Refused,
    };
    ProbeFailure::new(reason, format!("quic handshake: {e}"))
}

/// The query as a stream carries it: length, then the message with ID 0;
/// and the ID it had.
fn frame_query(query: &[u8]) -> Option<(Vec<u8>, u16)> {
    let len = u16::try_from(query.len()).ok()?;
    let id = match query {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => return None,
    };
    let mut frame = Vec::with_capacity(query.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(query);
    if let Some(b) = frame.get_mut(2..4) {
        b.copy_from_slice(&[0, 0]);
    }
    Some((frame, id))
}

/// The message of a whole answer stream, its ID 0 replaced by `id`; `None`
/// when the length prefix is not the stream's. An ID other than 0 is left
/// as it is, for the judgement to refuse.
fn answer_of(stream: &[u8], id: u16) -> Option<Vec<u8>> {
    let (len, msg) = match stream {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => return None,
    };
    if len != msg.len() || msg.len() < 2 {
        return None;
    }
    let mut msg = msg.to_vec();
    if msg[..2] == [0, 0] {
        msg[..2].copy_from_slice(&id.to_be_bytes());
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_go_with_id_zero_and_answers_get_the_probes_id() {
        let q = [0x12u8, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let (f, id) = frame_query(&q).unwrap();
        assert_eq!((id, &f[..4]), (0x1234, &[0, 12, 0, 0][..]));
        let mut a = f.clone();
        a[4] |= 0x80;
        let answer = answer_of(&a, id).unwrap();
        assert_eq!(&answer[..3], &[0x12, 0x34, 0x81]);
        // A non-zero ID is kept, for the ID check to fail.
        let mut wrong = a.clone();
        wrong[3] = 9;
        assert_eq!(&answer_of(&wrong, id).unwrap()[..2], &[0, 9]);
        // A length that is not the stream's.
        a.push(0);
        assert_eq!(answer_of(&a, id), None);
        assert_eq!(answer_of(&[0], id), None);
        assert!(frame_query(&[1]).is_none());
    }
}
