//! keepalived's LVS half: `virtual_server IP PORT` with its `real_server`s
//! and their checkers becomes a listener on the virtual address and a pool
//! with health checks. dnsha proxies where LVS forwarded in the kernel, so
//! the forwarding method and persistence have no equivalent (warnings).

use std::net::{IpAddr, SocketAddr};

use super::plan::{
    int, s, seconds, set, Backend, Keys, Listener, Origin, Plan, Policy, Pool, Proto,
};
use super::syntax::Stmt;
use super::values::{arg_num, ip, port, secs, secs_to_ms};
use crate::error::Result;

/// Checker settings a `virtual_server` or `real_server` gives its checkers
/// (keepalived 2 takes them at either level).
#[derive(Debug, Clone, Default)]
struct CheckDefaults {
    interval: Option<f64>,
    timeout: Option<f64>,
    retry: Option<u32>,
    delay_before_retry: Option<f64>,
}

impl CheckDefaults {
    /// Reads `c` if it is one of the shared checker keys.
    fn read(&mut self, c: &Stmt) -> Result<bool> {
        match c.name() {
            "connect_timeout" => self.timeout = Some(secs(&c.loc, c.name(), c.arg(0, "seconds")?)?),
            "retry" | "nb_get_retry" => self.retry = Some(arg_num(c, 0)?),
            "delay_before_retry" => {
                self.delay_before_retry = Some(secs(&c.loc, c.name(), c.arg(0, "seconds")?)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn or(&self, outer: &Self) -> Self {
        Self {
            interval: self.interval.or(outer.interval),
            timeout: self.timeout.or(outer.timeout),
            retry: self.retry.or(outer.retry),
            delay_before_retry: self.delay_before_retry.or(outer.delay_before_retry),
        }
    }
}

const NO_EQUIVALENT_VS: &[&str] = &[
    "persistence_granularity",
    "persistence_engine",
    "quorum",
    "quorum_up",
    "quorum_down",
    "hysteresis",
    "sorry_server",
    "sorry_server_inhibit",
    "virtualhost",
    "alpha",
    "omega",
    "inhibit_on_failure",
    "ha_suspend",
    "smtp_alert",
    "ip_family",
    "lvs_flags",
    "hash",
    "sh-port",
    "sh-fallback",
    "mh-port",
    "mh-fallback",
    "warmup",
    "lvs_timeouts",
    "notify_up",
    "notify_down",
];

/// `virtual_server IP PORT { ... }` into a listener and its pool.
pub(crate) fn virtual_server(st: &Stmt, plan: &mut Plan) -> Result<()> {
    let first = st.arg(0, "address")?;
    if first == "fwmark" || first == "group" {
        plan.warn(
            &st.loc,
            format!(
                "virtual_server {}: firewall marks and groups have no equivalent; not imported",
                st.args().join(" ")
            ),
        );
        return Ok(());
    }
    let vip = ip(&st.loc, "virtual_server", first)?;
    let vport = port(&st.loc, "virtual_server", st.arg(1, "port")?)?;
    let mut udp = false;
    let mut policy = None;
    let mut defaults = CheckDefaults::default();
    let mut reals = Vec::new();
    let mut notes = Vec::new();
    for c in st.children() {
        if defaults.read(c)? {
            continue;
        }
        match c.name() {
            "delay_loop" => defaults.interval = Some(secs(&c.loc, "delay_loop", c.arg(0, "seconds")?)?),
            "lb_algo" | "lvs_sched" => policy = Some(lb_algo(c, plan)?),
            "lb_kind" | "lvs_method" => plan.warn(
                &c.loc,
                format!(
                    "{} {}: dnsha proxies the queries (the backends answer dnsha, which answers \
                     the client): no VIP on the backends' lo and no ARP sysctls needed; not imported",
                    c.name(),
                    c.args().join(" ")
                ),
            ),
            "protocol" => match c.arg(0, "protocol")?.to_ascii_uppercase().as_str() {
                "UDP" => udp = true,
                "TCP" => udp = false,
                other => return Err(c.loc.error(format!("protocol {other}: dnsha balances UDP and TCP only"))),
            },
            "persistence_timeout" => plan.warn(
                &c.loc,
                format!(
                    "persistence_timeout {}: no timed persistence in dnsha, each query is balanced \
                     on its own (policy = \"chash\" with hash_key = \"client\" keeps a client on \
                     one backend); not imported",
                    c.args().join(" ")
                ),
            ),
            "ops" => notes.push("ops: dnsha balances every UDP query on its own anyway".into()),
            "real_server" => reals.push(c),
            n if NO_EQUIVALENT_VS.contains(&n) => {
                plan.warn(&c.loc, format!("virtual_server: {n}: no equivalent in dnsha; not imported"));
            }
            other => {
                return Err(c
                    .loc
                    .error(format!("unknown keyword `{other}` in virtual_server")))
            }
        }
    }
    let what = format!("virtual_server {vip} {vport}");
    let mut pool = Pool::new(
        format!("vs-{}-{vip}-{vport}", if udp { "udp" } else { "tcp" }),
        Origin::new(&st.loc, what.clone()),
    );
    for r in reals {
        pool.backends.push(real_server(r, &defaults, plan)?);
    }
    if pool.backends.is_empty() {
        return Err(st.loc.error(format!("{what} has no real_server")));
    }
    pool.policy = policy.unwrap_or_else(|| Policy::round_robin(&pool.backends));
    pool.notes = notes;
    let pool_name = plan.add_pool(pool);
    let proto = Proto::l4(udp, vport);
    plan.add_listener(Listener {
        name: format!("{}-{vport}", proto.as_str()),
        proto,
        listen: SocketAddr::new(vip, vport),
        pool: pool_name,
        keys: Vec::new(),
        origin: Origin::new(&st.loc, what),
        notes: listener_notes(proto),
    });
    Ok(())
}

/// What a listener of `proto` does differently from LVS.
pub(crate) fn listener_notes(proto: Proto) -> Vec<String> {
    match proto {
        Proto::Tcp => vec!["DNS over TCP, each query balanced on its own (tcp-passthrough pipes whole connections)".into()],
        Proto::Passthrough => vec!["a byte pipe: the backends terminate TLS as before".into()],
        _ => Vec::new(),
    }
}

fn lb_algo(c: &Stmt, plan: &mut Plan) -> Result<Policy> {
    let algo = c.arg(0, "scheduler")?;
    let (policy, why) = match algo {
        "rr" => (Policy::Rr, None),
        "wrr" => (Policy::Wrr, None),
        "lc" | "wlc" => (Policy::Lc, None),
        "sh" | "mh" => (Policy::ChashClient, None),
        "sed" | "nq" | "ovf" => (Policy::Lc, Some("lc")),
        "fo" => (
            Policy::First,
            Some("first (the backends in the order written, not by weight)"),
        ),
        _ => (Policy::Rr, Some("rr")),
    };
    if let Some(instead) = why {
        plan.warn(
            &c.loc,
            format!(
                "{} {algo}: no equivalent in dnsha; imported as policy {instead}",
                c.name()
            ),
        );
    }
    Ok(policy)
}

const NO_EQUIVALENT_RS: &[&str] = &[
    "inhibit_on_failure",
    "notify_up",
    "notify_down",
    "uthreshold",
    "lthreshold",
    "alpha",
    "omega",
    "smtp_alert",
    "virtualhost",
    "delay_loop",
    "warmup",
];

fn real_server(st: &Stmt, outer: &CheckDefaults, plan: &mut Plan) -> Result<Backend> {
    let addr: IpAddr = ip(&st.loc, "real_server", st.arg(0, "address")?)?;
    let rport = port(&st.loc, "real_server", st.arg(1, "port")?)?;
    let mut b = Backend::at(SocketAddr::new(addr, rport));
    let mut defaults = CheckDefaults::default();
    let mut checkers = Vec::new();
    for c in st.children() {
        if defaults.read(c)? {
            continue;
        }
        match c.name() {
            "weight" => b.weight = arg_num(c, 0)?,
            n if n.ends_with("_CHECK") || n == "HTTP_GET" || n == "SSL_GET" => checkers.push(c),
            n if NO_EQUIVALENT_RS.contains(&n) => {
                plan.warn(
                    &c.loc,
                    format!("real_server: {n}: no equivalent in dnsha; not imported"),
                );
            }
            other => {
                return Err(c
                    .loc
                    .error(format!("unknown keyword `{other}` in real_server")))
            }
        }
    }
    if b.weight == 0 {
        plan.warn(&st.loc, "real_server weight 0: dnsha weights start at 1; imported with weight 1 (drain it with `dnsha backend drain`)");
        b.weight = 1;
    }
    let defaults = defaults.or(outer);
    let mut checkers = checkers.into_iter();
    if let Some(c) = checkers.next() {
        b.health = checker(c, rport, &defaults, plan)?;
    }
    for extra in checkers {
        plan.warn(
            &extra.loc,
            format!(
                "{}: dnsha runs one check per backend; only the first is imported",
                extra.name()
            ),
        );
    }
    Ok(b)
}

const NO_EQUIVALENT_CHECK: &[&str] = &[
    "bindto",
    "bind_port",
    "bind_if",
    "connect_ip",
    "fwmark",
    "warmup",
    "alpha",
    "omega",
    "user",
    "misc_dynamic",
    "url",
    "virtualhost",
    "enable_sni",
    "tls_compliant",
    "protocol",
    "status_code",
    "digest",
    "path",
    "helo_name",
    "host",
];

/// A checker block into health keys; `None` for a kind dnsha lacks.
fn checker(c: &Stmt, rport: u16, d: &CheckDefaults, plan: &mut Plan) -> Result<Option<Keys>> {
    let kind = match c.name() {
        "TCP_CHECK" => "tcp",
        "UDP_CHECK" => "udp",
        "DNS_CHECK" => "dns",
        "MISC_CHECK" => "exec",
        "SSL_GET" => {
            plan.warn(&c.loc, "SSL_GET: imported as check = \"tls\" (a handshake); its URLs and digests are not checked");
            "tls"
        }
        "HTTP_GET" | "SMTP_CHECK" => {
            plan.warn(
                &c.loc,
                format!(
                    "{}: imported as check = \"tcp\" (a connect); the request is not sent",
                    c.name()
                ),
            );
            "tcp"
        }
        other => {
            plan.warn(&c.loc, format!("{other}: no equivalent in dnsha; the backend is imported without an active check"));
            return Ok(None);
        }
    };
    let mut own = CheckDefaults::default();
    let mut extra: Keys = Vec::new();
    for k in c.children() {
        if own.read(k)? {
            continue;
        }
        match (kind, k.name()) {
            (_, "connect_port") => {
                if port(&k.loc, "connect_port", k.arg(0, "port")?)? != rport {
                    plan.warn(
                        &k.loc,
                        "connect_port: dnsha checks the backend's own port; not imported",
                    );
                }
            }
            ("udp", "payload") => set(&mut extra, "payload", s(k.args().join(" "))),
            ("udp", "require_reply") => {
                if !k.args().is_empty() {
                    plan.warn(
                        &k.loc,
                        "require_reply PATTERN: dnsha takes any reply; the pattern is not imported",
                    );
                }
            }
            ("dns", "type") => set(
                &mut extra,
                "query_type",
                s(k.arg(0, "type")?.to_ascii_uppercase()),
            ),
            ("dns", "name") => set(&mut extra, "query_name", s(k.arg(0, "name")?)),
            ("exec", "misc_path") => set(&mut extra, "command", s(k.args().join(" "))),
            ("exec", "misc_timeout") => {
                own.timeout = Some(secs(&k.loc, "misc_timeout", k.arg(0, "seconds")?)?);
            }
            (_, n) if NO_EQUIVALENT_CHECK.contains(&n) => {
                plan.warn(
                    &k.loc,
                    format!("{}: {n}: no equivalent in dnsha; not imported", c.name()),
                );
            }
            (_, other) => {
                return Err(k
                    .loc
                    .error(format!("unknown keyword `{other}` in {}", c.name())))
            }
        }
    }
    if kind == "exec" && !extra.iter().any(|(k, _)| *k == "command") {
        return Err(c.loc.error("MISC_CHECK has no misc_path"));
    }
    let d = own.or(d);
    let mut keys: Keys = vec![("check", s(kind))];
    if let Some(i) = d.interval {
        keys.push(("interval_ms", int(secs_to_ms(i).max(1))));
    }
    if let Some(t) = d.timeout {
        keys.push(("timeout_ms", int(secs_to_ms(t).max(1))));
    }
    if let Some(r) = d.retry {
        keys.push(("retry", int(r)));
    }
    if let Some(r) = d.delay_before_retry.filter(|r| *r > 0.0) {
        keys.push(("delay_before_retry", seconds(r)));
    }
    if kind == "dns" {
        // keepalived's DNS_CHECK wants NOERROR.
        extra.push(("must_resolve", toml::Value::Boolean(true)));
    }
    keys.extend(extra);
    Ok(Some(keys))
}

#[cfg(test)]
mod tests {
    use super::super::syntax::{parse, Ends, Source, KEEPALIVED};
    use super::*;

    fn plan_of(text: &str) -> Result<Plan> {
        let stmts = parse(
            &Source::new("keepalived.conf", text),
            KEEPALIVED,
            Ends::Newline,
        )?;
        let mut plan = Plan::default();
        super::super::keepalived::import(&stmts, &mut plan)?;
        Ok(plan)
    }

    #[test]
    fn the_seed_lvs_master_becomes_four_listeners_on_the_vip() {
        let plan = plan_of(include_str!(
            "../../tests/data/import/seed-lvs-keepalived-master.conf"
        ))
        .unwrap();
        let ls: Vec<String> = plan
            .listeners
            .iter()
            .map(|l| format!("{} {} {} {}", l.name, l.proto.as_str(), l.listen, l.pool))
            .collect();
        assert_eq!(
            ls,
            [
                "udp-53 udp 192.168.1.5:53 vs-udp-192.168.1.5-53",
                "tcp-53 tcp 192.168.1.5:53 vs-tcp-192.168.1.5-53",
                "tcp-passthrough-853 tcp-passthrough 192.168.1.5:853 vs-tcp-192.168.1.5-853",
                "tcp-passthrough-443 tcp-passthrough 192.168.1.5:443 vs-tcp-192.168.1.5-443",
            ]
        );
        let udp = &plan.pools[0];
        assert_eq!(udp.policy, Policy::Rr);
        let b: Vec<String> = udp.backends.iter().map(|b| b.address.to_string()).collect();
        assert_eq!(b, ["192.168.1.1:53", "192.168.1.2:53"]);
        let h = |i: usize| {
            toml::Value::Table(
                udp.backends[i]
                    .health
                    .clone()
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
            .to_string()
        };
        assert_eq!(h(0), "{ check = \"udp\", delay_before_retry = 2, interval_ms = 6000, retry = 3, timeout_ms = 3000 }");
        assert_eq!(
            h(1),
            "{ check = \"udp\", interval_ms = 6000, timeout_ms = 3000 }"
        );
        let tcp = &plan.pools[1].backends[0].health;
        assert_eq!(tcp.as_ref().unwrap()[0].1.as_str(), Some("tcp"));
        let warned = |needle: &str| {
            plan.warnings
                .iter()
                .filter(|w| w.message.starts_with(needle))
                .count()
        };
        assert_eq!(warned("lb_kind DR"), 4);
        assert_eq!(warned("persistence_timeout 50"), 3);
        assert_eq!(plan.vrrp.len(), 1);
    }

    #[test]
    fn schedulers_and_checkers_map() {
        let plan = plan_of(
            "virtual_server 10.0.0.5 53 {\n lb_algo sh\n protocol UDP\n real_server 10.0.0.1 53 {\n  weight 3\n  DNS_CHECK {\n   type a\n   name example.test\n  }\n }\n\
             real_server 10.0.0.2 53 {\n  MISC_CHECK {\n   misc_path \"/bin/chk 10.0.0.2\"\n   misc_timeout 4\n  }\n  TCP_CHECK {\n  }\n }\n}\n",
        )
        .unwrap();
        let p = &plan.pools[0];
        assert_eq!(p.policy, Policy::ChashClient);
        assert_eq!(p.backends[0].weight, 3);
        let dns = p.backends[0].health.as_ref().unwrap();
        assert!(dns.contains(&("query_type", s("A"))));
        assert!(dns.contains(&("must_resolve", toml::Value::Boolean(true))));
        let exec = p.backends[1].health.as_ref().unwrap();
        assert!(exec.contains(&("command", s("/bin/chk 10.0.0.2"))));
        assert!(exec.contains(&("timeout_ms", int(4000))));
        assert!(plan
            .warnings
            .iter()
            .any(|w| w.loc.line == 16 && w.message.contains("one check per backend")));
        let e = plan_of("virtual_server 10.0.0.5 53 {\n real_server 10.0.0.1 53 {\n  TCP_CHECK {\n   conect_timeout 3\n  }\n }\n}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "keepalived.conf:4: unknown keyword `conect_timeout` in TCP_CHECK"
        );
    }
}
