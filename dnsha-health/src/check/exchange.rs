//! How a probe's query travels, shared by the DNS-speaking checks: a UDP
//! socket connected to the backend, and one framed exchange over any stream
//! (TCP here, TLS in [`super::dot`]). Framing is dnsha-core's sans-IO
//! [`FrameDecoder`] and [`framed`]; the checks above only build queries and
//! judge answers.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use dnsha_core::frame::{framed, FrameDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::ProbeFailure;
use crate::state::FailureReason;

/// A UDP socket connected to `backend`, so it hears only that address and
/// sees ICMP port unreachable as an error.
pub(crate) async fn connected_udp(
    backend: SocketAddr,
    timeout: Duration,
) -> Result<UdpSocket, ProbeFailure> {
    let local: SocketAddr = match backend {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| ProbeFailure::io("bind", &e, timeout))?;
    sock.connect(backend)
        .await
        .map_err(|e| ProbeFailure::io("connect", &e, timeout))?;
    Ok(sock)
}

/// A UDP socket connected to `backend` with `payload` already sent on it.
pub(crate) async fn udp_send(
    backend: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<UdpSocket, ProbeFailure> {
    let sock = connected_udp(backend, timeout).await?;
    sock.send(payload)
        .await
        .map_err(|e| ProbeFailure::io("send", &e, timeout))?;
    Ok(sock)
}

/// Sends `query` over a new TCP connection and reads one answer.
pub(crate) async fn tcp(
    backend: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ProbeFailure> {
    let mut stream = TcpStream::connect(backend)
        .await
        .map_err(|e| ProbeFailure::io("connect", &e, timeout))?;
    framed_exchange(&mut stream, query, timeout).await
}

/// Writes `query` framed (RFC 1035 4.2.2) on `stream` and reads one framed
/// answer.
pub(crate) async fn framed_exchange<S>(
    stream: &mut S,
    query: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ProbeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let wire =
        framed(query).ok_or_else(|| ProbeFailure::new(FailureReason::Local, "query too long"))?;
    stream
        .write_all(&wire)
        .await
        .map_err(|e| ProbeFailure::io("write", &e, timeout))?;
    // A TLS stream may hold the record until flushed.
    stream
        .flush()
        .await
        .map_err(|e| ProbeFailure::io("write", &e, timeout))?;
    let mut decoder = FrameDecoder::new();
    loop {
        if let Some(answer) = decoder.next_message() {
            return Ok(answer);
        }
        // Before the length is complete a failure is in reading the length,
        // after it in reading the answer.
        let what = if decoder.buffered() < 2 {
            "read length"
        } else {
            "read answer"
        };
        let n = stream
            .read_buf(decoder.read_buf())
            .await
            .map_err(|e| ProbeFailure::io(what, &e, timeout))?;
        if n == 0 {
            let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "early eof");
            return Err(ProbeFailure::io(what, &eof, timeout));
        }
    }
}

#[cfg(test)]
mod tests {
    use dnsha_core::frame::push_frame;
    use tokio::io::duplex;

    use super::*;

    const T: Duration = Duration::from_secs(3);

    #[tokio::test]
    async fn answer_in_one_byte_pieces() {
        let (mut client, mut server) = duplex(1);
        let peer = tokio::spawn(async move {
            let mut d = FrameDecoder::new();
            let query = loop {
                if let Some(q) = d.next_message() {
                    break q;
                }
                assert_ne!(server.read_buf(d.read_buf()).await.unwrap(), 0);
            };
            let mut wire = Vec::new();
            assert!(push_frame(&mut wire, &query));
            server.write_all(&wire).await.unwrap();
        });
        let answer = framed_exchange(&mut client, b"query", T).await.unwrap();
        assert_eq!(answer, b"query");
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn early_close_is_a_bad_answer() {
        for sent in [&[][..], &[0][..], &[0, 9, 1][..]] {
            let (mut client, mut server) = duplex(64);
            let peer = tokio::spawn(async move {
                // The whole framed query, then a partial answer and close.
                let mut query = [0u8; 3];
                server.read_exact(&mut query).await.unwrap();
                server.write_all(sent).await.unwrap();
            });
            let e = framed_exchange(&mut client, b"q", T).await.unwrap_err();
            peer.await.unwrap();
            assert_eq!(e.reason, FailureReason::BadAnswer, "{e}");
            let what = if sent.len() < 2 {
                "read length"
            } else {
                "read answer"
            };
            assert!(e.detail.starts_with(what), "{e}");
        }
    }
}
