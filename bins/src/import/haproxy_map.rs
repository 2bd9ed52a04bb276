//! The HAProxy sections [`super::haproxy`] read, made into dnsha listeners,
//! pools and `[admin]`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::haproxy::{Bind, Mode, Proxy};
use super::lvs::listener_notes;
use super::plan::{int, s, set, Admin, Backend, Keys, Listener, Origin, Plan, Policy, Pool, Proto};
use super::Options;
use crate::error::Result;

/// HAProxy's check interval when `inter` is not written.
const DEFAULT_INTER_MS: u64 = 2000;

struct Maker<'a, 'o> {
    plan: &'a mut Plan,
    opts: &'a Options<'o>,
    backends: &'a BTreeMap<String, Proxy>,
    /// Pools made, by backend and the port its servers default to.
    made: BTreeMap<(String, u16), String>,
    used: BTreeSet<String>,
}

/// Listeners, pools and `[admin]` from `proxies`; `backends` holds the
/// sections that have servers, by name.
pub(crate) fn make(proxies: &[Proxy], plan: &mut Plan, opts: &Options<'_>) -> Result<()> {
    let backends: BTreeMap<String, Proxy> = proxies
        .iter()
        .filter(|p| p.kind != "frontend")
        .map(|p| (p.name.clone(), p.clone()))
        .collect();
    let backends = &backends;
    let mut m = Maker {
        plan,
        opts,
        backends,
        made: BTreeMap::new(),
        used: BTreeSet::new(),
    };
    for p in proxies.iter().filter(|p| p.kind != "backend") {
        if !p.stats.is_empty() && p.servers.is_empty() {
            m.admin(p);
            continue;
        }
        for st in &p.stats {
            m.plan.warn(
                &st.loc,
                format!(
                    "{}: the stats page is the admin endpoint ([admin]); not imported here",
                    st.text()
                ),
            );
        }
        if p.binds.is_empty() {
            if p.kind == "frontend" {
                m.plan.warn(
                    &p.loc,
                    format!("frontend {} has no bind; not imported", p.name),
                );
            }
            continue;
        }
        let backend = match &p.default_backend {
            Some((name, loc)) => backends.get(name).ok_or_else(|| {
                loc.error(format!("default_backend {name}: no backend of that name"))
            })?,
            None if !p.servers.is_empty() => p,
            None => {
                return Err(p
                    .loc
                    .error(format!("{} {} has no default_backend", p.kind, p.name)))
            }
        };
        if backend.settings.mode != p.settings.mode {
            return Err(p.loc.error(format!(
                "{} {}: its mode differs from backend {}'s",
                p.kind, p.name, backend.name
            )));
        }
        m.used.insert(backend.name.clone());
        for b in &p.binds {
            m.listener(p, backend, b)?;
        }
    }
    for (name, b) in backends {
        if b.kind == "backend" && !m.used.contains(name) {
            m.plan.warn(
                &b.loc,
                format!("backend {name} is used by no frontend; not imported"),
            );
        }
    }
    Ok(())
}

impl Maker<'_, '_> {
    fn listener(&mut self, p: &Proxy, backend: &Proxy, b: &Bind) -> Result<()> {
        let port = b.addr.port();
        let proto = match (p.settings.mode, b.crt.is_some()) {
            (Mode::Tcp, false) => Proto::l4(false, port),
            (Mode::Tcp, true) => Proto::Dot,
            (Mode::Http, _) => Proto::Doh,
        };
        let mut notes = listener_notes(proto);
        let pool = if proto == Proto::Doh {
            self.doh_pool(backend, &mut notes)?
        } else {
            self.pool(backend, port)?
        };
        let mut keys: Keys = Vec::new();
        match &b.crt {
            Some(crt) => {
                let key = format!("{crt}.key");
                keys.push(("tls_cert", s(crt.clone())));
                if (self.opts.exists)(&key) {
                    keys.push(("tls_key", s(key)));
                } else {
                    keys.push(("tls_key", s(crt.clone())));
                    notes.push(format!(
                        "{key} is not here: the key is taken from {crt} itself, as HAProxy does"
                    ));
                }
            }
            None if proto == Proto::Doh => keys.push(("tls", toml::Value::Boolean(false))),
            None => {}
        }
        if let Some(ms) = p.settings.timeout_client {
            keys.push(("idle_timeout_ms", int(ms.clamp(1, 86_400_000))));
        }
        if let Some(n) = p.settings.maxconn {
            keys.push(("max_connections", int(n.max(1))));
        }
        if proto == Proto::Tcp {
            notes.push("HAProxy had no UDP: a protocol = \"udp\" listener on this address would serve it too".into());
        }
        self.plan.add_listener(Listener {
            name: p.name.clone(),
            proto,
            listen: b.addr,
            pool,
            keys,
            origin: Origin::new(&b.loc, format!("{} {} bind {}", p.kind, p.name, b.addr)),
            notes,
        });
        Ok(())
    }

    /// The pool of a DoH listener: dnsha answers DoH itself and asks DNS
    /// backends, so the HTTP backend's servers are reached on port 53 (the
    /// pool of another backend with those servers on 53, when there is one).
    fn doh_pool(&mut self, http: &Proxy, notes: &mut Vec<String>) -> Result<String> {
        if !http.servers.is_empty() && http.servers.iter().all(|s| s.ssl) {
            // HTTPS to the servers: their own DoH listeners (the seed's
            // CoreDNS), reached as `transport = "doh"` backends.
            let pool = self.pool(http, 443)?;
            self.used.insert(http.name.clone());
            notes.push(format!(
                "DoH answered here, each query sent on to the DoH listeners of pool {pool} (transport = \"doh\")"
            ));
            return Ok(pool);
        }
        let ips: BTreeSet<IpAddr> = http.servers.iter().map(|s| s.ip).collect();
        let backends = self.backends;
        let twin = backends.values().find(|b| {
            b.settings.mode == Mode::Tcp
                && !b.servers.is_empty()
                && b.servers.iter().all(|s| s.port == Some(53) && !s.ssl)
                && b.servers.iter().map(|s| s.ip).collect::<BTreeSet<_>>() == ips
        });
        let (source, name) = match twin {
            Some(t) => {
                self.used.insert(t.name.clone());
                (t.clone(), t.name.clone())
            }
            None => {
                let mut dns = http.clone();
                dns.name = format!("{}-dns", http.name);
                for s in &mut dns.servers {
                    s.port = Some(53);
                    s.ssl = false;
                }
                (dns, String::new())
            }
        };
        let pool = self.pool(&source, 53)?;
        let message = if name.is_empty() {
            format!(
                "backend {} (mode http): dnsha answers DoH itself and asks DNS backends: its servers \
                 are imported in pool {pool} on port 53 (set the port of their DNS service)",
                http.name
            )
        } else {
            format!(
                "backend {} (mode http): dnsha answers DoH itself and asks DNS backends: the DoH \
                 listener uses pool {pool}, the same servers on port 53; {} is not imported",
                http.name, http.name
            )
        };
        if self.used.insert(format!("doh:{}", http.name)) {
            self.plan.warn(&http.loc, message);
        }
        self.used.insert(http.name.clone());
        notes.push(format!(
            "DoH answered here, each query asked of pool {pool} (HAProxy passed the HTTP to {})",
            http.name
        ));
        Ok(pool)
    }

    /// The pool of backend `b` whose servers without a port take `port`.
    fn pool(&mut self, b: &Proxy, port: u16) -> Result<String> {
        if let Some(name) = self.made.get(&(b.name.clone(), port)) {
            return Ok(name.clone());
        }
        let mut pool = Pool::new(
            b.name.clone(),
            Origin::new(&b.loc, format!("{} {}", b.kind, b.name)),
        );
        let mut maxconn = BTreeSet::new();
        for sv in &b.servers {
            let mut be = Backend::at(std::net::SocketAddr::new(sv.ip, sv.port.unwrap_or(port)));
            be.name = sv.name.clone();
            be.weight = sv.weight;
            if sv.weight == 0 {
                self.plan.warn(&sv.loc, format!("server {} weight 0: imported with weight 1 (drain it with `dnsha backend drain`)", sv.name));
                be.weight = 1;
            }
            let mut tls: Keys = Vec::new();
            if sv.verify_none {
                tls.push(("tls_verify", toml::Value::Boolean(false)));
            }
            if let Some(n) = &sv.sni {
                tls.push(("tls_name", s(n.clone())));
            }
            if let Some(ca) = &sv.ca_file {
                tls.push(("tls_ca", s(ca.clone())));
            }
            // HTTPS servers of a `mode http` backend are DoH listeners.
            let doh = sv.ssl && b.settings.mode == Mode::Http;
            if sv.ssl {
                be.keys
                    .push(("transport", s(if doh { "doh" } else { "dot" })));
                be.keys.extend(tls.iter().cloned());
            }
            if sv.check {
                let inter = sv.inter.unwrap_or(DEFAULT_INTER_MS).max(1);
                // A DoH server is checked with a DoH query (HAProxy's
                // `check ssl` only connects).
                let kind = match (doh, sv.ssl) {
                    (true, _) => "dns",
                    (false, true) => "tls",
                    (false, false) => "tcp",
                };
                let mut h: Keys = vec![("check", s(kind)), ("interval_ms", int(inter))];
                // HAProxy: the connect takes at most min(timeout connect,
                // inter); `timeout check` adds to it for what is read
                // after (the TLS handshake).
                let connect = b.settings.timeout_connect.map_or(inter, |c| c.min(inter));
                let read = if sv.ssl {
                    b.settings.timeout_check.unwrap_or(0)
                } else {
                    0
                };
                h.push((
                    "timeout_ms",
                    int(connect.saturating_add(read).clamp(1, 86_400_000)),
                ));
                if let Some(r) = sv.rise {
                    h.push(("rise", int(r)));
                }
                if let Some(f) = sv.fall {
                    h.push(("fall", int(f)));
                }
                if sv.ssl {
                    h.extend(tls);
                }
                be.health = Some(h);
            }
            maxconn.insert(sv.maxconn);
            pool.backends.push(be);
        }
        if pool.backends.is_empty() {
            return Err(b
                .loc
                .error(format!("{} {} has no server dnsha can use", b.kind, b.name)));
        }
        pool.policy = self.policy(b, &pool.backends);
        if let Some(r) = b.settings.retries {
            pool.set("retries", int(r));
        }
        match maxconn.into_iter().collect::<Vec<_>>().as_slice() {
            [None] => {}
            [Some(n)] => pool.set("max_outstanding_per_backend", int(*n)),
            _ => self.plan.warn(
                &b.loc,
                "server maxconn: dnsha caps every backend of a pool alike; not imported",
            ),
        }
        let name = self.plan.add_pool(pool);
        self.made.insert((b.name.clone(), port), name.clone());
        Ok(name)
    }

    fn policy(&mut self, b: &Proxy, backends: &[Backend]) -> Policy {
        let Some((balance, loc)) = &b.settings.balance else {
            return Policy::round_robin(backends);
        };
        let algo = balance.split_whitespace().next().unwrap_or("");
        match algo {
            "roundrobin" | "static-rr" => Policy::round_robin(backends),
            "leastconn" => Policy::Lc,
            "first" => Policy::First,
            "source" => Policy::ChashClient,
            _ => {
                self.plan.warn(
                    loc,
                    format!("balance {balance}: no equivalent in dnsha; imported as round robin"),
                );
                Policy::round_robin(backends)
            }
        }
    }

    /// `listen stats` into `[admin]`.
    fn admin(&mut self, p: &Proxy) {
        if let Some(a) = &self.plan.admin {
            let message = format!(
                "{} {}: a second stats page; [admin] comes from {}",
                p.kind, p.name, a.origin.loc
            );
            self.plan.warn(&p.loc, message);
            return;
        }
        let Some(bind) = p.binds.first() else {
            self.plan.warn(
                &p.loc,
                format!("{} {}: stats without bind; not imported", p.kind, p.name),
            );
            return;
        };
        for extra in p.binds.iter().skip(1) {
            self.plan.warn(
                &extra.loc,
                "bind: the admin endpoint listens on one address; not imported",
            );
        }
        let mut keys: Keys = vec![("listen", s(bind.addr.to_string()))];
        if !bind.addr.ip().is_loopback() {
            keys.push(("allow", toml::Value::Array(vec![s("0.0.0.0/0"), s("::/0")])));
            self.plan.warn(
                &bind.loc,
                format!(
                    "bind {}: the stats page answered every client; [admin] allow is set to every \
                     network as HAProxy had it: narrow it to the networks that read /status and /metrics",
                    bind.addr
                ),
            );
        }
        if bind.crt.is_some() {
            self.plan.warn(
                &bind.loc,
                "bind ... ssl crt: the admin endpoint's own TLS is not imported",
            );
        }
        let mut users = Vec::new();
        for st in &p.stats {
            match (st.args().first().map(String::as_str), st.args().get(1)) {
                (Some("enable"), _) => {}
                (Some("auth"), Some(cred)) => match cred.split_once(':') {
                    Some((user, pass)) => match (self.opts.hash)(pass) {
                        Some(hash) => {
                            users.push(s(format!("{user}:{hash}")));
                            self.plan.warn(
                                &st.loc,
                                format!(
                                    "stats auth {user}: the password is imported as an Argon2 hash (HAProxy kept it \
                                     in clear text here): change it, with `dnsha hash-password`"
                                ),
                            );
                        }
                        None => self.plan.warn(&st.loc, format!("stats auth {user}: cannot hash the password; not imported")),
                    },
                    None => self.plan.warn(&st.loc, "stats auth: expected USER:PASSWORD; not imported"),
                },
                (Some("refresh"), Some(t)) => match super::values::duration_ms(&st.loc, "stats refresh", t, 1000) {
                    Ok(ms) => set(&mut keys, "refresh_ms", int(ms.clamp(500, 600_000))),
                    Err(_) => self.plan.warn(&st.loc, format!("stats refresh {t}: not a duration; not imported")),
                },
                (Some("uri"), _) => self.plan.warn(
                    &st.loc,
                    format!("{}: dnsha's console is at /, with /status (JSON) and /metrics (Prometheus); not imported", st.text()),
                ),
                _ => self.plan.warn(&st.loc, format!("{}: no equivalent in dnsha; not imported", st.text())),
            }
        }
        if !users.is_empty() {
            keys.push(("users", toml::Value::Array(users)));
            keys.push(("auth", s("all")));
        }
        self.plan.admin = Some(Admin {
            keys,
            origin: Origin::new(&p.loc, format!("{} {}", p.kind, p.name)),
            notes: vec!["HAProxy's stats page: dnsha's admin endpoint".into()],
        });
    }
}
