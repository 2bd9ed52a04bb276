//! The TOML shape, as serde reads it (with spans for error locations).

use serde::Deserialize;
use toml::Spanned;

use super::{LogFormat, Protocol};
use crate::policy::PolicyKind;
use crate::pool::OnNoBackend;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) listener: Vec<RawListener>,
    #[serde(default)]
    pub(super) pool: Vec<RawPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Spanned<String>,
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
fn d_fail_timeout() -> Spanned<u64> {
    spanned(10_000)
}
fn d_weight() -> Spanned<u32> {
    spanned(1)
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
    #[serde(default)]
    pub(super) workers: usize,
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
    #[serde(default)]
    pub(super) backend: Vec<RawBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    #[serde(default = "d_weight")]
    pub(super) weight: Spanned<u32>,
}
