//! One node's `[[anycast]]` section through its life, in a network
//! namespace: the address goes on `lo` after `rise` healthy looks, off at
//! once when the pool loses its backend, back only after the hold-down,
//! off first on SIGTERM (then `drain_ms` before the stop); each change
//! logged, counted, in `/status` and given to `notify`. The multi-node
//! test with BIRD and a router is `anycast.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use test_support::netns;

const ANYCAST: &str = "192.0.2.53";

fn on_lo(lab: &netns::Lab) -> bool {
    let out = lab.exec("lb", "ip", &["-br", "addr", "show", "dev", "lo"]);
    String::from_utf8_lossy(&out.stdout).contains(&format!("{ANYCAST}/32"))
}

fn config(backend: SocketAddr, notify: &str, bird_socket: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:8090"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{ANYCAST}:53"
pool = "p"
allow = ["0.0.0.0/0"]

[[pool]]
name = "p"
[pool.health]
interval_ms = 100
timeout_ms = 100
fall = 1
rise = 1

[[pool.backend]]
name = "nsd"
address = "{backend}"

[[anycast]]
name = "dns"
addresses = ["{ANYCAST}/32"]
track_pools = ["p"]
interval_ms = 100
rise = 3
hold_down_ms = 1500
drain_ms = 800
notify = "{notify}"
bird_socket = "{bird_socket}"
"#
    )
}

/// The lab, its NSD, the configuration and notify log paths.
struct Node {
    lab: netns::Lab,
    backend: SocketAddr,
    cfg: std::path::PathBuf,
    log: std::path::PathBuf,
}

fn node() -> (Node, Nsd) {
    let lab = netns::Lab::with_subnet("acl", 81, &["lb"]);
    let backend: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let nsd = Nsd::start_in(&lab.ns("lb"), backend, Ipv4Addr::new(10, 0, 0, 1));
    let dir = lab.dir.path().to_path_buf();
    let notify = dir.join("notify.sh");
    let log = dir.join("notify.log");
    std::fs::write(
        &notify,
        format!("#!/bin/sh\necho \"$1 $2 $3\" >> {}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.join("dnsha.toml");
    let bird = dir.join("no-bird.ctl");
    std::fs::write(
        &cfg,
        config(backend, notify.to_str().unwrap(), bird.to_str().unwrap()),
    )
    .unwrap();

    (
        Node {
            lab,
            backend,
            cfg,
            log,
        },
        nsd,
    )
}

/// `dnsha check` warns that BIRD is not there, and passes.
fn check_warns(cfg: &std::path::Path) {
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: anycast `dns`: BIRD is not running at"),
        "{err}"
    );
}

fn query_anycast(lab: &netns::Lab) -> Result<Message, String> {
    lab.run_in("lb", || {
        query_udp(
            format!("{ANYCAST}:53").parse().unwrap(),
            "www.example.test.",
            RecordType::A,
            T,
        )
    })
}

/// Announced after three healthy looks (100 ms apart), not before.
fn announced_after_rise(n: &mut Node) -> usize {
    let start = Instant::now();
    let d = run_in_lab(&mut n.lab, "lb", &n.cfg);
    let lab = &n.lab;
    let announced = lab.wait(Duration::from_secs(10), on_lo).expect("announced");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    eprintln!("announced {announced:?} after start");
    let log_text = lab.proc_ref(d).log_text();
    assert!(log_text.contains("BIRD is not running at"), "{log_text}");
    let answer = query_anycast(lab);
    assert_eq!(a_record(&answer.unwrap()), Some(Ipv4Addr::new(10, 0, 0, 1)));
    d
}

/// The backend dies: withdrawn at once (the health check's refusal wakes
/// the section between its looks); back only after the hold-down.
fn failure_and_hold_down(n: &Node, d: usize, nsd: Nsd) -> Nsd {
    let (lab, backend) = (&n.lab, n.backend);
    let log_text = || lab.proc_ref(d).log_text();
    drop(nsd);
    let gone_at = Instant::now();
    let withdrawn = lab
        .wait(Duration::from_secs(3), |l| !on_lo(l))
        .expect("withdrawn");
    eprintln!("withdrawn {withdrawn:?} after the backend died");
    assert!(withdrawn <= Duration::from_millis(600), "{withdrawn:?}");
    assert!(
        log_text().contains("anycast withdrawn anycast=dns reason=pool p: no backend up"),
        "{}",
        log_text()
    );

    // Back at once, but held down for 1.5 s from the withdraw.
    let nsd = Nsd::start_in(&lab.ns("lb"), backend, Ipv4Addr::new(10, 0, 0, 1));
    let back = lab
        .wait(Duration::from_secs(6), on_lo)
        .map(|_| gone_at.elapsed())
        .expect("announced again");
    eprintln!("announced again {back:?} after the backend died (hold-down 1.5 s)");
    assert!(back >= Duration::from_millis(1500), "{back:?}");
    assert!(log_text().contains("hold-down over"), "{}", log_text());

    nsd
}

/// `/status`, `/metrics` and `dnsha status` say announced, 3 changes.
fn status_says_announced(lab: &netns::Lab) {
    let st: serde_json::Value = lab.run_in("lb", || status("127.0.0.1:8090".parse().unwrap()));
    let a = &st["anycast"][0];
    assert_eq!(a["state"], "announced", "{st}");
    assert_eq!(a["transitions"], 3, "{st}");
    assert_eq!(a["addresses"][0], "192.0.2.53/32");
    let metrics = lab.run_in("lb", || {
        http_get("127.0.0.1:8090".parse().unwrap(), "/metrics")
    });
    assert!(
        metrics.contains("dnsha_anycast_announced{anycast=\"dns\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("dnsha_anycast_transitions_total{anycast=\"dns\"} 3"));
    let table = lab.exec(
        "lb",
        bin().to_str().unwrap(),
        &["status", "--admin", "127.0.0.1:8090"],
    );
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("ANYCAST") && table.contains("announced"),
        "{table}"
    );
}

/// The web console shows the section (a headless Chromium in the
/// namespace dumps the page once drawn).
fn console_shows_it(lab: &netns::Lab) {
    if webdriver::missing().is_none() {
        let dom = lab.exec(
            "lb",
            webdriver::CHROMIUM,
            &[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=3000",
                "--dump-dom",
                "http://127.0.0.1:8090/",
            ],
        );
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(
            dom.contains("data-anycast=\"dns\"") && dom.contains("badge state-announced"),
            "{dom}"
        );
    } else {
        skip("chromium not installed: the console's anycast rows not checked");
    }
}

/// SIGTERM: withdrawn first, answered during the 800 ms drain through the
/// local route, then stopped, the route gone.
fn drained_stop(lab: &netns::Lab, d: usize) {
    let log_text = || lab.proc_ref(d).log_text();
    let term = Instant::now();
    lab.proc_ref(d).signal(Signal::SIGTERM);
    let off = lab
        .wait(Duration::from_secs(3), |l| !on_lo(l))
        .expect("withdrawn on stop");
    assert!(off < Duration::from_millis(500), "{off:?}");
    // While it drains, the address is off `lo` (BIRD withdraws it) but
    // still delivered to the listener: a query sent now is answered.
    let local = lab.exec("lb", "ip", &["route", "show", "table", "local", ANYCAST]);
    let local = String::from_utf8_lossy(&local.stdout).into_owned();
    assert!(local.contains("metric 1024"), "{local}");
    let during = lab.run_in("lb", || {
        query_udp(
            format!("{ANYCAST}:53").parse().unwrap(),
            "www.example.test.",
            RecordType::A,
            T,
        )
    });
    assert_eq!(
        a_record(&during.unwrap()),
        Some(Ipv4Addr::new(10, 0, 0, 1)),
        "answered during the drain"
    );
    let stopped = lab
        .wait(Duration::from_secs(10), |l| {
            l.proc_ref(d).log_text().contains("stopped")
        })
        .expect("stopped");
    assert!(term.elapsed() >= Duration::from_millis(800), "{stopped:?}");
    let text = log_text();
    let (w, s) = (
        text.find("anycast withdrawn anycast=dns reason=dnsha stopping")
            .expect("withdraw logged"),
        text.find("stopping: finishing queries in flight")
            .expect("stop logged"),
    );
    assert!(w < s, "{text}");
    assert!(text.contains("drain_ms=800"), "{text}");
    let local = lab.exec("lb", "ip", &["route", "show", "table", "local", ANYCAST]);
    assert!(
        String::from_utf8_lossy(&local.stdout).trim().is_empty(),
        "the drain's local route stayed"
    );
}

/// notify saw every change, in order.
fn notify_saw_everything(log: &std::path::Path) {
    let calls = std::fs::read_to_string(log).unwrap();
    let states: Vec<&str> = calls
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        states,
        ["ANNOUNCED", "WITHDRAWN", "ANNOUNCED", "WITHDRAWN"],
        "{calls}"
    );
    assert!(
        calls.contains("dns WITHDRAWN pool p: no backend up"),
        "{calls}"
    );
}

#[test]
fn the_address_follows_the_pool_with_rise_hold_down_and_a_drained_stop() {
    init_tracing();
    if let Some(why) = netns::skip_reason(&["/bin/sh"]) {
        skip(&why);
        return;
    }
    let (mut n, nsd) = node();
    check_warns(&n.cfg);
    let d = announced_after_rise(&mut n);
    let nsd = failure_and_hold_down(&n, d, nsd);
    status_says_announced(&n.lab);
    console_shows_it(&n.lab);
    drained_stop(&n.lab, d);
    notify_saw_everything(&n.log);
    drop(nsd);
}
