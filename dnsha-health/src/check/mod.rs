//! Checkers: one probe of one backend, producing a [`ProbeResult`]. They
//! hold no health state; [`crate::state::HealthState`] counts their results.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use dnsha_core::config::{CheckKind, HealthConfig};

use crate::error::Result;
use crate::state::FailureReason;

pub mod dns;
pub mod doh;
mod doq;
pub mod dot;
mod exchange;
pub mod exec;
mod https;
pub mod tcp;
pub mod tls;
pub mod udp;

/// The backend a probe goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The backend's configured name (for `exec`'s environment).
    pub name: String,
    /// Its address.
    pub address: SocketAddr,
}

/// Why one probe failed, with a detail for the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    /// What the state machine and the metrics count.
    pub reason: FailureReason,
    /// Free text: the system error, the unexpected answer.
    pub detail: String,
}

impl ProbeFailure {
    /// A failure for `reason` with `detail`.
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// Classifies a socket error: refusals and resets are
    /// [`FailureReason::Refused`], a timed-out connect is a timeout, running
    /// out of descriptors, ports or buffers is
    /// [`FailureReason::NoResources`] (see [`out_of_local_resources`]),
    /// other errors are [`FailureReason::Local`].
    pub fn io(what: &str, e: &io::Error, timeout: Duration) -> Self {
        if out_of_local_resources(e) {
            return Self::new(FailureReason::NoResources, format!("{what}: {e}"));
        }
        let reason = match e.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::BrokenPipe => FailureReason::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => FailureReason::Timeout(timeout),
            io::ErrorKind::UnexpectedEof => FailureReason::BadAnswer,
            _ => FailureReason::Local,
        };
        Self::new(reason, format!("{what}: {e}"))
    }

    /// A timeout after `timeout`.
    pub fn timeout(timeout: Duration) -> Self {
        Self::new(
            FailureReason::Timeout(timeout),
            format!("no answer within {} ms", timeout.as_millis()),
        )
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// Whether `e` says this host ran out of something (open files, local
/// ports, socket buffers, memory) rather than anything about the peer: such
/// an error must never count against a backend, whose health it does not
/// measure.
///
/// ```
/// use std::io;
/// use dnsha_health::check::out_of_local_resources;
///
/// assert!(out_of_local_resources(&io::Error::from_raw_os_error(24))); // EMFILE
/// assert!(!out_of_local_resources(&io::Error::from(io::ErrorKind::ConnectionRefused)));
/// ```
pub fn out_of_local_resources(e: &io::Error) -> bool {
    use nix::errno::Errno;
    if e.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    e.raw_os_error().is_some_and(|n| {
        matches!(
            Errno::from_raw(n),
            Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM | Errno::EADDRNOTAVAIL
        )
    })
}

/// The outcome of one probe.
pub type ProbeResult = std::result::Result<(), ProbeFailure>;

/// A configured check, ready to probe any number of times.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Checker {
    /// `check = "dns"`, over UDP, TCP, TLS, HTTPS or QUIC.
    Dns(dns::DnsCheck),
    /// `check = "tcp"`.
    Tcp,
    /// `check = "udp"`.
    Udp(udp::UdpCheck),
    /// `check = "tls"`.
    Tls(tls::TlsCheck),
    /// `check = "doh"`.
    Doh(doh::DohCheck),
    /// `check = "exec"`.
    Exec(exec::ExecCheck),
    /// `check = "none"`: every probe passes.
    None,
}

impl Checker {
    /// Builds the checker `config` describes (reading CA files for TLS).
    /// Pass the configuration resolved for the backend
    /// ([`HealthConfig::for_backend`]), so a `dns` check knows its transport.
    pub fn new(config: &HealthConfig) -> Result<Self> {
        Ok(match config.check {
            CheckKind::Dns => Self::Dns(dns::DnsCheck::new(config)?),
            CheckKind::Tcp => Self::Tcp,
            CheckKind::Udp => Self::Udp(udp::UdpCheck::new(config)?),
            CheckKind::Tls => Self::Tls(tls::TlsCheck::new(config)?),
            CheckKind::Doh => Self::Doh(doh::DohCheck::new(config)?),
            CheckKind::Exec => Self::Exec(exec::ExecCheck::new(config)),
            CheckKind::None => Self::None,
        })
    }

    /// The kind, as configured.
    pub fn kind(&self) -> CheckKind {
        match self {
            Self::Dns(_) => CheckKind::Dns,
            Self::Tcp => CheckKind::Tcp,
            Self::Udp(_) => CheckKind::Udp,
            Self::Tls(_) => CheckKind::Tls,
            Self::Doh(_) => CheckKind::Doh,
            Self::Exec(_) => CheckKind::Exec,
            Self::None => CheckKind::None,
        }
    }

    /// Probes `target` once; a probe not finished within `timeout` fails as
    /// a timeout (an `exec` command is then killed with its process group).
    pub async fn probe(&self, target: &Target, timeout: Duration) -> ProbeResult {
        let work = async {
            match self {
                Self::Dns(c) => c.probe(target.address, timeout).await,
                Self::Tcp => tcp::probe(target.address, timeout).await,
                Self::Udp(c) => c.probe(target.address, timeout).await,
                Self::Tls(c) => c.probe(target.address, timeout).await.map(drop),
                Self::Doh(c) => c.probe(target.address, timeout).await,
                Self::Exec(c) => c.probe(target, timeout).await,
                Self::None => Ok(()),
            }
        };
        if let Self::Exec(_) = self {
            // It enforces the timeout itself, to kill the whole process group.
            return work.await;
        }
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ProbeFailure::timeout(timeout)),
        }
    }
}
