//! `forwarding` on `udp` and `tcp` listeners: dnsha reads the packets
//! (`"userspace"`, the default) or programs the kernel to forward them
//! (`"kernel"`: an nftables DNAT map to the pool's healthy backends, kept
//! by the health checks; see the `dnsha-kernel` crate).
//!
//! ```toml
//! [[listener]]
//! name = "dns-fast"
//! protocol = "udp"
//! listen = "192.168.1.5:53"   # a specific address: a VIP or the host's
//! pool = "dns"
//! forwarding = "kernel"
//! ```

use serde::Deserialize;

use super::raw::RawListener;
use super::{PoolConfig, Protocol, Transport, Validator};

/// Who forwards a listener's queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// dnsha reads each query, balances it and forwards it.
    #[default]
    Userspace,
    /// The kernel forwards each new flow to a healthy backend (nftables
    /// DNAT, weights kept); dnsha keeps the map as health changes. The
    /// userspace listener stays bound on the same address and answers
    /// (with the pool's `on_no_backend`) while no backend is healthy.
    Kernel,
}

impl Forwarding {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Userspace => "userspace",
            Self::Kernel => "kernel",
        }
    }
}

impl Validator {
    /// `forwarding`: `kernel` only on `udp` and `tcp` listeners with a
    /// specific address, whose pool's backends are reached over plain DNS
    /// in the listener's address family, and without an access log (the
    /// kernel logs nothing per query).
    pub(super) fn forwarding(&mut self, l: &RawListener, pools: &[PoolConfig]) -> Forwarding {
        let Some(v) = &l.forwarding else {
            return Forwarding::Userspace;
        };
        let span = v.span();
        if *v.get_ref() == Forwarding::Userspace {
            return Forwarding::Userspace;
        }
        let before = self.errors.len();
        if !matches!(l.protocol, Protocol::Udp | Protocol::Tcp) {
            self.err(
                span.clone(),
                format!(
                    "forwarding = \"kernel\" applies to udp and tcp listeners only, not {}",
                    l.protocol.as_str()
                ),
            );
        }
        if let Ok(addr) = l.listen.get_ref().trim().parse::<std::net::SocketAddr>() {
            if addr.ip().is_unspecified() {
                self.err(
                    l.listen.span(),
                    format!(
                        "forwarding = \"kernel\" needs a specific address, not {addr}: the kernel \
                         rule matches the address clients send to (a VIP or one of the host's)"
                    ),
                );
            }
            let pool = pools.iter().find(|p| p.name == l.pool.get_ref().trim());
            for b in pool.map(|p| p.backends.as_slice()).unwrap_or_default() {
                if b.address.is_ipv4() != addr.is_ipv4() {
                    self.err(
                        l.pool.span(),
                        format!(
                            "forwarding = \"kernel\": backend {} ({}) is not in the listener's \
                             address family (the kernel path does not translate IPv4 to IPv6)",
                            b.name, b.address
                        ),
                    );
                }
                if !matches!(b.transport, Transport::Udp | Transport::Tcp) {
                    self.err(
                        l.pool.span(),
                        format!(
                            "forwarding = \"kernel\": backend {} uses transport = \"{}\"; the \
                             kernel forwards packets as they are, so only plain DNS backends",
                            b.name,
                            b.transport.as_str()
                        ),
                    );
                }
            }
        }
        if let Some(log) = &l.access_log {
            self.err(
                log.span(),
                "access_log is not available with forwarding = \"kernel\": the queries never \
                 reach dnsha (per-backend packet counters are in /status and /metrics)",
            );
        }
        if self.errors.len() > before {
            return Forwarding::Userspace;
        }
        Forwarding::Kernel
    }
}
