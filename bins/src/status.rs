//! `dnsha status`: fetches `/status` from a running daemon and prints a
//! table like `ipvsadm -Ln`.

use std::fmt::Write as _;
use std::process::ExitCode;

use dnsha_proxy::server::Status;

use crate::client::{request, AdminTarget};
use crate::error::Result;

/// Fetches `GET path` from `admin` and returns the body of a 200 answer.
pub async fn fetch(admin: &AdminTarget, path: &str) -> Result<String> {
    request(admin, "GET", path).await
}

/// Renders the status table.
pub fn render(st: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Pool Policy");
    let _ = writeln!(
        out,
        "  -> {:<20} {:<26} {:<5} {:>6} {:>11} {:>10} {:>9}  Health",
        "Backend", "Address", "State", "Weight", "Outstanding", "Queries", "Failures"
    );
    for p in &st.pools {
        let _ = writeln!(out, "{} {}", p.name, p.policy);
        if let Some(c) = &p.cache {
            let _ = writeln!(
                out,
                "  cache: {}/{} entries, {} KiB, hit ratio {:.1} % ({} hits, {} misses, {} stale)",
                c.entries,
                c.max_entries,
                c.bytes.div_ceil(1024),
                c.hit_ratio * 100.0,
                c.hits,
                c.misses,
                c.stale_hits
            );
        }
        for b in &p.backends {
            let _ = writeln!(
                out,
                "  -> {:<20} {:<26} {:<5} {:>6} {:>11} {:>10} {:>9}  {}",
                b.name,
                b.address.to_string(),
                b.state,
                b.weight,
                b.outstanding,
                b.queries,
                b.failures,
                b.health.as_deref().unwrap_or("-")
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<16} {:<24} {:<16} {:>10} {:>10} {:>9} {:>8} {:>6}",
        "Listener",
        "Protocol",
        "Address",
        "Pool",
        "Queries",
        "Answers",
        "Servfail",
        "Dropped",
        "Conns"
    );
    for l in &st.listeners {
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<24} {:<16} {:>10} {:>10} {:>9} {:>8} {:>6}",
            l.name,
            l.protocol,
            l.address.to_string(),
            l.pool,
            l.queries,
            l.answers,
            l.servfail,
            l.dropped,
            l.connections
        );
    }
    if !st.blocks.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<43} {:<20} {:<9} {:>9}  Reason",
            "Blocked prefix", "Rule", "Action", "Left (s)"
        );
        for b in &st.blocks {
            let _ = writeln!(
                out,
                "{:<43} {:<20} {:<9} {:>9}  {}",
                b.prefix, b.rule, b.action, b.seconds_left, b.reason
            );
        }
    }
    out
}

/// Renders the `vrrp` part of `/status` (empty when there is none).
pub fn render_vrrp(status: &serde_json::Value) -> String {
    let mut out = String::new();
    let Some(list) = status.get("vrrp").and_then(|v| v.as_array()) else {
        return out;
    };
    if list.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<12} {:>4} {:<7} {:>8} {:>9} {:<9} {:<16} VIPs",
        "VRRP instance", "Interface", "VRID", "State", "Priority", "Effective", "Version", "Master"
    );
    for i in list {
        let text = |k: &str| i.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
        let num = |k: &str| i.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let vips: Vec<String> = i
            .get("vips")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        // `v3/100ms`: the version and the interval in use.
        let version = format!("v{}/{}ms", num("version"), num("master_advert_int_ms"));
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:>4} {:<7} {:>8} {:>9} {:<9} {:<16} {}",
            text("name"),
            text("interface"),
            num("vrid"),
            text("state"),
            num("priority"),
            num("effective_priority"),
            version,
            text("master"),
            vips.join(",")
        );
    }
    out
}

/// The `[[anycast]]` sections of a `/status` body (nothing without any):
/// state, addresses, interface, transitions and why.
pub fn render_anycast(status: &serde_json::Value) -> String {
    let mut out = String::new();
    let Some(list) = status
        .get("anycast")
        .and_then(|a| a.as_array())
        .filter(|a| !a.is_empty())
    else {
        return out;
    };
    out.push_str(
        "\nANYCAST      STATE       ADDRESSES                      INTERFACE  CHANGES  REASON\n",
    );
    for a in list {
        let text = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
        let addrs: Vec<&str> = a
            .get("addresses")
            .and_then(|v| v.as_array())
            .map(|l| l.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<12} {:<11} {:<30} {:<10} {:>7}  {}",
            text("name"),
            text("state"),
            addrs.join(","),
            text("interface"),
            a.get("transitions")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            text("reason")
        );
    }
    out
}

/// Renders the `kernel` part of `/status` (empty without kernel
/// listeners): per listener and backend, the map slots and what the
/// kernel forwarded.
pub fn render_kernel(status: &serde_json::Value) -> String {
    let mut out = String::new();
    let Some(k) = status.get("kernel") else {
        return out;
    };
    let num = |v: &serde_json::Value, key: &str| {
        v.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
    };
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(|x| x.as_str())
            .unwrap_or("-")
            .to_string()
    };
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<5} {:<22} {:<16} {:<22} {:>6} {:>5} {:>12} {:>12} {:>12}",
        "Kernel listener",
        "Proto",
        "Address",
        "Backend",
        "Backend address",
        "Weight",
        "Slots",
        "Query pkts",
        "Answer pkts",
        "Answer bytes"
    );
    for l in k
        .get("listeners")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let state = if l.get("forwarding").and_then(serde_json::Value::as_bool) == Some(true) {
            String::new()
        } else {
            " (no healthy backend: userspace answers)".to_string()
        };
        for b in l
            .get("backends")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "{:<16} {:<5} {:<22} {:<16} {:<22} {:>6} {:>5} {:>12} {:>12} {:>12}",
                text(l, "name"),
                text(l, "protocol"),
                text(l, "address"),
                text(b, "name"),
                text(b, "address"),
                num(b, "weight"),
                num(b, "slots"),
                num(b, "query_packets"),
                num(b, "answer_packets"),
                num(b, "answer_bytes"),
            );
        }
        if !state.is_empty() {
            let _ = writeln!(out, "{}{state}", text(l, "name"));
        }
    }
    let _ = writeln!(
        out,
        "kernel map updates {}, conntrack entries deleted {}{}",
        num(k, "updates"),
        num(k, "conntrack_deleted"),
        k.get("last_error")
            .and_then(|e| e.as_str())
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    );
    out
}

/// `dnsha status`.
pub async fn run(admin: &AdminTarget, json: bool) -> ExitCode {
    let body = match fetch(admin, "/status").await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dnsha status: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<Status>(&body) {
        Ok(st) => {
            print!("{}", render(&st));
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                print!("{}", render_vrrp(&v));
                print!("{}", render_kernel(&v));
                print!("{}", render_anycast(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dnsha status: unexpected answer from {admin}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `dnsha backend drain|enable|check --admin ADDR POOL NAME`: posts the
/// action to the admin endpoint and prints what the backend is now.
pub async fn backend(
    admin: &AdminTarget,
    verb: crate::admin::BackendAction,
    pool: &str,
    name: &str,
) -> ExitCode {
    use crate::admin::BackendAction;
    let action = verb.as_str();
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("pool", pool);
    q.append_pair("backend", name);
    let path = format!("/backends/{action}?{}", q.finish());
    let body = match request(admin, "POST", &path).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dnsha backend {action}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    match (v["state"].as_str(), v["outstanding"].as_u64()) {
        (Some(state), Some(outstanding)) => {
            let done = match verb {
                BackendAction::Drain => "drained",
                BackendAction::Enable => "enabled",
                BackendAction::Check => "checked",
            };
            println!(
                "backend {name} of pool {pool} {done}: now {state}, {outstanding} queries in flight"
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("dnsha backend {action}: unexpected answer from {admin}: {body}");
            ExitCode::FAILURE
        }
    }
}

/// `dnsha cache purge`: asks the daemon at `admin` to remove entries from
/// `pool`'s cache and says how many went.
pub async fn purge(
    admin: &AdminTarget,
    pool: &str,
    name: Option<String>,
    qtype: Option<String>,
    suffix: bool,
) -> ExitCode {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("pool", pool);
    if let Some(n) = &name {
        q.append_pair("name", n);
    }
    if let Some(t) = &qtype {
        q.append_pair("type", t);
    }
    if suffix {
        q.append_pair("suffix", "true");
    }
    let path = format!("/cache/purge?{}", q.finish());
    let body = match request(admin, "POST", &path).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dnsha cache purge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let removed = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["removed"].as_u64());
    match removed {
        Some(n) => {
            println!("removed {n} entries from the cache of pool {pool}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("dnsha cache purge: unexpected answer from {admin}: {body}");
            ExitCode::FAILURE
        }
    }
}
