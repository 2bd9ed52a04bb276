//! The TOML shape, as serde reads it (with spans for error locations).

use serde::Deserialize;
use toml::Spanned;

use super::{AnyOverUdp, LogFormat, Protocol, Transport};
use crate::policy::PolicyKind;
use crate::pool::{OnNoBackend, PoolSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) listener: Vec<RawListener>,
    #[serde(default)]
    pub(super) pool: Vec<RawPool>,
    /// `[[vrrp]]` tables, interpreted by dnsha-vrrp (not by this crate).
    #[serde(default)]
    pub(super) vrrp: Vec<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Spanned<String>,
    pub(super) allow: Option<Vec<Spanned<String>>>,
    pub(super) max_connections: Option<Spanned<u64>>,
}

fn spanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

fn d_idle() -> Spanned<u64> {
    spanned(10_000)
}
fn d_read() -> Spanned<u64> {
    spanned(2_000)
}
fn d_maxconn() -> Spanned<u64> {
    spanned(10_000)
}
fn d_maxconn_client() -> Spanned<u64> {
    spanned(64)
}
fn d_timeout() -> Spanned<u64> {
    spanned(1000)
}
fn d_retries() -> u32 {
    1
}
fn d_max_fails() -> u32 {
    3
}
// The stream and socket limits default to `PoolSettings::default()`'s.
fn d_udp_sockets() -> Spanned<u64> {
    spanned(PoolSettings::default().udp_sockets_per_backend as u64)
}
fn d_max_connections() -> Spanned<u64> {
    spanned(PoolSettings::default().max_connections_per_backend as u64)
}
fn d_max_in_flight() -> Spanned<u64> {
    spanned(PoolSettings::default().max_in_flight_per_connection as u64)
}
fn d_fail_timeout() -> Spanned<u64> {
    spanned(10_000)
}
fn d_fail_percent() -> Spanned<u64> {
    spanned(u64::from(PoolSettings::default().fail_percent))
}
fn d_weight() -> Spanned<u32> {
    spanned(1)
}
fn d_transport() -> Spanned<Transport> {
    spanned(Transport::Udp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: Spanned<String>,
    pub(super) protocol: Protocol,
    pub(super) listen: Spanned<String>,
    pub(super) pool: Spanned<String>,
    pub(super) allow: Option<Vec<Spanned<String>>>,
    pub(super) access_log: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) format: LogFormat,
    #[serde(default = "d_idle")]
    pub(super) idle_timeout_ms: Spanned<u64>,
    #[serde(default = "d_read")]
    pub(super) read_timeout_ms: Spanned<u64>,
    #[serde(default = "d_maxconn")]
    pub(super) max_connections: Spanned<u64>,
    #[serde(default = "d_maxconn_client")]
    pub(super) max_connections_per_client: Spanned<u64>,
    pub(super) max_queries_per_client: Option<Spanned<u64>>,
    pub(super) client_prefix_v6: Option<Spanned<u64>>,
    pub(super) write_timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) workers: usize,
    pub(super) pin_workers: Option<Spanned<bool>>,
    pub(super) max_udp_size: Option<Spanned<u64>>,
    pub(super) any_over_udp: Option<Spanned<AnyOverUdp>>,
    // DoT and DoH (issue 5).
    pub(super) tls_cert: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<bool>>,
    pub(super) handshake_timeout_ms: Option<Spanned<u64>>,
    pub(super) max_handshakes_per_client: Option<Spanned<u64>>,
    pub(super) max_handshakes_per_second: Option<Spanned<u64>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(super) max_streams: Option<Spanned<u64>>,
    pub(super) max_header_bytes: Option<Spanned<u64>>,
    pub(super) max_requests_per_second: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) policy: PolicyKind,
    #[serde(default = "d_timeout")]
    pub(super) timeout_ms: Spanned<u64>,
    #[serde(default = "d_retries")]
    pub(super) retries: u32,
    #[serde(default)]
    pub(super) on_no_backend: OnNoBackend,
    #[serde(default = "d_max_fails")]
    pub(super) max_fails: u32,
    #[serde(default = "d_fail_timeout")]
    pub(super) fail_timeout_ms: Spanned<u64>,
    #[serde(default = "d_fail_percent")]
    pub(super) fail_percent: Spanned<u64>,
    #[serde(default)]
    pub(super) randomize_case: bool,
    #[serde(default = "d_udp_sockets")]
    pub(super) udp_sockets_per_backend: Spanned<u64>,
    #[serde(default = "d_max_connections")]
    pub(super) max_connections_per_backend: Spanned<u64>,
    #[serde(default = "d_max_in_flight")]
    pub(super) max_in_flight_per_connection: Spanned<u64>,
    #[serde(default)]
    pub(super) backend: Vec<RawBackend>,
    pub(super) health: Option<RawHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    #[serde(default = "d_weight")]
    pub(super) weight: Spanned<u32>,
    // Transport to the backend (issue 5).
    #[serde(default = "d_transport")]
    pub(super) transport: Spanned<Transport>,
    pub(super) tls_verify: Option<Spanned<bool>>,
    pub(super) tls_name: Option<Spanned<String>>,
    pub(super) tls_ca: Option<Spanned<String>>,
    pub(super) health: Option<RawHealth>,
}

/// `[pool.health]` and `[pool.backend.health]`: every key optional, so that a
/// backend's table overrides the pool's key by key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) check: Option<Spanned<String>>,
    pub(super) interval_ms: Option<Spanned<u64>>,
    pub(super) timeout_ms: Option<Spanned<u64>>,
    pub(super) rise: Option<Spanned<u32>>,
    pub(super) fall: Option<Spanned<u32>>,
    pub(super) retry: Option<Spanned<u32>>,
    pub(super) delay_before_retry: Option<Spanned<f64>>,
    pub(super) query_name: Option<Spanned<String>>,
    pub(super) query_type: Option<Spanned<String>>,
    pub(super) must_resolve: Option<bool>,
    pub(super) expect_address: Option<Spanned<String>>,
    pub(super) cd_flag: Option<bool>,
    pub(super) transport: Option<Spanned<String>>,
    pub(super) payload: Option<Spanned<String>>,
    pub(super) tls_name: Option<Spanned<String>>,
    pub(super) tls_verify: Option<bool>,
    pub(super) tls_ca: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<RawCommand>>,
    pub(super) passive_threshold: Option<u32>,
}

/// `command = "shell line"` or `command = ["/path/prog", "arg"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl RawHealth {
    /// `self` with every key it lacks taken from `base`.
    pub(super) fn over(&self, base: &Self) -> Self {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        // `fall` and keepalived's `retry` say the same thing: a backend that
        // sets either overrides both of the pool's.
        let (fall, retry) = if self.fall.is_some() || self.retry.is_some() {
            (self.fall.clone(), self.retry.clone())
        } else {
            (base.fall.clone(), base.retry.clone())
        };
        Self {
            check: pick(&self.check, &base.check),
            interval_ms: pick(&self.interval_ms, &base.interval_ms),
            timeout_ms: pick(&self.timeout_ms, &base.timeout_ms),
            rise: pick(&self.rise, &base.rise),
            fall,
            retry,
            delay_before_retry: pick(&self.delay_before_retry, &base.delay_before_retry),
            query_name: pick(&self.query_name, &base.query_name),
            query_type: pick(&self.query_type, &base.query_type),
            must_resolve: self.must_resolve.or(base.must_resolve),
            expect_address: pick(&self.expect_address, &base.expect_address),
            cd_flag: self.cd_flag.or(base.cd_flag),
            transport: pick(&self.transport, &base.transport),
            payload: pick(&self.payload, &base.payload),
            tls_name: pick(&self.tls_name, &base.tls_name),
            tls_verify: self.tls_verify.or(base.tls_verify),
            tls_ca: pick(&self.tls_ca, &base.tls_ca),
            path: pick(&self.path, &base.path),
            command: pick(&self.command, &base.command),
            passive_threshold: self.passive_threshold.or(base.passive_threshold),
        }
    }
}
