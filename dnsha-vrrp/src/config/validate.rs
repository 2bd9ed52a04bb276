//! Validation of `[[vrrp]]` instances: every problem at once, each located
//! at its instance and field.

use std::net::{IpAddr, Ipv4Addr};

use super::error::{ConfigError, Instance, VipError};
use super::{InstanceConfig, TrackScript};
use crate::codec::AUTH_LEN;
use crate::router::Vip;

/// Parses `"IP"` or `"IP/prefix"`, IPv4 (prefix 32 by default) or IPv6
/// (128 by default).
pub fn parse_vip(s: &str) -> Result<Vip, VipError> {
    let text = || s.to_string();
    let ip_text = s.split_once('/').map_or(s, |(ip, _)| ip);
    let addr: IpAddr = ip_text.parse().map_err(|source| VipError::Address {
        text: text(),
        source,
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match s.split_once('/') {
        Some((_, p)) => {
            let prefix: u8 = p.parse().map_err(|source| VipError::Prefix {
                text: text(),
                source,
            })?;
            if prefix > max {
                return Err(VipError::PrefixTooLong {
                    text: text(),
                    prefix,
                });
            }
            prefix
        }
        None => max,
    };
    let reserved = match addr {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_multicast()
                || a.is_loopback()
                || a.to_ipv4_mapped().is_some()
        }
    };
    if reserved {
        return Err(VipError::Reserved { text: text() });
    }
    Ok(Vip {
        addr,
        prefix_len: prefix,
    })
}

fn whole_seconds(v: f64, min: f64, max: f64) -> bool {
    v.is_finite() && v.fract() == 0.0 && (min..=max).contains(&v)
}

/// Seconds in `min..=max` that are a whole number of centiseconds.
fn whole_centiseconds(v: f64, min: f64, max: f64) -> bool {
    let cs = v * 100.0;
    in_seconds(v, min, max) && (cs - cs.round()).abs() < 1e-6
}

fn in_seconds(v: f64, min: f64, max: f64) -> bool {
    v.is_finite() && (min..=max).contains(&v)
}

/// A tracker weight keepalived accepts.
fn weight_ok(weight: i32) -> bool {
    (-253..=253).contains(&weight)
}

/// The problems found so far in one instance.
struct Problems {
    instance: Instance,
    errors: Vec<ConfigError>,
}

impl Problems {
    fn bad(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(self.instance.clone(), field, message));
    }
}

impl InstanceConfig {
    /// Every problem of this instance alone, located in `instance`.
    pub fn validate_at(&self, instance: Instance) -> Vec<ConfigError> {
        let mut p = Problems {
            instance,
            errors: Vec::new(),
        };
        self.check_identity(&mut p);
        self.check_vips(&mut p);
        self.check_preempt(&mut p);
        self.check_unicast(&mut p);
        self.check_garp(&mut p);
        self.check_tracked(&mut p);
        for (i, s) in self.track_script.iter().enumerate() {
            check_script(&mut p, i, s);
        }
        if let Some(n) = &self.notify {
            if n.trim().is_empty() {
                p.bad("notify", "must not be empty");
            }
        }
        p.errors
    }

    /// Name, interface, VRID, priority, interval and password.
    fn check_identity(&self, p: &mut Problems) {
        if self.name.is_empty() {
            p.bad("name", "must not be empty");
        }
        if self.interface.is_empty() || self.interface.len() > 15 {
            p.bad(
                "interface",
                format!("{:?} is not an interface name", self.interface),
            );
        }
        if !(1..=255).contains(&self.virtual_router_id) {
            p.bad(
                "virtual_router_id",
                format!("{} is outside 1..255", self.virtual_router_id),
            );
        }
        if !(1..=255).contains(&self.priority) {
            p.bad("priority", format!("{} is outside 1..255", self.priority));
        }
        match self.version {
            2 if !whole_seconds(self.advert_int, 1.0, 255.0) => p.bad(
                "advert_int",
                format!(
                    "{} is not whole seconds in 1..255 (VRRPv2 cannot express sub-second intervals: set version = 3)",
                    self.advert_int
                ),
            ),
            3 if !whole_centiseconds(self.advert_int, 0.01, 40.95) => p.bad(
                "advert_int",
                format!(
                    "{} is not in 0.01..40.95 seconds with centisecond resolution (VRRPv3)",
                    self.advert_int
                ),
            ),
            2 | 3 => {}
            other => p.bad("version", format!("{other} is not a VRRP version (2 or 3)")),
        }
        if self.version == 3 && self.auth_pass.is_some() {
            p.bad(
                "auth_pass",
                "VRRPv3 has no authentication (RFC 5798): remove auth_pass or use version = 2",
            );
        }
        if let Some(pass) = &self.auth_pass {
            if pass.is_empty() || pass.len() > AUTH_LEN {
                p.bad(
                    "auth_pass",
                    format!("must be 1 to {AUTH_LEN} bytes, is {}", pass.len()),
                );
            }
        }
    }

    /// `virtual_ipaddress`: 1 to 255 valid, distinct addresses.
    fn check_vips(&self, p: &mut Problems) {
        if self.virtual_ipaddress.is_empty() {
            p.bad("virtual_ipaddress", "needs at least one address");
        }
        if self.virtual_ipaddress.len() > 255 {
            p.bad("virtual_ipaddress", "at most 255 addresses");
        }
        let mut seen: Vec<IpAddr> = Vec::new();
        for (i, v) in self.virtual_ipaddress.iter().enumerate() {
            let field = format!("virtual_ipaddress[{i}]");
            match parse_vip(v) {
                Ok(vip) if seen.contains(&vip.addr) => {
                    p.bad(field, format!("{} listed twice", vip.addr));
                }
                Ok(vip)
                    if seen
                        .first()
                        .is_some_and(|f| f.is_ipv4() != vip.addr.is_ipv4()) =>
                {
                    p.bad(
                        field,
                        format!(
                            "{} is of the other family than the first address: one instance per family (put the two in a sync_group)",
                            vip.addr
                        ),
                    );
                }
                Ok(vip) => seen.push(vip.addr),
                Err(e) => p.bad(field, e.to_string()),
            }
        }
        if seen.first().is_some_and(IpAddr::is_ipv6) {
            if self.version != 3 {
                p.bad("version", "IPv6 addresses need VRRPv3: set version = 3");
            }
            if self.unicast_src_ip.is_some() || !self.unicast_peer.is_empty() {
                p.bad(
                    "unicast_peer",
                    "unicast mode is for IPv4 instances only (IPv6 adverts go to ff02::12)",
                );
            }
        }
    }

    /// `preempt`, `nopreempt` and `preempt_delay`.
    fn check_preempt(&self, p: &mut Problems) {
        if self.preempt == Some(true) && self.nopreempt {
            p.bad("nopreempt", "conflicts with preempt = true");
        }
        if !in_seconds(self.preempt_delay, 0.0, 1000.0) {
            p.bad(
                "preempt_delay",
                format!("{} is outside 0..1000 seconds", self.preempt_delay),
            );
        }
    }

    /// `unicast_src_ip` and `unicast_peer`: IPv4 addresses.
    fn check_unicast(&self, p: &mut Problems) {
        if let Some(ip) = &self.unicast_src_ip {
            if ip.parse::<Ipv4Addr>().is_err() {
                p.bad("unicast_src_ip", format!("{ip:?} is not an IPv4 address"));
            }
        }
        for (i, peer) in self.unicast_peer.iter().enumerate() {
            if peer.parse::<Ipv4Addr>().is_err() {
                p.bad(
                    format!("unicast_peer[{i}]"),
                    format!("{peer:?} is not an IPv4 address"),
                );
            }
        }
    }

    /// The `garp_master_*` and `garp_lower_prio_*` settings.
    fn check_garp(&self, p: &mut Problems) {
        if let Some(d) = self.garp_lower_prio_delay {
            if !in_seconds(d, 0.0, 3600.0) {
                p.bad(
                    "garp_lower_prio_delay",
                    format!("{d} is outside 0..3600 seconds"),
                );
            }
        }
        if let Some(r) = self.garp_lower_prio_repeat.filter(|r| *r > 100) {
            p.bad("garp_lower_prio_repeat", format!("{r} is over 100"));
        }
        if !in_seconds(self.garp_master_delay, 0.0, 3600.0) {
            p.bad(
                "garp_master_delay",
                format!("{} is outside 0..3600 seconds", self.garp_master_delay),
            );
        }
        if self.garp_master_repeat > 100 {
            p.bad(
                "garp_master_repeat",
                format!("{} is over 100", self.garp_master_repeat),
            );
        }
        if !in_seconds(self.garp_master_refresh, 0.0, 86400.0) {
            p.bad(
                "garp_master_refresh",
                format!("{} is outside 0..86400 seconds", self.garp_master_refresh),
            );
        }
    }

    /// `track_interface` and `track_pools`: names and weights.
    fn check_tracked(&self, p: &mut Problems) {
        for (i, t) in self.track_interface.iter().enumerate() {
            let (name, weight) = t.parts();
            if name.is_empty() || name.len() > 15 {
                p.bad(
                    format!("track_interface[{i}].name"),
                    format!("{name:?} is not an interface name"),
                );
            }
            if !weight_ok(weight) {
                p.bad(
                    format!("track_interface[{i}].weight"),
                    format!("{weight} is outside -253..253"),
                );
            }
        }
        for (i, t) in self.track_pools.iter().enumerate() {
            let (name, weight) = t.parts();
            if name.is_empty() {
                p.bad(format!("track_pools[{i}].name"), "must not be empty");
            }
            if !weight_ok(weight) {
                p.bad(
                    format!("track_pools[{i}].weight"),
                    format!("{weight} is outside -253..253"),
                );
            }
        }
    }
}

/// `track_script[i]`.
fn check_script(p: &mut Problems, i: usize, s: &TrackScript) {
    let at = |f: &str| format!("track_script[{i}].{f}");
    if s.command.trim().is_empty() {
        p.bad(at("command"), "must not be empty");
    }
    if !(s.interval.is_finite() && s.interval > 0.0 && s.interval <= 3600.0) {
        p.bad(
            at("interval"),
            format!("{} is outside (0, 3600] seconds", s.interval),
        );
    }
    if let Some(t) = s.timeout {
        if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
            p.bad(at("timeout"), format!("{t} is outside (0, 3600] seconds"));
        }
    }
    if !weight_ok(s.weight) {
        p.bad(at("weight"), format!("{} is outside -253..253", s.weight));
    }
    if s.rise == 0 {
        p.bad(at("rise"), "must be at least 1");
    }
    if s.fall == 0 {
        p.bad(at("fall"), "must be at least 1");
    }
}

/// Validates a list of instances: each one, then duplicate names and
/// duplicate VRIDs on one interface. Returns every problem.
pub fn validate_all(instances: &[InstanceConfig]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (i, inst) in instances.iter().enumerate() {
        errors.extend(inst.validate_at(Instance::Index(i)));
        for (j, other) in instances.iter().take(i).enumerate() {
            if other.name == inst.name {
                errors.push(ConfigError::new(
                    Instance::Index(i),
                    "name",
                    format!("{:?} already used by vrrp[{j}]", inst.name),
                ));
            }
            if other.interface == inst.interface
                && other.virtual_router_id == inst.virtual_router_id
            {
                errors.push(ConfigError::new(
                    Instance::Index(i),
                    "virtual_router_id",
                    format!(
                        "VRID {} on {} already used by vrrp[{j}] ({})",
                        inst.virtual_router_id, inst.interface, other.name
                    ),
                ));
            }
        }
    }
    // A sync group of one member moves nothing: a misspelt name.
    for (i, inst) in instances.iter().enumerate() {
        let Some(group) = &inst.sync_group else {
            continue;
        };
        let members = instances
            .iter()
            .filter(|o| o.sync_group.as_ref() == Some(group))
            .count();
        if group.trim().is_empty() || members < 2 {
            errors.push(ConfigError::new(
                Instance::Index(i),
                "sync_group",
                format!("sync group {group:?} has no other member"),
            ));
        }
    }
    errors
}
