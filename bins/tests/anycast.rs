//! Anycast scale-out over BGP (README "Anycast", `[[anycast]]`), end to
//! end in network namespaces with BIRD 2:
//!
//! ```text
//!   client c ── 10.95.1.0/24 ── router r ── bridge 10.95.0.0/24 ── n1 n2 n3 (dnsha + BIRD)
//!   (1000 q/s from 64 ports)    (BIRD, ECMP,                    └─ b1 b2 (NSD)
//!                                L4 hash)
//! ```
//!
//! Every node runs dnsha, which puts the service address 192.0.2.53/32 on
//! its `lo` while its pool has a serving backend and its listeners run, and
//! BIRD, whose `protocol direct` sees the address and whose BGP session
//! (with BFD, 100 ms × 5) announces it to the router. The router installs
//! one route with a next hop per announcing node and hashes each flow
//! (addresses and ports) to one of them. The test measures, as the client
//! sees them, the queries lost when a node's pool fails (the node
//! withdraws), when a node dies (BFD), and when a node is stopped (it
//! withdraws before it stops: nothing lost).
//!
//! It needs root, `ip`, NSD, nftables and BIRD 2 (Debian's `bird2`), and
//! prints `SKIPPED: <reason>` otherwise (or fails, when
//! `DNSHA_TEST_REQUIRE_ALL` is set). The measured figures are printed:
//! `cargo test -p dnsha --test anycast -- --nocapture`.

#![allow(clippy::unwrap_used)]

mod common;

#[path = "anycast/load.rs"]
mod load;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use load::{Load, Report};
use test_support::bird::{self, Bfd, Bird, Speaker};
use test_support::netns::{self, Lab};

const ANYCAST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const PREFIX: &str = "192.0.2.53/32";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const ADMIN: &str = "127.0.0.1:8088";
const NFT: &str = "/usr/sbin/nft";
const NSD: &str = "/usr/sbin/nsd";

/// The client's rate (queries per second) and source ports.
const RATE: u32 = 1000;
const PORTS: usize = 64;

/// The pool's health checks (interval, timeout, fall) and the anycast
/// evaluation period: a blackholed pool is down within interval +
/// (fall − 1) · max(interval, timeout) + timeout = 0.8 s (README
/// "Worst-case detection time"), and withdrawn at the next evaluation.
const HEALTH_INTERVAL_MS: u64 = 200;
const HEALTH_TIMEOUT_MS: u64 = 200;
const HEALTH_FALL: u64 = 3;
const ANYCAST_INTERVAL_MS: u64 = 200;
const HOLD_DOWN_MS: u64 = 1000;
const DRAIN_MS: u64 = 2000;

/// Scheduling slack on a shared 2-core machine.
const SLACK: Duration = Duration::from_millis(500);

/// The longest a blackholed pool keeps its node announced.
fn health_bound() -> Duration {
    Duration::from_millis(
        HEALTH_INTERVAL_MS
            + (HEALTH_FALL - 1) * HEALTH_INTERVAL_MS.max(HEALTH_TIMEOUT_MS)
            + HEALTH_TIMEOUT_MS
            + ANYCAST_INTERVAL_MS,
    )
}

/// The lab: router `r`, nodes `n1`–`n3`, backends `b1` and `b2` on one
/// bridge, and client `c` behind the router on a link of its own.
struct Anycast {
    lab: Lab,
    _router: Bird,
    _birds: Vec<Bird>,
    _nsds: Vec<Nsd>,
    /// Each node's dnsha, by index in [`NODES`] (its index in the lab).
    dnsha: Vec<usize>,
}

/// The dnsha configuration of a node: UDP and TCP on the anycast address
/// (one worker each), pool `p` of both NSDs with DNS health checks, and
/// the `[[anycast]]` section tracking `p`.
fn node_config(lab: &Lab, bird_socket: &Path, notify: &Path) -> String {
    let listener = |proto: &str| {
        format!(
            "[[listener]]\nname = \"{proto}\"\nprotocol = \"{proto}\"\nlisten = \"{ANYCAST}:53\"\n\
             pool = \"p\"\nworkers = 1\nallow = [\"0.0.0.0/0\"]\n\n"
        )
    };
    let (b1, b2) = (lab.node_addr("b1"), lab.node_addr("b2"));
    format!(
        r#"[admin]
listen = "{ADMIN}"

{udp}{tcp}[[pool]]
name = "p"
timeout_ms = 1000
retries = 1
max_fails = 0

[pool.health]
check = "dns"
query_name = "www.example.test"
query_type = "A"
interval_ms = {HEALTH_INTERVAL_MS}
timeout_ms = {HEALTH_TIMEOUT_MS}
rise = 2
fall = {HEALTH_FALL}

[[pool.backend]]
name = "b1"
address = "{b1}:53"

[[pool.backend]]
name = "b2"
address = "{b2}:53"

[[anycast]]
name = "dns"
addresses = ["{PREFIX}"]
interface = "lo"
track_pools = ["p"]
interval_ms = {ANYCAST_INTERVAL_MS}
rise = 3
hold_down_ms = {HOLD_DOWN_MS}
drain_ms = {DRAIN_MS}
notify = "{notify}"
bird_socket = "{bird_socket}"
"#,
        udp = listener("udp"),
        tcp = listener("tcp"),
        notify = notify.display(),
        bird_socket = bird_socket.display(),
    )
}

/// The file `node`'s notify script appends its arguments to.
fn notified(lab: &Lab, node: &str) -> String {
    std::fs::read_to_string(lab.dir.path().join(format!("{node}.notified"))).unwrap_or_default()
}

fn admin() -> SocketAddr {
    ADMIN.parse().unwrap()
}

/// `/status` of `node`'s dnsha.
fn node_status(lab: &Lab, node: &str) -> serde_json::Value {
    lab.run_in(node, || status(admin()))
}

/// `/metrics` of `node`'s dnsha.
fn node_metrics(lab: &Lab, node: &str) -> String {
    lab.run_in(node, || http_get(admin(), "/metrics"))
}

/// Queries `node`'s dnsha received, over all its listeners.
fn queries(lab: &Lab, node: &str) -> u64 {
    node_metrics(lab, node)
        .lines()
        .filter(|l| l.starts_with("dnsha_queries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The `/status` entry of the anycast group of `node`.
fn group(lab: &Lab, node: &str) -> serde_json::Value {
    let st = node_status(lab, node);
    st["anycast"]
        .as_array()
        .and_then(|l| l.iter().find(|g| g["name"] == "dns"))
        .cloned()
        .unwrap_or_else(|| panic!("no anycast group dns in /status of {node}: {st}"))
}

/// The router's next hops for the anycast prefix.
fn hops(lab: &Lab) -> Vec<IpAddr> {
    bird::kernel_next_hops(lab, "r", PREFIX)
}

/// The addresses of `nodes`, sorted as [`hops`] sorts.
fn addrs(lab: &Lab, nodes: &[&str]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = nodes.iter().map(|n| lab.node_addr(n).into()).collect();
    v.sort();
    v
}

/// Waits up to `max` until the router's next hops are exactly `nodes`;
/// when that was, or a panic with the lab's state.
fn wait_hops(lab: &Lab, nodes: &[&str], max: Duration) -> Instant {
    let want = addrs(lab, nodes);
    lab.wait(max, |l| hops(l) == want).unwrap_or_else(|| {
        panic!(
            "router next hops {:?}, want {nodes:?}\n{}",
            hops(lab),
            lab.logs()
        )
    });
    Instant::now()
}

/// Each of `nodes`' share of the queries over the next `over`.
fn shares(lab: &Lab, nodes: &[&str], over: Duration) -> Vec<f64> {
    let before: Vec<u64> = nodes.iter().map(|n| queries(lab, n)).collect();
    std::thread::sleep(over);
    let delta: Vec<u64> = nodes
        .iter()
        .zip(before)
        .map(|(n, b)| queries(lab, n) - b)
        .collect();
    let total = delta.iter().sum::<u64>().max(1) as f64;
    delta.iter().map(|d| *d as f64 / total).collect()
}

/// The most queries a node with `share` of `rate` may lose in `window`.
fn allowed(window: Duration, rate: u32, share: f64) -> usize {
    (window.as_secs_f64() * f64::from(rate) * share).ceil() as usize + 1
}

/// One case's figures, printed as a line of the README table.
fn report(case: &str, r: &Report, from: Duration, share: f64, converged: Duration) {
    let lost = r.lost_since(from);
    let blackout = lost as f64 / (f64::from(r.rate) * share.max(0.01));
    let window = r.loss_window(from).map_or_else(
        || "none".into(),
        |(a, b)| format!("{:?}..{:?} after the fault", a - from, b - from),
    );
    eprintln!(
        "{case}: {lost} of {} queries lost ({:.0} % share of the node: a {blackout:.2} s blackout \
         for its flows), losses sent {window}; route converged {converged:?} after the fault; \
         whole run: {}",
        r.sent.len(),
        share * 100.0,
        r.summary()
    );
}

impl Anycast {
    fn build() -> Option<Self> {
        if let Some(why) = netns::skip_reason(&[NSD, NFT, bird::BIRD, bird::BIRDC]) {
            skip(&why);
            return None;
        }
        let mut lab = Lab::with_subnet("any", 95, &["r", "n1", "n2", "n3", "b1", "b2"]);
        // The client, behind the router on a subnet of its own.
        lab.add_node("c");
        lab.veth(("r", "eth1", "10.95.1.1/24"), ("c", "eth0", "10.95.1.2/24"));
        lab.ip("c", &["route", "add", "default", "via", "10.95.1.1"]);
        lab.sysctl("r", "net.ipv4.ip_forward", "1");
        lab.sysctl("r", "net.ipv4.fib_multipath_hash_policy", "1");
        let gw = lab.node_addr("r").to_string();
        for n in NODES {
            lab.ip(n, &["route", "add", "default", "via", &gw]);
        }

        let nsds: Vec<Nsd> = ["b1", "b2"]
            .iter()
            .map(|b| {
                let ip = lab.node_addr(b);
                Nsd::start_in(&lab.ns(b), SocketAddr::from((ip, 53)), ip)
            })
            .collect();

        let router = Speaker::new(lab.node_addr("r"), 65000);
        let speakers: Vec<(&str, Speaker)> = NODES
            .iter()
            .map(|n| (*n, Speaker::new(lab.node_addr(n), 65053)))
            .collect();
        let bfd = Bfd::default();
        let r_conf = bird::router_conf(router, &speakers, "eth0", &[PREFIX], bfd);
        let router_bird = Bird::start(&mut lab, "r", &r_conf);
        let birds: Vec<Bird> = speakers
            .iter()
            .map(|(n, s)| {
                let conf = bird::node_conf(*s, router, "lo", "eth0", &[PREFIX], bfd);
                Bird::start(&mut lab, n, &conf)
            })
            .collect();
        let t = router_bird.wait_established(&NODES, Duration::from_secs(20));
        assert!(
            t.is_some(),
            "BGP sessions not established: {:?}\n{}",
            router_bird.protocols(),
            lab.logs()
        );
        eprintln!("BGP: 3 sessions established after {:?}", t.unwrap());
        // Nothing announced yet: no dnsha runs.
        assert!(hops(&lab).is_empty(), "{:?}", hops(&lab));

        let mut dnsha = Vec::new();
        for (n, b) in NODES.iter().zip(&birds) {
            let notify = lab.dir.path().join(format!("{n}-notify.sh"));
            let out = lab.dir.path().join(format!("{n}.notified"));
            std::fs::write(
                &notify,
                format!("#!/bin/sh\necho \"$@\" >> {}\n", out.display()),
            )
            .unwrap();
            std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o755)).unwrap();
            let config = lab.dir.path().join(format!("{n}.toml"));
            std::fs::write(&config, node_config(&lab, b.socket(), &notify)).unwrap();
            dnsha.push(run_in_lab(&mut lab, n, &config));
        }
        let started = Instant::now();
        wait_hops(&lab, &NODES, Duration::from_secs(15));
        eprintln!(
            "announce: the router has all 3 next hops {:?} after dnsha started",
            started.elapsed()
        );
        Some(Self {
            lab,
            _router: router_bird,
            _birds: birds,
            _nsds: nsds,
            dnsha,
        })
    }

    fn load(&self) -> Load {
        Load::start(&self.lab, "c", SocketAddr::from((ANYCAST, 53)), RATE, PORTS)
    }
}

/// Runs nftables `script` in `node`.
fn nft(lab: &Lab, node: &str, script: &str) {
    let mut child = lab
        .command(node, NFT)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft in {node}: {script}");
}

/// Every node says it announces, in /status and /metrics.
fn all_announce(any: &Anycast) {
    for n in NODES {
        let ok = any.lab.wait(Duration::from_secs(5), |l| {
            group(l, n)["state"] == "announced"
        });
        let g = group(&any.lab, n);
        assert!(ok.is_some(), "{n}: {g}");
        assert_eq!(g["interface"], "lo", "{g}");
        assert_eq!(g["addresses"][0], PREFIX, "{g}");
        let m = node_metrics(&any.lab, n);
        assert!(
            m.contains("dnsha_anycast_announced{anycast=\"dns\"} 1"),
            "{n}:\n{m}"
        );
        assert!(
            m.contains("dnsha_anycast_transitions_total{anycast=\"dns\"}"),
            "{n}:\n{m}"
        );
    }
}

/// The router spreads the flows over the three nodes, and every query is
/// answered.
fn spread_over_three(any: &Anycast) {
    let before: Vec<u64> = NODES.iter().map(|n| queries(&any.lab, n)).collect();
    let load = any.load();
    std::thread::sleep(Duration::from_secs(3));
    let r = load.finish();
    let per_node: Vec<u64> = NODES
        .iter()
        .zip(&before)
        .map(|(n, b)| queries(&any.lab, n) - b)
        .collect();
    eprintln!("spread: {} over n1, n2, n3: {per_node:?}", r.summary());
    assert!(per_node.iter().all(|q| *q > 0), "{per_node:?}");
    assert_eq!(r.lost().len(), 0, "steady state: {}", r.summary());
}

/// n1's pool loses both backends: their answers to n1 are dropped (silent
/// backends, the slow case: a refusal is noticed at once), n1 withdraws
/// within the health bound and the others absorb its flows; back after
/// the hold-down once the answers come through again.
fn pool_failure(any: &Anycast) {
    let load = any.load();
    std::thread::sleep(Duration::from_secs(1));
    let share = shares(&any.lab, &NODES, Duration::from_secs(1))[0];
    let (b1, b2) = (any.lab.node_addr("b1"), any.lab.node_addr("b2"));
    let fault = load.now();
    let t0 = Instant::now();
    nft(
        &any.lab,
        "n1",
        &format!(
            "table inet anycast_test {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {{ {b1}, {b2} }} drop\n }}\n}}\n"
        ),
    );
    let gone = wait_hops(
        &any.lab,
        &["n2", "n3"],
        health_bound() + SLACK + Duration::from_secs(2),
    ) - t0;
    let withdrawn = load.now();
    let g = group(&any.lab, "n1");
    eprintln!("pool failure: n1 is {}, reason {}", g["state"], g["reason"]);
    assert_eq!(g["state"], "withdrawn", "{g}");
    std::thread::sleep(Duration::from_secs(1));
    nft(&any.lab, "n1", "delete table inet anycast_test\n");
    let t1 = Instant::now();
    let back = wait_hops(&any.lab, &NODES, Duration::from_secs(10)) - t1;
    std::thread::sleep(Duration::from_secs(1));
    let r = load.finish();
    report("pool failure (n1)", &r, fault, share, gone);
    eprintln!("pool failure: n1 announced again {back:?} after its backends came back");
    let lost = r.lost_since(fault);
    let max = allowed(health_bound() + SLACK, RATE, share);
    assert!(
        lost <= max,
        "pool failure lost {lost} > {max} ({:?} at {:.0} %)",
        health_bound() + SLACK,
        share * 100.0
    );
    assert!(gone <= health_bound() + SLACK, "withdrawn after {gone:?}");
    // Once withdrawn, and when n1 came back, nothing was lost.
    let late = r.lost_since(withdrawn + Duration::from_millis(100));
    assert_eq!(
        late,
        0,
        "lost after the withdrawal or on the return: {:?}",
        r.lost()
    );
    let log = any.lab.proc_ref(any.dnsha[0]).log_text();
    assert!(
        log.contains("anycast withdrawn") && log.contains("anycast=dns"),
        "{log}"
    );
    let notes = notified(&any.lab, "n1");
    assert!(
        notes.contains("dns WITHDRAWN") && notes.contains("dns ANNOUNCED"),
        "notify: {notes}"
    );
}

/// n2 dies: dnsha killed, its link down. Its address stays on `lo` and
/// its BIRD runs, but BFD (0.5 s) takes its path off the router.
fn node_death(any: &mut Anycast) {
    let load = any.load();
    std::thread::sleep(Duration::from_secs(1));
    let share = shares(&any.lab, &NODES, Duration::from_secs(1))[1];
    let fault = load.now();
    let t0 = Instant::now();
    let i = any.dnsha[1];
    any.lab.proc(i).kill9();
    any.lab.set_link("n2", false);
    let gone = wait_hops(&any.lab, &["n1", "n3"], Duration::from_secs(5)) - t0;
    let converged = load.now();
    std::thread::sleep(Duration::from_millis(1500));
    let r = load.finish();
    report(
        "node death (n2: kill -9, link down)",
        &r,
        fault,
        share,
        gone,
    );
    let bfd = Bfd::default().detection();
    let lost = r.lost_since(fault);
    let max = allowed(bfd + SLACK, RATE, share);
    assert!(lost <= max, "node death lost {lost} > {max}");
    assert!(gone <= bfd + SLACK, "BFD took {gone:?}");
    let late = r.lost_since(converged + Duration::from_millis(100));
    assert_eq!(late, 0, "lost after the route converged: {:?}", r.lost());
}

/// n3 is stopped (SIGTERM): it withdraws first, keeps serving for
/// drain_ms, then exits. Nothing is lost.
fn clean_stop(any: &mut Anycast) {
    let load = any.load();
    std::thread::sleep(Duration::from_secs(1));
    let share = shares(&any.lab, &["n1", "n3"], Duration::from_secs(1))[1];
    let fault = load.now();
    let t0 = Instant::now();
    let i = any.dnsha[2];
    any.lab.proc_ref(i).signal(Signal::SIGTERM);
    let gone = wait_hops(&any.lab, &["n1"], Duration::from_secs(3)) - t0;
    let status = loop {
        if let Ok(Some(s)) = any.lab.proc(i).child.try_wait() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(DRAIN_MS) + Duration::from_secs(5),
            "n3 did not stop\n{}",
            any.lab.proc_ref(i).log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let stopped = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let r = load.finish();
    report("clean stop (n3: SIGTERM)", &r, fault, share, gone);
    eprintln!("clean stop: n3 exited {stopped:?} after SIGTERM ({status})");
    assert!(
        status.success(),
        "{status}\n{}",
        any.lab.proc_ref(i).log_text()
    );
    assert!(
        stopped >= Duration::from_millis(DRAIN_MS),
        "n3 stopped after {stopped:?}, before drain_ms"
    );
    assert_eq!(r.lost().len(), 0, "clean stop lost queries: {:?}", r.lost());
    let log = any.lab.proc_ref(i).log_text();
    assert!(log.contains("anycast withdrawn"), "{log}");
}

#[test]
fn three_nodes_share_the_address_and_failures_cost_only_the_failed_share() {
    init_tracing();
    let Some(mut any) = Anycast::build() else {
        return;
    };
    all_announce(&any);
    spread_over_three(&any);
    pool_failure(&any);
    node_death(&mut any);
    clean_stop(&mut any);
}

/// The files of `examples/anycast/` are what BIRD and dnsha accept:
/// `bird -p` parses each BIRD configuration without running it, and
/// `dnsha check` passes the node's configuration.
#[test]
fn the_anycast_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/anycast");
    if !Path::new(bird::BIRD).exists() {
        skip(&format!("{} not installed", bird::BIRD));
        return;
    }
    for file in ["bird-node.conf", "bird-router.conf"] {
        let out = std::process::Command::new(bird::BIRD)
            .arg("-p")
            .arg("-c")
            .arg(dir.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bird -p -c {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(dir.join("dnsha-node.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dnsha check dnsha-node.toml: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sysctl = std::fs::read_to_string(dir.join("sysctl-router.conf")).unwrap();
    for key in [
        "net.ipv4.ip_forward = 1",
        "net.ipv4.fib_multipath_hash_policy = 1",
        "net.ipv6.fib_multipath_hash_policy = 1",
    ] {
        assert!(sysctl.lines().any(|l| l == key), "{key} missing:\n{sysctl}");
    }
}
