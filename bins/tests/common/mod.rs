//! Shared pieces of the daemon's integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

pub use test_support::*;

pub mod quic;

/// The dnsha binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dnsha"))
}

/// A config with UDP and TCP listeners on `listen`, an admin endpoint on
/// `admin`, and one pool `p` of `backends` (`name = address` pairs); `pool`
/// holds extra pool keys (policy, timeouts) as TOML lines.
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    pool: &str,
    backends: &[(&str, SocketAddr, u32)],
) -> String {
    config_with(listen, admin, "", pool, backends)
}

/// Listener keys that only stream listeners take (a UDP listener refuses
/// them as keys without effect).
const STREAM_ONLY: &[&str] = &[
    "idle_timeout_ms",
    "read_timeout_ms",
    "max_connections",
    "max_connections_per_client",
    "max_queries_per_client",
    "write_timeout_ms",
];

/// As [`config`], with `listener` lines added to both listeners (to the TCP
/// one only for the keys of [`STREAM_ONLY`]).
pub fn config_with(
    listen: SocketAddr,
    admin: SocketAddr,
    listener: &str,
    pool: &str,
    backends: &[(&str, SocketAddr, u32)],
) -> String {
    let udp_listener: String = listener
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !STREAM_ONLY.contains(&key)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mut s = format!(
        r#"
[admin]
listen = "{admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{listen}"
pool = "p"
{udp_listener}

[[listener]]
name = "tcp"
protocol = "tcp"
listen = "{listen}"
pool = "p"
{listener}

[[pool]]
name = "p"
{pool}
"#
    );
    for (name, addr, weight) in backends {
        s.push_str(&format!(
            "\n[[pool.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\nweight = {weight}\n"
        ));
    }
    s
}

/// `GET path` on the admin endpoint; the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").expect("http answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// `/status` as JSON.
pub fn status(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&http_get(admin, "/status")).expect("status json")
}

/// A metric value from `/metrics` (first series whose line starts with `prefix`).
pub fn metric(admin: SocketAddr, prefix: &str) -> u64 {
    let text = http_get(admin, "/metrics");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
}

/// Sum of a counter over backends in `/status`.
pub fn outstanding_total(admin: SocketAddr) -> u64 {
    let st = status(admin);
    st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["backends"].as_array().unwrap().clone())
        .map(|b| b["outstanding"].as_u64().unwrap())
        .sum()
}

pub const T: Duration = Duration::from_secs(3);

/// Writes `toml` as `dnsha.toml` in a new directory that every user may
/// read (for a daemon started as an unprivileged user); keep the directory
/// for as long as the file is needed.
pub fn world_readable_config(toml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("dnsha-conf-")
        .tempdir()
        .expect("tempdir");
    let path = dir.path().join("dnsha.toml");
    std::fs::write(&path, toml).expect("write config");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    (dir, path)
}

/// A balancer holding `vip` with VRRPv3 instance `VI_1` on `eth0`
/// (`vrid`, `priority`, `advert_int`) and answering on `vip:53` over UDP
/// (and TCP with `tcp`) from one backend; `top` is written first
/// (top-level keys, an `[admin]` table).
pub fn vrrp_balancer(
    top: &str,
    vip: std::net::Ipv4Addr,
    backend: SocketAddr,
    tcp: bool,
    (vrid, priority, advert_int): (u8, u8, &str),
) -> String {
    let listener = |proto: &str| {
        format!(
            "[[listener]]\nname = \"{proto}\"\nprotocol = \"{proto}\"\nlisten = \"{vip}:53\"\n\
             pool = \"p\"\nallow = [\"0.0.0.0/0\"]\n\n"
        )
    };
    format!(
        "{top}\n{}{}[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"nsd\"\naddress = \"{backend}\"\n\n\
         [[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\n\
         priority = {priority}\nversion = 3\nadvert_int = {advert_int}\n\
         virtual_ipaddress = [\"{vip}/32\"]\n",
        listener("udp"),
        if tcp { listener("tcp") } else { String::new() },
    )
}

/// `dnsha run --config CONFIG` in `node` of `lab`; its index for
/// [`netns::Lab::proc`].
pub fn run_in_lab(lab: &mut netns::Lab, node: &str, config: &Path) -> usize {
    lab.spawn(
        node,
        bin(),
        &["run", "--config", config.to_str().expect("utf-8 path")],
        false,
    )
}

/// The resident memory of process `pid`, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
