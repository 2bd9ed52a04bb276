//! The running balancer: pools and listeners built from a [`Config`],
//! reloaded in place and shut down gracefully.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dnsha_core::config::{Config, ListenerConfig, PoolConfig, Protocol};
use dnsha_core::{Backend, Pool};
use dnsha_health::HealthMonitor;
use serde::Serialize;

use crate::accesslog::AccessLog;
use crate::acl::Acl;
use crate::ctx::{ListenerCtx, ListenerShared};
use crate::dns::DropReason;
use crate::error::{Error, Result};
use crate::metrics::{get, ListenerMetrics, HTTP_STATUSES};
use crate::routes::Routes;
use crate::tls::{ServerTls, ALPN_DOT, ALPN_H2, ALPN_HTTP11};
use crate::upstream_tcp::{TcpUpstreamSettings, TcpUpstreams};
use crate::upstream_udp::UdpUpstreams;

struct RunningListener {
    config: ListenerConfig,
    ctx: Arc<ListenerCtx>,
    /// The certificate of a DoT or DoH listener, reloaded in place.
    tls: Option<Arc<ServerTls>>,
}

struct State {
    pools: Vec<Arc<Pool>>,
    listeners: Vec<RunningListener>,
}

/// A running balancer.
pub struct Server {
    state: Mutex<State>,
    tcp_upstreams: Arc<TcpUpstreams>,
    udp_upstreams: Arc<UdpUpstreams>,
    /// Listeners stopped by reloads, still draining.
    retired: Mutex<Vec<Arc<ListenerCtx>>>,
    /// Active and passive health checks of the pools' backends.
    health: HealthMonitor,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

fn backends_of(p: &PoolConfig) -> Vec<Arc<Backend>> {
    p.backends
        .iter()
        .map(|b| Arc::new(Backend::new(b.name.clone(), b.address, b.weight)))
        .collect()
}

fn new_pool(p: &PoolConfig) -> Arc<Pool> {
    Arc::new(Pool::new(
        p.name.clone(),
        p.policy,
        p.settings.clone(),
        backends_of(p),
    ))
}

fn bind_error(l: &ListenerConfig, source: std::io::Error) -> Error {
    Error::Bind {
        listener: l.name.clone(),
        address: l.listen,
        source,
    }
}

/// One socket per worker of `l`, all on the listener's address (SO_REUSEPORT);
/// with port 0, the other workers share the first one's port.
fn bind_workers<S>(
    l: &ListenerConfig,
    bind: impl Fn(SocketAddr) -> std::io::Result<S>,
    local: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> Result<Vec<S>> {
    let mut sockets = Vec::new();
    let mut addr = l.listen;
    for _ in 0..workers_for(l) {
        let s = bind(addr).map_err(|e| bind_error(l, e))?;
        addr = local(&s).map_err(|e| bind_error(l, e))?;
        sockets.push(s);
    }
    Ok(sockets)
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

fn workers_for(l: &ListenerConfig) -> usize {
    if l.workers > 0 {
        l.workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Whether a running listener can take `new` by swapping settings, without
/// rebinding its sockets.
fn same_sockets(old: &ListenerConfig, new: &ListenerConfig) -> bool {
    old.name == new.name
        && old.protocol == new.protocol
        && old.listen == new.listen
        && old.tls.is_some() == new.tls.is_some()
        && (old.protocol != Protocol::Udp
            || (workers_for(old) == workers_for(new) && old.pin_workers == new.pin_workers))
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
    /// Binds every listener of `config` and starts serving. Fails (and binds
    /// nothing) when a listener cannot bind.
    pub async fn start(config: &Config) -> Result<Arc<Self>> {
        HealthMonitor::validate(config).map_err(|source| Error::Health { source })?;
        let health = HealthMonitor::new().map_err(|source| Error::Health { source })?;
        let pools: Vec<Arc<Pool>> = config.pools.iter().map(new_pool).collect();
        let server = Arc::new(Self {
            state: Mutex::new(State {
                pools: Vec::new(),
                listeners: Vec::new(),
            }),
            tcp_upstreams: Arc::new(TcpUpstreams::new(TcpUpstreamSettings::default())),
            udp_upstreams: Arc::new(UdpUpstreams::new()),
            retired: Mutex::new(Vec::new()),
            health,
        });
        let mut started = Vec::new();
        let routes = server.routes_for(config)?;
        for l in &config.listeners {
            match server.start_listener(l, &pools, &routes) {
                Ok(r) => started.push(r),
                Err(e) => {
                    for r in started {
                        r.ctx.stop.cancel();
                    }
                    return Err(e);
                }
            }
        }
        {
            let mut st = server.lock();
            st.pools = pools;
            st.listeners = started;
            server.reconcile_health(config, &st.pools);
        }
        Ok(server)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stream routes of every pool (TLS client configurations built).
    fn routes_for(&self, config: &Config) -> Result<Vec<(String, Arc<Routes>)>> {
        config
            .pools
            .iter()
            .map(|p| {
                Ok((
                    p.name.clone(),
                    Arc::new(Routes::new(p, &self.tcp_upstreams)?),
                ))
            })
            .collect()
    }

    fn shared_for(
        &self,
        l: &ListenerConfig,
        pools: &[Arc<Pool>],
        routes: &[(String, Arc<Routes>)],
        metrics: &Arc<ListenerMetrics>,
        old_log: Option<(&ListenerConfig, &Option<AccessLog>)>,
    ) -> Result<ListenerShared> {
        let pool = pools
            .iter()
            .find(|p| p.name() == l.pool)
            .cloned()
            .ok_or_else(|| Error::UnknownPool {
                listener: l.name.clone(),
                pool: l.pool.clone(),
            })?;
        let access_log = match old_log {
            Some((old, log)) if old.access_log == l.access_log && old.format == l.format => {
                log.clone()
            }
            _ => l
                .access_log
                .clone()
                .map(|t| AccessLog::start(t, l.format, Arc::clone(metrics))),
        };
        Ok(ListenerShared {
            config: l.clone(),
            pool,
            acl: Acl::new(l.allow.clone()),
            access_log,
            routes: routes
                .iter()
                .find(|(name, _)| *name == l.pool)
                .map(|(_, r)| Arc::clone(r))
                .unwrap_or_default(),
        })
    }

    /// The TLS side of a DoT or DoH listener with a certificate.
    fn server_tls(l: &ListenerConfig) -> Result<Option<Arc<ServerTls>>> {
        let alpn: &[&[u8]] = match l.protocol {
            Protocol::Dot => &[ALPN_DOT],
            Protocol::Doh => &[ALPN_H2, ALPN_HTTP11],
            _ => return Ok(None),
        };
        l.tls
            .as_ref()
            .map(|files| {
                ServerTls::new(files, alpn)
                    .map(Arc::new)
                    .map_err(|e| Error::Tls {
                        context: format!("listener {}", l.name),
                        message: e.to_string(),
                    })
            })
            .transpose()
    }

    /// UDP: one SO_REUSEPORT socket per worker, each worker on its own
    /// thread with a single-thread runtime, as dnsdist's listener threads:
    /// no work stealing or cross-thread wake-ups on the hot path.
    fn start_udp_workers(&self, l: &ListenerConfig, ctx: &Arc<ListenerCtx>) -> Result<()> {
        let bind_err = |source| bind_error(l, source);
        let sockets = bind_workers(l, crate::socket::bind_udp, std::net::UdpSocket::local_addr)?;
        let pktinfo = l.listen.ip().is_unspecified();
        let main = tokio::runtime::Handle::current();
        let cpus = if l.pin_workers {
            allowed_cpus()
        } else {
            Vec::new()
        };
        for (i, std) in sockets.into_iter().enumerate() {
            let (ctx2, main) = (Arc::clone(ctx), main.clone());
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
                match tokio::net::UdpSocket::from_std(std) {
                    Ok(sock) => crate::udp::serve(ctx2, sock, pktinfo, main).await,
                    Err(e) => tracing::error!(error = %e, "udp worker socket"),
                }
            };
            spawn_worker(ctx, format!("udp-{}-{i}", l.name), work).map_err(bind_err)?;
        }
        Ok(())
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
    ) -> Result<()> {
        let bind_err = |source| bind_error(l, source);
        if l.protocol == Protocol::Dot && tls.is_none() {
            return Err(Error::Tls {
                context: format!("listener {}", l.name),
                message: "dot needs tls_cert and tls_key".into(),
            });
        }
        let sockets = bind_workers(
            l,
            |a| crate::socket::bind_tcp(a, 1024),
            std::net::TcpListener::local_addr,
        )?;
        for (i, std) in sockets.into_iter().enumerate() {
            let ctx2 = Arc::clone(ctx);
            let tls = tls.clone();
            let protocol = l.protocol;
            let tcp = Arc::new(TcpUpstreams::with_stats(
                self.tcp_upstreams.settings().clone(),
                self.tcp_upstreams.shared_stats(),
            ));
            let udp = Arc::new(UdpUpstreams::with_stats(self.udp_upstreams.shared_stats()));
            let work = async move {
                let listener = match tokio::net::TcpListener::from_std(std) {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::error!(error = %e, "stream worker socket");
                        return;
                    }
                };
                match (protocol, tls) {
                    (Protocol::Tcp, _) => crate::tcp::serve(ctx2, listener, tcp).await,
                    (Protocol::Dot, Some(tls)) => {
                        crate::dot::serve(ctx2, listener, tls, tcp).await;
                    }
                    (Protocol::Doh, tls) => {
                        let up = crate::doh::Upstreams { tcp, udp };
                        crate::doh::serve(ctx2, listener, tls, up).await;
                    }
                    _ => crate::passthrough::serve(ctx2, listener).await,
                }
            };
            let name = format!("{}-{}-{i}", l.protocol.as_str(), l.name);
            spawn_worker(ctx, name, work).map_err(bind_err)?;
        }
        Ok(())
    }

    fn start_listener(
        &self,
        l: &ListenerConfig,
        pools: &[Arc<Pool>],
        routes: &[(String, Arc<Routes>)],
    ) -> Result<RunningListener> {
        let metrics = Arc::new(ListenerMetrics::new(l.name.clone(), l.protocol, l.listen));
        let shared = self.shared_for(l, pools, routes, &metrics, None)?;
        let tls = Self::server_tls(l)?;
        let ctx = Arc::new(ListenerCtx::new(shared, metrics));
        let started = match l.protocol {
            Protocol::Udp => self.start_udp_workers(l, &ctx),
            _ => self.start_stream_workers(l, &ctx, &tls),
        };
        if let Err(e) = started {
            // Workers already running stop at once.
            ctx.stop.cancel();
            ctx.tasks.close();
            return Err(e);
        }
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
        })
    }

    /// Applies a new configuration: pools are updated in place (backends that
    /// stay keep their state and counters; queries in flight are untouched),
    /// listeners whose sockets are unchanged get the new settings, others are
    /// started or stopped (stopped ones finish their queries in flight). On
    /// error nothing changes.
    pub fn reload(&self, config: &Config) -> Result<ReloadSummary> {
        HealthMonitor::validate(config).map_err(|source| Error::Health { source })?;
        let mut st = self.lock();
        let mut summary = ReloadSummary::default();
        // Pools: keep the Arc when the policy is unchanged.
        let mut pools = Vec::new();
        for pc in &config.pools {
            match st.pools.iter().find(|p| p.name() == pc.name) {
                Some(p) if p.policy_kind() == Some(pc.policy) => {
                    p.update(
                        pc.settings.clone(),
                        pc.backends
                            .iter()
                            .map(|b| (b.name.clone(), b.address, b.weight))
                            .collect(),
                    );
                    pools.push(Arc::clone(p));
                }
                Some(p) => {
                    // New policy: new pool, same backend objects where kept.
                    let merged = Pool::new(
                        pc.name.clone(),
                        pc.policy,
                        pc.settings.clone(),
                        p.snapshot().backends().to_vec(),
                    );
                    merged.update(
                        pc.settings.clone(),
                        pc.backends
                            .iter()
                            .map(|b| (b.name.clone(), b.address, b.weight))
                            .collect(),
                    );
                    pools.push(Arc::new(merged));
                    summary.pools_changed += 1;
                }
                None => {
                    pools.push(new_pool(pc));
                    summary.pools_added += 1;
                }
            }
        }
        summary.pools_removed = st
            .pools
            .iter()
            .filter(|p| !config.pools.iter().any(|c| c.name == p.name()))
            .count();
        // Listeners: start the new ones first, so a bind failure changes nothing.
        let routes = self.routes_for(config)?;
        let mut keep: Vec<(usize, ListenerShared)> = Vec::new();
        // New certificates of kept DoT/DoH listeners, installed on commit.
        let mut new_keys = Vec::new();
        let mut started = Vec::new();
        for l in &config.listeners {
            let existing = st.listeners.iter().position(|r| same_sockets(&r.config, l));
            match existing {
                Some(i) => {
                    let r = &st.listeners[i];
                    let old = r.ctx.shared.load();
                    let key = match (&r.tls, &l.tls) {
                        (Some(tls), Some(files)) => match crate::tls::load_certified_key(files) {
                            Ok(k) => Some((Arc::clone(tls), k)),
                            Err(errors) => {
                                for r in started {
                                    let r: RunningListener = r;
                                    r.ctx.stop.cancel();
                                }
                                return Err(Error::Tls {
                                    context: format!("listener {}", l.name),
                                    message: errors
                                        .iter()
                                        .map(|e| e.message.as_str())
                                        .collect::<Vec<_>>()
                                        .join("; "),
                                });
                            }
                        },
                        _ => None,
                    };
                    match self.shared_for(
                        l,
                        &pools,
                        &routes,
                        &r.ctx.metrics,
                        Some((&r.config, &old.access_log)),
                    ) {
                        Ok(s) => {
                            keep.push((i, s));
                            new_keys.extend(key);
                        }
                        Err(e) => {
                            for r in started {
                                let r: RunningListener = r;
                                r.ctx.stop.cancel();
                            }
                            return Err(e);
                        }
                    }
                }
                None => match self.start_listener(l, &pools, &routes) {
                    Ok(r) => started.push(r),
                    Err(e) => {
                        for r in started {
                            r.ctx.stop.cancel();
                        }
                        return Err(e);
                    }
                },
            }
        }
        // Commit.
        for (tls, key) in new_keys {
            tls.install(key);
        }
        let mut old = std::mem::take(&mut st.listeners);
        let mut next = Vec::new();
        let kept_idx: Vec<usize> = keep.iter().map(|(i, _)| *i).collect();
        for (i, shared) in keep {
            let r = &mut old[i];
            r.config = shared.config.clone();
            r.ctx.shared.store(Arc::new(shared));
        }
        for (i, r) in old.into_iter().enumerate() {
            if kept_idx.contains(&i) {
                next.push(r);
            } else {
                tracing::info!(listener = %r.config.name, address = %r.config.listen, "listener stopped by reload");
                r.ctx.stop.cancel();
                summary.listeners_removed += 1;
                self.retired
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(r.ctx);
            }
        }
        summary.listeners_added = started.len();
        next.extend(started);
        st.listeners = next;
        st.pools = pools;
        self.reconcile_health(config, &st.pools);
        Ok(summary)
    }

    /// Points the health checks at the pools now in use (backends that stay
    /// keep their health state; removed ones stop being checked).
    fn reconcile_health(&self, config: &Config, pools: &[Arc<Pool>]) {
        if let Err(e) = self.health.reconcile(config, pools) {
            // validate() passed before the commit, so only a CA file changed
            // meanwhile gets here: the previous checks keep running.
            tracing::error!(error = %e, "health checks not updated");
        }
    }

    /// The health monitor: subscribe to its events, read its pool counts.
    pub fn health(&self) -> &HealthMonitor {
        &self.health
    }

    /// Asks every access log writer to reopen its file (SIGUSR1).
    pub fn reopen_logs(&self) {
        let st = self.lock();
        for r in &st.listeners {
            if let Some(log) = &r.ctx.shared.load().access_log {
                log.reopen();
            }
        }
    }

    /// Whether every listener that sends queries to pool `pool` is running
    /// (its tasks are alive and it was not stopped). True when no listener
    /// uses the pool.
    pub fn pool_listeners_running(&self, pool: &str) -> bool {
        self.lock()
            .listeners
            .iter()
            .filter(|r| r.config.pool == pool)
            .all(|r| !r.ctx.stop.is_cancelled() && !r.ctx.tasks.is_empty())
    }

    /// The pools, in configured order.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.lock().pools.clone()
    }

    /// Stops accepting, lets queries in flight finish (at most `grace`), and
    /// returns whether everything drained in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.health.stop();
        let mut ctxs: Vec<Arc<ListenerCtx>> = {
            let st = self.lock();
            st.listeners.iter().map(|r| Arc::clone(&r.ctx)).collect()
        };
        ctxs.extend(
            self.retired
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .drain(..),
        );
        for c in &ctxs {
            c.stop.cancel();
        }
        let all = async {
            for c in &ctxs {
                c.tasks.wait().await;
            }
        };
        tokio::time::timeout(grace, all).await.is_ok()
    }

    /// A snapshot for `/status`.
    pub fn status(&self) -> Status {
        let st = self.lock();
        Status {
            pools: st
                .pools
                .iter()
                .map(|p| {
                    let snap = p.snapshot();
                    PoolStatus {
                        name: p.name().to_string(),
                        policy: snap.policy().name().to_string(),
                        backends: snap
                            .backends()
                            .iter()
                            .map(|b| BackendStatus {
                                name: b.name().to_string(),
                                address: b.address(),
                                state: b.state().as_str().to_string(),
                                weight: b.weight(),
                                outstanding: b.outstanding(),
                                queries: b.queries(),
                                failures: b.failures(),
                                health: self.health.backend(p.name(), b.name()).map(|h| {
                                    let mut text = format!("{}: {}", h.check, h.health.as_str());
                                    if let Some(r) = h.reason {
                                        text.push_str(&format!(" ({r})"));
                                    }
                                    text
                                }),
                            })
                            .collect(),
                    }
                })
                .collect(),
            listeners: st
                .listeners
                .iter()
                .map(|r| {
                    let m = &r.ctx.metrics;
                    ListenerStatus {
                        name: r.config.name.clone(),
                        protocol: r.config.protocol.as_str().to_string(),
                        address: r.config.listen,
                        pool: r.config.pool.clone(),
                        queries: get(&m.queries),
                        answers: get(&m.answers),
                        servfail: get(&m.servfail),
                        dropped: m.drops_total(),
                        connections: get(&m.connections),
                    }
                })
                .collect(),
        }
    }

    /// Metrics in the Prometheus text format, series named `dnsha_*`.
    pub fn prometheus(&self) -> String {
        let st = self.lock();
        let mut out = String::with_capacity(4096);
        let mut series = |name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>| {
            out.push_str(&format!(
                "# HELP dnsha_{name} {help}\n# TYPE dnsha_{name} {kind}\n"
            ));
            for (labels, v) in rows {
                if labels.is_empty() {
                    out.push_str(&format!("dnsha_{name} {v}\n"));
                } else {
                    out.push_str(&format!("dnsha_{name}{{{labels}}} {v}\n"));
                }
            }
        };
        let ls = |r: &RunningListener| {
            format!(
                "listener=\"{}\",protocol=\"{}\"",
                r.config.name,
                r.config.protocol.as_str()
            )
        };
        type Pick = fn(&ListenerMetrics) -> u64;
        let listener_counters: [(&str, &str, Pick); 10] = [
            ("queries_total", "Valid queries received.", |m| {
                get(&m.queries)
            }),
            (
                "answers_total",
                "Backend answers relayed to clients.",
                |m| get(&m.answers),
            ),
            (
                "servfail_total",
                "SERVFAIL answers made by the balancer.",
                |m| get(&m.servfail),
            ),
            (
                "refused_total",
                "REFUSED answers made by the balancer (ACL).",
                |m| get(&m.refused),
            ),
            (
                "retries_total",
                "Queries re-sent to another backend.",
                |m| get(&m.retries),
            ),
            ("timeouts_total", "Backend timeouts.", |m| get(&m.timeouts)),
            (
                "tcp_fallbacks_total",
                "DoH answers over UDP that were truncated, asked again over TCP.",
                |m| get(&m.tcp_fallbacks),
            ),
            ("connections_total", "Client connections accepted.", |m| {
                get(&m.connections_total)
            }),
            (
                "connections_refused_total",
                "Client connections refused by limits.",
                |m| get(&m.connections_refused),
            ),
            ("access_log_dropped_total", "Access log lines lost.", |m| {
                get(&m.log_dropped)
            }),
        ];
        for (name, help, pick) in listener_counters {
            series(
                name,
                help,
                "counter",
                st.listeners
                    .iter()
                    .map(|r| (ls(r), pick(&r.ctx.metrics)))
                    .collect(),
            );
        }
        series(
            "connections",
            "Client connections open now.",
            "gauge",
            st.listeners
                .iter()
                .map(|r| (ls(r), get(&r.ctx.metrics.connections)))
                .collect(),
        );
        let mut drops = Vec::new();
        for r in &st.listeners {
            for reason in DropReason::ALL {
                drops.push((
                    format!("{},reason=\"{}\"", ls(r), reason.as_str()),
                    r.ctx.metrics.drops(reason),
                ));
            }
        }
        series(
            "dropped_total",
            "Messages dropped, by reason.",
            "counter",
            drops,
        );
        let tls_listeners: Vec<&RunningListener> = st
            .listeners
            .iter()
            .filter(|r| matches!(r.config.protocol, Protocol::Dot | Protocol::Doh))
            .collect();
        let tls_counters: [(&str, &str, Pick); 7] = [
            (
                "tls_handshake_failures_total",
                "TLS handshakes that failed (not TLS, no common protocol).",
                |m| get(&m.tls_handshake_failures),
            ),
            (
                "tls_handshake_timeouts_total",
                "TLS handshakes not finished within handshake_timeout_ms.",
                |m| get(&m.tls_handshake_timeouts),
            ),
            (
                "tls_resumed_total",
                "TLS handshakes that resumed a session.",
                |m| get(&m.tls_resumed),
            ),
            (
                "http_rate_limited_total",
                "DoH requests over the per-client rate (429).",
                |m| get(&m.rate_limited),
            ),
            (
                "http_cancelled_total",
                "DoH requests abandoned by the client before their answer.",
                |m| get(&m.http_cancelled),
            ),
            (
                "http_abusive_closed_total",
                "DoH connections closed for too many reset or refused requests.",
                |m| get(&m.http_abusive_closed),
            ),
            (
                "http_protocol_errors_total",
                "DoH connections ended by an HTTP protocol error (oversized headers, bad frames).",
                |m| get(&m.http_protocol_errors),
            ),
        ];
        for (name, help, pick) in tls_counters {
            series(
                name,
                help,
                "counter",
                tls_listeners
                    .iter()
                    .map(|r| (ls(r), pick(&r.ctx.metrics)))
                    .collect(),
            );
        }
        let mut statuses = Vec::new();
        for r in tls_listeners
            .iter()
            .filter(|r| r.config.protocol == Protocol::Doh)
        {
            for (i, code) in HTTP_STATUSES.iter().enumerate() {
                let n = r.ctx.metrics.http_responses.get(i).map_or(0, get);
                let code = if *code == 0 {
                    "other".to_string()
                } else {
                    code.to_string()
                };
                statuses.push((format!("{},status=\"{code}\"", ls(r)), n));
            }
        }
        series(
            "http_responses_total",
            "DoH responses, by HTTP status.",
            "counter",
            statuses,
        );
        let backends: Vec<(String, Arc<Backend>)> = st
            .pools
            .iter()
            .flat_map(|p| {
                let name = p.name().to_string();
                p.snapshot()
                    .backends()
                    .iter()
                    .map(move |b| {
                        (
                            format!(
                                "pool=\"{}\",backend=\"{}\",address=\"{}\"",
                                name,
                                b.name(),
                                b.address()
                            ),
                            Arc::clone(b),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let rows = |f: fn(&Backend) -> u64| -> Vec<(String, u64)> {
            backends.iter().map(|(l, b)| (l.clone(), f(b))).collect()
        };
        series(
            "backend_up",
            "1 when the backend is up.",
            "gauge",
            rows(|b| u64::from(b.is_up())),
        );
        series(
            "backend_outstanding",
            "Queries in flight to the backend.",
            "gauge",
            rows(Backend::outstanding),
        );
        series(
            "backend_queries_total",
            "Queries sent to the backend.",
            "counter",
            rows(Backend::queries),
        );
        series(
            "backend_failures_total",
            "Failed queries to the backend.",
            "counter",
            rows(Backend::failures),
        );
        series(
            "backend_weight",
            "Configured weight.",
            "gauge",
            rows(|b| u64::from(b.weight())),
        );
        let globals = [
            (
                "tcp_upstream_unmatched_total",
                "Backend TCP answers matching no query.",
                self.tcp_upstreams.unmatched(),
            ),
            (
                "udp_upstream_unmatched_total",
                "Backend UDP answers to DoH queries matching no query.",
                get(&self.udp_upstreams.stats().unmatched),
            ),
            (
                "tls_upstream_failures_total",
                "TLS handshakes with DoT backends that failed.",
                get(&self.tcp_upstreams.stats().tls_failures),
            ),
        ];
        for (name, help, v) in globals {
            series(name, help, "counter", vec![(String::new(), v)]);
        }
        out.push_str(&self.health.prometheus());
        out
    }
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    /// Pools created.
    pub pools_added: usize,
    /// Pools whose policy changed.
    pub pools_changed: usize,
    /// Pools removed.
    pub pools_removed: usize,
    /// Listeners started.
    pub listeners_added: usize,
    /// Listeners stopped.
    pub listeners_removed: usize,
}

/// `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Status {
    /// Pools and their backends.
    pub pools: Vec<PoolStatus>,
    /// Listeners and their counters.
    pub listeners: Vec<ListenerStatus>,
}

/// One pool in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// Pool name.
    pub name: String,
    /// Policy name.
    pub policy: String,
    /// Backends in configured order.
    pub backends: Vec<BackendStatus>,
}

/// One backend in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BackendStatus {
    /// Backend name.
    pub name: String,
    /// Backend address.
    pub address: SocketAddr,
    /// `"up"` or `"down"`.
    pub state: String,
    /// Weight.
    pub weight: u32,
    /// Queries in flight.
    pub outstanding: u64,
    /// Queries sent since start.
    pub queries: u64,
    /// Failed queries since start.
    pub failures: u64,
    /// The health check and its verdict with the reason of the last
    /// transition (`dns: down (3 consecutive timeouts (200 ms))`), when the
    /// backend is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// One listener in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ListenerStatus {
    /// Listener name.
    pub name: String,
    /// Protocol.
    pub protocol: String,
    /// Bound address.
    pub address: SocketAddr,
    /// Pool name.
    pub pool: String,
    /// Valid queries received.
    pub queries: u64,
    /// Answers relayed.
    pub answers: u64,
    /// SERVFAIL made by the balancer.
    pub servfail: u64,
    /// Messages dropped (all reasons).
    pub dropped: u64,
    /// Client connections open (TCP).
    pub connections: u64,
}
