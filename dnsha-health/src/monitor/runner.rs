//! The task of one checked backend: probe at the interval (with jitter),
//! take passive signals, feed the state machine, apply and publish.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::HealthConfig;
use dnsha_core::{BackendState, PassiveSignal};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{lock, pool_health, Hub, Setup, Task};
use crate::check::Target;
use crate::events::HealthEvent;
use crate::state::{FailureReason, Health, HealthState, Input, Transition};

/// The task of one backend.
pub(super) struct Runner {
    pub(super) task: Arc<Task>,
    pub(super) hub: Arc<Hub>,
    pub(super) passive: mpsc::Receiver<PassiveSignal>,
    pub(super) setup: watch::Receiver<Setup>,
}

/// Scales `d` by a random factor in [0.9, 1.0]: checks of many backends
/// drift apart, and never later than configured (so the detection bounds
/// hold).
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.9..=1.0))
}

impl Runner {
    pub(super) async fn run(mut self) {
        let setup = self.setup.borrow_and_update().clone();
        let mut cfg = Arc::clone(&setup.config);
        let mut checker = setup.checker;
        let backend = self.task.backend.load_full();
        let mut state = match backend.state() {
            BackendState::Up => HealthState::new(cfg.rise, cfg.fall, cfg.passive_threshold),
            _ => HealthState::down(cfg.rise, cfg.fall, cfg.passive_threshold),
        };
        // The first probe soon, at a random point, so backends added together
        // are not probed together.
        let first = Duration::from_millis(cfg.interval_ms.min(250));
        let mut next = Instant::now() + first.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
        let mut last_start: Option<Instant> = None;
        let stop = self.task.stop.clone();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                changed = self.setup.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let s = self.setup.borrow_and_update().clone();
                    let interval = Duration::from_millis(s.config.interval_ms);
                    state.reconfigure(s.config.rise, s.config.fall, s.config.passive_threshold);
                    cfg = s.config;
                    checker = s.checker;
                    lock(&self.task.report).check = cfg.check;
                    next = next.min(Instant::now() + interval);
                }
                () = self.task.now.notified() => {
                    tracing::info!(
                        pool = %self.task.key.pool,
                        backend = %self.task.key.backend,
                        "health check forced"
                    );
                    next = Instant::now();
                }
                Some(signal) = self.passive.recv() => {
                    let was_suspect = state.is_suspect();
                    if let Some(t) = state.observe(Input::Passive(signal)) {
                        self.apply(&state, t, &cfg);
                    }
                    if state.is_suspect() {
                        if !was_suspect {
                            self.task.metrics.suspect();
                            tracing::debug!(
                                pool = %self.task.key.pool,
                                backend = %self.task.key.backend,
                                reason = signal.kind.as_str(),
                                run = signal.run,
                                "backend suspect: probing now"
                            );
                        }
                        let gap = Duration::from_millis((cfg.interval_ms / 4).max(50));
                        let earliest = last_start.map_or_else(Instant::now, |s| s + gap);
                        next = next.min(earliest.max(Instant::now()));
                    }
                }
                () = tokio::time::sleep_until(next) => {
                    // Live traffic may have marked it down meanwhile, and the
                    // signal been lost.
                    let backend = self.task.backend.load_full();
                    if state.is_up() && backend.state() == BackendState::DownByTraffic {
                        if let Some(t) = state.observe(Input::TrafficDown) {
                            self.apply(&state, t, &cfg);
                        }
                    }
                    let target = Target {
                        name: self.task.key.backend.clone(),
                        address: self.task.key.address,
                    };
                    let timeout = Duration::from_millis(cfg.timeout_ms);
                    let start = Instant::now();
                    last_start = Some(start);
                    let result = tokio::select! {
                        r = checker.probe(&target, timeout) => r,
                        () = stop.cancelled() => break,
                    };
                    let latency = start.elapsed();
                    let failure = result.as_ref().err().map(|f| f.reason);
                    self.task.metrics.probe(failure, latency);
                    let input = match &result {
                        Ok(()) => Input::ProbeOk,
                        Err(f) => {
                            tracing::debug!(
                                pool = %self.task.key.pool,
                                backend = %self.task.key.backend,
                                check = %cfg.check,
                                reason = f.reason.as_str(),
                                detail = %f.detail,
                                latency_ms = latency.as_millis() as u64,
                                "health check failed"
                            );
                            Input::ProbeFailed(f.reason)
                        }
                    };
                    if let Some(t) = state.observe(input) {
                        self.apply(&state, t, &cfg);
                    }
                    self.enforce(&state);
                    self.report(&state, failure);
                    let gap = if result.is_ok() {
                        Duration::from_millis(cfg.interval_ms)
                    } else {
                        Duration::from_millis(cfg.retry_interval())
                    };
                    next = (start + jittered(gap)).max(Instant::now());
                }
            }
        }
    }

    /// Applies a transition to the backend, logs it once, counts and
    /// publishes it, and the pool's if its last healthy backend went (or
    /// its first came back).
    fn apply(&self, state: &HealthState, t: Transition, cfg: &HealthConfig) {
        let task = &self.task;
        let backend = task.backend.load_full();
        let name = &task.key.backend;
        let pool = &task.key.pool;
        match t.to {
            Health::Down => {
                backend.set_state(BackendState::DownByCheck);
                tracing::warn!(
                    pool = %pool,
                    backend = %name,
                    address = %task.key.address,
                    check = %cfg.check,
                    reason = %t.reason,
                    "backend {name} down: {}",
                    t.reason
                );
            }
            Health::Up => {
                backend.set_state(BackendState::Up);
                tracing::info!(
                    pool = %pool,
                    backend = %name,
                    address = %task.key.address,
                    check = %cfg.check,
                    reason = %t.reason,
                    "backend {name} up: {}",
                    t.reason
                );
            }
        }
        task.metrics.transition(t.to == Health::Up);
        {
            let mut r = lock(&task.report);
            r.health = t.to;
            r.reason = Some(t.reason.to_string());
        }
        self.report(state, state.last_failure());
        let event = match t.to {
            Health::Down => HealthEvent::BackendDown {
                pool: pool.clone(),
                backend: name.clone(),
                address: task.key.address,
                reason: t.reason,
            },
            Health::Up => HealthEvent::BackendUp {
                pool: pool.clone(),
                backend: name.clone(),
                address: task.key.address,
                reason: t.reason,
            },
        };
        let _ = self.hub.events.send(event);
        self.pool_changed();
    }

    /// Publishes the pool's counts; a pool left without a healthy backend
    /// (or getting one back) is an event of its own.
    fn pool_changed(&self) {
        let entry = &self.task.pool;
        let health = pool_health(&entry.pool.load());
        let healthy = health.up > 0;
        let changed = {
            let mut last = lock(&entry.healthy);
            let was = last.replace(healthy);
            was.unwrap_or(true) != healthy
        };
        if changed {
            if healthy {
                tracing::info!(pool = %entry.name, up = health.up, "pool {} has a healthy backend again", entry.name);
                let _ = self.hub.events.send(HealthEvent::PoolUp {
                    pool: entry.name.clone(),
                    up: health.up,
                });
            } else {
                entry.no_backend.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    pool = %entry.name,
                    total = health.total,
                    "pool {} has no healthy backend",
                    entry.name
                );
                let _ = self.hub.events.send(HealthEvent::PoolDown {
                    pool: entry.name.clone(),
                });
            }
        }
        self.hub.pools.send_modify(|m| {
            m.insert(entry.name.clone(), health);
        });
    }

    /// Keeps the backend's state in line with the checker's verdict (a
    /// backend the checker holds down stays down whatever traffic says).
    fn enforce(&self, state: &HealthState) {
        let backend = self.task.backend.load_full();
        let want = if state.is_up() {
            BackendState::Up
        } else {
            BackendState::DownByCheck
        };
        let have = backend.state();
        if have != want && !(want == BackendState::Up && have == BackendState::DownByTraffic) {
            backend.set_state(want);
        }
    }

    fn report(&self, state: &HealthState, failure: Option<FailureReason>) {
        let mut r = lock(&self.task.report);
        r.health = state.health();
        r.good_run = state.good_run();
        r.bad_run = state.bad_run();
        r.last_failure = failure.map(|f| f.to_string());
    }
}
