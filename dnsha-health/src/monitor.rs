//! The scheduler: one tokio task per checked backend, probing at its
//! interval (with jitter), feeding [`HealthState`], applying transitions to
//! [`Backend::set_state`], logging, counting and publishing them.
//!
//! It never runs on the data path: probes use their own sockets and tasks.
//! The data path only reaches it through the [`PassiveObserver`] set on each
//! pool, which posts a signal to a bounded channel without waiting.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use dnsha_core::config::{Config, HealthConfig};
use dnsha_core::{Backend, BackendId, BackendState, PassiveObserver, PassiveSignal, Pool};
use tokio::runtime::Handle;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::check::Checker;
use crate::error::{Error, Result};
use crate::events::{BackendHealth, HealthEvent, PoolHealth};
use crate::metrics::{CheckMetrics, Families};
use crate::state::{FailureReason, Health};

/// Passive signals queued per backend before new ones are dropped (the
/// backend's state is looked at before every probe, so a lost "marked down"
/// is still seen).
const PASSIVE_QUEUE: usize = 64;

/// Events kept for slow subscribers.
const EVENT_QUEUE: usize = 1024;

/// Runs the health checks of every pool; see the crate documentation.
///
/// Cloning gives another handle to the same monitor.
#[derive(Clone)]
pub struct HealthMonitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("tasks", &self.inner.lock().tasks.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    runtime: Handle,
    hub: Arc<Hub>,
    registry: Mutex<Registry>,
    stop: CancellationToken,
}

/// Where tasks publish.
struct Hub {
    events: broadcast::Sender<HealthEvent>,
    pools: watch::Sender<BTreeMap<String, PoolHealth>>,
}

#[derive(Default)]
struct Registry {
    pools: Vec<Arc<PoolEntry>>,
    tasks: Vec<Arc<Task>>,
}

struct PoolEntry {
    name: String,
    pool: ArcSwap<Pool>,
    /// Whether the pool had a healthy backend when last looked at.
    healthy: Mutex<Option<bool>>,
    /// "Pool has no healthy backend" events.
    no_backend: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    pool: String,
    backend: String,
    address: SocketAddr,
}

#[derive(Clone)]
struct Setup {
    config: Arc<HealthConfig>,
    checker: Arc<Checker>,
}

struct Task {
    key: Key,
    pool: Arc<PoolEntry>,
    backend: ArcSwap<Backend>,
    setup: watch::Sender<Setup>,
    passive: mpsc::Sender<PassiveSignal>,
    metrics: CheckMetrics,
    report: Mutex<BackendHealth>,
    stop: CancellationToken,
    /// Probe at once ([`HealthMonitor::check_now`]).
    now: tokio::sync::Notify,
}

/// The observer set on a pool: routes signals to the backend's task.
struct Observer {
    by_id: HashMap<BackendId, mpsc::Sender<PassiveSignal>>,
}

impl PassiveObserver for Observer {
    fn observe(&self, backend: &Backend, signal: PassiveSignal) {
        if let Some(tx) = self.by_id.get(&backend.id()) {
            // Full: drop it; the task looks at the backend's state anyway.
            let _ = tx.try_send(signal);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }
}

/// The checked backends of `config` found in `pools`: key, backend value and
/// effective check.
fn plan(config: &Config, pools: &[Arc<Pool>]) -> Vec<(Key, Arc<Pool>, Arc<Backend>, HealthConfig)> {
    let mut out = Vec::new();
    for pc in &config.pools {
        let Some(pool) = pools.iter().find(|p| p.name() == pc.name) else {
            continue;
        };
        let snapshot = pool.snapshot();
        for bc in &pc.backends {
            let Some(hc) = pc.health_for(&bc.name).filter(|h| h.is_active()) else {
                continue;
            };
            let hc = hc.for_backend(bc);
            let Some(b) = snapshot
                .backends()
                .iter()
                .find(|b| b.name() == bc.name && b.address() == bc.address)
            else {
                continue;
            };
            out.push((
                Key {
                    pool: pc.name.clone(),
                    backend: bc.name.clone(),
                    address: bc.address,
                },
                Arc::clone(pool),
                Arc::clone(b),
                hc,
            ));
        }
    }
    out
}

impl HealthMonitor {
    /// A monitor with nothing to check yet, bound to the current tokio
    /// runtime (its tasks are spawned there).
    pub fn new() -> Result<Self> {
        let runtime = Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let (pools, _) = watch::channel(BTreeMap::new());
        Ok(Self {
            inner: Arc::new(Inner {
                runtime,
                hub: Arc::new(Hub { events, pools }),
                registry: Mutex::new(Registry::default()),
                stop: CancellationToken::new(),
            }),
        })
    }

    /// A monitor checking the backends of `pools` as `config` says.
    pub fn start(config: &Config, pools: &[Arc<Pool>]) -> Result<Self> {
        let m = Self::new()?;
        m.reconcile(config, pools)?;
        Ok(m)
    }

    /// Whether every check of `config` can be set up (TLS names and CA
    /// files), without changing anything: call it before committing a reload.
    pub fn validate(config: &Config) -> Result<()> {
        for pc in &config.pools {
            for bc in &pc.backends {
                if let Some(hc) = pc.health_for(&bc.name).filter(|h| h.is_active()) {
                    Checker::new(&hc.for_backend(bc)).map_err(|e| Error::Backend {
                        pool: pc.name.clone(),
                        backend: bc.name.clone(),
                        source: Box::new(e),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Makes the running checks match `config` and `pools` (call it after
    /// each reload, with the pools the data path now uses). Backends that
    /// stay keep their health state and schedule, and get any new settings;
    /// new ones are checked from now on; removed ones stop being checked,
    /// and a backend whose check was removed is released (set up). On error
    /// nothing changes.
    pub fn reconcile(&self, config: &Config, pools: &[Arc<Pool>]) -> Result<()> {
        let planned = plan(config, pools);
        let mut reg = self.inner.lock();
        // Build every new or changed checker first: an error changes nothing.
        let mut built: Vec<Option<Setup>> = Vec::with_capacity(planned.len());
        let mut cache: Vec<(HealthConfig, Arc<Checker>)> = Vec::new();
        for (key, _, _, hc) in &planned {
            let running = reg.tasks.iter().find(|t| t.key == *key);
            if running.is_some_and(|t| *t.setup.borrow().config == *hc) {
                built.push(None);
                continue;
            }
            let checker = match cache.iter().find(|(c, _)| c == hc) {
                Some((_, k)) => Arc::clone(k),
                None => {
                    let k = Arc::new(Checker::new(hc).map_err(|e| Error::Backend {
                        pool: key.pool.clone(),
                        backend: key.backend.clone(),
                        source: Box::new(e),
                    })?);
                    cache.push((hc.clone(), Arc::clone(&k)));
                    k
                }
            };
            built.push(Some(Setup {
                config: Arc::new(hc.clone()),
                checker,
            }));
        }
        // Pools.
        let mut entries = Vec::new();
        for p in pools {
            let entry = match reg.pools.iter().find(|e| e.name == p.name()) {
                Some(e) => {
                    e.pool.store(Arc::clone(p));
                    Arc::clone(e)
                }
                None => Arc::new(PoolEntry {
                    name: p.name().to_string(),
                    pool: ArcSwap::new(Arc::clone(p)),
                    healthy: Mutex::new(None),
                    no_backend: AtomicU64::new(0),
                }),
            };
            entries.push(entry);
        }
        // Tasks.
        let mut next: Vec<Arc<Task>> = Vec::with_capacity(planned.len());
        for ((key, _, backend, _), setup) in planned.into_iter().zip(built) {
            let Some(entry) = entries.iter().find(|e| e.name == key.pool) else {
                continue;
            };
            let existing = reg
                .tasks
                .iter()
                .position(|t| t.key == key)
                .map(|i| reg.tasks.swap_remove(i));
            match existing {
                Some(task) => {
                    task.backend.store(backend);
                    if let Some(setup) = setup {
                        task.setup.send_replace(setup);
                    }
                    next.push(task);
                }
                None => {
                    let Some(setup) = setup else { continue };
                    next.push(self.spawn(key, Arc::clone(entry), backend, setup));
                }
            }
        }
        // What is left was removed (or lost its check).
        for task in reg.tasks.drain(..) {
            task.stop.cancel();
            let backend = task.backend.load_full();
            let still_pooled = pools.iter().any(|p| {
                p.snapshot()
                    .backends()
                    .iter()
                    .any(|b| Arc::ptr_eq(b, &backend))
            });
            if still_pooled && backend.state() == BackendState::DownByCheck {
                backend.set_state(BackendState::Up);
                tracing::info!(
                    pool = %task.key.pool,
                    backend = %task.key.backend,
                    "backend {} up: health check removed",
                    task.key.backend
                );
            }
            tracing::debug!(pool = %task.key.pool, backend = %task.key.backend, "health check stopped");
        }
        // Observers: each pool hears of its checked backends only.
        for p in pools {
            let by_id: HashMap<BackendId, mpsc::Sender<PassiveSignal>> = next
                .iter()
                .filter(|t| t.key.pool == p.name())
                .map(|t| (t.backend.load().id(), t.passive.clone()))
                .collect();
            if by_id.is_empty() {
                p.set_observer(None);
            } else {
                p.set_observer(Some(Arc::new(Observer { by_id })));
            }
        }
        reg.tasks = next;
        reg.pools = entries;
        let summary: BTreeMap<String, PoolHealth> = reg
            .pools
            .iter()
            .map(|e| (e.name.clone(), pool_health(&e.pool.load())))
            .collect();
        drop(reg);
        self.inner.hub.pools.send_replace(summary);
        Ok(())
    }

    fn spawn(
        &self,
        key: Key,
        pool: Arc<PoolEntry>,
        backend: Arc<Backend>,
        setup: Setup,
    ) -> Arc<Task> {
        let (passive, passive_rx) = mpsc::channel(PASSIVE_QUEUE);
        let (setup_tx, setup_rx) = watch::channel(setup.clone());
        let task = Arc::new(Task {
            report: Mutex::new(BackendHealth {
                check: setup.config.check,
                health: if backend.is_up() {
                    Health::Up
                } else {
                    Health::Down
                },
                reason: None,
                last_failure: None,
                good_run: 0,
                bad_run: 0,
            }),
            key,
            pool,
            backend: ArcSwap::new(backend),
            setup: setup_tx,
            passive,
            metrics: CheckMetrics::default(),
            stop: self.inner.stop.child_token(),
            now: tokio::sync::Notify::new(),
        });
        tracing::debug!(
            pool = %task.key.pool,
            backend = %task.key.backend,
            check = %setup.config.check,
            interval_ms = setup.config.interval_ms,
            "health check started"
        );
        let run = runner::Runner {
            task: Arc::clone(&task),
            hub: Arc::clone(&self.inner.hub),
            passive: passive_rx,
            setup: setup_rx,
        };
        self.inner.runtime.spawn(run.run());
        task
    }

    /// Health events: transitions of backends and pools. Each subscriber
    /// gets every event sent after it subscribed (a subscriber more than
    /// 1024 events behind loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.hub.events.subscribe()
    }

    /// Up and total backend counts per pool, updated at every transition
    /// (what a VRRP tracker watches).
    pub fn pools(&self) -> watch::Receiver<BTreeMap<String, PoolHealth>> {
        self.inner.hub.pools.subscribe()
    }

    /// What the checker knows of one backend, if it is checked.
    pub fn backend(&self, pool: &str, backend: &str) -> Option<BackendHealth> {
        let reg = self.inner.lock();
        reg.tasks
            .iter()
            .find(|t| t.key.pool == pool && t.key.backend == backend)
            .map(|t| lock(&t.report).clone())
    }

    /// Probes backend `backend` of `pool` at once, as an operator asks
    /// during an incident (the next probes follow at the interval from
    /// then); false when it is not checked.
    pub fn check_now(&self, pool: &str, backend: &str) -> bool {
        let reg = self.inner.lock();
        let task = reg
            .tasks
            .iter()
            .find(|t| t.key.pool == pool && t.key.backend == backend);
        if let Some(t) = task {
            t.now.notify_one();
        }
        task.is_some()
    }

    /// How many backends are checked.
    pub fn checked(&self) -> usize {
        self.inner.lock().tasks.len()
    }

    /// Stops every check (the backends keep their last state).
    pub fn stop(&self) {
        self.inner.stop.cancel();
        let reg = self.inner.lock();
        for p in &reg.pools {
            p.pool.load().set_observer(None);
        }
    }

    /// The checker's series in the Prometheus text format (`dnsha_health_*`,
    /// `dnsha_pool_*`).
    pub fn prometheus(&self) -> String {
        let reg = self.inner.lock();
        let mut f = Families::default();
        let labels = |t: &Task| {
            format!(
                "pool=\"{}\",backend=\"{}\",address=\"{}\"",
                t.key.pool, t.key.backend, t.key.address
            )
        };
        f.header(
            "health_check_duration_seconds",
            "Duration of health check probes (failed ones included).",
            "histogram",
        );
        for t in &reg.tasks {
            let l = format!("{},check=\"{}\"", labels(t), t.setup.borrow().config.check);
            f.histogram("health_check_duration_seconds", &l, &t.metrics);
        }
        f.header(
            "health_checks_total",
            "Health check probes by result.",
            "counter",
        );
        for t in &reg.tasks {
            f.line(
                "health_checks_total",
                &format!("{},result=\"ok\"", labels(t)),
                t.metrics.ok(),
            );
            f.line(
                "health_checks_total",
                &format!("{},result=\"failed\"", labels(t)),
                t.metrics.failed(),
            );
        }
        f.header(
            "health_check_failures_total",
            "Failed health check probes by reason.",
            "counter",
        );
        for t in &reg.tasks {
            for reason in failure_reasons() {
                f.line(
                    "health_check_failures_total",
                    &format!("{},reason=\"{}\"", labels(t), reason.as_str()),
                    t.metrics.failures(reason),
                );
            }
        }
        f.header(
            "health_transitions_total",
            "Backend state changes made by the health checker.",
            "counter",
        );
        for t in &reg.tasks {
            let (up, down) = t.metrics.transitions();
            f.line(
                "health_transitions_total",
                &format!("{},to=\"up\"", labels(t)),
                up,
            );
            f.line(
                "health_transitions_total",
                &format!("{},to=\"down\"", labels(t)),
                down,
            );
        }
        f.header(
            "health_suspect_total",
            "Early probes caused by failing live traffic (passive health).",
            "counter",
        );
        for t in &reg.tasks {
            f.line("health_suspect_total", &labels(t), t.metrics.suspicions());
        }
        f.header(
            "pool_backends_up",
            "Backends of the pool that are up.",
            "gauge",
        );
        for p in &reg.pools {
            let h = pool_health(&p.pool.load());
            f.line("pool_backends_up", &format!("pool=\"{}\"", p.name), h.up);
        }
        f.header(
            "pool_no_backend_events_total",
            "Times the last healthy backend of the pool went down.",
            "counter",
        );
        for p in &reg.pools {
            f.line(
                "pool_no_backend_events_total",
                &format!("pool=\"{}\"", p.name),
                p.no_backend.load(Ordering::Relaxed),
            );
        }
        f.finish()
    }
}

/// One value of each failure reason, for the metric labels.
fn failure_reasons() -> [FailureReason; FailureReason::LABELS.len()] {
    [
        FailureReason::Timeout(Duration::ZERO),
        FailureReason::Refused,
        FailureReason::ServFail,
        FailureReason::Rcode(0),
        FailureReason::BadAnswer,
        FailureReason::MissingAddress,
        FailureReason::Tls,
        FailureReason::HttpStatus(0),
        FailureReason::Exit(None),
        FailureReason::Local,
        FailureReason::Closed,
        FailureReason::NoResources,
    ]
}

fn pool_health(pool: &Pool) -> PoolHealth {
    let snap = pool.snapshot();
    PoolHealth {
        up: snap.backends().iter().filter(|b| b.is_up()).count(),
        total: snap.backends().len(),
    }
}

mod runner;
#[cfg(test)]
mod tests;
