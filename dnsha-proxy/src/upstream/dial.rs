//! Opening a connection to a stream backend: TCP within the connect
//! timeout, then the TLS handshake for a TLS target. Used by the pipelined
//! TCP/DoT connections and by the DoH ones.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::FailureKind;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::target::{TcpUpstreamStats, UpstreamTarget};
use crate::metrics::inc;

/// An established connection to a backend.
pub(crate) enum Connected {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why a connection could not be made, and whether it is the backend's
/// fault (a refusal or silence is; running out of descriptors or ports here
/// is not).
pub(crate) type ConnectFailure = (FailureKind, bool);

/// A failed `connect`: the backend's fault unless this host is out of
/// descriptors, ports or buffers.
fn connect_error(e: &io::Error) -> ConnectFailure {
    (
        FailureKind::Refused,
        !dnsha_health::check::out_of_local_resources(e),
    )
}

/// Connects (and for a TLS target, completes the TLS handshake) within the
/// connect timeout; a failed handshake is counted in `stats`.
pub(crate) async fn connect(
    target: &UpstreamTarget,
    limit: Duration,
    stats: &TcpUpstreamStats,
) -> Result<Connected, ConnectFailure> {
    let addr = target.addr;
    let deadline = Instant::now() + limit;
    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(backend = %addr, error = %e, "upstream tcp connect failed");
            return Err(connect_error(&e));
        }
        Err(_) => {
            debug!(backend = %addr, "upstream tcp connect timed out");
            return Err((FailureKind::Timeout, true));
        }
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = &target.tls else {
        return Ok(Connected::Tcp(stream));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    match timeout_at(deadline, connector.connect(tls.server_name.clone(), stream)).await {
        Ok(Ok(s)) => Ok(Connected::Tls(Box::new(s))),
        Ok(Err(e)) => {
            inc(&stats.tls_failures);
            tracing::warn!(backend = %addr, error = %e, "upstream tls handshake failed");
            Err((FailureKind::Refused, true))
        }
        Err(_) => {
            inc(&stats.tls_failures);
            debug!(backend = %addr, "upstream tls handshake timed out");
            Err((FailureKind::Timeout, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_or_ports_is_not_the_backends_fault() {
        use nix::errno::Errno;
        let err = |e: Errno| io::Error::from_raw_os_error(e as i32);
        for local in [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::EADDRNOTAVAIL,
            Errno::ENOBUFS,
        ] {
            assert_eq!(
                connect_error(&err(local)),
                (FailureKind::Refused, false),
                "{local}"
            );
        }
        for remote in [Errno::ECONNREFUSED, Errno::EHOSTUNREACH, Errno::ENETUNREACH] {
            assert_eq!(
                connect_error(&err(remote)),
                (FailureKind::Refused, true),
                "{remote}"
            );
        }
    }
}
