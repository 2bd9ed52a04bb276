//! One DNS-over-HTTPS exchange (RFC 8484): a POST of
//! `application/dns-message` over a new TLS connection, HTTP/2 or HTTP/1.1
//! as ALPN decides. Used by `check = "doh"` and by `check = "dns"` over a
//! `doh` backend.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::tls::TlsCheck;
use super::ProbeFailure;
use crate::state::FailureReason;

/// Largest DoH answer body read.
const MAX_BODY: usize = 65_535;

/// The media type of RFC 8484.
const DNS_MESSAGE: &str = "application/dns-message";

/// POSTs `query` to `path` of `backend` over a new TLS connection made by
/// `tls` (HTTP/2 or HTTP/1.1 as ALPN decides, `host` naming the backend
/// when set) and returns the body of a 200 answer. Shared with `dns` over
/// DoH.
pub(crate) async fn exchange(
    tls: &TlsCheck,
    host: Option<&str>,
    path: &str,
    backend: SocketAddr,
    query: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, ProbeFailure> {
    let stream = tls.connect(backend, timeout).await?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let authority = match host {
        Some(h) if h.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{h}]:{}", backend.port()),
        Some(h) => format!("{h}:{}", backend.port()),
        None => backend.to_string(),
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("https://{authority}{path}"))
        .header(hyper::header::CONTENT_TYPE, DNS_MESSAGE)
        .header(hyper::header::ACCEPT, DNS_MESSAGE)
        .body(Full::new(Bytes::from(query)))
        .map_err(|e| ProbeFailure::new(FailureReason::Local, format!("request: {e}")))?;
    let io = TokioIo::new(stream);
    let http_err = |what: &str, e: hyper::Error| {
        ProbeFailure::new(FailureReason::BadAnswer, format!("HTTP {what}: {e}"))
    };
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| http_err("handshake", e))?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| http_err("request", e))?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| http_err("handshake", e))?;
        tokio::spawn(conn);
        // HTTP/1.1 wants the Host header; the absolute URI is sent as is.
        let mut request = request;
        if let Ok(v) = hyper::header::HeaderValue::from_str(&authority) {
            request.headers_mut().insert(hyper::header::HOST, v);
        }
        sender
            .send_request(request)
            .await
            .map_err(|e| http_err("request", e))?
    };
    let status = response.status();
    if status != StatusCode::OK {
        return Err(ProbeFailure::new(
            FailureReason::HttpStatus(status.as_u16()),
            format!("{status} {path}"),
        ));
    }
    Ok(Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ProbeFailure::new(FailureReason::BadAnswer, format!("body: {e}")))?
        .to_bytes())
}
