//! The limits step: the configuration's `[[limit]]`s, a token-bucket table
//! each ([`dnsha_core::ratelimit::RateLimiter`]), checked for every valid
//! query before the rules.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dnsha_core::config::LimitConfig;
use dnsha_core::ratelimit::RateLimiter;
use dnsha_core::Millis;

/// One `[[limit]]` and its buckets.
#[derive(Debug)]
pub struct Limit {
    config: LimitConfig,
    limiter: RateLimiter,
    exceeded: AtomicU64,
}

impl Limit {
    /// An empty table for `config`.
    pub fn new(config: LimitConfig) -> Self {
        Self {
            limiter: RateLimiter::new(config.settings),
            config,
            exceeded: AtomicU64::new(0),
        }
    }

    /// The limit as configured.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    /// Takes one query from `client`'s bucket: true within the limit;
    /// false over it (counted).
    pub fn allow(&self, client: IpAddr, now: Millis) -> bool {
        let ok = self.limiter.allow(client, now);
        if !ok {
            self.exceeded.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Queries over the limit so far.
    pub fn exceeded(&self) -> u64 {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Client prefixes tracked now.
    pub fn clients(&self) -> usize {
        self.limiter.clients()
    }
}

/// The limits of a configuration.
#[derive(Debug, Default)]
pub struct Limits {
    all: Vec<Arc<Limit>>,
}

impl Limits {
    /// `configs`, in order. A limit of `previous` with the same name and
    /// settings is kept, buckets and counts: a reload does not hand every
    /// client a fresh burst.
    pub fn new(configs: &[LimitConfig], previous: Option<&Self>) -> Self {
        let all = configs
            .iter()
            .map(|c| {
                previous
                    .and_then(|p| p.all.iter().find(|l| l.config == *c))
                    .map_or_else(|| Arc::new(Limit::new(c.clone())), Arc::clone)
            })
            .collect();
        Self { all }
    }

    /// The limits that apply to the listener named `listener`.
    pub fn for_listener(&self, listener: &str) -> Vec<Arc<Limit>> {
        self.all
            .iter()
            .filter(|l| l.config.applies_to(listener))
            .map(Arc::clone)
            .collect()
    }

    /// Every limit, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Limit>> {
        self.all.iter()
    }
}
