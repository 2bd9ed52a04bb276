//! The web console the admin endpoint serves at `/`: one page, embedded in
//! the binary (no CDN, nothing fetched), that reads `/status` and
//! `/history` every `[admin] refresh_ms` and draws listeners, pools,
//! backends with their drain, enable and check buttons, VRRP instances,
//! caches and blocks, and five minutes of queries/s and latency per pool.
//!
//! [`History`] keeps those five minutes: [`spawn_sampler`] samples the
//! balancer's counters into it every [`history::SAMPLE_MS`].

pub mod history;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dnsha_core::Millis;
use dnsha_proxy::server::Server;
use tokio_util::sync::CancellationToken;

pub use history::History;
use history::{BackendSample, ListenerSample, PoolSample, Sample};

/// The page: HTML, its style and its script in one file.
pub const PAGE: &str = include_str!("page.html");

/// The history the sampler fills and `/history` reads.
pub type HistorySlot = Arc<Mutex<History>>;

/// The balancer's counters now.
pub fn sample(server: &Server) -> Sample {
    let pools = server
        .pools()
        .iter()
        .map(|p| PoolSample {
            name: p.name().to_string(),
            backends: p
                .snapshot()
                .backends()
                .iter()
                .map(|b| BackendSample {
                    name: b.name().to_string(),
                    queries: b.queries(),
                    latency: b.latency(),
                })
                .collect(),
        })
        .collect();
    let listeners = server
        .listener_metrics()
        .iter()
        .map(|m| ListenerSample {
            name: m.name.clone(),
            queries: m.queries.load(std::sync::atomic::Ordering::Relaxed),
            latency: m.latency.snapshot(),
        })
        .collect();
    Sample {
        at: Millis::now(),
        wall: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        pools,
        listeners,
    }
}

/// Samples `server` into `history` now and every
/// [`history::SAMPLE_MS`] until `stop`.
pub fn spawn_sampler(server: Arc<Server>, history: HistorySlot, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(history::SAMPLE_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let s = sample(&server);
            history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(s);
        }
    });
}

/// `/history`: the view of `history` up to `server`'s counters now, with
/// the page's refresh interval.
pub fn history_json(
    history: &HistorySlot,
    server: &Server,
    refresh_ms: u64,
) -> serde_json::Result<String> {
    let now = sample(server);
    let view = history
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .view_with(&now);
    let mut v = serde_json::to_value(view)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("refresh_ms".into(), refresh_ms.into());
    }
    serde_json::to_string(&v)
}
