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

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{Auth, AUTH_LEN};
use crate::error::{Error, Result};
use crate::router::{GarpConfig, RouterConfig, TrackerSpec, Vip};

/// One configuration problem and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `vrrp[0].priority`, or a bare field name.
    pub location: String,
    /// What is wrong, in words an operator understands.
    pub message: String,
}

impl ConfigError {
    /// A problem at `location`.
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

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
    /// Advertisement interval in whole seconds, 1..=255.
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

/// Parses `"IP"` or `"IP/prefix"` (IPv4).
pub fn parse_vip(s: &str) -> std::result::Result<Vip, String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => {
            let prefix: u8 = p
                .parse()
                .map_err(|_| format!("{s:?}: prefix is not a number"))?;
            if prefix > 32 {
                return Err(format!("{s:?}: prefix length over 32"));
            }
            (ip, prefix)
        }
        None => (s, 32),
    };
    let addr: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() || addr.is_loopback() {
        return Err(format!("{s:?} cannot be a virtual address"));
    }
    Ok(Vip {
        addr,
        prefix_len: prefix,
    })
}

fn whole_seconds(v: f64, min: f64, max: f64) -> bool {
    v.is_finite() && v.fract() == 0.0 && (min..=max).contains(&v)
}

impl InstanceConfig {
    /// Whether preemption is on (`preempt`, unless `nopreempt`).
    pub fn preempt_enabled(&self) -> bool {
        !self.nopreempt && self.preempt.unwrap_or(true)
    }

    /// Every problem of this instance alone, located under `prefix`
    /// (e.g. `vrrp[0]`).
    pub fn validate_at(&self, prefix: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(ConfigError::new(format!("{prefix}.{field}"), message));
        };
        if self.name.is_empty() {
            bad("name", "must not be empty".into());
        }
        if self.interface.is_empty() || self.interface.len() > 15 {
            bad(
                "interface",
                format!("{:?} is not an interface name", self.interface),
            );
        }
        if !(1..=255).contains(&self.virtual_router_id) {
            bad(
                "virtual_router_id",
                format!("{} is outside 1..255", self.virtual_router_id),
            );
        }
        if !(1..=255).contains(&self.priority) {
            bad("priority", format!("{} is outside 1..255", self.priority));
        }
        if !whole_seconds(self.advert_int, 1.0, 255.0) {
            bad(
                "advert_int",
                format!(
                    "{} is not whole seconds in 1..255 (VRRPv2 cannot express sub-second intervals)",
                    self.advert_int
                ),
            );
        }
        if let Some(p) = &self.auth_pass {
            if p.is_empty() || p.len() > AUTH_LEN {
                bad(
                    "auth_pass",
                    format!("must be 1 to {AUTH_LEN} bytes, is {}", p.len()),
                );
            }
        }
        if self.virtual_ipaddress.is_empty() {
            bad("virtual_ipaddress", "needs at least one address".into());
        }
        if self.virtual_ipaddress.len() > 255 {
            bad("virtual_ipaddress", "at most 255 addresses".into());
        }
        let mut seen = Vec::new();
        for (i, v) in self.virtual_ipaddress.iter().enumerate() {
            match parse_vip(v) {
                Ok(vip) if seen.contains(&vip.addr) => {
                    bad(
                        &format!("virtual_ipaddress[{i}]"),
                        format!("{} listed twice", vip.addr),
                    );
                }
                Ok(vip) => seen.push(vip.addr),
                Err(e) => bad(&format!("virtual_ipaddress[{i}]"), e),
            }
        }
        if self.preempt == Some(true) && self.nopreempt {
            bad("nopreempt", "conflicts with preempt = true".into());
        }
        if !(self.preempt_delay.is_finite() && (0.0..=1000.0).contains(&self.preempt_delay)) {
            bad(
                "preempt_delay",
                format!("{} is outside 0..1000 seconds", self.preempt_delay),
            );
        }
        if let Some(ip) = &self.unicast_src_ip {
            if ip.parse::<Ipv4Addr>().is_err() {
                bad("unicast_src_ip", format!("{ip:?} is not an IPv4 address"));
            }
        }
        for (i, p) in self.unicast_peer.iter().enumerate() {
            if p.parse::<Ipv4Addr>().is_err() {
                bad(
                    &format!("unicast_peer[{i}]"),
                    format!("{p:?} is not an IPv4 address"),
                );
            }
        }
        if !(self.garp_master_delay.is_finite() && (0.0..=3600.0).contains(&self.garp_master_delay))
        {
            bad(
                "garp_master_delay",
                format!("{} is outside 0..3600 seconds", self.garp_master_delay),
            );
        }
        if self.garp_master_repeat > 100 {
            bad(
                "garp_master_repeat",
                format!("{} is over 100", self.garp_master_repeat),
            );
        }
        if !(self.garp_master_refresh.is_finite()
            && (0.0..=86400.0).contains(&self.garp_master_refresh))
        {
            bad(
                "garp_master_refresh",
                format!("{} is outside 0..86400 seconds", self.garp_master_refresh),
            );
        }
        for (i, t) in self.track_interface.iter().enumerate() {
            let (name, weight) = t.parts();
            if name.is_empty() || name.len() > 15 {
                bad(
                    &format!("track_interface[{i}].name"),
                    format!("{name:?} is not an interface name"),
                );
            }
            if !(-253..=253).contains(&weight) {
                bad(
                    &format!("track_interface[{i}].weight"),
                    format!("{weight} is outside -253..253"),
                );
            }
        }
        for (i, t) in self.track_pools.iter().enumerate() {
            let (name, weight) = t.parts();
            if name.is_empty() {
                bad(
                    &format!("track_pools[{i}].name"),
                    "must not be empty".into(),
                );
            }
            if !(-253..=253).contains(&weight) {
                bad(
                    &format!("track_pools[{i}].weight"),
                    format!("{weight} is outside -253..253"),
                );
            }
        }
        for (i, s) in self.track_script.iter().enumerate() {
            let at = |f: &str| format!("track_script[{i}].{f}");
            if s.command.trim().is_empty() {
                bad(&at("command"), "must not be empty".into());
            }
            if !(s.interval.is_finite() && s.interval > 0.0 && s.interval <= 3600.0) {
                bad(
                    &at("interval"),
                    format!("{} is outside (0, 3600] seconds", s.interval),
                );
            }
            if let Some(t) = s.timeout {
                if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
                    bad(&at("timeout"), format!("{t} is outside (0, 3600] seconds"));
                }
            }
            if !(-253..=253).contains(&s.weight) {
                bad(&at("weight"), format!("{} is outside -253..253", s.weight));
            }
            if s.rise == 0 {
                bad(&at("rise"), "must be at least 1".into());
            }
            if s.fall == 0 {
                bad(&at("fall"), "must be at least 1".into());
            }
        }
        if let Some(n) = &self.notify {
            if n.trim().is_empty() {
                bad("notify", "must not be empty".into());
            }
        }
        errors
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
        let errors = self.validate_at(&format!("vrrp.{}", self.name));
        if !errors.is_empty() {
            return Err(Error::Config { errors });
        }
        let narrow = |v: i64| u8::try_from(v).unwrap_or(1);
        Ok(RouterConfig {
            vrid: narrow(self.virtual_router_id),
            priority: narrow(self.priority),
            advert_int: narrow(self.advert_int as i64),
            auth: self.auth_pass.as_deref().map_or(Auth::None, Auth::password),
            vips: self.vips(),
            primary_ip: self.unicast_src().unwrap_or(primary_ip),
            preempt: self.preempt_enabled(),
            preempt_delay: secs(self.preempt_delay),
            garp: GarpConfig {
                delay: secs(self.garp_master_delay),
                repeat: self.garp_master_repeat,
                refresh: (self.garp_master_refresh > 0.0).then(|| secs(self.garp_master_refresh)),
                refresh_repeat: 1,
            },
            trackers: self.trackers(),
        })
    }
}

/// Validates a list of instances: each one, then duplicate names and
/// duplicate VRIDs on one interface. Returns every problem.
pub fn validate_all(instances: &[InstanceConfig]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (i, inst) in instances.iter().enumerate() {
        errors.extend(inst.validate_at(&format!("vrrp[{i}]")));
        for (j, other) in instances[..i].iter().enumerate() {
            if other.name == inst.name {
                errors.push(ConfigError::new(
                    format!("vrrp[{i}].name"),
                    format!("{:?} already used by vrrp[{j}]", inst.name),
                ));
            }
            if other.interface == inst.interface
                && other.virtual_router_id == inst.virtual_router_id
            {
                errors.push(ConfigError::new(
                    format!("vrrp[{i}].virtual_router_id"),
                    format!(
                        "VRID {} on {} already used by vrrp[{j}] ({})",
                        inst.virtual_router_id, inst.interface, other.name
                    ),
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests;
