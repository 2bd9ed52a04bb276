//! `check = "udp"`: send a datagram, expect any reply (keepalived's
//! `UDP_CHECK` with `require_reply`). An ICMP port unreachable fails at
//! once as a refusal; silence fails at the timeout.

use std::net::SocketAddr;
use std::time::Duration;

use dnsha_core::config::HealthConfig;

use super::dns::DnsCheck;
use super::exchange;
use super::{ProbeFailure, ProbeResult};
use crate::error::Result;

/// A `udp` check.
#[derive(Debug, Clone)]
pub struct UdpCheck {
    /// The configured payload; a fresh `. SOA` query per probe when `None`.
    payload: Option<Vec<u8>>,
    default_query: DnsCheck,
}

impl UdpCheck {
    /// The check `config` describes.
    pub fn new(config: &HealthConfig) -> Result<Self> {
        Ok(Self {
            payload: config.payload.clone(),
            default_query: DnsCheck::new(&HealthConfig::default())?,
        })
    }

    /// One probe of `backend`.
    pub async fn probe(&self, backend: SocketAddr, timeout: Duration) -> ProbeResult {
        let payload = match &self.payload {
            Some(p) => p.clone(),
            None => {
                self.default_query
                    .query(rand::random(), &mut rand::thread_rng())?
                    .0
            }
        };
        let sock = exchange::udp_send(backend, &payload, timeout).await?;
        let mut buf = [0u8; 1];
        // A datagram larger than the buffer still counts: any reply does.
        match sock.recv(&mut buf).await {
            Ok(_) => Ok(()),
            Err(e) => Err(ProbeFailure::io("receive", &e, timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UdpSocket;

    use super::*;
    use crate::state::FailureReason;

    #[tokio::test]
    async fn reply_passes_refusal_fails_fast() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            server.send_to(&buf[..n], from).await.unwrap();
            buf[..n].to_vec()
        });
        let check = UdpCheck::new(&HealthConfig {
            payload: Some(b"ping".to_vec()),
            ..HealthConfig::default()
        })
        .unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(check.probe(addr, t).await, Ok(()));
        assert_eq!(echo.await.unwrap(), b"ping");
        // Closed port: the ICMP error arrives long before the timeout.
        let started = std::time::Instant::now();
        let e = check.probe(addr, t).await.unwrap_err();
        assert_eq!(e.reason, FailureReason::Refused, "{e}");
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
