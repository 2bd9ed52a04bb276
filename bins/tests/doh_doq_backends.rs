//! Backends reached over DNS over HTTPS and DNS over QUIC (issue 22): the
//! chain is client → dnsha A (UDP) → dnsha B (its `doh` or `doq`
//! listener) → NSD. Answers, one connection shared by concurrent queries,
//! health checks over each transport with failover when a backend is
//! killed, and a wrong certificate name refused and counted.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Scheduling slack on a shared 2-core machine, added to every bound.
const SLACK: Duration = Duration::from_millis(600);

/// A dnsha with `doh` (on `path`) and `doq` listeners in front of one NSD.
struct Backend {
    d: Dnsha,
    cfg: String,
    udp: SocketAddr,
    doh: SocketAddr,
    doq: SocketAddr,
    admin: SocketAddr,
    _nsd: Nsd,
}

impl Backend {
    fn start(answer: Ipv4Addr, files: &CertFiles, path: &str) -> Self {
        let nsd = Nsd::start(answer);
        let (udp, doh, doq, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
        let cfg = format!(
            r#"
[admin]
listen = "{admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{udp}"
pool = "p"

[[listener]]
name = "doh"
protocol = "doh"
listen = "{doh}"
pool = "p"
path = "{path}"
tls_cert = "{cert}"
tls_key = "{key}"

[[listener]]
name = "doq"
protocol = "doq"
listen = "{doq}"
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
            nsd = nsd.addr(),
        );
        let mut d = Dnsha::start(bin(), &cfg);
        d.wait_udp(udp);
        d.wait_tcp(doh);
        d.wait_tcp(admin);
        Self {
            d,
            cfg,
            udp,
            doh,
            doq,
            admin,
            _nsd: nsd,
        }
    }

    /// Starts it again on the same ports, after a kill.
    fn restart(&mut self) {
        self.d = Dnsha::start(bin(), &self.cfg);
        self.d.wait_udp(self.udp);
        self.d.wait_tcp(self.doh);
    }
}

/// A `[[pool.backend]]` table reaching `addr` over `transport` with the
/// test CA and `name` as the TLS name.
fn tls_backend(name: &str, addr: SocketAddr, transport: &str, tls_name: &str, ca: &Path) -> String {
    format!(
        "\n[[pool.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\ntransport = \"{transport}\"\n\
         tls_name = \"{tls_name}\"\ntls_ca = \"{}\"\n",
        ca.display()
    )
}

fn pki(dir: &Path) -> CertFiles {
    TestCa::new().write(dir, "backend", &["backend.test"])
}

fn ask(addr: SocketAddr) -> Option<Ipv4Addr> {
    query_udp(addr, "www.example.test.", RecordType::A, T)
        .ok()
        .and_then(|m| a_record(&m))
}

/// `n` queries at once (one thread each, released together); the answers.
fn ask_at_once(addr: SocketAddr, n: usize) -> Vec<Option<Ipv4Addr>> {
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                ask(addr)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn backend_state(admin: SocketAddr, name: &str) -> (String, String) {
    let st = status(admin);
    let b = st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["backends"].as_array().unwrap().clone())
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {st}"));
    (
        b["state"].as_str().unwrap().to_string(),
        b["health"].as_str().unwrap_or_default().to_string(),
    )
}

fn wait_state(admin: SocketAddr, name: &str, want: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if backend_state(admin, name).0 == want {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn doh_and_doq_backends_answer_and_share_one_connection() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let files = pki(dir.path());
    let answer = Ipv4Addr::new(10, 0, 0, 21);
    let b = Backend::start(answer, &files, "/custom-dns");
    let (via_doh, via_doq, admin) = (free_addr(), free_addr(), free_addr());
    let cfg = format!(
        r#"
[admin]
listen = "{admin}"

[[listener]]
name = "via-doh"
protocol = "udp"
listen = "{via_doh}"
pool = "doh"

[[listener]]
name = "via-doq"
protocol = "udp"
listen = "{via_doq}"
pool = "doq"

[[pool]]
name = "doh"
{doh_backend}doh_path = "/custom-dns"

[[pool]]
name = "doq"
{doq_backend}"#,
        doh_backend = tls_backend("b-doh", b.doh, "doh", "backend.test", &files.ca),
        doq_backend = tls_backend("b-doq", b.doq, "doq", "backend.test", &files.ca),
    );
    let conns = |listener: &str| {
        metric(
            b.admin,
            &format!("dnsha_connections_total{{listener=\"{listener}\",protocol=\"{listener}\"}}"),
        )
    };
    // The readiness probe of B's DoH port was a connection too.
    let (doh_before, doq_before) = (conns("doh"), conns("doq"));
    let mut a = Dnsha::start(bin(), &cfg);
    a.wait_udp(via_doh);
    a.wait_udp(via_doq);

    assert_eq!(ask(via_doh), Some(answer), "{}", a.log());
    assert_eq!(ask(via_doq), Some(answer), "{}", a.log());
    // Many queries at once over each: all answered, on the one connection
    // the first query opened.
    for via in [via_doh, via_doq] {
        for round in 0..3 {
            let got = ask_at_once(via, 48);
            let answered = got.iter().filter(|a| **a == Some(answer)).count();
            assert_eq!(answered, got.len(), "round {round} via {via}: {got:?}");
        }
    }
    assert_eq!(conns("doh") - doh_before, 1, "{}", a.log());
    assert_eq!(conns("doq") - doq_before, 1, "{}", a.log());
    let queries = |listener: &str| {
        metric(
            b.admin,
            &format!("dnsha_queries_total{{listener=\"{listener}\",protocol=\"{listener}\"}}"),
        )
    };
    // Our queries, and A's readiness probes (one at least) over DoH.
    assert!(queries("doh") > 1 + 3 * 48, "{}", queries("doh"));
    assert!(queries("doq") > 1 + 3 * 48, "{}", queries("doq"));
    // On A's side: no TLS failure, both backends up.
    assert_eq!(metric(admin, "dnsha_tls_upstream_failures_total"), 0);
    let st = status(admin);
    for p in st["pools"].as_array().unwrap() {
        let b = &p["backends"][0];
        assert_eq!(b["state"], "up", "{st}");
    }
}

/// After `dead` was killed: queries sent meanwhile (every 20 ms) are all
/// answered by `survivor`, `dead` goes down within `bound`, `alive` stays up.
fn watch_failover(
    a: &Dnsha,
    admin: SocketAddr,
    listen: SocketAddr,
    (dead, alive, survivor): (&str, &str, Ipv4Addr),
    bound: Duration,
) {
    let killed = Instant::now();
    let mut lost = 0;
    let mut asked = 0;
    let mut down_after = None;
    while killed.elapsed() < bound + SLACK * 3 {
        asked += 1;
        match ask(listen) {
            Some(a) if a == survivor => {}
            other => {
                lost += 1;
                eprintln!("query {asked} after killing {dead}: {other:?}");
            }
        }
        if down_after.is_none() && backend_state(admin, dead).0 == "down" {
            down_after = Some(killed.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let down_after = down_after
        .or_else(|| wait_state(admin, dead, "down", SLACK).map(|d| d + bound + SLACK * 3));
    eprintln!("{dead} killed: down after {down_after:?} (bound {bound:?}), {lost} of {asked} queries lost");
    let down_after = down_after.unwrap_or_else(|| panic!("{dead} never down\n{}", a.log()));
    assert!(
        down_after <= bound + SLACK,
        "{dead} down after {down_after:?}"
    );
    assert_eq!(lost, 0, "{lost} of {asked} queries lost\n{}", a.log());
    assert_eq!(backend_state(admin, alive).0, "up");
    assert!(
        a.wait_log(&format!("backend {dead} down: "), T),
        "{}",
        a.log()
    );
}

#[test]
fn a_killed_doh_or_doq_backend_goes_down_and_its_queries_elsewhere() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let files = pki(dir.path());
    let (one, two) = (Ipv4Addr::new(10, 0, 0, 31), Ipv4Addr::new(10, 0, 0, 32));
    let mut b1 = Backend::start(one, &files, "/dns-query");
    let mut b2 = Backend::start(two, &files, "/dns-query");
    let (interval, timeout, fall) = (Duration::from_millis(300), Duration::from_millis(250), 2u32);
    let (listen, admin) = (free_addr(), free_addr());
    // b1 over DoQ, b2 over DoH; a `dns` check with no transport probes each
    // over its own. Only the active check moves the state (max_fails = 0).
    let cfg = format!(
        r#"
[admin]
listen = "{admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{listen}"
pool = "p"

[[pool]]
name = "p"
timeout_ms = 500
retries = 1
max_fails = 0

[pool.health]
check = "dns"
query_name = "www.example.test"
must_resolve = true
interval_ms = {interval}
timeout_ms = {timeout}
rise = 2
fall = {fall}
{b1}{b2}"#,
        interval = interval.as_millis(),
        timeout = timeout.as_millis(),
        b1 = tls_backend("b1", b1.doq, "doq", "backend.test", &files.ca),
        b2 = tls_backend("b2", b2.doh, "doh", "backend.test", &files.ca),
    );
    let mut a = Dnsha::start(bin(), &cfg);
    a.wait_udp(listen);
    for name in ["b1", "b2"] {
        assert!(
            wait_state(admin, name, "up", Duration::from_secs(5)).is_some(),
            "{name}: {:?}\n{}",
            backend_state(admin, name),
            a.log()
        );
    }
    let both: Vec<_> = (0..20).map(|_| ask(listen)).collect();
    assert!(
        both.iter().all(|a| *a == Some(one) || *a == Some(two)),
        "{both:?}"
    );
    // The probes reach each backend over its own transport.
    assert!(metric(b1.admin, "dnsha_queries_total{listener=\"doq\"") > 0);
    assert!(metric(b2.admin, "dnsha_queries_total{listener=\"doh\"") > 0);

    // Kill one, then the other (the first back up): each time the dead one
    // goes down within interval × fall + timeout, and every query sent
    // meanwhile is answered by the other.
    let bound = interval * fall + timeout;
    for (dead, alive, survivor) in [("b1", "b2", two), ("b2", "b1", one)] {
        if dead == "b1" {
            b1.d.kill();
        } else {
            b2.d.kill();
        }
        watch_failover(&a, admin, listen, (dead, alive, survivor), bound);
        if dead == "b1" {
            b1.restart();
            assert!(
                wait_state(admin, "b1", "up", Duration::from_secs(10)).is_some(),
                "b1 back: {:?}\n{}",
                backend_state(admin, "b1"),
                a.log()
            );
            // The data path finds its old QUIC connection to b1 silent,
            // drops it and makes a new one; meanwhile b2 answers.
            for _ in 0..20 {
                let got = ask(listen);
                assert!(got == Some(one) || got == Some(two), "{got:?}");
            }
        }
    }
    // With b2 dead, b1 (restarted) answers over a new QUIC connection.
    assert_eq!(ask(listen), Some(one));
}

#[test]
fn a_wrong_certificate_name_fails_the_handshake_and_the_backend() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let files = pki(dir.path());
    let answer = Ipv4Addr::new(10, 0, 0, 41);
    let b = Backend::start(answer, &files, "/dns-query");
    let plain = Nsd::start(Ipv4Addr::new(10, 0, 0, 42));
    let (listen, admin) = (free_addr(), free_addr());
    // In order: DoH and DoQ to B under a name its certificate does not
    // hold, then NSD over UDP. Policy `first`, two retries: the first query
    // tries all three. One failure marks a backend down (max_fails = 1);
    // the active check keeps it down.
    let cfg = format!(
        r#"
[admin]
listen = "{admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{listen}"
pool = "p"

[[pool]]
name = "p"
policy = "first"
timeout_ms = 1000
retries = 2
max_fails = 1

[pool.health]
check = "dns"
query_name = "www.example.test"
interval_ms = 300
timeout_ms = 250
fall = 2
{wrong_doh}{wrong_doq}
[[pool.backend]]
name = "nsd"
address = "{nsd}"
"#,
        wrong_doh = tls_backend("wrong-doh", b.doh, "doh", "wrong.test", &files.ca),
        wrong_doq = tls_backend("wrong-doq", b.doq, "doq", "wrong.test", &files.ca),
        nsd = plain.addr(),
    );
    let mut a = Dnsha::start(bin(), &cfg);
    a.wait_udp(listen);
    assert_eq!(
        ask(listen),
        Some(Ipv4Addr::new(10, 0, 0, 42)),
        "{}",
        a.log()
    );
    for name in ["wrong-doh", "wrong-doq"] {
        assert!(
            wait_state(admin, name, "down", Duration::from_secs(5)).is_some(),
            "{name}: {}\n{}",
            status(admin),
            a.log()
        );
        assert!(
            a.wait_log(&format!("backend {name} down: "), T),
            "{}",
            a.log()
        );
    }
    // The first query met at least the first backend's handshake on the
    // data path (whether its retry met the second one's, or the health
    // check had already taken it out, depends on timing); the probes below
    // show both failing on TLS.
    let failures = metric(admin, "dnsha_tls_upstream_failures_total");
    assert!(failures >= 1, "{failures} TLS failures counted");
    // The active checks fail on TLS too, and keep the backends down.
    thread::sleep(Duration::from_millis(700));
    let text = http_get(admin, "/metrics");
    for name in ["wrong-doh", "wrong-doq"] {
        assert_eq!(backend_state(admin, name).0, "down");
        let tls_probes: u64 = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "dnsha_health_check_failures_total{{pool=\"p\",backend=\"{name}\""
                )) && l.contains("reason=\"tls\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(
            tls_probes >= 2,
            "{name}: {tls_probes} TLS probe failures\n{text}"
        );
    }
    // B never answered a query: every handshake failed.
    assert_eq!(metric(b.admin, "dnsha_queries_total{listener=\"doh\""), 0);
    assert_eq!(metric(b.admin, "dnsha_queries_total{listener=\"doq\""), 0);
    for _ in 0..10 {
        assert_eq!(ask(listen), Some(Ipv4Addr::new(10, 0, 0, 42)));
    }
}
