//! The DNS-over-TLS frontend (RFC 7858).
//!
//! After the accept loop of [`super::accept`] (connection limits, a TLS
//! 1.2/1.3 handshake with ALPN `dot`, bounded in time and per client
//! address), a connection is exactly a DNS-over-TCP connection: the TCP
//! frontend's [`handle_connection`](super::tcp::handle_connection) serves
//! it (pipelining, out-of-order answers, read and idle timeouts), each query
//! balanced by [`super::forward`].

use std::sync::Arc;

use dnsha_core::config::Protocol;
use tokio::net::TcpListener;

use super::accept::accept_loop;
use super::ctx::ListenerCtx;
use super::tcp::serve_stream;
use crate::tls::ServerTls;
use crate::upstream::Upstreams;

/// Serves DoT on `listener` until `ctx.stop` is cancelled; open connections
/// then answer what is in flight and close.
pub async fn serve(
    ctx: Arc<ListenerCtx>,
    listener: TcpListener,
    tls: Arc<ServerTls>,
    upstreams: Upstreams,
) {
    let ctx2 = Arc::clone(&ctx);
    accept_loop(ctx, listener, Some(tls), move |stream, peer| {
        let (ctx, up) = (Arc::clone(&ctx2), upstreams.clone());
        serve_stream(ctx, stream, peer, up, Protocol::Dot)
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::testing::{answer_tag, ctx, frame, query_msg, read_msg, Behavior, FakeBackend};
    use crate::tls::tests::pki;
    use crate::upstream::stream::{TcpUpstreamSettings, TcpUpstreams};
    use dnsha_core::config::BackendTls;
    use hickory_proto::op::Message;

    #[tokio::test]
    async fn pipelined_queries_answer_out_of_order_and_sessions_resume() {
        let dir = tempfile::tempdir().unwrap();
        let p = pki(dir.path(), "s", &["dns.test"], false);
        let be = FakeBackend::start(5, Behavior::DelayFirst(Duration::from_millis(300))).await;
        let extra = format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            p.cert.display(),
            p.key.display()
        );
        let ctx = ctx("dot", &extra, "", &[be.addr]);
        let files = ctx.shared.load().config.tls.clone().unwrap();
        let tls = Arc::new(ServerTls::new(&files, &[crate::tls::ALPN_DOT]).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Upstreams::stream(Arc::new(TcpUpstreams::new(TcpUpstreamSettings::default())));
        ctx.tasks.spawn(serve(Arc::clone(&ctx), listener, tls, up));

        let client = crate::tls::client_config(&BackendTls {
            verify: true,
            name: Some("dns.test".into()),
            ca: Some(p.ca.clone()),
            ca_span: None,
        })
        .unwrap();
        let connector = TlsConnector::from(client);
        let name = rustls::pki_types::ServerName::try_from("dns.test").unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s = connector.connect(name.clone(), tcp).await.unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"dot"[..]));
        // Two queries written at once; the first one's answer is slow.
        let mut both = frame(&query_msg(1, "slow.test.").0);
        both.extend(frame(&query_msg(2, "fast.test.").0));
        s.write_all(&both).await.unwrap();
        let first = Message::from_vec(&read_msg(&mut s).await.unwrap()).unwrap();
        let second = Message::from_vec(&read_msg(&mut s).await.unwrap()).unwrap();
        assert_eq!((first.id(), second.id()), (2, 1));
        assert_eq!(answer_tag(&second.to_vec().unwrap()), Some(5));
        // Close; the next connection resumes the TLS 1.3 session (the client
        // got its tickets with the answers).
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s2 = connector.connect(name, tcp).await.unwrap();
        assert_eq!(
            s2.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        s2.write_all(&frame(&query_msg(3, "again.test.").0))
            .await
            .unwrap();
        assert!(read_msg(&mut s2).await.is_some());
        assert_eq!(ctx.metrics.tls_resumed.load(Ordering::Relaxed), 1);
        assert_eq!(ctx.metrics.queries.load(Ordering::Relaxed), 3);
    }
}
