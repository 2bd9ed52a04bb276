//! `check = "dns"` over DNS over QUIC (RFC 9250): a new QUIC connection per
//! probe (its own endpoint), ALPN `doq`, TLS 1.3, SNI and verification as
//! the backend's `tls_name`, `tls_verify` and `tls_ca` say; one query on one
//! bidirectional stream, sent with message ID 0 as RFC 9250 §4.2.1 asks,
//! the probe's own ID written back into the answer before it is judged (an
//! answer whose ID is not 0, or whose length prefix is not the stream's,
//! fails as a bad answer). The framing is [`dnsha_core::doq`]'s, shared
//! with the proxy; the query and the judgement are [`DnsCheck`]'s.
//!
//! [`DnsCheck`]: super::dns::DnsCheck

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::HealthConfig;
use dnsha_core::doq::{answer_of, frame_query, MAX_STREAM, NO_ERROR};

use super::tls::TlsCheck;
use super::ProbeFailure;
use crate::error::{Error, Result};
use crate::state::FailureReason;

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
    answer_of(&stream, id).map_err(|e| bad("answer", &e))
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
