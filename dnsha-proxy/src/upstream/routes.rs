//! How a listener's queries reach each backend of its pool over a stream:
//! plain TCP, DNS over TLS for `transport = "dot"` backends, DNS over HTTPS
//! for `"doh"` ones and DNS over QUIC for `"doq"` ones.
//!
//! A [`Routes`] value is built from the pool's configuration when the
//! listener starts and on every reload (TLS client configurations included,
//! so a new `tls_ca` applies to new connections), and read per query.

use std::collections::HashMap;
use std::sync::Arc;

use dnsha_core::config::{PoolConfig, Transport};
use dnsha_core::Backend;
use tokio::sync::Semaphore;

use super::stream::{StreamLimits, TcpUpstreams, TlsWire, UpstreamTarget, UpstreamTls};
use crate::error::Result;
use crate::wire::doh::authority;

/// The client side of one TLS transport and verification setting, shared
/// by the backends that use it.
#[derive(Clone)]
struct Client {
    rustls: Arc<rustls::ClientConfig>,
    /// DoQ: the QUIC configuration around `rustls`.
    quic: Option<quinn::ClientConfig>,
}

impl Client {
    fn new(transport: Transport, tls: &dnsha_core::config::BackendTls) -> Result<Self> {
        Ok(match transport {
            Transport::Doh => Self {
                rustls: crate::tls::doh_client_config(tls)?,
                quic: None,
            },
            Transport::Doq => {
                let (rustls, quic) = crate::tls::doq_client_config(tls)?;
                Self {
                    rustls,
                    quic: Some(quic),
                }
            }
            _ => Self {
                rustls: crate::tls::client_config(tls)?,
                quic: None,
            },
        })
    }
}

/// Queries a UDP listener may have in flight over streams at once (to
/// `tcp` and `dot` backends); more are dropped and counted as overload.
pub const MAX_UDP_STREAM_QUERIES: usize = 16_384;

/// Per-backend stream targets of one pool.
#[derive(Debug)]
pub struct Routes {
    targets: HashMap<String, UpstreamTarget>,
    /// The pool's connection limits, for backends not known by name.
    limits: Option<StreamLimits>,
    /// Backends with `transport = "udp"`.
    udp: HashMap<String, std::net::SocketAddr>,
    stream: Option<Arc<TcpUpstreams>>,
    udp_slots: Arc<Semaphore>,
}

impl Default for Routes {
    /// Plain TCP to every backend; UDP listeners use UDP.
    fn default() -> Self {
        Self {
            targets: HashMap::new(),
            limits: None,
            udp: HashMap::new(),
            stream: None,
            udp_slots: Arc::new(Semaphore::new(MAX_UDP_STREAM_QUERIES)),
        }
    }
}

impl Routes {
    /// Routes to the backends of `pool`. When a backend uses `tcp`, `dot`,
    /// `doh` or `doq`, UDP listeners send their queries through `upstreams`
    /// too.
    pub fn new(pool: &PoolConfig, upstreams: &Arc<TcpUpstreams>) -> Result<Self> {
        let mut configs: HashMap<(Transport, bool, Option<std::path::PathBuf>), Client> =
            HashMap::new();
        let mut targets = HashMap::new();
        let mut udp = HashMap::new();
        let mut stream = false;
        let limits = StreamLimits {
            max_connections: pool.settings.max_connections_per_backend,
            max_in_flight: pool.settings.max_in_flight_per_connection,
        };
        for b in &pool.backends {
            if b.transport == Transport::Udp {
                udp.insert(b.name.clone(), b.address);
            }
            stream |= b.transport != Transport::Udp;
            let tls = match (&b.transport, &b.tls) {
                (transport, Some(t)) if transport.is_tls() => {
                    let k = (*transport, t.verify, t.ca.clone());
                    let client = match configs.get(&k) {
                        Some(c) => c.clone(),
                        None => {
                            let c = Client::new(*transport, t)?;
                            configs.insert(k, c.clone());
                            c
                        }
                    };
                    let server_name = crate::tls::server_name(t, b.address)?;
                    let wire = match client.quic {
                        Some(config) => TlsWire::Doq { config },
                        None if *transport == Transport::Doh => TlsWire::Doh {
                            path: b.doh_path.clone(),
                            authority: authority(t.name.as_deref(), b.address),
                        },
                        None => TlsWire::Dot,
                    };
                    Some(Arc::new(UpstreamTls {
                        config: client.rustls,
                        key: format!(
                            "{};verify={};name={:?};ca={:?};path={:?}",
                            transport.as_str(),
                            t.verify,
                            server_name.to_str(),
                            t.ca,
                            (*transport == Transport::Doh).then_some(&b.doh_path),
                        ),
                        server_name,
                        wire,
                    }))
                }
                _ => None,
            };
            targets.insert(
                b.name.clone(),
                UpstreamTarget {
                    addr: b.address,
                    tls,
                    limits: Some(limits),
                },
            );
        }
        Ok(Self {
            targets,
            udp,
            limits: Some(limits),
            stream: stream.then(|| Arc::clone(upstreams)),
            ..Self::default()
        })
    }

    /// Where a stream query to `backend` goes: its configured transport when
    /// the backend is known under this name and address, plain TCP otherwise.
    pub fn target(&self, backend: &Backend) -> UpstreamTarget {
        match self.targets.get(backend.name()) {
            Some(t) if t.addr == backend.address() => t.clone(),
            _ => UpstreamTarget {
                limits: self.limits,
                ..UpstreamTarget::tcp(backend.address())
            },
        }
    }

    /// Whether `backend` speaks plain DNS over UDP (`transport = "udp"`, the
    /// default): stream frontends that can (DoH) then ask it over UDP first.
    pub fn uses_udp(&self, backend: &Backend) -> bool {
        match self.udp.get(backend.name()) {
            Some(a) => *a == backend.address(),
            None => !self.targets.contains_key(backend.name()),
        }
    }

    /// For UDP listeners: the stream pool to use when the pool has `tcp` or
    /// `dot` backends, with the semaphore bounding those queries.
    pub fn udp_via_stream(&self) -> Option<(&Arc<TcpUpstreams>, &Arc<Semaphore>)> {
        self.stream.as_ref().map(|s| (s, &self.udp_slots))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use dnsha_core::config::Config;

    fn pool(backends: &str) -> PoolConfig {
        let src = format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"53\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n{backends}"
        );
        Config::parse(&src).unwrap().pools.remove(0)
    }

    #[test]
    fn udp_only_pools_keep_udp_and_stream_targets_follow_transport() {
        let up = Arc::new(TcpUpstreams::new(Default::default()));
        let p = pool("[[pool.backend]]\nname = \"a\"\naddress = \"192.0.2.1\"\n");
        let r = Routes::new(&p, &up).unwrap();
        assert!(r.udp_via_stream().is_none());
        let b = Backend::new("a", "192.0.2.1:53".parse().unwrap(), 1);
        assert!(r.target(&b).tls.is_none());

        let p = pool(
            "[[pool.backend]]\nname = \"a\"\naddress = \"192.0.2.1\"\ntransport = \"tcp\"\n\n[[pool.backend]]\nname = \"d\"\naddress = \"192.0.2.2\"\ntransport = \"dot\"\ntls_verify = false\ntls_name = \"dns.test\"\n",
        );
        let r = Routes::new(&p, &up).unwrap();
        assert!(r.udp_via_stream().is_some());
        let a = Backend::new("a", "192.0.2.1:53".parse().unwrap(), 1);
        let d = Backend::new("d", "192.0.2.2:853".parse().unwrap(), 1);
        assert!(r.target(&a).tls.is_none());
        let t = r.target(&d);
        assert_eq!(t.addr, "192.0.2.2:853".parse().unwrap());
        let tls = t.tls.unwrap();
        assert_eq!(tls.server_name.to_str(), "dns.test");
        assert_eq!(tls.config.alpn_protocols, vec![b"dot".to_vec()]);
        // A backend moved to another address (pool updated before the
        // routes): plain TCP to where it is now.
        let moved = Backend::new("d", "192.0.2.9:853".parse().unwrap(), 1);
        assert!(r.target(&moved).tls.is_none());
    }
}
