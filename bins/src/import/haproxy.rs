//! haproxy.cfg: `frontend`, `backend` and `listen` sections into listeners
//! and pools (`mode tcp` on port 53 is DNS over TCP, `bind ... ssl crt` in
//! `mode tcp` is DNS over TLS, `mode http` is DNS over HTTPS), `listen
//! stats` into `[admin]`. Sections are read here; [`super::haproxy_map`]
//! makes the dnsha sections.

use super::plan::Plan;
use super::syntax::{parse, Ends, Loc, Source, Stmt, HAPROXY};
use super::values::{duration_ms, host_port, num, HostPort};
use crate::error::Result;

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `mode tcp` (HAProxy's default).
    Tcp,
    /// `mode http`.
    Http,
}

/// The settings `defaults` gives the sections after it, and each section
/// may override.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) balance: Option<(String, Loc)>,
    pub(crate) retries: Option<u32>,
    pub(crate) timeout_client: Option<u64>,
    pub(crate) timeout_check: Option<u64>,
    pub(crate) timeout_connect: Option<u64>,
    pub(crate) maxconn: Option<u64>,
    /// `default-server` parameters.
    pub(crate) default_server: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Tcp,
            balance: None,
            retries: None,
            timeout_client: None,
            timeout_check: None,
            timeout_connect: None,
            maxconn: None,
            default_server: Vec::new(),
        }
    }
}

/// A `bind` address.
#[derive(Debug, Clone)]
pub(crate) struct Bind {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) crt: Option<String>,
    pub(crate) loc: Loc,
}

/// A `server` line.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) ip: std::net::IpAddr,
    pub(crate) port: Option<u16>,
    pub(crate) weight: u32,
    pub(crate) check: bool,
    pub(crate) inter: Option<u64>,
    pub(crate) rise: Option<u32>,
    pub(crate) fall: Option<u32>,
    pub(crate) ssl: bool,
    pub(crate) verify_none: bool,
    pub(crate) ca_file: Option<String>,
    pub(crate) sni: Option<String>,
    pub(crate) maxconn: Option<u64>,
    pub(crate) loc: Loc,
}

/// A `frontend`, `backend` or `listen` section as read.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) loc: Loc,
    pub(crate) settings: Settings,
    pub(crate) binds: Vec<Bind>,
    pub(crate) default_backend: Option<(String, Loc)>,
    pub(crate) servers: Vec<Server>,
    /// `stats` lines (a `listen stats` section).
    pub(crate) stats: Vec<Stmt>,
}

const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "log-forward",
    "crt-store",
    "traces",
];

/// Reads haproxy.cfg `src`: its `frontend`, `backend` and `listen`
/// sections (with their `defaults`), for [`super::haproxy_map::make`];
/// what else it holds goes to `plan` as warnings.
pub(crate) fn read(src: &Source, plan: &mut Plan) -> Result<Vec<Proxy>> {
    let lines = parse(src, HAPROXY, Ends::Newline)?;
    let mut defaults = Settings::default();
    let mut proxies: Vec<Proxy> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let head = &lines[i];
        let kind = SECTIONS
            .iter()
            .find(|k| **k == head.name())
            .ok_or_else(|| {
                head.loc
                    .error(format!("`{}` outside of a section", head.name()))
            })?;
        let end = lines[i + 1..]
            .iter()
            .position(|l| SECTIONS.contains(&l.name()))
            .map_or(lines.len(), |p| i + 1 + p);
        let body = &lines[i + 1..end];
        match *kind {
            "global" => body
                .iter()
                .for_each(|l| plan.warn(&l.loc, global_message(l))),
            "defaults" => {
                defaults = Settings::default();
                for l in body {
                    if !settings_line(l, &mut defaults, plan)? {
                        plan.warn(
                            &l.loc,
                            format!(
                                "defaults: {}: no equivalent in dnsha; not imported",
                                l.text()
                            ),
                        );
                    }
                }
            }
            "frontend" | "backend" | "listen" => {
                proxies.push(proxy(kind, head, body, &defaults, plan)?)
            }
            other => plan.warn(
                &head.loc,
                format!("{other} section: no equivalent in dnsha; not imported"),
            ),
        }
        i = end;
    }
    Ok(proxies)
}

fn global_message(l: &Stmt) -> String {
    let why = match l.name() {
        "maxconn" => "listeners take max_connections",
        "user" | "group" => "dnsha's own top-level `user` and `group` (its package runs it as `dnsha`)",
        "nbthread" | "nbproc" | "cpu-map" => "listeners take `workers`",
        "log" => "dnsha logs to stderr (the journal under systemd) and writes access logs with `access_log`",
        "stats" => "the admin endpoint ([admin]) answers /status and /metrics",
        "daemon" | "chroot" | "pidfile" => "dnsha runs in the foreground under systemd",
        _ => "no equivalent in dnsha",
    };
    format!("global: {}: {why}; not imported", l.text())
}

/// A line `defaults`, `frontend`, `backend` and `listen` share; false when
/// it is not one.
fn settings_line(l: &Stmt, s: &mut Settings, plan: &mut Plan) -> Result<bool> {
    let arg = |i| l.arg(i, "value");
    match l.name() {
        "mode" => {
            s.mode = match arg(0)? {
                "tcp" => Mode::Tcp,
                "http" => Mode::Http,
                other => return Err(l.loc.error(format!("mode {other}: expected tcp or http"))),
            }
        }
        "balance" => s.balance = Some((l.args().join(" "), l.loc.clone())),
        "retries" => s.retries = Some(num(&l.loc, "retries", arg(0)?)?),
        "maxconn" => s.maxconn = Some(num(&l.loc, "maxconn", arg(0)?)?),
        "default-server" => s.default_server = l.args().to_vec(),
        "timeout" => {
            let what = arg(0)?;
            let ms = duration_ms(&l.loc, "timeout", arg(1)?, 1)?;
            match what {
                "client" => s.timeout_client = Some(ms),
                "check" => s.timeout_check = Some(ms),
                "connect" => {
                    s.timeout_connect = Some(ms);
                    plan.warn(
                        &l.loc,
                        "timeout connect: dnsha has no connect timeout of its own (a query waits \
                         `timeout_ms`); it bounds the health checks' timeout, as in HAProxy",
                    );
                }
                "server" => plan.warn(
                    &l.loc,
                    "timeout server: dnsha waits `timeout_ms` for each query's answer (1000 by default) and retries elsewhere; not imported",
                ),
                _ => plan.warn(&l.loc, format!("timeout {what}: no equivalent in dnsha; not imported")),
            }
        }
        "option"
        | "no"
        | "log"
        | "log-format"
        | "acl"
        | "tcp-request"
        | "tcp-response"
        | "http-request"
        | "http-response"
        | "http-after-response"
        | "errorfile"
        | "compression"
        | "capture"
        | "monitor"
        | "monitor-uri"
        | "description"
        | "id"
        | "hash-type"
        | "cookie"
        | "fullconn"
        | "stick-table"
        | "stick"
        | "http-check"
        | "tcp-check"
        | "http-reuse"
        | "retry-on"
        | "redirect"
        | "rate-limit"
        | "unique-id-format"
        | "unique-id-header"
        | "email-alert"
        | "force-persist"
        | "ignore-persist"
        | "persist"
        | "filter"
        | "backlog"
        | "grace"
        | "http-error"
        | "errorloc"
        | "errorloc302"
        | "errorloc303"
        | "declare"
        | "load-server-state-from-file"
        | "server-state-file-name"
        | "max-keep-alive-queue"
        | "source"
        | "dispatch"
        | "use-server"
        | "disabled"
        | "enabled"
        | "bind-process"
        | "log-tag"
        | "external-check" => plan.warn(
            &l.loc,
            format!("{}: no equivalent in dnsha; not imported", l.text()),
        ),
        _ => return Ok(false),
    }
    Ok(true)
}

fn proxy(
    kind: &'static str,
    head: &Stmt,
    body: &[Stmt],
    defaults: &Settings,
    plan: &mut Plan,
) -> Result<Proxy> {
    let name = head.arg(0, "name")?.to_string();
    let mut p = Proxy {
        kind,
        name,
        loc: head.loc.clone(),
        settings: defaults.clone(),
        binds: Vec::new(),
        default_backend: None,
        servers: Vec::new(),
        stats: Vec::new(),
    };
    let front = kind != "backend";
    let back = kind != "frontend";
    if let (true, Some(addr)) = (front, head.args().get(1)) {
        // The old `listen NAME ADDR:PORT` form.
        let line = Stmt {
            words: vec!["bind".into(), addr.clone()],
            loc: head.loc.clone(),
            block: None,
        };
        p.binds.extend(bind(&line)?);
    }
    for l in body {
        if settings_line(l, &mut p.settings, plan)? {
            continue;
        }
        match l.name() {
            "bind" if front => p.binds.extend(bind(l)?),
            "default_backend" if front => p.default_backend = Some((l.arg(0, "backend")?.to_string(), l.loc.clone())),
            "use_backend" if front => plan.warn(
                &l.loc,
                format!("{}: conditions are not imported; queries go to the default_backend (dnsha routes by query name or client with [[rule]])", l.text()),
            ),
            "server" if back => {
                if let Some(s) = server(l, &p.settings.default_server, plan)? {
                    p.servers.push(s);
                }
            }
            "stats" => p.stats.push(l.clone()),
            "server-template" => plan.warn(&l.loc, "server-template: dnsha balances over addresses written one by one; not imported"),
            other => {
                return Err(l
                    .loc
                    .error(format!("unknown keyword `{other}` in {kind} {}", p.name)))
            }
        }
    }
    Ok(p)
}

/// `bind ADDR[,ADDR] [params]`.
fn bind(l: &Stmt) -> Result<Vec<Bind>> {
    let list = l.arg(0, "address")?;
    let mut crt = None;
    let mut ssl = false;
    let mut params = l.args().iter().skip(1);
    while let Some(p) = params.next() {
        match p.as_str() {
            "ssl" => ssl = true,
            "crt" => crt = params.next().cloned(),
            "alpn" | "name" | "id" | "interface" | "mss" | "backlog" | "maxconn" | "process"
            | "thread" | "ciphers" | "ciphersuites" | "curves" | "ecdhe" | "ssl-min-ver"
            | "ssl-max-ver" | "verify" | "ca-file" | "crl-file" | "namespace" | "nice" | "npn"
            | "crt-list" | "tcp-ut" | "user" | "group" | "level" | "severity-output" | "gid"
            | "uid" | "mode" => {
                params.next();
            }
            "accept-proxy"
            | "transparent"
            | "defer-accept"
            | "tfo"
            | "v4v6"
            | "v6only"
            | "no-sslv3"
            | "no-tlsv10"
            | "no-tlsv11"
            | "no-tlsv12"
            | "no-tlsv13"
            | "force-tlsv12"
            | "force-tlsv13"
            | "strict-sni"
            | "prefer-client-ciphers"
            | "allow-0rtt"
            | "generate-certificates"
            | "no-ca-names"
            | "no-tls-tickets"
            | "quic-force-retry" => {}
            other => return Err(l.loc.error(format!("bind: unknown parameter `{other}`"))),
        }
    }
    if ssl && crt.is_none() {
        return Err(l.loc.error("bind ... ssl without crt"));
    }
    let mut out = Vec::new();
    for a in list.split(',') {
        let a = a
            .strip_prefix("ipv4@")
            .or_else(|| a.strip_prefix("ipv6@"))
            .unwrap_or(a);
        if a.contains('-') && a.rsplit(':').next().is_some_and(|p| p.contains('-')) {
            return Err(l
                .loc
                .error(format!("bind {a}: port ranges have no equivalent in dnsha")));
        }
        let addr = match host_port(&l.loc, "bind", a)? {
            HostPort::Port(p) => std::net::SocketAddr::from(([0, 0, 0, 0], p)),
            HostPort::Addr(ip, Some(p)) => std::net::SocketAddr::new(ip, p),
            _ => {
                return Err(l
                    .loc
                    .error(format!("bind {a}: dnsha listens on an address and port")))
            }
        };
        out.push(Bind {
            addr,
            crt: if ssl { crt.clone() } else { None },
            loc: l.loc.clone(),
        });
    }
    Ok(out)
}

/// Server parameters that have no equivalent (each takes a value when
/// the flag is true).
const SERVER_NO_EQUIVALENT: &[(&str, bool)] = &[
    ("backup", false),
    ("send-proxy", false),
    ("send-proxy-v2", false),
    ("resolvers", true),
    ("init-addr", true),
    ("slowstart", true),
    ("cookie", true),
    ("id", true),
    ("observe", true),
    ("error-limit", true),
    ("on-error", true),
    ("on-marked-down", true),
    ("on-marked-up", true),
    ("fastinter", true),
    ("downinter", true),
    ("alpn", true),
    ("check-alpn", true),
    ("agent-check", false),
    ("agent-port", true),
    ("agent-inter", true),
    ("port", true),
    ("addr", true),
    ("source", true),
    ("redir", true),
    ("track", true),
    ("resolve-prefer", true),
    ("pool-max-conn", true),
    ("pool-purge-delay", true),
    ("proto", true),
    ("maxqueue", true),
    ("minconn", true),
    ("tfo", false),
    ("no-tls-tickets", false),
    ("ciphers", true),
    ("ciphersuites", true),
    ("ssl-min-ver", true),
    ("ssl-max-ver", true),
    ("crt", true),
    ("check-send-proxy", false),
    ("check-sni", true),
    ("namespace", true),
    ("shard", true),
];

fn server(l: &Stmt, defaults: &[String], plan: &mut Plan) -> Result<Option<Server>> {
    let name = l.arg(0, "name")?.to_string();
    let text = l.arg(1, "address")?;
    let (ip, port) = match host_port(&l.loc, "server", text)? {
        HostPort::Addr(ip, port) => (ip, port),
        HostPort::Port(_) | HostPort::Name => {
            plan.warn(&l.loc, format!("server {name} {text}: not an IP address; dnsha balances over addresses (write them); not imported"));
            return Ok(None);
        }
    };
    let mut s = Server {
        name,
        ip,
        port,
        weight: 1,
        check: false,
        inter: None,
        rise: None,
        fall: None,
        ssl: false,
        verify_none: false,
        ca_file: None,
        sni: None,
        maxconn: None,
        loc: l.loc.clone(),
    };
    let own = l.args().get(2..).unwrap_or(&[]);
    let mut params = defaults.iter().chain(own.iter());
    while let Some(p) = params.next() {
        let mut value = || {
            params.next().map(String::as_str).ok_or_else(|| {
                l.loc
                    .error(format!("server {}: `{p}` needs a value", s.name))
            })
        };
        match p.as_str() {
            "check" | "check-ssl" => s.check = true,
            "no-check" => s.check = false,
            "ssl" => s.ssl = true,
            "no-ssl" => s.ssl = false,
            "disabled" => {
                plan.warn(&l.loc, format!("server {} disabled: not imported", s.name));
                return Ok(None);
            }
            "weight" => s.weight = num(&l.loc, "weight", value()?)?,
            "inter" => s.inter = Some(duration_ms(&l.loc, "inter", value()?, 1)?),
            "rise" => s.rise = Some(num(&l.loc, "rise", value()?)?),
            "fall" => s.fall = Some(num(&l.loc, "fall", value()?)?),
            "maxconn" => s.maxconn = Some(num(&l.loc, "maxconn", value()?)?),
            "verify" => s.verify_none = value()? == "none",
            "ca-file" => s.ca_file = Some(value()?.to_string()),
            "sni" => {
                let v = value()?;
                match v.strip_prefix("str(").and_then(|v| v.strip_suffix(')')) {
                    Some(n) => s.sni = Some(n.to_string()),
                    None => plan.warn(
                        &l.loc,
                        format!("sni {v}: dnsha sends a fixed tls_name; not imported"),
                    ),
                }
            }
            other => match SERVER_NO_EQUIVALENT.iter().find(|(k, _)| *k == other) {
                Some((k, takes)) => {
                    let shown = if *takes {
                        format!("{k} {}", value()?)
                    } else {
                        k.to_string()
                    };
                    plan.warn(
                        &l.loc,
                        format!(
                            "server {}: {shown}: no equivalent in dnsha; not imported",
                            s.name
                        ),
                    );
                }
                None => {
                    return Err(l
                        .loc
                        .error(format!("server {}: unknown parameter `{other}`", s.name)))
                }
            },
        }
    }
    Ok(Some(s))
}
