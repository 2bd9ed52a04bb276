//! `/status`: pools, backends and listeners as JSON (what `dnsha status`
//! prints, like `ipvsadm -Ln`).

use std::net::SocketAddr;

use dnsha_core::latency::LatencySnapshot;
use serde::Serialize;

use super::Server;
use crate::cache::PacketCache;
use crate::metrics::get;

impl Server {
    /// A snapshot for `/status`.
    pub fn status(&self) -> Status {
        let st = self.lock();
        Status {
            pools: st
                .pools
                .iter()
                .map(|p| {
                    let snap = p.snapshot();
                    let cache = st
                        .caches
                        .iter()
                        .find(|(name, _)| name == p.name())
                        .map(|(_, c)| CacheStatus::of(c));
                    PoolStatus {
                        cache,
                        name: p.name().to_string(),
                        policy: snap.policy().name().to_string(),
                        backends: snap
                            .backends()
                            .iter()
                            .map(|b| BackendStatus {
                                name: b.name().to_string(),
                                address: b.address(),
                                state: if b.is_drained() {
                                    "drain".to_string()
                                } else {
                                    b.state().as_str().to_string()
                                },
                                weight: b.weight(),
                                outstanding: b.outstanding(),
                                queries: b.queries(),
                                failures: b.failures(),
                                latency: Percentiles::of(&b.latency()),
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
                        latency: Percentiles::of(&m.latency.snapshot()),
                    }
                })
                .collect(),
            blocks: st
                .dynblocks
                .as_ref()
                .map(|d| {
                    let now = dnsha_core::Millis::now();
                    d.blocks()
                        .into_iter()
                        .map(|b| BlockStatus {
                            prefix: b.prefix.to_string(),
                            rule: b.rule.clone(),
                            reason: b.reason.clone(),
                            action: b.action.as_str().to_string(),
                            seconds_left: b.until.0.saturating_sub(now.0).div_ceil(1000),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            rules: st
                .rules
                .counts()
                .map(|(name, n)| CountStatus {
                    name: name.to_string(),
                    count: n,
                })
                .collect(),
            limits: st
                .limits
                .iter()
                .map(|l| CountStatus {
                    name: l.config().name.clone(),
                    count: l.exceeded(),
                })
                .collect(),
        }
    }
}

/// `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Status {
    /// Pools and their backends.
    pub pools: Vec<PoolStatus>,
    /// Listeners and their counters.
    pub listeners: Vec<ListenerStatus>,
    /// Dynamic blocks in force.
    #[serde(default)]
    pub blocks: Vec<BlockStatus>,
    /// Each `[[rule]]` and the queries it matched.
    #[serde(default)]
    pub rules: Vec<CountStatus>,
    /// Each `[[limit]]` and the queries over it.
    #[serde(default)]
    pub limits: Vec<CountStatus>,
}

/// A named counter in `/status`: a rule's matches, a limit's excess.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CountStatus {
    /// The rule's or limit's name.
    pub name: String,
    /// Its count since start.
    pub count: u64,
}

/// A dynamic block in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BlockStatus {
    /// The blocked prefix.
    pub prefix: String,
    /// The `[[dynamic_block]]` that set it.
    pub rule: String,
    /// The threshold crossed.
    pub reason: String,
    /// What its queries get.
    pub action: String,
    /// Seconds until it ends.
    pub seconds_left: u64,
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
    /// The pool's packet cache, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
}

/// A pool's packet cache in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CacheStatus {
    /// Answers held now.
    pub entries: usize,
    /// Most answers it holds.
    pub max_entries: usize,
    /// Bytes held, about.
    pub bytes: usize,
    /// Fresh hits since start.
    pub hits: u64,
    /// Lookups that found nothing fresh.
    pub misses: u64,
    /// Stale answers served.
    pub stale_hits: u64,
    /// Hits over lookups, 0–1 (0 before the first lookup).
    pub hit_ratio: f64,
}

impl CacheStatus {
    fn of(c: &PacketCache) -> Self {
        let (stats, size) = (c.stats(), c.size());
        let lookups = stats.hits + stats.misses;
        Self {
            entries: size.entries,
            max_entries: c.config().max_entries,
            bytes: size.bytes,
            hits: stats.hits,
            misses: stats.misses,
            stale_hits: stats.stale_hits,
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                stats.hits as f64 / lookups as f64
            },
        }
    }
}

/// One backend in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BackendStatus {
    /// Backend name.
    pub name: String,
    /// Backend address.
    pub address: SocketAddr,
    /// `"up"` or `"down"`, or `"drain"` while the operator drains it
    /// (then `health` still says what its checks see).
    pub state: String,
    /// Weight.
    pub weight: u32,
    /// Queries in flight.
    pub outstanding: u64,
    /// Queries sent since start.
    pub queries: u64,
    /// Failed queries since start.
    pub failures: u64,
    /// Answer times since start (none before the first answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Percentiles>,
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
    /// Reply times since start (none before the first reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Percentiles>,
}

/// Percentiles of a latency histogram, in milliseconds, interpolated within
/// its buckets (see [`dnsha_core::latency`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Durations counted.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Percentiles {
    /// The percentiles of `s`; `None` when it counted nothing.
    pub fn of(s: &LatencySnapshot) -> Option<Self> {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        Some(Self {
            count: s.count(),
            p50_ms: round(s.quantile_ms(0.5)?),
            p90_ms: round(s.quantile_ms(0.9)?),
            p99_ms: round(s.quantile_ms(0.99)?),
        })
    }
}
