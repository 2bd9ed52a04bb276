//! Binding a listener: its sockets (one SO_REUSEPORT socket per worker),
//! its worker threads, and the frontend each worker runs.

use std::net::SocketAddr;
use std::sync::Arc;

use dnsha_core::config::{ListenerConfig, Protocol};
use tokio_util::task::TaskTracker;

use std::os::fd::{AsFd, OwnedFd};

use super::inherit::{socket_name, SocketKind};
use super::{RunningListener, Server};
use crate::error::{Error, Result};
use crate::frontend::udp_steer::SteerGroup;
use crate::frontend::{self, ListenerCtx};
use crate::metrics::ListenerMetrics;
use crate::socket;
use crate::tls::{QuicLimits, ServerTls, ALPN_DOQ, ALPN_DOT, ALPN_H2, ALPN_H3, ALPN_HTTP11};
use crate::upstream::stream::TcpUpstreams;
use crate::upstream::udp::UdpUpstreams;
use crate::upstream::Upstreams;

fn bind_error(l: &ListenerConfig, source: std::io::Error) -> Error {
    Error::Bind {
        listener: l.name.clone(),
        address: l.listen,
        source,
    }
}

/// Named duplicates of a listener's sockets.
type Named = Vec<(String, OwnedFd)>;

/// One socket per worker of `l`, all on the listener's address (SO_REUSEPORT);
/// with port 0, the other workers share the first one's port. A socket
/// inherited from a previous process (`inherited`, for a fixed port) is
/// taken before a new one is bound. Returns the sockets and a duplicate of
/// each, named, for a restart to hand over.
fn bind_workers<S: AsFd>(
    l: &ListenerConfig,
    kind: SocketKind,
    mut inherited: impl FnMut(SocketAddr) -> Option<std::io::Result<S>>,
    bind: impl Fn(SocketAddr) -> std::io::Result<S>,
    local: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> Result<(Vec<S>, Named)> {
    let mut sockets = Vec::new();
    let mut dups = Vec::new();
    let mut addr = l.listen;
    for i in 0..workers_for(l) {
        let taken = (addr.port() != 0).then(|| inherited(addr)).flatten();
        let s = match taken {
            Some(s) => s,
            None => bind(addr),
        }
        .map_err(|e| bind_error(l, e))?;
        addr = local(&s).map_err(|e| bind_error(l, e))?;
        let dup = s
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| bind_error(l, e))?;
        dups.push((socket_name(kind, addr, i), dup));
        sockets.push(s);
    }
    Ok((sockets, dups))
}

/// Runs `work` on a thread of its own with a single-thread runtime. The
/// thread ends when `work` is done and every task of the listener has
/// finished (connections drain on their worker's runtime).
fn spawn_worker(
    ctx: &Arc<ListenerCtx>,
    name: String,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tasks = ctx.tasks.clone();
    let work = ctx.tasks.track_future(work);
    // I/O and timers only: a worker runs no child process and takes no
    // signal, so its runtime has no process or signal driver to poll at
    // every park.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new().name(name).spawn(move || {
        rt.block_on(async move {
            work.await;
            tasks.wait().await;
        });
    })?;
    Ok(())
}

pub(super) fn workers_for(l: &ListenerConfig) -> usize {
    if l.workers > 0 {
        l.workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The CPUs this process may run on, in order (empty when unknown).
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the CPU affinity");
            Vec::new()
        }
    }
}

/// Pins the calling thread to `cpu`; a failure is logged, the worker runs
/// unpinned.
fn pin_current_thread(cpu: usize) {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    let r = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = r {
        tracing::warn!(cpu, error = %e, "cannot pin the worker thread");
    }
}

impl Server {
    /// The TLS side of a DoT or DoH listener with a certificate.
    fn server_tls(l: &ListenerConfig) -> Result<Option<Arc<ServerTls>>> {
        let alpn: &[&[u8]] = match l.protocol {
            Protocol::Dot => &[ALPN_DOT],
            Protocol::Doh => &[ALPN_H2, ALPN_HTTP11],
            Protocol::Doq | Protocol::Doh3 => {
                let alpn = if l.protocol == Protocol::Doq {
                    ALPN_DOQ
                } else {
                    ALPN_H3
                };
                return l
                    .tls
                    .as_ref()
                    .map(|files| {
                        ServerTls::new_quic(files, alpn)
                            .map(Arc::new)
                            .map_err(|e| e.in_listener(&l.name))
                    })
                    .transpose();
            }
            _ => return Ok(None),
        };
        l.tls
            .as_ref()
            .map(|files| {
                ServerTls::new(files, alpn)
                    .map(Arc::new)
                    .map_err(|e| e.in_listener(&l.name))
            })
            .transpose()
    }

    /// The UDP sockets of a UDP or DoQ listener, one per worker (inherited
    /// ones first), and their named duplicates.
    fn bind_udp_workers(&self, l: &ListenerConfig) -> Result<(Vec<std::net::UdpSocket>, Named)> {
        bind_workers(
            l,
            SocketKind::Udp,
            |addr| {
                let s = self.take_inherited(SocketKind::Udp, addr)?;
                Some(s.set_nonblocking(true).map(|()| s.into()))
            },
            socket::bind_udp,
            std::net::UdpSocket::local_addr,
        )
    }

    /// UDP: one SO_REUSEPORT socket per worker, each worker on its own
    /// thread with a single-thread runtime, as dnsdist's listener threads:
    /// no work stealing or cross-thread wake-ups on the hot path.
    ///
    /// `predecessors` are the listeners at the same address still running
    /// or draining (a reload that rebinds): the workers' sockets share a
    /// reuseport group with theirs until they are gone, see
    /// [`frontend::udp_steer`].
    fn start_udp_workers(
        &self,
        l: &ListenerConfig,
        ctx: &Arc<ListenerCtx>,
        predecessors: Vec<TaskTracker>,
    ) -> Result<Named> {
        let bind_err = |source| bind_error(l, source);
        let (sockets, dups) = self.bind_udp_workers(l)?;
        let steer = SteerGroup::new(
            sockets.len(),
            l.adaptive_workers && !l.pin_workers,
            predecessors,
            Arc::clone(&ctx.metrics),
        );
        let pktinfo = l.listen.ip().is_unspecified();
        let main = tokio::runtime::Handle::current();
        let cpus = if l.pin_workers {
            allowed_cpus()
        } else {
            Vec::new()
        };
        for (i, std) in sockets.into_iter().enumerate() {
            let (ctx2, main) = (Arc::clone(ctx), main.clone());
            let steer = steer.worker(i);
            // `pin_workers`: worker i on the i-th allowed CPU, and its socket
            // preferred by the kernel for datagrams processed there.
            let cpu = cpus.get(i % cpus.len().max(1)).copied();
            if let Some(cpu) = cpu {
                if let Err(e) = socket2::SockRef::from(&std).set_cpu_affinity(cpu) {
                    tracing::warn!(cpu, error = %e, "cannot set SO_INCOMING_CPU");
                }
            }
            let work = async move {
                if let Some(cpu) = cpu {
                    pin_current_thread(cpu);
                }
                match crate::sys::udp_listener_reader(std, frontend::udp::LISTENER_WAIT) {
                    Ok(sock) => frontend::udp::serve(ctx2, sock, pktinfo, main, steer).await,
                    Err(e) => tracing::error!(error = %e, "udp worker socket"),
                }
            };
            spawn_worker(ctx, format!("udp-{}-{i}", l.name), work).map_err(bind_err)?;
        }
        Ok(dups)
    }

    /// TCP, DoT, DoH and passthrough: like UDP, one SO_REUSEPORT listening
    /// socket per worker, each worker on its own thread and single-thread
    /// runtime with its own upstream connections and sockets, so a
    /// connection, its queries and their answers stay on one thread (an
    /// HTTP/2 connection then writes many answers per flush). Connection
    /// limits are shared by the workers.
    fn start_stream_workers(
        &self,
        l: &ListenerConfig,
        ctx: &Arc<ListenerCtx>,
        tls: &Option<Arc<ServerTls>>,
    ) -> Result<Named> {
        let bind_err = |source| bind_error(l, source);
        if l.protocol == Protocol::Dot && tls.is_none() {
            return Err(Error::NoCertificate.in_listener(&l.name));
        }
        let (sockets, dups) = bind_workers(
            l,
            SocketKind::Tcp,
            |addr| {
                let s = self.take_inherited(SocketKind::Tcp, addr)?;
                Some(s.set_nonblocking(true).map(|()| s.into()))
            },
            |a| socket::bind_tcp(a, 1024),
            std::net::TcpListener::local_addr,
        )?;
        for (i, std) in sockets.into_iter().enumerate() {
            let ctx2 = Arc::clone(ctx);
            let tls = tls.clone();
            let protocol = l.protocol;
            // Each worker its own upstream connections and sockets,
            // counting into the server's totals.
            let stream = Arc::new(TcpUpstreams::with_stats(
                self.tcp_upstreams.settings().clone(),
                self.tcp_upstreams.shared_stats(),
            ));
            let udp = (protocol == Protocol::Doh)
                .then(|| Arc::new(UdpUpstreams::with_stats(self.udp_upstreams.shared_stats())));
            let upstreams = Upstreams { stream, udp };
            let work = async move {
                let listener = match tokio::net::TcpListener::from_std(std) {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::error!(error = %e, "stream worker socket");
                        return;
                    }
                };
                match (protocol, tls) {
                    (Protocol::Tcp, _) => frontend::tcp::serve(ctx2, listener, upstreams).await,
                    (Protocol::Dot, Some(tls)) => {
                        frontend::dot::serve(ctx2, listener, tls, upstreams).await;
                    }
                    (Protocol::Doh, tls) => {
                        frontend::doh::serve(ctx2, listener, tls, upstreams).await;
                    }
                    _ => frontend::passthrough::serve(ctx2, listener).await,
                }
            };
            let name = format!("{}-{}-{i}", l.protocol.as_str(), l.name);
            spawn_worker(ctx, name, work).map_err(bind_err)?;
        }
        Ok(dups)
    }

    /// DoQ and DoH3: like UDP, one SO_REUSEPORT socket per worker, each
    /// worker a QUIC endpoint on its own thread and single-thread runtime,
    /// with its own upstream connections and sockets (as the stream
    /// workers). quinn-udp sends and receives through GSO and GRO where the
    /// kernel has them.
    fn start_quic_workers(
        &self,
        l: &ListenerConfig,
        ctx: &Arc<ListenerCtx>,
        tls: &Option<Arc<ServerTls>>,
    ) -> Result<Named> {
        let bind_err = |source| bind_error(l, source);
        let Some(tls) = tls else {
            return Err(Error::NoCertificate.in_listener(&l.name));
        };
        let limits = if l.protocol == Protocol::Doq {
            // Queries open at once per connection: the stream listeners'
            // in-flight bound per client connection.
            QuicLimits {
                idle_ms: l.idle_timeout_ms,
                bidi_streams: 100,
                uni_streams: 0,
            }
        } else {
            // HTTP/3: the client's control and two QPACK streams, and room
            // for grease (RFC 9114 §6.2.3).
            QuicLimits {
                idle_ms: l.idle_timeout_ms,
                bidi_streams: l.max_streams,
                uni_streams: 8,
            }
        };
        let quic = tls
            .quic_server_config(limits)
            .map_err(|e| e.in_listener(&l.name))?;
        let (sockets, dups) = self.bind_udp_workers(l)?;
        let protocol = l.protocol;
        if let Some(first) = sockets.first() {
            // What quinn-udp found the kernel can do for these sockets:
            // segmentation offload (one send of many packets) and receive
            // coalescing.
            match quinn_udp::UdpSocketState::new(first.into()) {
                Ok(state) => tracing::info!(
                    listener = %l.name,
                    gso_segments = state.max_gso_segments(),
                    gro_segments = state.gro_segments(),
                    "quic sockets"
                ),
                Err(e) => return Err(bind_error(l, e)),
            }
        }
        for (i, std) in sockets.into_iter().enumerate() {
            let ctx2 = Arc::clone(ctx);
            let quic = quic.clone();
            let stream = Arc::new(TcpUpstreams::with_stats(
                self.tcp_upstreams.settings().clone(),
                self.tcp_upstreams.shared_stats(),
            ));
            let udp = Some(Arc::new(UdpUpstreams::with_stats(
                self.udp_upstreams.shared_stats(),
            )));
            let upstreams = Upstreams { stream, udp };
            let work = async move {
                let runtime = Arc::new(quinn::TokioRuntime);
                let endpoint = quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(quic),
                    std,
                    runtime,
                );
                match (endpoint, protocol) {
                    (Ok(e), Protocol::Doh3) => frontend::doh3::serve(ctx2, e, upstreams).await,
                    (Ok(e), _) => frontend::doq::serve(ctx2, e, upstreams).await,
                    (Err(e), _) => tracing::error!(error = %e, "quic worker endpoint"),
                }
            };
            let name = format!("{}-{}-{i}", protocol.as_str(), l.name);
            spawn_worker(ctx, name, work).map_err(bind_err)?;
        }
        Ok(dups)
    }

    pub(super) fn start_listener(
        &self,
        l: &ListenerConfig,
        parts: &super::Parts,
        predecessors: Vec<TaskTracker>,
    ) -> Result<RunningListener> {
        let metrics = Arc::new(ListenerMetrics::new(l.name.clone(), l.protocol, l.listen));
        let shared = self.shared_for(l, parts, &metrics, None)?;
        let tls = Self::server_tls(l)?;
        let ctx = Arc::new(ListenerCtx::new(shared, metrics));
        let started = match l.protocol {
            Protocol::Udp => self.start_udp_workers(l, &ctx, predecessors),
            Protocol::Doq | Protocol::Doh3 => self.start_quic_workers(l, &ctx, &tls),
            _ => self.start_stream_workers(l, &ctx, &tls),
        };
        let sockets = match started {
            Ok(s) => s,
            Err(e) => {
                // Workers already running stop at once.
                ctx.stop.cancel();
                ctx.tasks.close();
                return Err(e);
            }
        };
        ctx.tasks.close();
        tracing::info!(
            listener = %l.name,
            protocol = l.protocol.as_str(),
            address = %l.listen,
            pool = %l.pool,
            "listening"
        );
        Ok(RunningListener {
            config: l.clone(),
            ctx,
            tls,
            sockets,
        })
    }
}
