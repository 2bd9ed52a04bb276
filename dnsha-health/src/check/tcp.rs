//! `check = "tcp"`: the backend accepts a TCP connection (as keepalived's
//! `TCP_CHECK`). Says the port is open, not that DNS works.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{ProbeFailure, ProbeResult};

/// Connects to `backend` and closes at once.
pub async fn probe(backend: SocketAddr, timeout: Duration) -> ProbeResult {
    TcpStream::connect(backend)
        .await
        .map(drop)
        .map_err(|e| ProbeFailure::io("connect", &e, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FailureReason;

    #[tokio::test]
    async fn open_port_passes_and_closed_port_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Duration::from_secs(1);
        assert_eq!(probe(addr, t).await, Ok(()));
        drop(listener);
        let e = probe(addr, t).await.unwrap_err();
        assert_eq!(e.reason, FailureReason::Refused, "{e}");
    }
}
