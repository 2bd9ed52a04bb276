//! `[[anycast]]` sections: service addresses every balancer node announces
//! over BGP (through BIRD), each node only while its own pools can answer.
//!
//! ```toml
//! [[anycast]]
//! name = "dns"
//! addresses = ["192.0.2.53/32", "2001:db8::53"]   # /32 and /128 only
//! interface = "lo"            # where the addresses go (BIRD's `direct` sees them)
//! track_pools = ["p"]         # announced while each has a serving backend
//! interval_ms = 500           # how often that is looked at
//! rise = 3                    # healthy looks in a row before announcing
//! hold_down_ms = 5000         # after a failure, no announce before this long
//! drain_ms = 2000             # on stop: withdraw, wait this long, then stop
//! notify = "/usr/local/bin/anycast-notify"   # run as PROG NAME STATE REASON
//! bird_socket = "/run/bird/bird.ctl"         # `dnsha check` warns when BIRD is not there
//! ```

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use toml::Spanned;

use super::read::{Errors, Table};
use super::{FileRef, FileRole, Validator};

/// Default [`AnycastConfig::interval_ms`].
pub const DEFAULT_INTERVAL_MS: u64 = 500;
/// Default [`AnycastConfig::rise`].
pub const DEFAULT_RISE: u32 = 3;
/// Default [`AnycastConfig::hold_down_ms`].
pub const DEFAULT_HOLD_DOWN_MS: u64 = 5_000;
/// Default [`AnycastConfig::drain_ms`].
pub const DEFAULT_DRAIN_MS: u64 = 2_000;

/// A validated `[[anycast]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnycastConfig {
    /// Its name (logs, metrics, `notify`).
    pub name: String,
    /// The service addresses, each a host prefix (/32 or /128).
    pub addresses: Vec<IpNet>,
    /// The interface the addresses are added to.
    pub interface: String,
    /// The pools that must each have a serving backend (and running
    /// listeners) for the addresses to be announced.
    pub track_pools: Vec<String>,
    /// Time between two looks at the pools.
    pub interval_ms: u64,
    /// Healthy looks in a row before announcing.
    pub rise: u32,
    /// After a withdraw caused by a failure, no announce before this long.
    pub hold_down_ms: u64,
    /// On stop: time between the withdraw and the listeners' stop.
    pub drain_ms: u64,
    /// A program run at each transition as `PROG NAME STATE REASON`.
    pub notify: Option<String>,
    /// BIRD's control socket, looked at by `dnsha check` and at start.
    pub bird_socket: Option<PathBuf>,
}

/// An `[[anycast]]` as written.
#[derive(Debug)]
pub(super) struct RawAnycast {
    name: Option<Spanned<String>>,
    addresses: Option<Vec<Spanned<String>>>,
    interface: Option<Spanned<String>>,
    track_pools: Option<Vec<Spanned<String>>>,
    interval_ms: Option<Spanned<u64>>,
    rise: Option<Spanned<u64>>,
    hold_down_ms: Option<Spanned<u64>>,
    drain_ms: Option<Spanned<u64>>,
    notify: Option<Spanned<String>>,
    bird_socket: Option<Spanned<String>>,
    span: std::ops::Range<usize>,
}

/// Reads one `[[anycast]]` table.
pub(super) fn anycast(mut t: Table<'_>, errs: &mut Errors) -> RawAnycast {
    let a = RawAnycast {
        name: t.required(errs, "name"),
        addresses: t.strings(errs, "addresses"),
        interface: t.string(errs, "interface"),
        track_pools: t.strings(errs, "track_pools"),
        interval_ms: t.u64(errs, "interval_ms"),
        rise: t.u64(errs, "rise"),
        hold_down_ms: t.u64(errs, "hold_down_ms"),
        drain_ms: t.u64(errs, "drain_ms"),
        notify: t.string(errs, "notify"),
        bird_socket: t.string(errs, "bird_socket"),
        span: t.span(),
    };
    t.finish(errs);
    a
}

impl Validator {
    /// The anycast sections; `pools` are the configuration's pool names.
    pub(super) fn anycast(
        &mut self,
        raw: &[RawAnycast],
        pools: &HashSet<&str>,
    ) -> Vec<AnycastConfig> {
        let mut seen = HashSet::new();
        let mut taken: HashSet<IpAddr> = HashSet::new();
        let mut out = Vec::new();
        for a in raw {
            let Some(name) = &a.name else { continue };
            let name = self.name("anycast", name, &mut seen);
            let addresses = self.anycast_addresses(&name, a, &mut taken);
            let track_pools = self.anycast_pools(&name, a, pools);
            let interface = a.interface.as_ref().map_or_else(
                || "lo".to_string(),
                |i| {
                    let v = i.get_ref().trim();
                    if v.is_empty() || v.len() > 15 || v.contains(['/', ' ']) {
                        self.err(
                            i.span(),
                            format!("interface `{v}` is not an interface name"),
                        );
                    }
                    v.to_string()
                },
            );
            let ms = |me: &mut Self, key, v: &Option<Spanned<u64>>, default, min, max| {
                v.as_ref()
                    .map_or(default, |v| me.between_u64(key, v, min, max))
            };
            let interval_ms = ms(
                self,
                "interval_ms",
                &a.interval_ms,
                DEFAULT_INTERVAL_MS,
                50,
                60_000,
            );
            let rise = ms(self, "rise", &a.rise, u64::from(DEFAULT_RISE), 1, 100);
            let hold_down_ms = ms(
                self,
                "hold_down_ms",
                &a.hold_down_ms,
                DEFAULT_HOLD_DOWN_MS,
                0,
                3_600_000,
            );
            let drain_ms = ms(self, "drain_ms", &a.drain_ms, DEFAULT_DRAIN_MS, 0, 60_000);
            let notify = a.notify.as_ref().map(|n| {
                let v = n.get_ref().trim().to_string();
                self.files.push(FileRef {
                    role: FileRole::Program,
                    path: PathBuf::from(&v),
                    span: n.span(),
                });
                v
            });
            let bird_socket = a.bird_socket.as_ref().map(|s| {
                let v = s.get_ref().trim();
                if v.is_empty() {
                    self.err(s.span(), "bird_socket is empty");
                }
                PathBuf::from(v)
            });
            out.push(AnycastConfig {
                name,
                addresses,
                interface,
                track_pools,
                interval_ms,
                rise: u32::try_from(rise).unwrap_or(DEFAULT_RISE),
                hold_down_ms,
                drain_ms,
                notify,
                bird_socket,
            });
        }
        out
    }

    /// `addresses`: host prefixes, at least one, none in two sections.
    fn anycast_addresses(
        &mut self,
        name: &str,
        a: &RawAnycast,
        taken: &mut HashSet<IpAddr>,
    ) -> Vec<IpNet> {
        let Some(list) = a.addresses.as_ref().filter(|l| !l.is_empty()) else {
            self.err(
                a.span.clone(),
                format!("anycast `{name}` has no `addresses`"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for s in list {
            let text = s.get_ref().trim();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match net {
                Ok(n) if n.prefix_len() != n.max_prefix_len() => self.err(
                    s.span(),
                    format!(
                        "anycast address `{text}` must be one address (/{}): a node announces \
                         what it serves, nothing wider",
                        n.max_prefix_len()
                    ),
                ),
                Ok(n) if n.addr().is_unspecified() || n.addr().is_multicast() => {
                    self.err(s.span(), format!("anycast address `{text}` is not a unicast address"));
                }
                Ok(n) => {
                    if !taken.insert(n.addr()) {
                        self.err(s.span(), format!("anycast address `{text}` is listed twice"));
                    }
                    out.push(n);
                }
                Err(_) => self.err(
                    s.span(),
                    format!("anycast address `{text}` is not an IP address (192.0.2.53/32, 2001:db8::53)"),
                ),
            }
        }
        out
    }

    /// `track_pools`: at least one, each a pool of the configuration.
    fn anycast_pools(&mut self, name: &str, a: &RawAnycast, pools: &HashSet<&str>) -> Vec<String> {
        let Some(list) = a.track_pools.as_ref().filter(|l| !l.is_empty()) else {
            self.err(
                a.span.clone(),
                format!("anycast `{name}` has no `track_pools`: it would be announced whatever its pools do"),
            );
            return Vec::new();
        };
        list.iter()
            .map(|p| {
                let v = p.get_ref().trim();
                if !pools.contains(v) {
                    self.err(
                        p.span(),
                        format!("anycast `{name}` tracks unknown pool `{v}`"),
                    );
                }
                v.to_string()
            })
            .collect()
    }
}
