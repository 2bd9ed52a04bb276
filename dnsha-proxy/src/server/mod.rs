//! The running balancer: pools and listeners built from a [`Config`],
//! reloaded in place and shut down gracefully.
//!
//! Split by job: [`bind`](self) starts a listener's sockets and workers,
//! `reload` diffs and applies a new configuration (with its rollback
//! written once), `status` and `prometheus` render `/status` and
//! `/metrics`.

mod bind;
mod inherit;
mod prometheus;
mod reload;
mod status;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dnsha_core::config::{Config, ListenerConfig, PoolConfig, Protocol};
use dnsha_core::{Backend, Pool};
use dnsha_health::HealthMonitor;
use tokio_util::task::TaskTracker;

pub use inherit::{socket_name, Inherited, SocketKind, Unusable};
pub use prometheus::Exposition;
pub use reload::{same_sockets, ReloadSummary};
pub use status::{BackendStatus, CacheStatus, ListenerStatus, PoolStatus, Status};

use crate::accesslog::AccessLog;
use crate::acl::Acl;
use crate::cache::PacketCache;
use crate::error::{Error, Result};
use crate::frontend::ListenerCtx;
use crate::metrics::ListenerMetrics;
use crate::pipeline::{DynBlocks, Limits, ListenerShared, Rules, Target};
use crate::tls::ServerTls;
use crate::upstream::stream::{TcpUpstreamSettings, TcpUpstreams};
use crate::upstream::udp::UdpUpstreams;
use crate::upstream::Routes;
use reload::Started;

struct RunningListener {
    config: ListenerConfig,
    ctx: Arc<ListenerCtx>,
    /// The certificate of a DoT or DoH listener, reloaded in place.
    tls: Option<Arc<ServerTls>>,
    /// A duplicate of each of its sockets, named, for a restart to hand
    /// over ([`Server::listening_sockets`]).
    sockets: Vec<(String, std::os::fd::OwnedFd)>,
}

/// Why a pool cannot answer ([`Server::pool_can_answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolUnable {
    /// No pool of that name any more.
    Gone,
    /// No backend up (or every one drained).
    NoBackendUp,
    /// A listener using it is not running.
    ListenerStopped,
}

impl std::fmt::Display for PoolUnable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Gone => "is gone",
            Self::NoBackendUp => "no backend up",
            Self::ListenerStopped => "a listener using it is not running",
        })
    }
}

struct State {
    pools: Vec<Arc<Pool>>,
    /// The packet cache of each pool that has one, by pool name.
    caches: Vec<(String, Arc<PacketCache>)>,
    /// The rules of the configuration in force.
    rules: Arc<Rules>,
    /// Its rate limits.
    limits: Arc<Limits>,
    /// Its dynamic blocks, if it has any.
    dynblocks: Option<Arc<DynBlocks>>,
    listeners: Vec<RunningListener>,
}

/// What the listeners of one configuration share: each pool as a query
/// target (the pool, how queries reach its backends over streams, its
/// packet cache), and the rules.
#[derive(Debug, Clone)]
struct Parts {
    targets: Vec<(String, Arc<Target>)>,
    rules: Arc<Rules>,
    limits: Arc<Limits>,
    dynblocks: Option<Arc<DynBlocks>>,
}

impl Parts {
    fn target(&self, pool: &str) -> Option<&Arc<Target>> {
        self.targets
            .iter()
            .find(|(name, _)| name == pool)
            .map(|(_, t)| t)
    }

    /// The caches, by pool name.
    fn caches(&self) -> Vec<(String, Arc<PacketCache>)> {
        self.targets
            .iter()
            .filter_map(|(name, t)| t.cache.clone().map(|c| (name.clone(), c)))
            .collect()
    }
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
    /// Sockets a previous process handed over, until a listener takes them.
    inherited: Mutex<Inherited>,
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

impl Server {
    /// Binds every listener of `config` and starts serving. Fails (and binds
    /// nothing) when a listener cannot bind.
    pub async fn start(config: &Config) -> Result<Arc<Self>> {
        Self::start_with(config, Inherited::default()).await
    }

    /// As [`Server::start`], listeners taking the sockets of `inherited`
    /// bound to their addresses before binding new ones (a restart: the
    /// queries queued on them meanwhile are served). The sockets no
    /// listener takes stay until [`Server::close_unused_inherited`].
    pub async fn start_with(config: &Config, inherited: Inherited) -> Result<Arc<Self>> {
        HealthMonitor::validate(config).map_err(|source| Error::Health { source })?;
        let health = HealthMonitor::new().map_err(|source| Error::Health { source })?;
        let pools: Vec<Arc<Pool>> = config.pools.iter().map(new_pool).collect();
        let server = Arc::new(Self {
            state: Mutex::new(State {
                pools: Vec::new(),
                caches: Vec::new(),
                rules: Arc::new(Rules::default()),
                limits: Arc::new(Limits::default()),
                dynblocks: None,
                listeners: Vec::new(),
            }),
            tcp_upstreams: Arc::new(TcpUpstreams::new(TcpUpstreamSettings::default())),
            udp_upstreams: Arc::new(UdpUpstreams::new()),
            retired: Mutex::new(Vec::new()),
            health,
            inherited: Mutex::new(inherited),
        });
        let mut started = Started::default();
        let parts = server.parts_for(config, &pools, &[], None, None, None)?;
        for l in &config.listeners {
            started.push(server.start_listener(l, &parts, Vec::new())?);
        }
        {
            let mut st = server.lock();
            st.pools = pools;
            st.caches = parts.caches();
            st.rules = Arc::clone(&parts.rules);
            st.limits = Arc::clone(&parts.limits);
            st.dynblocks.clone_from(&parts.dynblocks);
            st.listeners = started.commit();
            server.reconcile_health(config, &st.pools);
        }
        spawn_dynblock_ticks(&server);
        Ok(server)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream routes (TLS client configurations built) and the packet
    /// cache of every pool: a cache of `old` is kept when its pool's cache
    /// settings did not change, so a reload keeps the answers.
    ///
    /// `pools` are the running pools of `config`; the rules keep the match
    /// counts of `old_rules` by rule name.
    fn parts_for(
        &self,
        config: &Config,
        pools: &[Arc<Pool>],
        old: &[(String, Arc<PacketCache>)],
        old_rules: Option<&Rules>,
        old_limits: Option<&Limits>,
        old_dynblocks: Option<&DynBlocks>,
    ) -> Result<Parts> {
        let targets = config
            .pools
            .iter()
            .filter_map(|p| {
                let pool = pools.iter().find(|running| running.name() == p.name)?;
                Some((p, Arc::clone(pool)))
            })
            .map(|(p, pool)| {
                let cache = p.cache.map(|c| {
                    old.iter()
                        .find(|(name, old)| *name == p.name && *old.config() == c)
                        .map_or_else(|| Arc::new(PacketCache::new(c)), |(_, old)| Arc::clone(old))
                });
                let routes = Arc::new(Routes::new(p, &self.tcp_upstreams)?);
                let target = Target {
                    pool,
                    routes,
                    cache,
                };
                Ok((p.name.clone(), Arc::new(target)))
            })
            .collect::<Result<Vec<_>>>()?;
        let target_of = |name: &str| {
            targets
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| Arc::clone(t))
        };
        let rules = Arc::new(Rules::new(config.rules.clone(), target_of, old_rules));
        let limits = Arc::new(Limits::new(&config.limits, old_limits));
        let dynblocks = (!config.dynamic_blocks.is_empty())
            .then(|| Arc::new(DynBlocks::new(config.dynamic_blocks.clone(), old_dynblocks)));
        Ok(Parts {
            targets,
            rules,
            limits,
            dynblocks,
        })
    }

    fn shared_for(
        &self,
        l: &ListenerConfig,
        parts: &Parts,
        metrics: &Arc<ListenerMetrics>,
        old_log: Option<(&ListenerConfig, &Option<AccessLog>)>,
    ) -> Result<ListenerShared> {
        let target = parts
            .target(&l.pool)
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
            target,
            rules: Arc::clone(&parts.rules),
            limits: parts.limits.for_listener(&l.name),
            dynblocks: parts.dynblocks.clone(),
            acl: Acl::new(l.allow.clone()),
            access_log,
        })
    }

    /// The tasks of the listeners at `listen` over UDP, running (`st`) or
    /// retired and maybe still draining: a new UDP listener there shares
    /// their reuseport group until they are gone.
    fn udp_listeners_at(&self, st: &State, listen: std::net::SocketAddr) -> Vec<TaskTracker> {
        let udp_at =
            |c: &ListenerCtx| c.metrics.protocol == Protocol::Udp && c.metrics.address == listen;
        let retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        st.listeners
            .iter()
            .map(|r| &r.ctx)
            .chain(retired.iter())
            .filter(|c| udp_at(c) && !c.tasks.is_empty())
            .map(|c| c.tasks.clone())
            .collect()
    }

    /// The dynamic blocks in force.
    pub fn blocks(&self) -> Vec<dnsha_core::dynblock::Block> {
        self.lock()
            .dynblocks
            .as_ref()
            .map(|d| d.blocks())
            .unwrap_or_default()
    }

    /// Lifts the dynamic block of exactly `prefix`; logged.
    pub fn lift_block(&self, prefix: ipnet::IpNet) -> Option<dnsha_core::dynblock::Block> {
        let d = self.lock().dynblocks.clone()?;
        let b = d.lift(prefix)?;
        tracing::info!(prefix = %b.prefix, rule = %b.rule, "dynamic block lifted by the operator");
        Some(b)
    }

    /// One evaluation of the dynamic blocks (once a second): new blocks and
    /// ended ones are logged.
    fn dynblock_tick(&self) {
        let Some(d) = self.lock().dynblocks.clone() else {
            return;
        };
        let now = dnsha_core::Millis::now();
        let t = d.tick(now);
        for b in t.added {
            let secs = b.until.0.saturating_sub(now.0) / 1000;
            tracing::warn!(prefix = %b.prefix, rule = %b.rule, reason = %b.reason, action = b.action.as_str(), seconds = secs, "dynamic block added");
        }
        for b in t.lifted {
            tracing::info!(prefix = %b.prefix, rule = %b.rule, "dynamic block expired");
        }
    }

    /// Keeps a listener stopped by a reload until it has drained, so that
    /// shutdown waits for it too.
    fn retire(&self, ctx: Arc<ListenerCtx>) {
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ctx);
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

    /// Whether pool `pool` can answer (what VRRP's `track_pools` and the
    /// `[[anycast]]` sections track): it exists, a backend is up and not
    /// drained, and the listeners that use it are running; why not, if not.
    pub fn pool_can_answer(&self, pool: &str) -> std::result::Result<(), PoolUnable> {
        let pools = self.pools();
        let Some(p) = pools.iter().find(|p| p.name() == pool) else {
            return Err(PoolUnable::Gone);
        };
        if !p.snapshot().any_up() {
            return Err(PoolUnable::NoBackendUp);
        }
        if !self.pool_listeners_running(pool) {
            return Err(PoolUnable::ListenerStopped);
        }
        Ok(())
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

    /// The packet cache of pool `pool`, if the pool exists and has one.
    pub fn cache(&self, pool: &str) -> Option<Arc<PacketCache>> {
        self.lock()
            .caches
            .iter()
            .find(|(name, _)| name == pool)
            .map(|(_, c)| Arc::clone(c))
    }

    /// The pools, in configured order.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.lock().pools.clone()
    }

    /// The counters of the running listeners, in configured order.
    pub fn listener_metrics(&self) -> Vec<Arc<ListenerMetrics>> {
        self.lock()
            .listeners
            .iter()
            .map(|r| Arc::clone(&r.ctx.metrics))
            .collect()
    }

    /// An inherited socket of `kind` bound to `addr`, if one is left.
    fn take_inherited(
        &self,
        kind: SocketKind,
        addr: std::net::SocketAddr,
    ) -> Option<socket2::Socket> {
        self.inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(kind, addr)
    }

    /// Closes the inherited sockets no listener took; their names.
    pub fn close_unused_inherited(&self) -> Vec<String> {
        self.inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .close_rest()
    }

    /// A duplicate of every listening socket, with its name
    /// ([`socket_name`]): what a restart hands to the next process.
    pub fn listening_sockets(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        let st = self.lock();
        st.listeners
            .iter()
            .flat_map(|r| r.sockets.iter())
            .filter_map(|(name, fd)| Some((name.clone(), fd.try_clone().ok()?)))
            .collect()
    }

    /// Stops accepting, lets queries in flight finish (at most `grace`), and
    /// returns whether everything drained in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.health.stop();
        let deadline = tokio::time::Instant::now() + grace;
        // Stream listeners first: while their connections drain, UDP still
        // serves, so a restart's gap without a reader (the new process
        // starts when this one has exited) is only as long as the UDP
        // queries in flight take.
        let (udp, mut first): (Vec<Arc<ListenerCtx>>, Vec<Arc<ListenerCtx>>) = {
            let st = self.lock();
            let (udp, stream): (Vec<_>, Vec<_>) = st
                .listeners
                .iter()
                .partition(|r| r.config.protocol == Protocol::Udp);
            (
                udp.iter().map(|r| Arc::clone(&r.ctx)).collect(),
                stream.iter().map(|r| Arc::clone(&r.ctx)).collect(),
            )
        };
        first.extend(
            self.retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..),
        );
        let mut all_done = true;
        for batch in [first, udp] {
            for c in &batch {
                c.stop.cancel();
            }
            let all = async {
                for c in &batch {
                    c.tasks.wait().await;
                }
            };
            all_done &= tokio::time::timeout_at(deadline, all).await.is_ok();
        }
        all_done
    }
}

/// Evaluates the dynamic blocks once a second for as long as the server
/// lives (a configuration without any costs one lock a second).
fn spawn_dynblock_ticks(server: &Arc<Server>) {
    let weak = Arc::downgrade(server);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(server) = weak.upgrade() else {
                return;
            };
            server.dynblock_tick();
        }
    });
}
