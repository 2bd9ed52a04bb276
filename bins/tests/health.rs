//! Health checks against real servers and real faults: NSD killed, hung
//! (SIGSTOP), slow, SERVFAIL-only and flapping responders. Each test prints
//! the detection time it measured (`cargo test --test health -- --nocapture`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::MessageType;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};

/// Scheduling slack on a shared 2-core machine, added to every bound.
const SLACK: Duration = Duration::from_millis(400);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

/// The `/status` entry of backend `name` in pool `p`.
fn backend(admin: SocketAddr, name: &str) -> serde_json::Value {
    let st = status(admin);
    st["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no backend {name} in {st}"))
}

fn state(admin: SocketAddr, name: &str) -> String {
    backend(admin, name)["state"].as_str().unwrap().to_string()
}

/// Polls `/status` until backend `name` is `want`; the time it took.
fn wait_state(admin: SocketAddr, name: &str, want: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if state(admin, name) == want {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Sum of a metric over the lines starting with `prefix` (0 when absent).
fn metric_sum(admin: SocketAddr, prefix: &str) -> u64 {
    http_get(admin, "/metrics")
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn who_udp(addr: SocketAddr) -> Ipv4Addr {
    let m = query_udp(addr, "www.example.test.", RecordType::A, T).expect("udp query");
    a_record(&m).expect("A record")
}

/// Pool lines with a `[pool.health]` table.
fn pool_with_health(pool: &str, health: &str) -> String {
    format!("{pool}\n\n[pool.health]\n{health}\n")
}

const ANSWER: u8 = 0;
const SERVFAIL: u8 = 1;

/// A UDP DNS responder for faults NSD cannot play: it answers every query
/// (A 10.0.0.9 for A questions) or SERVFAIL, after an optional delay.
struct Responder {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(mode: u8) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(mode));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (mode, delay_ms, stop) =
                (Arc::clone(&mode), Arc::clone(&delay_ms), Arc::clone(&stop));
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let rcode = if mode.load(Ordering::Relaxed) == SERVFAIL {
                        ResponseCode::ServFail
                    } else {
                        ResponseCode::NoError
                    };
                    let Some(reply) = reply_to(&buf[..n], rcode) else {
                        continue;
                    };
                    let delay = Duration::from_millis(delay_ms.load(Ordering::Relaxed));
                    if delay.is_zero() {
                        let _ = sock.send_to(&reply, from);
                    } else {
                        let late = sock.try_clone().unwrap();
                        thread::spawn(move || {
                            thread::sleep(delay);
                            let _ = late.send_to(&reply, from);
                        });
                    }
                }
            })
        };
        Self {
            addr,
            mode,
            delay_ms,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }

    fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reply_to(query: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_response_code(rcode);
    for question in q.queries() {
        m.add_query(question.clone());
        if rcode == ResponseCode::NoError && question.query_type() == RecordType::A {
            m.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(ip(9))),
            ));
        }
    }
    m.to_vec().ok()
}

#[test]
fn killed_backend_is_down_within_one_interval_and_back_after_rise() {
    init_tracing();
    let (mut n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, admin) = (free_addr(), free_addr());
    let interval = Duration::from_millis(500);
    let cfg = config(
        listen,
        admin,
        &pool_with_health(
            "policy = \"rr\"\ntimeout_ms = 300",
            "check = \"dns\"\ninterval_ms = 500\ntimeout_ms = 300\nrise = 2\nfall = 3",
        ),
        &[("a", n1.addr(), 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    thread::sleep(Duration::from_millis(400));
    assert_eq!(state(admin, "a"), "up");
    assert_eq!(backend(admin, "a")["health"], "dns: up");

    n1.stop();
    let down = wait_state(admin, "a", "down", Duration::from_secs(3)).expect("a down");
    eprintln!("killed NSD detected in {down:?} (interval {interval:?})");
    assert!(down <= interval + SLACK, "{down:?}");
    assert!(
        d.wait_log("backend a down: check failed: refused", T),
        "{}",
        d.log()
    );
    // `dnsha status` shows the state and its reason.
    let out = std::process::Command::new(bin())
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("-> a "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" down ") && row.contains("refused"), "{row}");

    // While it is down no client query goes to it.
    let before = backend(admin, "a")["queries"].as_u64().unwrap();
    for i in 0..20 {
        assert_eq!(who_udp(listen), ip(2), "query {i}");
    }
    assert_eq!(backend(admin, "a")["queries"].as_u64().unwrap(), before);

    n1.restart();
    let up = wait_state(admin, "a", "up", Duration::from_secs(3)).expect("a up");
    eprintln!("restored NSD up again in {up:?} (rise 2 × interval {interval:?})");
    // The first good probe comes within an interval, the second one an
    // interval later.
    assert!(
        up >= interval.mul_f64(0.9) - Duration::from_millis(50),
        "{up:?}"
    );
    assert!(up <= interval * 2 + SLACK, "{up:?}");
    assert!(d.wait_log("backend a up: 2 consecutive good checks", T));
    assert!(
        metric_sum(
            admin,
            "dnsha_health_check_failures_total{pool=\"p\",backend=\"a\""
        ) >= 1
    );
    let text = http_get(admin, "/metrics");
    assert!(
        text.contains("dnsha_health_transitions_total{pool=\"p\",backend=\"a\","),
        "{text}"
    );
    assert!(text.contains("dnsha_health_check_duration_seconds_bucket{pool=\"p\",backend=\"b\""));
    assert!(text.contains("dnsha_backend_up{pool=\"p\",backend=\"a\""));
    let seen: Vec<_> = (0..6).map(|_| who_udp(listen)).collect();
    assert!(seen.contains(&ip(1)), "{seen:?}");
}

#[test]
fn hung_backend_is_down_within_interval_times_fall_plus_timeout() {
    init_tracing();
    let (n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, admin) = (free_addr(), free_addr());
    let (interval, timeout, fall) = (Duration::from_millis(300), Duration::from_millis(200), 3);
    let cfg = config(
        listen,
        admin,
        &pool_with_health(
            "policy = \"rr\"\ntimeout_ms = 200",
            "interval_ms = 300\ntimeout_ms = 200\nrise = 2\nfall = 3",
        ),
        &[("a", n1.addr(), 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    thread::sleep(Duration::from_millis(400));
    assert_eq!(state(admin, "a"), "up");

    n1.signal(Signal::SIGSTOP).unwrap();
    let down = wait_state(admin, "a", "down", Duration::from_secs(4)).expect("a down");
    let bound = interval * fall + timeout;
    eprintln!("hung NSD detected in {down:?} (bound interval × fall + timeout = {bound:?})");
    assert!(down <= bound + SLACK, "{down:?}");
    assert!(down >= timeout, "{down:?}");
    assert!(
        d.wait_log("backend a down: 3 consecutive timeouts (200 ms)", T),
        "{}",
        d.log()
    );
    let before = backend(admin, "a")["queries"].as_u64().unwrap();
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(who_udp(listen), ip(2));
    }
    // Nobody waited for the hung backend.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backend(admin, "a")["queries"].as_u64().unwrap(), before);

    n1.signal(Signal::SIGCONT).unwrap();
    let up = wait_state(admin, "a", "up", Duration::from_secs(3)).expect("a up");
    eprintln!("resumed NSD up again in {up:?}");
    assert!(up <= interval * 2 + timeout + SLACK, "{up:?}");
}

#[test]
fn slow_backend_answering_after_two_seconds_times_out() {
    init_tracing();
    let slow = Responder::start(ANSWER);
    let n2 = Nsd::start(ip(2));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        &pool_with_health(
            "policy = \"rr\"",
            "interval_ms = 300\ntimeout_ms = 500\nrise = 2\nfall = 2",
        ),
        &[("slow", slow.addr, 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    thread::sleep(Duration::from_millis(400));
    assert_eq!(state(admin, "slow"), "up");
    slow.set_delay(Duration::from_secs(2));
    let down = wait_state(admin, "slow", "down", Duration::from_secs(4)).expect("down");
    // A probe may just have passed (one interval), then two probes time
    // out back to back: interval + (fall - 1) × timeout + timeout.
    let bound = Duration::from_millis(300 + 500 + 500);
    eprintln!("slow backend (2 s answers, 500 ms timeout) detected in {down:?} (bound {bound:?})");
    assert!(down <= bound + SLACK, "{down:?}");
    assert!(
        d.wait_log("backend slow down: 2 consecutive timeouts (500 ms)", T),
        "{}",
        d.log()
    );
    assert!(
        metric_sum(
            admin,
            "dnsha_health_check_failures_total{pool=\"p\",backend=\"slow\","
        ) >= 2
    );
    // Late answers to earlier probes (another ID, another socket) do not
    // count: it stays down while slow.
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(state(admin, "slow"), "down");
}

/// The value of the `/metrics` sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

/// The answer-time histograms: a backend answering 30 ms late has all its
/// answers in the (20 ms, 50 ms] buckets, a prompt one below; the
/// listener's histogram counts every reply; `/status` has the percentiles.
#[test]
fn answer_times_land_in_the_histograms_of_the_backend_and_the_listener() {
    init_tracing();
    let slow = Responder::start(ANSWER);
    slow.set_delay(Duration::from_millis(30));
    let fast = Nsd::start(ip(2));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        "policy = \"rr\"",
        &[("slow", slow.addr, 1), ("fast", fast.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    for _ in 0..20 {
        query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
    }
    let m = http_get(admin, "/metrics");
    let h = |backend: &str, le: &str| {
        sample(
            &m,
            &format!(
                "dnsha_backend_response_seconds_bucket{{pool=\"p\",backend=\"{backend}\",address=\"{}\",le=\"{le}\"}}",
                if backend == "slow" { slow.addr } else { fast.addr() }
            ),
        )
    };
    let slow_count = h("slow", "+Inf");
    assert!(slow_count >= 10.0, "{m}");
    // 30 ms late: nothing within 20 ms; within 50 ms unless the machine
    // stalled (then within 100 ms).
    assert_eq!(h("slow", "0.02"), 0.0, "{m}");
    assert!(h("slow", "0.1") == slow_count, "{m}");
    let fast_count = h("fast", "+Inf");
    assert!(h("fast", "0.02") >= fast_count - 1.0, "{m}");
    // The listener saw all 21 replies (20 and the one of wait_udp), the
    // slow ones among its slowest.
    let listener = |le: &str| {
        sample(
            &m,
            &format!("dnsha_query_duration_seconds_bucket{{listener=\"udp\",protocol=\"udp\",le=\"{le}\"}}"),
        )
    };
    assert_eq!(listener("+Inf"), slow_count + fast_count);
    assert!(listener("0.02") <= fast_count, "{m}");
    assert_eq!(
        sample(
            &m,
            "dnsha_query_duration_seconds_count{listener=\"udp\",protocol=\"udp\"}"
        ),
        listener("+Inf")
    );
    assert!(
        sample(
            &m,
            "dnsha_backend_response_seconds_sum{pool=\"p\",backend=\"slow\""
        ) >= 0.029 * slow_count
    );
    let st = status(admin);
    let p50 = st["pools"][0]["backends"][0]["latency"]["p50_ms"]
        .as_f64()
        .unwrap();
    assert!((20.0..=100.0).contains(&p50), "{st}");
    assert_eq!(
        st["listeners"][0]["latency"]["count"].as_f64().unwrap(),
        slow_count + fast_count
    );
}

#[test]
fn servfail_only_backend_is_down_and_the_empty_pool_drops_and_counts() {
    init_tracing();
    let bad = Responder::start(SERVFAIL);
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        &pool_with_health(
            "on_no_backend = \"drop\"",
            "interval_ms = 200\ntimeout_ms = 200",
        ),
        &[("bad", bad.addr, 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    let down = wait_state(admin, "bad", "down", Duration::from_secs(3)).expect("down");
    eprintln!("SERVFAIL-only backend down {down:?} after start");
    assert!(
        d.wait_log("backend bad down: first check failed: SERVFAIL", T),
        "{}",
        d.log()
    );
    assert!(
        d.wait_log("pool p has no healthy backend", T),
        "{}",
        d.log()
    );
    assert_eq!(
        metric(admin, "dnsha_pool_no_backend_events_total{pool=\"p\"}"),
        1
    );
    assert_eq!(metric(admin, "dnsha_pool_backends_up{pool=\"p\"}"), 0);
    // on_no_backend = "drop": no answer, counted, and the backend is spared.
    let r = query_udp(
        listen,
        "www.example.test.",
        RecordType::A,
        Duration::from_millis(500),
    );
    assert!(r.is_err(), "{r:?}");
    assert!(
        metric(
            admin,
            "dnsha_dropped_total{listener=\"udp\",protocol=\"udp\",reason=\"no_backend\"}"
        ) >= 1
    );
    assert_eq!(backend(admin, "bad")["queries"], 0);
    assert!(backend(admin, "bad")["health"]
        .as_str()
        .unwrap()
        .starts_with("dns: down (first check failed: SERVFAIL)"));
    assert!(
        metric_sum(
            admin,
            "dnsha_health_check_failures_total{pool=\"p\",backend=\"bad\",address=\""
        ) >= 1
    );
}

#[test]
fn flapping_backend_transitions_are_bounded_by_rise_and_fall() {
    init_tracing();
    let flap = Responder::start(ANSWER);
    let (listen, admin) = (free_addr(), free_addr());
    // The same flapping server twice: damped by rise = fall = 5, and raw
    // with rise = fall = 1.
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

[pool.health]
interval_ms = 100
timeout_ms = 100
rise = 5
fall = 5

[[pool.backend]]
name = "damped"
address = "{a}"

[[pool.backend]]
name = "raw"
address = "{a}"

[pool.backend.health]
rise = 1
fall = 1
"#,
        a = flap.addr
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let (stop, mode) = (Arc::clone(&stop), Arc::clone(&flap.mode));
        thread::spawn(move || {
            let mut flips = 0;
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(300));
                mode.fetch_xor(1, Ordering::Relaxed);
                flips += 1;
            }
            flips
        })
    };
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let flips = toggler.join().unwrap();
    flap.set(ANSWER);
    let transitions = |name: &str| {
        metric_sum(
            admin,
            &format!("dnsha_health_transitions_total{{pool=\"p\",backend=\"{name}\""),
        )
    };
    let probes = |name: &str| {
        metric_sum(
            admin,
            &format!("dnsha_health_checks_total{{pool=\"p\",backend=\"{name}\""),
        )
    };
    let (raw, damped) = (transitions("raw"), transitions("damped"));
    let n = probes("damped");
    eprintln!(
        "flapping every 300 ms ({flips} flips, {n} probes): rise = fall = 1 made {raw} transitions, rise = fall = 5 made {damped}"
    );
    assert!(raw >= 6, "raw {raw}");
    // At most 2n / (rise + fall) + 2 transitions; with 300 ms phases and
    // 100 ms probes, five in a row never happen: at most the first probe's.
    assert!(damped <= 1, "damped {damped}");
    assert!(damped <= 2 * n / 10 + 2);
}

#[test]
fn live_servfails_make_the_backend_suspect_and_probed_at_once() {
    init_tracing();
    let r = Responder::start(ANSWER);
    let n2 = Nsd::start(ip(2));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        &pool_with_health(
            "policy = \"first\"",
            "interval_ms = 4000\ntimeout_ms = 300\nfall = 1\npassive_threshold = 2",
        ),
        &[("a", r.addr, 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    // After the first probe and the least gap between probes (interval / 4).
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(who_udp(listen), ip(9));
    r.set(SERVFAIL);
    for _ in 0..2 {
        let m = query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }
    let down = wait_state(admin, "a", "down", Duration::from_secs(3)).expect("down");
    eprintln!("live SERVFAILs: backend probed and down in {down:?} (interval 4 s)");
    assert!(down < Duration::from_millis(300) + SLACK, "{down:?}");
    assert_eq!(
        metric(admin, "dnsha_health_suspect_total{pool=\"p\",backend=\"a\""),
        1
    );
    assert!(d.wait_log("backend a down: check failed: SERVFAIL", T));
    assert_eq!(who_udp(listen), ip(2));
}

#[test]
fn reload_keeps_the_health_state_of_backends_that_stay() {
    init_tracing();
    let (mut n1, n2, n3) = (Nsd::start(ip(1)), Nsd::start(ip(2)), Nsd::start(ip(3)));
    n1.stop();
    let (listen, admin) = (free_addr(), free_addr());
    let health = "interval_ms = 200\ntimeout_ms = 200\nrise = 5\nfall = 3";
    let before = config(
        listen,
        admin,
        &pool_with_health("", health),
        &[("a", n1.addr(), 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &before);
    d.wait_udp(listen);
    wait_state(admin, "a", "down", Duration::from_secs(3)).expect("a down");
    // a's NSD comes back, and the configuration changes (b removed, c added,
    // a slower interval) while a is a good probe or two into its rise of 5.
    n1.restart();
    let after = config(
        listen,
        admin,
        &pool_with_health(
            "",
            &health.replace("interval_ms = 200", "interval_ms = 400"),
        ),
        &[("a", n1.addr(), 1), ("c", n3.addr(), 1)],
    );
    d.rewrite_config(&after);
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    // Kept: still down right after the reload (not reset to a new backend's
    // provisional up), up after rise good probes.
    assert_eq!(state(admin, "a"), "down");
    let up = wait_state(admin, "a", "up", Duration::from_secs(4)).expect("a up");
    eprintln!("a up {up:?} after the reload");
    assert!(d.wait_log("backend a up: 5 consecutive good checks", T));
    assert_eq!(state(admin, "c"), "up");
    assert_eq!(backend(admin, "c")["health"], "dns: up");
    // b is no longer checked.
    thread::sleep(Duration::from_millis(100));
    let text = http_get(admin, "/metrics");
    assert!(!text.contains("backend=\"b\""), "{text}");
    assert!(text.contains("dnsha_health_checks_total{pool=\"p\",backend=\"c\""));
}
