//! The command line: check, status, demo, access log.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn check(toml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dnsha.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "FILE");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.success(), stdout, stderr)
}

#[test]
fn check_accepts_the_readme_example() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("a toml block in README") + 8;
    let end = start + readme[start..].find("```").unwrap();
    let (ok, out, err) = check(&readme[start..end]);
    assert!(ok, "{err}");
    assert!(out.starts_with("FILE: ok: "), "{out}");
}

#[test]
fn check_reports_every_error_with_its_location() {
    let toml = r#"[[listener]]
name = "dns"
protocol = "udp"
listen = "0.0.0.0:53"
pool = "nope"
colour = "blue"
"#;
    let (ok, _, err) = check(toml);
    assert!(!ok);
    // Every error at once: the unknown key does not hide the unknown pool.
    assert_eq!(
        err.trim(),
        "FILE:5:8: unknown pool `nope`\n\
         FILE:6:1: unknown key `colour` in [[listener]]; the keys there are `name`, `protocol`, `listen`, `pool`, `allow`, `access_log`, `format`, `idle_timeout_ms`, `read_timeout_ms`, `max_connections`, `max_connections_per_client`, `max_queries_per_client`, `client_prefix_v6`, `write_timeout_ms`, `workers`, `pin_workers`, `adaptive_workers`, `max_udp_size`, `any_over_udp`, `forwarding`, `tls_cert`, `tls_key`, `tls`, `handshake_timeout_ms`, `max_handshakes_per_client`, `max_handshakes_per_second`, `quic_retry`, `path`, `trusted_proxies`, `max_streams`, `max_header_bytes`, `max_requests_per_second`"
    );
    let toml = r#"[[listener]]
name = "dns"
protocol = "udp"
listen = "0.0.0.0:53"
pool = "nope"

[[pool]]
name = "p"

[[pool.backend]]
name = "a"
address = "192.168.1.300:53"
weight = 0

[[pool.backend]]
name = "a"
address = "192.168.1.2:53"
"#;
    let (ok, _, err) = check(toml);
    assert!(!ok);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "FILE:5:8: unknown pool `nope`",
            "FILE:12:11: invalid backend address `192.168.1.300:53` (expected IP:PORT, [IPv6]:PORT or IP)",
            "FILE:13:10: weight must be at least 1",
            "FILE:16:8: duplicate backend name `a`",
        ]
    );
    let (ok, _, err) = check("");
    assert!(!ok);
    assert!(err.contains("no [[listener]]"), "{err}");
}

#[test]
fn status_command_prints_a_table() {
    init_tracing();
    let n1 = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
    let (listen, admin) = (free_addr(), free_addr());
    let mut d = Dnsha::start(
        bin(),
        &config(
            listen,
            admin,
            "policy = \"lc\"",
            &[("coredns-001", n1.addr(), 2)],
        ),
    );
    d.wait_udp(listen);
    let out = Command::new(bin())
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("p lc"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("coredns-001"))
        .expect(&text);
    assert!(
        row.contains(&n1.addr().to_string()) && row.contains(" up "),
        "{row}"
    );
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[4], "2", "weight column: {row}");
    assert!(text.contains("udp") && text.contains("tcp"), "{text}");
    // /metrics has per-listener and per-backend series.
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics.contains("dnsha_backend_up{pool=\"p\",backend=\"coredns-001\""),
        "{metrics}"
    );
    assert!(metrics.contains("dnsha_queries_total{listener=\"udp\",protocol=\"udp\"}"));
    // An unreachable admin is a clear error.
    let out = Command::new(bin())
        .args(["status", "--admin", &free_addr().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn access_log_lines_and_reopen_on_sigusr1() {
    init_tracing();
    let n1 = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (listen, admin) = (free_addr(), free_addr());
    let extra = format!("access_log = \"{}\"", log.display());
    let mut d = Dnsha::start(
        bin(),
        &config_with(listen, admin, &extra, "", &[("a", n1.addr(), 1)]),
    );
    d.wait_udp(listen);
    d.wait_tcp(listen);
    query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
    query_tcp(listen, "www.example.test.", RecordType::A, T).unwrap();
    let wait_for = |path: &std::path::Path, needle: &str| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains(needle)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(
        wait_for(&log, " TCP NOERROR "),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains(" UDP ")).expect(&text);
    let f: Vec<&str> = line.split(' ').collect();
    // time_local (2 fields), client, backend, protocol, rcode, duration, qname, qtype
    assert_eq!(f.len(), 9, "{line}");
    assert_eq!(f[3], n1.addr().to_string());
    assert_eq!(f[4], "UDP");
    assert_eq!(f[5], "NOERROR");
    assert!(f[6].parse::<f64>().is_ok());
    assert_eq!(f[7], "www.example.test.");
    assert_eq!(f[8], "A");
    // logrotate: move the file away, SIGUSR1, new lines go to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.signal(Signal::SIGUSR1).unwrap();
    assert!(d.wait_log("reopening access logs", Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(200));
    query_udp(listen, "new.example.test.", RecordType::A, T).unwrap();
    assert!(
        wait_for(&log, "new.example.test."),
        "no line in the reopened file"
    );
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("new.example.test."));
}

#[test]
fn demo_balances_and_fails_over() {
    init_tracing();
    let (listen, admin) = (free_addr(), free_addr());
    let mut child = Command::new(bin())
        .args([
            "demo",
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_udp(listen, Duration::from_secs(10)).expect("demo listening");
    let who =
        || a_record(&query_udp(listen, "www.example.test.", RecordType::A, T).unwrap()).unwrap();
    let seen: Vec<Ipv4Addr> = (0..4).map(|_| who()).collect();
    assert!(
        seen.contains(&Ipv4Addr::new(192, 0, 2, 1)) && seen.contains(&Ipv4Addr::new(192, 0, 2, 2)),
        "{seen:?}"
    );
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "stop 1").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..10 {
        assert_eq!(who(), Ipv4Addr::new(192, 0, 2, 2));
    }
    writeln!(stdin, "quit").unwrap();
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "demo did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        out.contains(&format!(
            "dig @{} -p {} www.example.test",
            listen.ip(),
            listen.port()
        )),
        "{out}"
    );
    assert!(out.contains("stop 1"));
}

#[test]
fn demo_on_a_busy_port_fails_without_printing_instructions() {
    init_tracing();
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap();
    let out = Command::new(bin())
        .args([
            "demo",
            "--listen",
            &listen.to_string(),
            "--admin",
            &free_addr().to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("Try, in another terminal"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&listen.to_string()), "{stderr}");
}

#[test]
fn check_accepts_a_vrrp_only_config_and_reports_vrrp_errors() {
    let ok = r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 134
priority = 100
advert_int = 1
auth_pass = "dnsvip"
virtual_ipaddress = ["192.168.1.5/32"]
"#;
    let (good, out, err) = check(ok);
    assert!(good, "{err}");
    assert!(out.contains("1 vrrp instance(s)"), "{out}");
    let bad = r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 134
priority = 256
advert_int = 0.5
virtual_ipaddress = ["192.168.1.5/32", "not-an-ip"]
track_pools = ["nope"]

[[vrrp]]
name = "VI_2"
interface = "eth0"
virtual_router_id = 134
priority = 90
virtual_ipaddress = ["192.168.1.6"]
"#;
    let (good, _, err) = check(bad);
    assert!(!good);
    for want in [
        // Each at its key, not at the section's header.
        "FILE:6:1: vrrp[0].priority",
        "FILE:7:1: vrrp[0].advert_int",
        "FILE:8:1: vrrp[0].virtual_ipaddress[1]",
        "FILE:9:1: vrrp[0].track_pools: unknown pool `nope`",
        "FILE:14:1: vrrp[1].virtual_router_id: VRID 134 on eth0 already used",
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(want)),
            "missing {want} in\n{err}"
        );
    }
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    // A TCP listener on a port already taken: `dnsha run` logs through
    // tracing that it cannot start, to a stderr that is a pipe.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dnsha.toml");
    let backend = "127.0.0.1:9".parse().unwrap();
    std::fs::write(&path, config(listen, free_addr(), "", &[("a", backend, 1)])).unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot start"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
}
