//! # dnsha-health
//!
//! Active and passive health checking of dnsha backends.
//!
//! - [`state`]: the rise/fall state machine, a plain value
//!   ([`HealthState::observe`] takes a probe result or a passive signal and
//!   returns a [`Transition`] with its [`Reason`]); no clock, no I/O.
//! - [`check`]: the checkers (`dns`, `tcp`, `udp`, `tls`, `doh`, `exec`,
//!   `none`); each probe produces a result and nothing else.
//! - [`HealthMonitor`]: the tokio scheduler, one task per checked backend,
//!   with interval, timeout, rise, fall and jitter. It applies transitions to
//!   [`dnsha_core::Backend::set_state`], logs each one once with its reason
//!   (`backend coredns-002 down: 3 consecutive timeouts (200 ms)`), counts
//!   them ([`HealthMonitor::prometheus`]) and publishes them
//!   ([`HealthMonitor::subscribe`], [`HealthMonitor::pools`]), with a
//!   distinct [`HealthEvent::PoolDown`] when a pool has no healthy backend
//!   left.
//! - Passive health: the monitor sets a [`dnsha_core::PassiveObserver`] on
//!   each pool. Live timeouts, refusals and SERVFAIL answers reaching
//!   `passive_threshold` in a row make the backend suspect and probe it at
//!   once (dnsdist's lazy mode); a backend the pool's `max_fails` marked
//!   down by traffic is held down until `rise` good probes.
//!
//! ```no_run
//! # async fn example(config: dnsha_core::config::Config, pools: Vec<std::sync::Arc<dnsha_core::Pool>>) {
//! use dnsha_health::{HealthEvent, HealthMonitor};
//!
//! let monitor = HealthMonitor::start(&config, &pools).expect("checks set up");
//! let mut events = monitor.subscribe();
//! while let Ok(event) = events.recv().await {
//!     if let HealthEvent::PoolDown { pool } = event {
//!         eprintln!("pool {pool} has no healthy backend");
//!     }
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod error;
pub mod events;
pub mod metrics;
pub mod monitor;
pub mod state;

pub use check::{Checker, ProbeFailure, ProbeResult, Target};
pub use error::Error;
pub use events::{BackendHealth, HealthEvent, PoolHealth};
pub use monitor::HealthMonitor;
pub use state::{FailureReason, Health, HealthState, Input, Reason, Transition};
