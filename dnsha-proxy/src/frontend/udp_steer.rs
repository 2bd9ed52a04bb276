//! The I/O around [`super::steer::Steering`] for a UDP listener's workers.
//!
//! Every worker publishes, once per window, its thread's CPU time and how
//! many of its receives filled a whole batch ([`WorkerSteer::tick`]).
//! Worker 0, the leader, also turns the figures of all workers into a
//! [`Load`] each, asks [`Steering`] and carries out its answer on the
//! listener's reuseport group: a program sending new queries to the first
//! `active` sockets ([`sys::steer_reuseport`]), or none when all take them.
//!
//! The program belongs to the reuseport group, which a listener restarted
//! by a reload shares with its predecessor at the same address while that
//! one drains (its sockets first in the group). So the leader of a new
//! listener attaches nothing until its predecessors have finished, and a
//! leader that attached a program removes it when its listener stops.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dnsha_core::Millis;
use tokio_util::task::TaskTracker;

use super::steer::{Load, Steering, WINDOW_MS};
use crate::metrics::ListenerMetrics;
use crate::sys;

/// What one worker last published.
#[derive(Debug, Default)]
struct Published {
    cpu_ns: AtomicU64,
    full_batches: AtomicU64,
}

/// The steering state shared by a UDP listener's workers.
#[derive(Debug)]
pub struct SteerGroup {
    workers: Vec<Published>,
    adaptive: bool,
    /// Listeners at the same address still draining: their sockets are in
    /// the same group.
    predecessors: Vec<TaskTracker>,
    metrics: Arc<ListenerMetrics>,
}

impl SteerGroup {
    /// The group of a listener with `workers` workers; `adaptive` is the
    /// listener's `adaptive_workers`.
    pub fn new(
        workers: usize,
        adaptive: bool,
        predecessors: Vec<TaskTracker>,
        metrics: Arc<ListenerMetrics>,
    ) -> Arc<Self> {
        let workers = workers.max(1);
        set_gauge(&metrics, workers);
        Arc::new(Self {
            workers: (0..workers).map(|_| Published::default()).collect(),
            adaptive: adaptive && workers > 1,
            predecessors,
            metrics,
        })
    }

    /// The part of worker `index` (0 leads).
    pub fn worker(self: &Arc<Self>, index: usize) -> WorkerSteer {
        let leader = (index == 0).then(|| Leader {
            steering: Steering::new(self.workers.len()),
            previous: vec![(0, 0); self.workers.len()],
            previous_at: Millis::now(),
            phase: Phase::Waiting,
        });
        WorkerSteer {
            group: Arc::clone(self),
            index,
            next: Millis::now(),
            full_batches: 0,
            leader,
        }
    }

    fn snapshot(&self) -> Vec<(u64, u64)> {
        self.workers
            .iter()
            .map(|p| {
                (
                    p.cpu_ns.load(Ordering::Relaxed),
                    p.full_batches.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

fn set_gauge(metrics: &ListenerMetrics, active: usize) {
    metrics
        .udp_active_workers
        .store(u64::try_from(active).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// One worker's side of the steering.
#[derive(Debug)]
pub struct WorkerSteer {
    group: Arc<SteerGroup>,
    index: usize,
    next: Millis,
    full_batches: u64,
    leader: Option<Leader>,
}

impl WorkerSteer {
    /// Counts a receive of client queries that returned `n` of at most
    /// `batch`.
    pub fn on_receive(&mut self, n: usize, batch: usize) {
        if n >= batch {
            self.full_batches += 1;
        }
    }

    /// Publishes this worker's figures once per window and, on the leader,
    /// decides; `socket` is the worker's listening socket. A stopping
    /// leader removes its program at once.
    pub fn tick(&mut self, now: Millis, socket: &impl AsFd, stopping: bool) {
        if stopping {
            if let Some(l) = &mut self.leader {
                l.stop(socket, &self.group);
            }
            return;
        }
        if now < self.next {
            return;
        }
        self.next = now.plus(WINDOW_MS);
        if let Some(p) = self.group.workers.get(self.index) {
            p.cpu_ns.store(sys::thread_cpu_ns(), Ordering::Relaxed);
            p.full_batches.store(self.full_batches, Ordering::Relaxed);
        }
        if let Some(l) = &mut self.leader {
            l.decide(now, socket, &self.group);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Predecessors still draining: hands off the group.
    Waiting,
    /// Deciding each window (adaptive listeners).
    Steering,
    /// Nothing more to do (not adaptive, stopped, or the kernel refused).
    Done,
}

#[derive(Debug)]
struct Leader {
    steering: Steering,
    /// Each worker's (CPU ns, full batches) at the last decision.
    previous: Vec<(u64, u64)>,
    previous_at: Millis,
    phase: Phase,
}

impl Leader {
    fn decide(&mut self, now: Millis, socket: &impl AsFd, group: &SteerGroup) {
        match self.phase {
            Phase::Done => {}
            Phase::Waiting => {
                if group.predecessors.iter().any(|t| !t.is_empty()) {
                    return;
                }
                // The group is the listener's own now. A program left by a
                // predecessor that could not remove it goes.
                if let Err(e) = sys::unsteer_reuseport(socket) {
                    tracing::warn!(listener = %group.metrics.name, error = %e, "cannot reset the udp socket group");
                }
                self.previous = group.snapshot();
                self.previous_at = now;
                self.phase = if group.adaptive {
                    Phase::Steering
                } else {
                    Phase::Done
                };
            }
            Phase::Steering => self.steer(now, socket, group),
        }
    }

    fn steer(&mut self, now: Millis, socket: &impl AsFd, group: &SteerGroup) {
        let current = group.snapshot();
        let elapsed_ns = now.0.saturating_sub(self.previous_at.0).max(1) * 1_000_000;
        let loads: Vec<Load> = current
            .iter()
            .zip(&self.previous)
            .map(|(&(cpu, full), &(cpu0, full0))| Load {
                busy: cpu.saturating_sub(cpu0) as f64 / elapsed_ns as f64,
                full_batches: full.saturating_sub(full0),
            })
            .collect();
        self.previous = current;
        self.previous_at = now;
        let Some(active) = self.steering.observe(&loads) else {
            return;
        };
        let r = if active >= group.workers.len() {
            sys::unsteer_reuseport(socket)
        } else {
            sys::steer_reuseport(socket, active)
        };
        match r {
            Ok(()) => {
                tracing::debug!(listener = %group.metrics.name, active, ?loads, "udp workers taking queries");
                set_gauge(&group.metrics, active);
                group
                    .metrics
                    .udp_steering_changes
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(listener = %group.metrics.name, error = %e, "cannot steer udp queries; every worker takes them");
                self.stop(socket, group);
            }
        }
    }

    /// Leaves the group as the kernel would have it without steering.
    fn stop(&mut self, socket: &impl AsFd, group: &SteerGroup) {
        if self.phase == Phase::Steering {
            if let Err(e) = sys::unsteer_reuseport(socket) {
                tracing::warn!(listener = %group.metrics.name, error = %e, "cannot reset the udp socket group");
            }
            set_gauge(&group.metrics, group.workers.len());
        }
        self.phase = Phase::Done;
    }
}
