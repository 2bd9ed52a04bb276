//! The configuration of one `[[vrrp]]` instance, as the daemon's TOML holds it.
//!
//! Deserialize a list of [`InstanceConfig`] (unknown keys are errors), then
//! call [`validate_all`] to get **every** problem at once, each with its
//! location (`vrrp[0].priority`). [`InstanceConfig::router_config`] turns a
//! valid instance into the [`RouterConfig`] of the state machine.
//!
//! ```
//! use dnsha_vrrp::config::{validate_all, InstanceConfig};
//!
//! #[derive(serde::Deserialize)]
//! struct File { vrrp: Vec<InstanceConfig> }
//!
//! let file: File = toml::from_str(r#"
//!     [[vrrp]]
//!     name = "VI_1"
//!     interface = "eth0"
//!     virtual_router_id = 134
//!     priority = 100
//!     advert_int = 1
//!     auth_pass = "dnsvip"
//!     virtual_ipaddress = ["192.168.1.5/32"]
//!     track_pools = ["coredns"]
//!     notify = "/etc/dnsha/notify.sh"
//! "#).unwrap();
//! assert!(validate_all(&file.vrrp).is_empty());
//! let rc = file.vrrp[0].router_config("10.0.0.1".parse().unwrap()).unwrap();
//! assert_eq!(rc.vrid, 134);
//! ```

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Auth;
use crate::error::{Error, Result};
use crate::router::{GarpConfig, RouterConfig, TrackerSpec, Version, Vip};

pub mod error;
mod validate;

pub use error::{ConfigError, Instance, VipError};
pub use validate::{parse_vip, validate_all};

/// One `[[vrrp]]` instance.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Instance name (`VI_1`), used in logs, status and notify.
    pub name: String,
    /// Interface the VIPs live on and adverts are sent from.
    pub interface: String,
    /// VRID, 1..=255, unique per interface.
    pub virtual_router_id: i64,
    /// Priority, 1..=255 (255 = address owner).
    pub priority: i64,
    /// VRRP version: 2 (RFC 3768, the default) or 3 (RFC 5798).
    #[serde(default = "default_version")]
    pub version: i64,
    /// Advertisement interval in seconds: whole, 1..=255, for version 2;
    /// 0.01..=40.95 in centiseconds for version 3.
    #[serde(default = "default_advert_int")]
    pub advert_int: f64,
    /// Simple password (keepalived `auth_type PASS`), at most 8 bytes.
    #[serde(default)]
    pub auth_pass: Option<String>,
    /// Virtual addresses: `"IP"` or `"IP/prefix"`, IPv4.
    pub virtual_ipaddress: Vec<String>,
    /// Preempt a lower-priority master (default true).
    #[serde(default)]
    pub preempt: Option<bool>,
    /// keepalived's spelling of `preempt = false`.
    #[serde(default)]
    pub nopreempt: bool,
    /// Seconds after start before preempting (0..=1000).
    #[serde(default)]
    pub preempt_delay: f64,
    /// Source address of adverts (default: the interface's first IPv4).
    #[serde(default)]
    pub unicast_src_ip: Option<String>,
    /// Send adverts to these peers instead of 224.0.0.18.
    #[serde(default)]
    pub unicast_peer: Vec<String>,
    /// Seconds before the second gratuitous ARP burst (default 5, 0 = none).
    #[serde(default = "default_garp_delay")]
    pub garp_master_delay: f64,
    /// Gratuitous ARPs per address per burst (default 5).
    #[serde(default = "default_garp_repeat")]
    pub garp_master_repeat: u32,
    /// Seconds between refresh bursts while master (default 0 = off).
    #[serde(default)]
    pub garp_master_refresh: f64,
    /// Seconds before the second gratuitous ARP burst after a master heard
    /// a lower-priority master (default: `garp_master_delay`, 0 = none).
    #[serde(default)]
    pub garp_lower_prio_delay: Option<f64>,
    /// Gratuitous ARPs per address per burst when a master hears a
    /// lower-priority master (default: `garp_master_repeat`, 0 = none).
    #[serde(default)]
    pub garp_lower_prio_repeat: Option<u32>,
    /// Extra interfaces whose link state is tracked.
    #[serde(default)]
    pub track_interface: Vec<TrackInterface>,
    /// Check commands.
    #[serde(default)]
    pub track_script: Vec<TrackScript>,
    /// Pools of the balancer that must have a healthy backend.
    #[serde(default)]
    pub track_pools: Vec<TrackPool>,
    /// Command run as `notify INSTANCE NAME STATE PRIORITY` on each change.
    #[serde(default)]
    pub notify: Option<String>,
    /// Sync group (keepalived's `vrrp_sync_group`): instances with the same
    /// name move together (see [`crate::sync`]).
    #[serde(default)]
    pub sync_group: Option<String>,
}

/// `track_interface` entry: a name, or `{ name, weight }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TrackInterface {
    /// Link down puts the instance in FAULT.
    Name(String),
    /// With a weight.
    Weighted(WeightedName),
}

/// `track_pools` entry: a pool name, or `{ name, weight }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TrackPool {
    /// Pool down puts the instance in FAULT.
    Name(String),
    /// With a weight.
    Weighted(WeightedName),
}

/// A tracked name with an optional weight (absent = FAULT).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedName {
    /// Interface or pool name.
    pub name: String,
    /// keepalived weight, −253..=253; 0 or absent = FAULT.
    #[serde(default)]
    pub weight: i32,
}

/// `track_script` entry.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackScript {
    /// Name in logs (default: the command).
    #[serde(default)]
    pub name: Option<String>,
    /// Run with `/bin/sh -c`; exit 0 is success.
    pub command: String,
    /// Seconds between runs (default 1).
    #[serde(default = "default_script_interval")]
    pub interval: f64,
    /// Seconds before a run counts as failed (default: the interval).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// keepalived weight, −253..=253; 0 = FAULT (default).
    #[serde(default)]
    pub weight: i32,
    /// Successes in a row to go up (default 1).
    #[serde(default = "one")]
    pub rise: u32,
    /// Failures in a row to go down (default 1).
    #[serde(default = "one")]
    pub fall: u32,
}

fn default_version() -> i64 {
    2
}

fn default_advert_int() -> f64 {
    1.0
}
fn default_garp_delay() -> f64 {
    5.0
}
fn default_garp_repeat() -> u32 {
    5
}
fn default_script_interval() -> f64 {
    1.0
}
fn one() -> u32 {
    1
}

impl TrackInterface {
    /// Interface name and weight.
    pub fn parts(&self) -> (&str, i32) {
        match self {
            Self::Name(n) => (n, 0),
            Self::Weighted(w) => (&w.name, w.weight),
        }
    }
}

impl TrackPool {
    /// Pool name and weight.
    pub fn parts(&self) -> (&str, i32) {
        match self {
            Self::Name(n) => (n, 0),
            Self::Weighted(w) => (&w.name, w.weight),
        }
    }
}

impl TrackScript {
    /// The name used in logs and tracker names.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.command)
    }

    /// Timeout, defaulting to the interval.
    pub fn timeout(&self) -> Duration {
        secs(self.timeout.unwrap_or(self.interval))
    }

    /// Interval between runs.
    pub fn interval(&self) -> Duration {
        secs(self.interval)
    }
}

/// Tracker name of a tracked interface.
pub fn interface_tracker(name: &str) -> String {
    format!("interface:{name}")
}
/// Tracker name of a track script.
pub fn script_tracker(name: &str) -> String {
    format!("script:{name}")
}
/// Tracker name of a tracked pool.
pub fn pool_tracker(name: &str) -> String {
    format!("pool:{name}")
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

impl InstanceConfig {
    /// Whether preemption is on (`preempt`, unless `nopreempt`).
    pub fn preempt_enabled(&self) -> bool {
        !self.nopreempt && self.preempt.unwrap_or(true)
    }

    /// The virtual addresses, parsed (invalid ones skipped: validate first).
    pub fn vips(&self) -> Vec<Vip> {
        self.virtual_ipaddress
            .iter()
            .filter_map(|v| parse_vip(v).ok())
            .collect()
    }

    /// The configured unicast source address, if any and valid.
    pub fn unicast_src(&self) -> Option<Ipv4Addr> {
        self.unicast_src_ip.as_deref().and_then(|s| s.parse().ok())
    }

    /// The unicast peers (invalid ones skipped: validate first).
    pub fn unicast_peers(&self) -> Vec<Ipv4Addr> {
        self.unicast_peer
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// Every tracker of this instance with its weight: the instance's own
    /// interface (FAULT when down), `track_interface`, `track_script` and
    /// `track_pools`, named with [`interface_tracker`], [`script_tracker`]
    /// and [`pool_tracker`].
    pub fn trackers(&self) -> Vec<TrackerSpec> {
        let mut out = vec![TrackerSpec {
            name: interface_tracker(&self.interface),
            weight: 0,
        }];
        if let Some(group) = &self.sync_group {
            out.push(TrackerSpec {
                name: crate::sync::fault_tracker(group),
                weight: 0,
            });
        }
        for t in &self.track_interface {
            let (name, weight) = t.parts();
            out.push(TrackerSpec {
                name: interface_tracker(name),
                weight,
            });
        }
        for s in &self.track_script {
            out.push(TrackerSpec {
                name: script_tracker(s.display_name()),
                weight: s.weight,
            });
        }
        for p in &self.track_pools {
            let (name, weight) = p.parts();
            out.push(TrackerSpec {
                name: pool_tracker(name),
                weight,
            });
        }
        out
    }

    /// The state machine's configuration; `primary_ip` is the interface's
    /// address, overridden by `unicast_src_ip`.
    pub fn router_config(&self, primary_ip: Ipv4Addr) -> Result<RouterConfig> {
        self.router_config_from(primary_ip.into())
    }

    /// As [`Self::router_config`], for an instance of either family:
    /// `primary_ip` is the interface's IPv4 address (overridden by
    /// `unicast_src_ip`) or its IPv6 link-local address.
    pub fn router_config_from(&self, primary_ip: std::net::IpAddr) -> Result<RouterConfig> {
        let errors = self.validate_at(Instance::Named(self.name.clone()));
        if !errors.is_empty() {
            return Err(Error::Config { errors });
        }
        let narrow = |v: i64| u8::try_from(v).unwrap_or(1);
        Ok(RouterConfig {
            vrid: narrow(self.virtual_router_id),
            priority: narrow(self.priority),
            version: if self.version == 3 {
                Version::V3
            } else {
                Version::V2
            },
            // Validated above: at most 255 s, in whole centiseconds.
            advert_int_cs: (self.advert_int * 100.0).round() as u16,
            auth: self.auth_pass.as_deref().map_or(Auth::None, Auth::password),
            vips: self.vips(),
            primary_ip: match primary_ip {
                std::net::IpAddr::V4(ip) => self.unicast_src().unwrap_or(ip).into(),
                v6 => v6,
            },
            preempt: self.preempt_enabled(),
            preempt_delay: secs(self.preempt_delay),
            garp: GarpConfig {
                delay: secs(self.garp_master_delay),
                repeat: self.garp_master_repeat,
                refresh: (self.garp_master_refresh > 0.0).then(|| secs(self.garp_master_refresh)),
                refresh_repeat: 1,
                lower_prio_delay: secs(
                    self.garp_lower_prio_delay.unwrap_or(self.garp_master_delay),
                ),
                lower_prio_repeat: self
                    .garp_lower_prio_repeat
                    .unwrap_or(self.garp_master_repeat),
            },
            trackers: self.trackers(),
            peers: self.unicast_peers().into_iter().map(Into::into).collect(),
        })
    }
}

#[cfg(test)]
mod tests;
