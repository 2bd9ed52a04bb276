//! nginx `stream`: `upstream` blocks into pools, `server` blocks into
//! listeners. A file holding `upstream` and `server` at its top level (a
//! `stream_conf.d/*.conf` that nginx.conf includes inside `stream`) is read
//! as the inside of a `stream` block. `http`, `mail` and `events` have no
//! equivalent and are reported.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::lvs::listener_notes;
use super::plan::{int, s, set, Backend, Keys, Listener, Origin, Plan, Policy, Pool, Proto};
use super::syntax::{Loc, Stmt};
use super::values::{duration_ms, host_port, num, HostPort};
use super::Options;
use crate::error::Result;

/// The fields of nginx's `log_format basic` in the seed, which dnsha's
/// text access log writes (plus qname and qtype).
const BASIC_FIELDS: &str =
    "$time_local $remote_addr $upstream_addr $protocol $status $session_time";

/// Reads the statements of an nginx configuration (includes spliced in).
pub(crate) fn import(stmts: &[Stmt], plan: &mut Plan, opts: &Options<'_>) -> Result<()> {
    let top_level_stream = stmts
        .iter()
        .any(|s| matches!(s.name(), "upstream" | "server"));
    if top_level_stream {
        return stream(stmts, plan, opts);
    }
    for st in stmts {
        match st.name() {
            "stream" => stream(st.children(), plan, opts)?,
            "http" | "mail" | "events" => plan.warn(
                &st.loc,
                format!(
                    "{} {{ }}: not imported (dnsha balances DNS; for DoH it terminates HTTPS \
                     itself with a protocol = \"doh\" listener)",
                    st.name()
                ),
            ),
            "user"
            | "worker_processes"
            | "error_log"
            | "pid"
            | "worker_rlimit_nofile"
            | "load_module"
            | "daemon"
            | "env"
            | "pcre_jit"
            | "thread_pool"
            | "timer_resolution"
            | "worker_cpu_affinity"
            | "worker_priority"
            | "master_process"
            | "lock_file"
            | "working_directory"
            | "worker_shutdown_timeout"
            | "ssl_engine"
            | "debug_points" => {
                plan.warn(&st.loc, main_message(st));
            }
            other => plan.warn(
                &st.loc,
                format!("unknown directive `{other}`: not imported"),
            ),
        }
    }
    Ok(())
}

fn main_message(st: &Stmt) -> String {
    match st.name() {
        "user" => {
            "user: dnsha's own top-level `user` (its package runs it as `dnsha`); not imported"
                .into()
        }
        "worker_processes" | "worker_cpu_affinity" => format!(
            "{}: dnsha runs `workers` threads per listener (one per CPU by default); not imported",
            st.name()
        ),
        "error_log" => {
            "error_log: dnsha logs to stderr (the journal under systemd); not imported".into()
        }
        n => format!("{n}: no equivalent in dnsha; not imported"),
    }
}

/// Settings a `stream` block gives its servers.
#[derive(Debug, Clone, Default)]
struct Inherited {
    access_log: Option<(String, Option<String>, Loc)>,
    proxy_timeout: Option<u64>,
    ssl_certificate: Option<String>,
    ssl_certificate_key: Option<String>,
    proxy_ssl: bool,
    proxy_ssl_verify: bool,
    proxy_ssl_name: Option<String>,
    proxy_ssl_trusted_certificate: Option<String>,
    allow: Vec<String>,
    deny_all: bool,
    next_upstream_tries: Option<u32>,
}

/// Directives of `stream` and `server` that change nothing dnsha does or
/// has no equivalent of.
const NO_EQUIVALENT: &[&str] = &[
    "proxy_connect_timeout",
    "proxy_bind",
    "proxy_buffer_size",
    "proxy_download_rate",
    "proxy_upload_rate",
    "proxy_protocol",
    "proxy_socket_keepalive",
    "proxy_half_close",
    "proxy_next_upstream",
    "proxy_next_upstream_timeout",
    "proxy_ssl_protocols",
    "proxy_ssl_ciphers",
    "proxy_ssl_server_name",
    "proxy_ssl_session_reuse",
    "proxy_ssl_certificate",
    "proxy_ssl_certificate_key",
    "proxy_ssl_verify_depth",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_session_cache",
    "ssl_session_timeout",
    "ssl_session_tickets",
    "ssl_prefer_server_ciphers",
    "ssl_dhparam",
    "ssl_ecdh_curve",
    "ssl_handshake_timeout",
    "ssl_client_certificate",
    "ssl_verify_client",
    "ssl_password_file",
    "ssl_session_ticket_key",
    "ssl_trusted_certificate",
    "ssl_stapling",
    "ssl_conf_command",
    "limit_conn",
    "limit_conn_zone",
    "limit_conn_log_level",
    "resolver",
    "resolver_timeout",
    "tcp_nodelay",
    "preread_buffer_size",
    "preread_timeout",
    "variables_hash_max_size",
    "variables_hash_bucket_size",
    "map",
    "geo",
    "split_clients",
    "set",
    "return",
    "pass",
    "open_log_file_cache",
    "server_names_hash_max_size",
    "server_names_hash_bucket_size",
    "server_name",
    "ssl_preread",
    "js_import",
    "js_include",
    "js_set",
    "js_access",
    "js_preread",
    "js_filter",
    "error_log",
    "proxy_requests",
    "proxy_session_drop",
];

fn stream(stmts: &[Stmt], plan: &mut Plan, opts: &Options<'_>) -> Result<()> {
    let mut upstreams: BTreeMap<String, &Stmt> = BTreeMap::new();
    let mut formats: BTreeMap<String, String> = BTreeMap::new();
    let mut inherited = Inherited::default();
    let mut servers = Vec::new();
    for st in stmts {
        match st.name() {
            "upstream" => {
                upstreams.insert(st.arg(0, "name")?.to_string(), st);
            }
            "server" => servers.push(st),
            "log_format" => {
                let name = st.arg(0, "name")?.to_string();
                formats.insert(name, st.args().get(1..).unwrap_or(&[]).join(""));
            }
            _ => {
                if !common(st, &mut inherited, plan)? {
                    return Err(unknown(st, "stream"));
                }
            }
        }
    }
    let used: Vec<&String> = servers
        .iter()
        .flat_map(|s| s.children())
        .filter(|c| c.name() == "proxy_pass")
        .filter_map(|c| c.args().first())
        .collect();
    for (name, u) in &upstreams {
        if !used.contains(&name) {
            plan.warn(
                &u.loc,
                format!("upstream {name} is used by no server; not imported"),
            );
        }
    }
    for st in servers {
        server(st, &upstreams, &formats, inherited.clone(), plan, opts)?;
    }
    Ok(())
}

fn unknown(st: &Stmt, context: &str) -> crate::Error {
    st.loc.error(format!(
        "unknown directive `{}` in {context} (nginx would refuse it too, unless a module defines it)",
        st.name()
    ))
}

/// Directives that `stream` and `server` both take; false for others.
fn common(st: &Stmt, i: &mut Inherited, plan: &mut Plan) -> Result<bool> {
    let one = || st.arg(0, "value");
    match st.name() {
        "access_log" => {
            let path = one()?;
            i.access_log = if path == "off" {
                None
            } else {
                Some((path.to_string(), st.args().get(1).cloned(), st.loc.clone()))
            };
        }
        "proxy_timeout" => {
            i.proxy_timeout = Some(duration_ms(&st.loc, "proxy_timeout", one()?, 1000)?)
        }
        "proxy_responses" => {
            if one()? != "1" {
                plan.warn(
                    &st.loc,
                    "proxy_responses: dnsha relays exactly one answer per DNS query; not imported",
                );
            }
        }
        "ssl_certificate" => i.ssl_certificate = Some(one()?.to_string()),
        "ssl_certificate_key" => i.ssl_certificate_key = Some(one()?.to_string()),
        "proxy_ssl" => i.proxy_ssl = one()? == "on",
        "proxy_ssl_verify" => i.proxy_ssl_verify = one()? == "on",
        "proxy_ssl_name" => i.proxy_ssl_name = Some(one()?.to_string()),
        "proxy_ssl_trusted_certificate" => {
            i.proxy_ssl_trusted_certificate = Some(one()?.to_string())
        }
        "proxy_next_upstream_tries" => {
            let n: u32 = num(&st.loc, "proxy_next_upstream_tries", one()?)?;
            i.next_upstream_tries = Some(n);
        }
        "allow" => {
            let a = one()?;
            i.allow.push(if a == "all" {
                "0.0.0.0/0".into()
            } else {
                a.to_string()
            });
            if a == "all" {
                i.allow.push("::/0".into());
            }
        }
        "deny" => {
            if one()? == "all" {
                i.deny_all = true;
            } else {
                plan.warn(&st.loc, "deny ADDRESS: dnsha lists the clients it allows; not imported (leave the address out of `allow`)");
            }
        }
        "error_log" => plan.warn(
            &st.loc,
            "error_log: dnsha logs to stderr (the journal under systemd); not imported",
        ),
        n if NO_EQUIVALENT.contains(&n) => {
            plan.warn(
                &st.loc,
                format!("{}: no equivalent in dnsha; not imported", st.text()),
            );
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// One `listen` directive.
#[derive(Debug)]
struct Listen {
    addr: SocketAddr,
    udp: bool,
    ssl: bool,
    loc: Loc,
}

fn listen(st: &Stmt, plan: &mut Plan) -> Result<Listen> {
    let text = st.arg(0, "address")?;
    let addr = match host_port(&st.loc, "listen", text)? {
        HostPort::Port(p) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p),
        HostPort::Addr(a, Some(p)) => SocketAddr::new(a, p),
        HostPort::Addr(_, None) | HostPort::Name => {
            return Err(st.loc.error(format!(
                "listen {text}: dnsha listens on an address and port"
            )))
        }
    };
    let (mut udp, mut ssl) = (false, false);
    for p in st.args().iter().skip(1) {
        match p.as_str() {
            "udp" => udp = true,
            "ssl" => ssl = true,
            "reuseport" | "bind" | "default_server" => {}
            other
                if other.starts_with("ipv6only=")
                    || other.starts_with("backlog=")
                    || other.starts_with("rcvbuf=")
                    || other.starts_with("sndbuf=")
                    || other.starts_with("so_keepalive=")
                    || other.starts_with("fastopen=")
                    || other == "proxy_protocol"
                    || other.starts_with("accept_filter=")
                    || other == "deferred"
                    || other == "setfib" =>
            {
                plan.warn(
                    &st.loc,
                    format!("listen ... {other}: no equivalent in dnsha; not imported"),
                );
            }
            other => return Err(st.loc.error(format!("listen: unknown parameter `{other}`"))),
        }
    }
    Ok(Listen {
        addr,
        udp,
        ssl,
        loc: st.loc.clone(),
    })
}

fn server(
    st: &Stmt,
    upstreams: &BTreeMap<String, &Stmt>,
    formats: &BTreeMap<String, String>,
    mut i: Inherited,
    plan: &mut Plan,
    opts: &Options<'_>,
) -> Result<()> {
    let mut listens = Vec::new();
    let mut target = None;
    for c in st.children() {
        match c.name() {
            "listen" => listens.push(listen(c, plan)?),
            "proxy_pass" => target = Some((c.arg(0, "upstream")?.to_string(), c.loc.clone())),
            _ => {
                if !common(c, &mut i, plan)? {
                    return Err(unknown(c, "server"));
                }
            }
        }
    }
    let Some((target, target_loc)) = target else {
        plan.warn(&st.loc, "server without proxy_pass: not imported");
        return Ok(());
    };
    if listens.is_empty() {
        return Err(st.loc.error("server has no listen"));
    }
    let mut pool = match upstreams.get(&target) {
        Some(u) => upstream(u, plan)?,
        None => direct_pool(&target, &target_loc)?,
    };
    if let Some(t) = i.proxy_timeout {
        pool.set("timeout_ms", int(t.max(1)));
    }
    if let Some(n) = i.next_upstream_tries {
        pool.set("retries", int(n.saturating_sub(1)));
    }
    if i.proxy_ssl {
        for b in &mut pool.backends {
            set(&mut b.keys, "transport", s("dot"));
            if !i.proxy_ssl_verify {
                set(&mut b.keys, "tls_verify", toml::Value::Boolean(false));
            }
            if let Some(n) = &i.proxy_ssl_name {
                set(&mut b.keys, "tls_name", s(n.clone()));
            }
            if let Some(ca) = &i.proxy_ssl_trusted_certificate {
                set(&mut b.keys, "tls_ca", s(ca.clone()));
            }
        }
    }
    let pool_name = plan.add_pool(pool);
    for l in listens {
        listener(l, &pool_name, &i, formats, plan, opts)?;
    }
    Ok(())
}

/// `proxy_pass 192.168.1.1:53`: a pool of one.
fn direct_pool(target: &str, loc: &Loc) -> Result<Pool> {
    match host_port(loc, "proxy_pass", target)? {
        HostPort::Addr(a, Some(p)) => {
            let mut pool = Pool::new(
                format!("proxy-{a}-{p}"),
                Origin::new(loc, format!("proxy_pass {target}")),
            );
            pool.backends.push(Backend::at(SocketAddr::new(a, p)));
            Ok(pool)
        }
        _ => Err(loc.error(format!(
            "proxy_pass {target}: no upstream of that name, and not an address with a port"
        ))),
    }
}

fn listener(
    l: Listen,
    pool: &str,
    i: &Inherited,
    formats: &BTreeMap<String, String>,
    plan: &mut Plan,
    opts: &Options<'_>,
) -> Result<()> {
    let proto = match (l.udp, l.ssl) {
        (true, true) => {
            return Err(l
                .loc
                .error("listen ... udp ssl: DTLS has no equivalent in dnsha"))
        }
        (false, true) if l.addr.port() == 443 => {
            plan.warn(
                &l.loc,
                "listen 443 ssl: nginx ends TLS and pipes the HTTP inside to the upstream; dnsha \
                 answers DoH itself from DNS backends (protocol = \"doh\"): not imported",
            );
            return Ok(());
        }
        (false, true) => Proto::Dot,
        (udp, false) => Proto::l4(udp, l.addr.port()),
    };
    let mut keys: Keys = Vec::new();
    let mut notes = listener_notes(proto);
    if proto == Proto::Dot {
        let (Some(cert), Some(key)) = (&i.ssl_certificate, &i.ssl_certificate_key) else {
            return Err(l
                .loc
                .error("listen ... ssl without ssl_certificate and ssl_certificate_key"));
        };
        keys.push(("tls_cert", s(cert.clone())));
        keys.push(("tls_key", s(key.clone())));
    }
    if let Some((path, format, loc)) = &i.access_log {
        access_log(
            path,
            format.as_deref(),
            loc,
            formats,
            &mut keys,
            &mut notes,
            plan,
            opts,
        );
    }
    if !i.allow.is_empty() {
        if !i.deny_all {
            plan.warn(&l.loc, "allow without `deny all`: nginx then lets every client in; dnsha lets only the `allow` list in");
        }
        keys.push((
            "allow",
            toml::Value::Array(i.allow.iter().map(|a| s(a.clone())).collect()),
        ));
    }
    plan.add_listener(Listener {
        name: format!("{}-{}", proto.as_str(), l.addr.port()),
        proto,
        listen: l.addr,
        pool: pool.to_string(),
        keys,
        origin: Origin::new(
            &l.loc,
            format!("listen {}{}", l.addr, if l.udp { " udp" } else { "" }),
        ),
        notes,
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn access_log(
    path: &str,
    format: Option<&str>,
    loc: &Loc,
    formats: &BTreeMap<String, String>,
    keys: &mut Keys,
    notes: &mut Vec<String>,
    plan: &mut Plan,
    opts: &Options<'_>,
) {
    if path.starts_with("syslog:") {
        plan.warn(
            loc,
            "access_log syslog:...: dnsha writes its access log to a file or stderr; not imported",
        );
        return;
    }
    let file = std::path::Path::new(path)
        .file_name()
        .map_or_else(|| "access.log".into(), |f| f.to_string_lossy().into_owned());
    let target = format!("{}/{file}", opts.log_dir.trim_end_matches('/'));
    keys.push(("access_log", s(target.clone())));
    if target != path {
        notes.push(format!(
            "access_log {path}: written to {target}, where dnsha's user may write"
        ));
    }
    let fields = format.and_then(|f| formats.get(f));
    if fields.map(String::as_str) != Some(BASIC_FIELDS) {
        plan.warn(
            loc,
            format!(
                "access_log ... {}: dnsha writes its own text format (time_local client backend \
                 protocol rcode duration qname qtype) or JSON (format = \"json\")",
                format.unwrap_or("combined")
            ),
        );
    }
}

/// An `upstream` block into a pool named after it.
fn upstream(st: &Stmt, plan: &mut Plan) -> Result<Pool> {
    let name = st.arg(0, "name")?;
    let mut pool = Pool::new(name, Origin::new(&st.loc, format!("upstream {name}")));
    let mut policy = None;
    let mut passive: Vec<(&'static str, toml::Value, Loc)> = Vec::new();
    for c in st.children() {
        match c.name() {
            "server" => {
                if let Some(b) = upstream_server(c, &mut passive, plan)? {
                    pool.backends.push(b);
                }
            }
            "least_conn" => policy = Some(Policy::Lc),
            "hash" => {
                if c.args()
                    .first()
                    .is_some_and(|k| k == "$remote_addr" || k == "$binary_remote_addr")
                {
                    policy = Some(Policy::ChashClient);
                } else {
                    plan.warn(&c.loc, format!("{}: dnsha hashes the query name or the client; imported as round robin", c.text()));
                }
            }
            "random" => plan.warn(&c.loc, "random: imported as round robin"),
            "zone" | "state" | "resolver" | "resolver_timeout" | "keepalive" | "ntlm" => {
                plan.warn(
                    &c.loc,
                    format!(
                        "upstream {name}: {}: no equivalent in dnsha; not imported",
                        c.name()
                    ),
                );
            }
            _ => return Err(unknown(c, "upstream")),
        }
    }
    if pool.backends.is_empty() {
        return Err(st
            .loc
            .error(format!("upstream {name} has no server dnsha can use")));
    }
    pool.policy = policy.unwrap_or_else(|| Policy::round_robin(&pool.backends));
    for (key, value, loc) in passive {
        if pool.keys.iter().any(|(k, v)| *k == key && *v != value) {
            plan.warn(
                &loc,
                format!("{key}: dnsha sets it per pool; the first server's value is kept"),
            );
        } else if !pool.keys.iter().any(|(k, _)| *k == key) {
            pool.set(key, value);
        }
    }
    Ok(pool)
}

fn upstream_server(
    c: &Stmt,
    passive: &mut Vec<(&'static str, toml::Value, Loc)>,
    plan: &mut Plan,
) -> Result<Option<Backend>> {
    let text = c.arg(0, "address")?;
    let addr = match host_port(&c.loc, "server", text)? {
        HostPort::Addr(a, Some(p)) => SocketAddr::new(a, p),
        HostPort::Addr(_, None) | HostPort::Port(_) => {
            return Err(c
                .loc
                .error(format!("server {text}: the stream module needs a port")))
        }
        HostPort::Name => {
            plan.warn(&c.loc, format!("server {text}: a host name; dnsha balances over addresses (write them); not imported"));
            return Ok(None);
        }
    };
    let mut b = Backend::at(addr);
    for p in c.args().iter().skip(1) {
        let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
        match k {
            "weight" => b.weight = num(&c.loc, "weight", v)?,
            "max_fails" => passive.push((
                "max_fails",
                int(num::<u32>(&c.loc, "max_fails", v)?),
                c.loc.clone(),
            )),
            "fail_timeout" => {
                let ms = duration_ms(&c.loc, "fail_timeout", v, 1000)?;
                passive.push(("fail_timeout_ms", int(ms.max(1)), c.loc.clone()));
            }
            "max_conns" => {
                let n: u64 = num(&c.loc, "max_conns", v)?;
                passive.push(("max_outstanding_per_backend", int(n), c.loc.clone()));
            }
            "down" => {
                plan.warn(&c.loc, format!("server {text} down: not imported"));
                return Ok(None);
            }
            "backup" | "resolve" | "service" | "slow_start" | "route" => {
                plan.warn(
                    &c.loc,
                    format!("server {text} {k}: no equivalent in dnsha; not imported"),
                );
            }
            _ => {
                return Err(c
                    .loc
                    .error(format!("server {text}: unknown parameter `{p}`")))
            }
        }
    }
    Ok(Some(b))
}

#[cfg(test)]
#[path = "nginx_tests.rs"]
mod tests;
