//! # dnsha-core
//!
//! The embeddable part of dnsha, free of any async runtime: backends with
//! their health state and live counters, balancing [`Policy`] implementations
//! (`rr`, `wrr`, `lc`, `first`, or your own), [`Pool`]s whose backend set is
//! held in an [`arc_swap::ArcSwap`] so the data path reads it without locks
//! and a reload swaps it atomically, and the [`config`] model.
//!
//! ```
//! use std::sync::Arc;
//! use dnsha_core::{Backend, Millis, Pool, PolicyKind, PoolSettings};
//!
//! // Smooth weighted round robin, 3:1.
//! let pool = Pool::new("dns", PolicyKind::WeightedRoundRobin, PoolSettings::default(), vec![
//!     Arc::new(Backend::new("big", "192.0.2.1:53".parse().unwrap(), 3)),
//!     Arc::new(Backend::new("small", "192.0.2.2:53".parse().unwrap(), 1)),
//! ]);
//! let names: Vec<String> = (0..4)
//!     .map(|_| pool.pick(&[], Millis::now()).unwrap().backend().name().to_string())
//!     .collect();
//! assert_eq!(names, ["big", "big", "small", "big"]);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod anycast;
pub mod backend;
pub mod clock;
pub mod config;
pub mod doq;
pub mod dynblock;
pub mod error;
pub mod frame;
pub mod latency;
pub mod policy;
pub mod pool;
pub mod ratelimit;
pub mod rules;

pub use backend::{
    Backend, BackendId, BackendState, FailureKind, InFlight, PassiveLimits, Transition,
};
pub use clock::Millis;
pub use error::{ConfigError, Error};
pub use policy::{Candidates, HashKey, HashedKey, Policy, PolicyKind};
pub use pool::{
    BackendSet, OnNoBackend, PassiveObserver, PassiveSignal, PolicyFactory, Pool, PoolSettings,
};
