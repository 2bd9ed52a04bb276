//! Health checks over DNS over TLS: a `check = "dns"` without a `transport`
//! key probes a `transport = "dot"` backend over TLS, as the data path
//! reaches it (issue 5). The chain: dnsha A → DoT → dnsha B (DoT listener)
//! → NSD; B is killed and restarted.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Scheduling slack on a shared 2-core machine, added to every bound.
const SLACK: Duration = Duration::from_millis(400);

fn state(admin: SocketAddr, name: &str) -> (String, String) {
    let st = status(admin);
    let b = st["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no backend {name} in {st}"));
    (
        b["state"].as_str().unwrap().to_string(),
        b["health"].as_str().unwrap_or_default().to_string(),
    )
}

/// Polls `/status` until backend `name` is `want`; the time it took.
fn wait_state(admin: SocketAddr, name: &str, want: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if state(admin, name).0 == want {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn dns_check_follows_a_dot_backend_down_and_up() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let files = ca.write(dir.path(), "backend", &["backend.test"]);
    let answer = Ipv4Addr::new(10, 0, 0, 7);
    let nsd = Nsd::start(answer);

    // B: DoT in front of NSD (and UDP on another port, so a probe sent over
    // UDP to the DoT port would be refused, never answered).
    let (b_dot, b_udp, b_admin) = (free_addr(), free_addr(), free_addr());
    let b_cfg = format!(
        r#"
[admin]
listen = "{b_admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{b_udp}"
pool = "p"

[[listener]]
name = "dot"
protocol = "dot"
listen = "{b_dot}"
pool = "p"
tls_cert = "{cert}"
tls_key = "{key}"

[[pool]]
name = "p"

[[pool.backend]]
name = "nsd"
address = "{nsd}"
"#,
        cert = files.cert.display(),
        key = files.key.display(),
        nsd = nsd.addr()
    );
    let mut b = Dnsha::start(bin(), &b_cfg);
    b.wait_udp(b_udp);
    b.wait_tcp(b_dot);

    // A: one DoT backend, a `dns` check with no transport key; only the
    // active check moves its state (max_fails = 0).
    let (interval, timeout, rise, fall) = (
        Duration::from_millis(500),
        Duration::from_millis(300),
        2u32,
        3u32,
    );
    let (a_listen, a_admin) = (free_addr(), free_addr());
    let a_cfg = format!(
        r#"
[admin]
listen = "{a_admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{a_listen}"
pool = "p"

[[pool]]
name = "p"
timeout_ms = 1000
max_fails = 0

[pool.health]
check = "dns"
query_name = "www.example.test"
query_type = "A"
must_resolve = true
interval_ms = {interval}
timeout_ms = {timeout}
rise = {rise}
fall = {fall}

[[pool.backend]]
name = "b"
address = "{b_dot}"
transport = "dot"
tls_name = "backend.test"
tls_ca = "{ca}"
"#,
        interval = interval.as_millis(),
        timeout = timeout.as_millis(),
        ca = files.ca.display()
    );
    let mut a = Dnsha::start(bin(), &a_cfg);
    a.wait_udp(a_listen);

    // Up, by probes that reach B's DoT listener: its DoT query count grows
    // with no client traffic, its UDP one does not.
    thread::sleep(interval + SLACK);
    assert_eq!(
        state(a_admin, "b"),
        ("up".to_string(), "dns: up".to_string()),
        "{}",
        a.log()
    );
    let dot_queries = |admin| metric(admin, "dnsha_queries_total{listener=\"dot\"");
    let udp_queries = |admin| metric(admin, "dnsha_queries_total{listener=\"udp\"");
    let (dot_before, udp_before) = (dot_queries(b_admin), udp_queries(b_admin));
    thread::sleep(interval * 3);
    let probes = dot_queries(b_admin) - dot_before;
    assert!(
        (2..=4).contains(&probes),
        "{probes} DoT probes in 3 intervals"
    );
    assert_eq!(udp_queries(b_admin), udp_before);
    let m = query_udp(a_listen, "www.example.test.", RecordType::A, T).expect("via dot");
    assert_eq!(a_record(&m), Some(answer));

    // B killed: down within interval × fall + timeout.
    b.kill();
    let bound = interval * fall + timeout;
    let down = wait_state(a_admin, "b", "down", bound + SLACK * 2).expect("b down");
    eprintln!(
        "killed DoT backend detected in {down:?} (bound interval × fall + timeout = {bound:?})"
    );
    assert!(down <= bound + SLACK, "{down:?}");
    // The reason names the refusal; how many probes it took depends on
    // whether a probe was in flight when B died (it then fails otherwise).
    assert!(a.wait_log("backend b down: ", T), "{}", a.log());
    assert!(
        a.log()
            .lines()
            .any(|l| l.contains("backend b down: ") && l.contains("refused")),
        "{}",
        a.log()
    );

    // B back: up after `rise` good probes, at least (rise - 1) intervals.
    let mut b = Dnsha::start(bin(), &b_cfg);
    b.wait_tcp(b_dot);
    let up = wait_state(a_admin, "b", "up", Duration::from_secs(5)).expect("b up");
    eprintln!("restarted DoT backend up again in {up:?} (rise {rise} × interval {interval:?})");
    assert!(
        up >= interval.mul_f64(0.9 * f64::from(rise - 1)) - Duration::from_millis(50),
        "{up:?}"
    );
    assert!(up <= interval * rise + timeout + SLACK, "{up:?}");
    assert!(
        a.wait_log("backend b up: 2 consecutive good checks", T),
        "{}",
        a.log()
    );
    let health = state(a_admin, "b").1;
    assert!(health.starts_with("dns: up"), "{health}");
    let m = query_udp(a_listen, "www.example.test.", RecordType::A, T).expect("via dot again");
    assert_eq!(a_record(&m), Some(answer));
    drop(b);
}
