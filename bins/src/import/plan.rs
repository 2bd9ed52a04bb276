//! What an import makes before it is written: listeners, pools, VRRP
//! instances and the admin endpoint, each with where it came from, and the
//! warnings about what was not carried over. The readers add to one
//! [`Plan`]; it merges identical pools, keeps names unique and refuses two
//! listeners on one socket.

use std::net::SocketAddr;

use super::syntax::{Loc, Warning};
use crate::error::Result;

/// Keys of a section in the order they are written, each with its value.
pub(crate) type Keys = Vec<(&'static str, toml::Value)>;

/// A string value.
pub(crate) fn s(v: impl Into<String>) -> toml::Value {
    toml::Value::String(v.into())
}

/// An integer value (saturating: every key it is used for is far below).
pub(crate) fn int(v: impl TryInto<i64>) -> toml::Value {
    toml::Value::Integer(v.try_into().unwrap_or(i64::MAX))
}

/// A number of seconds as written: a whole number stays one.
pub(crate) fn seconds(v: f64) -> toml::Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        toml::Value::Integer(v as i64)
    } else {
        toml::Value::Float(v)
    }
}

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// DNS over UDP.
    Udp,
    /// DNS over TCP, each query balanced on its own.
    Tcp,
    /// An L4 byte pipe (what nginx stream, HAProxy `mode tcp` and LVS do).
    Passthrough,
    /// DNS over TLS, terminated here.
    Dot,
    /// DNS over HTTPS, terminated here.
    Doh,
}

impl Proto {
    /// The configuration's word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Passthrough => "tcp-passthrough",
            Self::Dot => "dot",
            Self::Doh => "doh",
        }
    }

    /// Binds a TCP socket.
    pub(crate) fn is_stream(self) -> bool {
        self != Self::Udp
    }

    /// A plain L4 listener on `port`: DNS over TCP on port 53, balanced
    /// per query; a byte pipe elsewhere (DoT and DoH that the backends
    /// terminate).
    pub(crate) fn l4(udp: bool, port: u16) -> Self {
        match (udp, port) {
            (true, _) => Self::Udp,
            (false, 53) => Self::Tcp,
            (false, _) => Self::Passthrough,
        }
    }
}

/// A pool's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Round robin.
    Rr,
    /// Smooth weighted round robin.
    Wrr,
    /// Least outstanding queries relative to weight.
    Lc,
    /// First available in order.
    First,
    /// Consistent hashing of the client address.
    ChashClient,
}

impl Policy {
    /// Round robin, weighted when the weights differ.
    pub(crate) fn round_robin(backends: &[Backend]) -> Self {
        let mut weights = backends.iter().map(|b| b.weight);
        let first = weights.next();
        if weights.all(|w| Some(w) == first) {
            Self::Rr
        } else {
            Self::Wrr
        }
    }
}

/// Where a section came from: `keepalived.conf:436 vrrp_instance VI_1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The line.
    pub(crate) loc: Loc,
    /// The directive, in the source's words.
    pub(crate) what: String,
}

impl Origin {
    /// At `loc`, written `what`.
    pub(crate) fn new(loc: &Loc, what: impl Into<String>) -> Self {
        Self {
            loc: loc.clone(),
            what: what.into(),
        }
    }
}

/// A `[[listener]]`.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    /// Its name (made unique by [`Plan::add_listener`]).
    pub(crate) name: String,
    /// Its protocol.
    pub(crate) proto: Proto,
    /// Where it binds.
    pub(crate) listen: SocketAddr,
    /// Its pool (as [`Plan::add_pool`] named it).
    pub(crate) pool: String,
    /// Other keys: access log, timeouts, TLS files...
    pub(crate) keys: Keys,
    /// Where it came from.
    pub(crate) origin: Origin,
    /// Comments written above it.
    pub(crate) notes: Vec<String>,
}

/// A `[[pool.backend]]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Backend {
    /// Unique within the pool.
    pub(crate) name: String,
    /// Its address.
    pub(crate) address: SocketAddr,
    /// Its weight.
    pub(crate) weight: u32,
    /// Transport and TLS keys.
    pub(crate) keys: Keys,
    /// Its full health check (the writer moves what every backend shares
    /// to `[pool.health]`).
    pub(crate) health: Option<Keys>,
}

impl Backend {
    /// A backend of weight 1 named by its address.
    pub(crate) fn at(address: SocketAddr) -> Self {
        Self {
            name: address.to_string(),
            address,
            weight: 1,
            keys: Vec::new(),
            health: None,
        }
    }
}

/// A `[[pool]]`.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    /// Its name (made unique by [`Plan::add_pool`]).
    pub(crate) name: String,
    /// Its policy.
    pub(crate) policy: Policy,
    /// Other keys: timeouts, retries, passive health.
    pub(crate) keys: Keys,
    /// Its backends.
    pub(crate) backends: Vec<Backend>,
    /// Where it came from (several when identical pools were merged).
    pub(crate) origins: Vec<Origin>,
    /// Comments written above it.
    pub(crate) notes: Vec<String>,
}

impl Pool {
    /// An empty pool.
    pub(crate) fn new(name: impl Into<String>, origin: Origin) -> Self {
        Self {
            name: name.into(),
            policy: Policy::Rr,
            keys: Vec::new(),
            backends: Vec::new(),
            origins: vec![origin],
            notes: Vec::new(),
        }
    }

    /// Same policy, keys and backends.
    fn same_as(&self, other: &Self) -> bool {
        self.policy == other.policy && self.keys == other.keys && self.backends == other.backends
    }

    /// Sets key `key`, replacing an earlier value.
    pub(crate) fn set(&mut self, key: &'static str, value: toml::Value) {
        set(&mut self.keys, key, value);
    }
}

/// Sets `key` in `keys`, replacing an earlier value in place.
pub(crate) fn set(keys: &mut Keys, key: &'static str, value: toml::Value) {
    match keys.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => keys.push((key, value)),
    }
}

/// A `[[vrrp]]` instance.
#[derive(Debug, Clone)]
pub(crate) struct Vrrp {
    /// Its name.
    pub(crate) name: String,
    /// Its keys, `name` excepted.
    pub(crate) keys: Keys,
    /// The weight of a script that checked the proxy dnsha replaces: it
    /// becomes `track_pools` over the imported pools.
    pub(crate) track_proxy: Option<(i32, Loc)>,
    /// Where it came from.
    pub(crate) origin: Origin,
    /// Comments written above it.
    pub(crate) notes: Vec<String>,
}

/// The `[admin]` table.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    /// Its keys.
    pub(crate) keys: Keys,
    /// Where it came from.
    pub(crate) origin: Origin,
    /// Comments written above it.
    pub(crate) notes: Vec<String>,
}

/// Everything imported so far.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Listeners, in the order made.
    pub(crate) listeners: Vec<Listener>,
    /// Pools, in the order made.
    pub(crate) pools: Vec<Pool>,
    /// VRRP instances.
    pub(crate) vrrp: Vec<Vrrp>,
    /// The admin endpoint.
    pub(crate) admin: Option<Admin>,
    /// What was not carried over.
    pub(crate) warnings: Vec<Warning>,
}

fn unique(name: &str, taken: &[&str]) -> String {
    if !taken.contains(&name) {
        return name.to_string();
    }
    (2..)
        .map(|i| format!("{name}-{i}"))
        .find(|n| !taken.contains(&n.as_str()))
        .unwrap_or_else(|| name.to_string())
}

impl Plan {
    /// Records a warning at `loc`.
    pub(crate) fn warn(&mut self, loc: &Loc, message: impl Into<String>) {
        self.warnings.push(Warning {
            loc: loc.clone(),
            message: message.into(),
        });
    }

    /// Warnings grouped by file (in the order the files were first
    /// warned about) and in line order within each.
    fn sort_warnings(&mut self) {
        let mut files: Vec<std::sync::Arc<str>> = Vec::new();
        for w in &self.warnings {
            if !files.contains(&w.loc.file) {
                files.push(w.loc.file.clone());
            }
        }
        self.warnings
            .sort_by_key(|w| (files.iter().position(|f| *f == w.loc.file), w.loc.line));
    }

    /// Adds `pool`, or merges it into an identical one; the name the
    /// listeners must use.
    pub(crate) fn add_pool(&mut self, pool: Pool) -> String {
        if let Some(p) = self.pools.iter_mut().find(|p| p.same_as(&pool)) {
            p.origins.extend(pool.origins);
            for n in pool.notes {
                if !p.notes.contains(&n) {
                    p.notes.push(n);
                }
            }
            return p.name.clone();
        }
        let taken: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        let name = unique(&pool.name, &taken);
        self.pools.push(Pool {
            name: name.clone(),
            ..pool
        });
        name
    }

    /// Adds `l`, unless another listener binds the same socket (then a
    /// warning says which one keeps it).
    pub(crate) fn add_listener(&mut self, l: Listener) {
        let clash = self
            .listeners
            .iter()
            .find(|o| o.listen == l.listen && o.proto.is_stream() == l.proto.is_stream());
        if let Some(o) = clash {
            let message = format!(
                "{} on {}: listener `{}` (from {} {}) already binds it; not imported again",
                l.proto.as_str(),
                l.listen,
                o.name,
                o.origin.loc,
                o.origin.what
            );
            self.warn(&l.origin.loc.clone(), message);
            return;
        }
        let taken: Vec<&str> = self.listeners.iter().map(|l| l.name.as_str()).collect();
        let name = unique(&l.name, &taken);
        self.listeners.push(Listener { name, ..l });
    }

    /// Adds instance `v`; a second instance of the name is an error (each
    /// node's keepalived.conf makes its own dnsha.toml).
    pub(crate) fn add_vrrp(&mut self, v: Vrrp) -> Result<()> {
        if let Some(o) = self.vrrp.iter().find(|o| o.name == v.name) {
            return Err(v.origin.loc.error(format!(
                "vrrp_instance {} is already imported from {}: import each node's keepalived.conf \
                 on its own (one dnsha configuration per node)",
                v.name, o.origin.loc
            )));
        }
        self.vrrp.push(v);
        Ok(())
    }

    /// The last steps once every input is read: scripts that checked the
    /// replaced proxy track the pools, and listeners whose source accepted
    /// every client say that dnsha's default does not.
    pub(crate) fn finish(&mut self) {
        let tracked: Vec<String> = {
            let mut names: Vec<String> = Vec::new();
            for l in &self.listeners {
                if !names.contains(&l.pool) {
                    names.push(l.pool.clone());
                }
            }
            names
        };
        let mut warnings = Vec::new();
        for v in &mut self.vrrp {
            let Some((weight, loc)) = v.track_proxy.take() else {
                continue;
            };
            if tracked.is_empty() {
                warnings.push(Warning {
                    loc,
                    message: format!(
                        "vrrp_instance {}: its script checks the proxy that dnsha replaces, and \
                         no pool is imported for track_pools: dnsha's VRRP stops with the \
                         balancer itself (import the proxy's configuration too to track its pools)",
                        v.name
                    ),
                });
                continue;
            }
            let list: Vec<toml::Value> = tracked
                .iter()
                .map(|p| {
                    if weight == 0 {
                        s(p.clone())
                    } else {
                        let mut t = toml::Table::new();
                        t.insert("name".into(), s(p.clone()));
                        t.insert("weight".into(), int(weight));
                        toml::Value::Table(t)
                    }
                })
                .collect();
            set(&mut v.keys, "track_pools", toml::Value::Array(list));
        }
        self.warnings.extend(warnings);
        if let Some(l) = self
            .listeners
            .iter()
            .find(|l| !l.keys.iter().any(|(k, _)| *k == "allow"))
        {
            let loc = l.origin.loc.clone();
            self.warn(
                &loc,
                "the listeners take dnsha's default allow (loopback and private networks: \
                 10/8, 172.16/12, 192.168/16, 100.64/10...), where the source accepted every \
                 client: set `allow` on listeners that serve public clients",
            );
        }
        self.sort_warnings();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn loc(line: u32) -> Loc {
        Loc {
            file: Arc::from("f"),
            line,
        }
    }

    fn pool(name: &str, port: u16) -> Pool {
        let mut p = Pool::new(name, Origin::new(&loc(1), format!("upstream {name}")));
        p.backends
            .push(Backend::at(SocketAddr::from(([10, 0, 0, 1], port))));
        p
    }

    fn listener(name: &str, proto: Proto, port: u16, pool: &str) -> Listener {
        Listener {
            name: name.into(),
            proto,
            listen: SocketAddr::from(([0, 0, 0, 0], port)),
            pool: pool.into(),
            keys: Vec::new(),
            origin: Origin::new(&loc(9), "server"),
            notes: Vec::new(),
        }
    }

    #[test]
    fn identical_pools_merge_and_names_stay_unique() {
        let mut plan = Plan::default();
        assert_eq!(plan.add_pool(pool("a", 53)), "a");
        assert_eq!(plan.add_pool(pool("b", 53)), "a");
        assert_eq!(plan.add_pool(pool("a", 853)), "a-2");
        assert_eq!(plan.pools.len(), 2);
        assert_eq!(plan.pools[0].origins.len(), 2);
    }

    #[test]
    fn a_second_listener_on_a_socket_is_a_warning() {
        let mut plan = Plan::default();
        plan.add_listener(listener("udp-53", Proto::Udp, 53, "a"));
        plan.add_listener(listener("tcp-53", Proto::Tcp, 53, "a"));
        plan.add_listener(listener("tcp-53", Proto::Passthrough, 53, "a"));
        plan.add_listener(listener("tcp-53", Proto::Tcp, 54, "a"));
        let names: Vec<&str> = plan.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["udp-53", "tcp-53", "tcp-53-2"]);
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].message.contains("already binds"));
    }

    #[test]
    fn a_proxy_check_tracks_the_pools_of_the_listeners() {
        let mut plan = Plan::default();
        plan.add_pool(pool("a", 53));
        plan.add_listener(listener("udp-53", Proto::Udp, 53, "a"));
        plan.vrrp.push(Vrrp {
            name: "VI_1".into(),
            keys: Vec::new(),
            track_proxy: Some((-20, loc(3))),
            origin: Origin::new(&loc(2), "vrrp_instance VI_1"),
            notes: Vec::new(),
        });
        plan.finish();
        let (k, v) = &plan.vrrp[0].keys[0];
        assert_eq!(*k, "track_pools");
        assert_eq!(v.to_string(), "[{ name = \"a\", weight = -20 }]");
    }
}
