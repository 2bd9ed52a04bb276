//! Restarts that lose nothing (README "Install as a service"): dnsha under
//! a service manager that keeps its listening sockets in a descriptor store
//! and restarts it as systemd does with the unit's `RestartKillSignal=`
//! (`test_support::fdstore` plays systemd's part: this machine's PID 1 is
//! not systemd). A client at 1000 queries/s over UDP and one at 1000
//! queries/s over TCP (a connection per query) send through a VRRP VIP
//! while dnsha restarts ten times in a row: every query is answered, the
//! master stays master (its backup never takes over and never hears
//! priority 0), and the VIP stays.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use test_support::fdstore::FdStore;

const RESTARTS: usize = 10;

/// What one load generator saw.
#[derive(Debug, Default)]
struct Seen {
    sent: u64,
    answered: u64,
    failures: Vec<String>,
}

/// Paced at one query per `every` until `stop`; then waits `linger` for
/// the last answers.
fn pace(every: Duration, stop: &AtomicBool, mut each: impl FnMut(u64)) {
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        each(n);
        n += 1;
        let next = start + every * u32::try_from(n).unwrap();
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// UDP at 1000 queries/s, each with its own ID, sent in turn from `ports`
/// sockets (so a reuseport group spreads them over its members); answers
/// are matched by ID.
fn udp_load(server: SocketAddr, ports: usize, stop: Arc<AtomicBool>) -> JoinHandle<Seen> {
    std::thread::spawn(move || {
        let socks: Vec<UdpSocket> = (0..ports.max(1))
            .map(|_| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                s
            })
            .collect();
        let ids = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let done = Arc::new(AtomicBool::new(false));
        let receivers: Vec<JoinHandle<()>> = socks
            .iter()
            .map(|s| {
                let (rx, done, ids) = (s.try_clone().unwrap(), Arc::clone(&done), Arc::clone(&ids));
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1500];
                    while !done.load(Ordering::SeqCst) {
                        if let Ok(n) = rx.recv(&mut buf) {
                            if let Ok(m) = Message::from_vec(&buf[..n]) {
                                if a_record(&m) == Some(Ipv4Addr::new(10, 0, 0, 1)) {
                                    ids.lock().unwrap().insert(m.id());
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let mut query = build_query("www.example.test.", RecordType::A).unwrap();
        let mut sent = 0u64;
        pace(Duration::from_millis(1), &stop, |n| {
            query.set_id(u16::try_from(n % 65_536).unwrap());
            let sock = &socks[usize::try_from(n).unwrap() % socks.len()];
            if sock.send_to(&query.to_vec().unwrap(), server).is_ok() {
                sent += 1;
            }
        });
        std::thread::sleep(Duration::from_secs(3));
        done.store(true, Ordering::SeqCst);
        for r in receivers {
            r.join().unwrap();
        }
        let ids = ids.lock().unwrap();
        let answered = ids.len() as u64;
        let failures = (0..sent.min(65_536))
            .filter(|i| !ids.contains(&u16::try_from(*i).unwrap()))
            .take(20)
            .map(|i| format!("udp query {i} unanswered"))
            .collect();
        Seen {
            sent,
            answered,
            failures,
        }
    })
}

/// TCP at 1000 queries/s: four clients at 250/s, a connection per query.
fn tcp_load(server: SocketAddr, stop: Arc<AtomicBool>) -> Vec<JoinHandle<Seen>> {
    (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen = Seen::default();
                pace(Duration::from_millis(4), &stop, |n| {
                    seen.sent += 1;
                    match query_tcp(
                        server,
                        "www.example.test.",
                        RecordType::A,
                        Duration::from_secs(5),
                    ) {
                        Ok(m) if a_record(&m) == Some(Ipv4Addr::new(10, 0, 0, 1)) => {
                            seen.answered += 1;
                        }
                        Ok(m) => seen.failures.push(format!("tcp query {n}: {m:?}")),
                        Err(e) => seen.failures.push(format!("tcp query {n}: {e}")),
                    }
                });
                seen
            })
        })
        .collect()
}

fn balancer(vip: Ipv4Addr, backend: SocketAddr, priority: u8) -> String {
    let admin = "[admin]\nlisten = \"127.0.0.1:8090\"\n";
    vrrp_balancer(admin, vip, backend, true, (61, priority, "1"))
}

/// Starts dnsha in `lb` as the unit's next process, with the store's
/// descriptors.
fn launch(lab: &mut netns::Lab, store: &FdStore, config: &Path) -> usize {
    let script = store.launch_script();
    lab.spawn(
        "lb",
        Path::new("/bin/bash"),
        &[
            "-c",
            &script,
            bin().to_str().unwrap(),
            "run",
            "--config",
            config.to_str().unwrap(),
        ],
        false,
    )
}

/// A master `a` in `lb` started as the unit's process (with the store),
/// its backup `b` in `b`, both up.
struct Pair {
    lab: netns::Lab,
    nsd: Nsd,
    vip: Ipv4Addr,
    config_a: std::path::PathBuf,
    store: FdStore,
    a: usize,
    b: usize,
}

fn pair(tag: &str, subnet: u8, nodes: &[&str]) -> Option<Pair> {
    if let Some(why) = netns::skip_reason(&["/bin/bash"]) {
        skip(&why);
        return None;
    }
    let mut lab = netns::Lab::with_subnet(tag, subnet, nodes);
    let local: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let nsd = Nsd::start_in(&lab.ns("lb"), local, Ipv4Addr::new(10, 0, 0, 1));
    let vip = lab.host(100);
    let config_a = lab.dir.path().join("a.toml");
    std::fs::write(&config_a, balancer(vip, nsd.addr(), 150)).unwrap();
    let config_b = lab.dir.path().join("b.toml");
    std::fs::write(&config_b, balancer(vip, local, 100)).unwrap();
    let store = FdStore::new(lab.dir.path());
    let a = launch(&mut lab, &store, &config_a);
    assert!(
        store.wait_count("READY=1", 1, Duration::from_secs(10)),
        "{}",
        lab.logs()
    );
    let held = lab.wait(Duration::from_secs(10), |l| l.holds("lb", vip));
    assert!(held.is_some(), "{}", lab.logs());
    let b = run_in_lab(&mut lab, "b", &config_b);
    let backup = lab.wait(Duration::from_secs(10), |l| {
        l.proc_ref(b).log_text().contains("to=BACKUP")
    });
    assert!(backup.is_some(), "{}", lab.logs());
    Some(Pair {
        lab,
        nsd,
        vip,
        config_a,
        store,
        a,
        b,
    })
}

#[test]
fn ten_restarts_under_load_lose_no_query_and_keep_the_vrrp_master() {
    init_tracing();
    let Some(Pair {
        mut lab,
        nsd,
        vip,
        config_a,
        store,
        mut a,
        b,
    }) = pair("rst", 85, &["lb", "b", "c"])
    else {
        return;
    };
    let local: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let _nsd_b = Nsd::start_in(&lab.ns("b"), local, Ipv4Addr::new(10, 0, 0, 1));
    // Each listening socket stored once: two UDP and two TCP workers.
    let names = store.names();
    assert!(
        names.contains(&format!("udp-{vip}-53-0")) && names.contains(&format!("tcp-{vip}-53-0")),
        "{names:?}"
    );

    let server = SocketAddr::from((vip, 53));
    let stop = Arc::new(AtomicBool::new(false));
    let (udp, tcp) = lab.run_in("c", || {
        (
            udp_load(server, 1, Arc::clone(&stop)),
            tcp_load(server, Arc::clone(&stop)),
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    let mut gaps = Vec::new();
    for k in 1..=RESTARTS {
        let t0 = Instant::now();
        lab.proc_ref(a).signal(Signal::SIGUSR2);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(s)) = lab.proc(a).child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(
            status.is_some_and(|s| s.success()),
            "restart {k}: {status:?}\n{}",
            lab.proc_ref(a).log_text()
        );
        let exited = t0.elapsed();
        a = launch(&mut lab, &store, &config_a);
        assert!(
            store.wait_count("READY=1", k + 1, Duration::from_secs(10)),
            "restart {k}\n{}",
            lab.logs()
        );
        gaps.push((exited, t0.elapsed()));
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let udp = udp.join().unwrap();
    let tcp: Vec<Seen> = tcp.into_iter().map(|t| t.join().unwrap()).collect();
    println!("restarts (old process gone, new one ready): {gaps:?}");
    println!("udp: {} sent, {} answered", udp.sent, udp.answered);
    let (tcp_sent, tcp_answered): (u64, u64) = tcp
        .iter()
        .fold((0, 0), |(s, a), t| (s + t.sent, a + t.answered));
    println!("tcp: {tcp_sent} sent, {tcp_answered} answered");
    let log = lab.proc_ref(a).log_text();
    assert!(udp.sent > 5_000, "{udp:?}");
    assert_eq!(udp.answered, udp.sent, "{:?}\n{log}", udp.failures);
    assert!(tcp_sent > 5_000, "{tcp_sent}");
    let failures: Vec<&String> = tcp.iter().flat_map(|t| t.failures.iter()).collect();
    assert!(failures.is_empty(), "{failures:?}\n{log}");
    assert_eq!(tcp_answered, tcp_sent);

    // The master stayed master: resumed each time, its backup never took
    // over and never heard priority 0.
    assert!(log.contains("reason=resumed after a restart"), "{log}");
    assert!(
        lab.holds("lb", vip) && !lab.holds("b", vip),
        "{}",
        lab.logs()
    );
    let b_log = lab.proc_ref(b).log_text();
    assert!(!b_log.contains("to=MASTER"), "{b_log}");
    let b_status = lab.run_in("b", || status("127.0.0.1:8090".parse().unwrap()));
    assert_eq!(
        b_status["vrrp"][0]["priority_zero_received"], 0,
        "{b_status}"
    );
    assert!(
        b_status["vrrp"][0]["adverts_received"]
            .as_u64()
            .unwrap_or(0)
            > 5,
        "{b_status}"
    );

    // A restart into a configuration whose TCP listener became a UDP one
    // on another port: the TCP sockets leave the store, the UDP ones stay
    // and serve, the new one is stored.
    let changed = balancer(vip, nsd.addr(), 150).replace(
        &format!("protocol = \"tcp\"\nlisten = \"{vip}:53\""),
        &format!("protocol = \"udp\"\nlisten = \"{vip}:5353\""),
    );
    std::fs::write(&config_a, changed).unwrap();
    lab.proc_ref(a).signal(Signal::SIGUSR2);
    let _ = lab.proc(a).child.wait();
    a = launch(&mut lab, &store, &config_a);
    assert!(
        store.wait_count("READY=1", RESTARTS + 2, Duration::from_secs(10)),
        "{}",
        lab.logs()
    );
    let names = store.names();
    assert!(!names.iter().any(|n| n.starts_with("tcp-")), "{names:?}");
    assert!(names.contains(&format!("udp-{vip}-53-0")), "{names:?}");
    assert!(names.contains(&format!("udp-{vip}-5353-0")), "{names:?}");
    let answer = lab.run_in("c", || {
        query_udp(server, "www.example.test.", RecordType::A, T)
    });
    assert!(answer.is_ok(), "{}", lab.proc_ref(a).log_text());
}

/// SIGTERM is still a stop: the master sends priority 0 and removes its
/// VIP, its backup takes over at once, and the sockets it stored are left
/// for systemd to close with the unit.
#[test]
fn a_stop_still_hands_the_vip_to_the_backup_at_once() {
    init_tracing();
    let Some(Pair { lab, vip, a, b, .. }) = pair("stp", 86, &["lb", "b"]) else {
        return;
    };
    lab.proc_ref(a).signal(Signal::SIGTERM);
    // Priority 0: the backup takes over after Skew_Time, well before its
    // Master_Down_Interval (3.6 s).
    let moved = lab.wait(Duration::from_secs(2), |l| {
        l.holds("b", vip) && !l.holds("lb", vip)
    });
    assert!(moved.is_some(), "{}", lab.logs());
    assert!(
        lab.proc_ref(b)
            .log_text()
            .contains("reason=master stopped (priority 0)"),
        "{}",
        lab.logs()
    );
}

/// A reload that rebinds a UDP listener (its worker count changed) loses
/// no query, under load from many source ports: the stopped listener's
/// sockets leave the reuseport group at once and read what was queued (no
/// share of new queries lands on a socket that nobody reads any more), and
/// the stored copies of the old sockets are replaced under the same names.
/// Three reloads: 2 → 3 → 1 → 2 workers.
#[test]
fn a_reload_that_rebinds_loses_no_query_and_replaces_the_stored_sockets() {
    init_tracing();
    let nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = |workers: usize| {
        config_with(
            listen,
            admin,
            &format!("workers = {workers}"),
            "",
            &[("a", nsd.addr(), 1)],
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let store = FdStore::new(dir.path());
    let notify = store.path().to_str().unwrap().to_string();
    let mut d = Dnsha::try_start_with(bin(), &cfg(2), &[], &[("NOTIFY_SOCKET", &notify)]).unwrap();
    assert!(
        store.wait_count("READY=1", 1, Duration::from_secs(10)),
        "{}",
        d.log()
    );
    let udp = |store: &FdStore| {
        store
            .names()
            .into_iter()
            .filter(|n| n.starts_with("udp-"))
            .count()
    };
    assert_eq!(udp(&store), 2, "{:?}", store.names());
    let stop = Arc::new(AtomicBool::new(false));
    let load = udp_load(listen, 32, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));
    for (n, workers) in [3, 1, 2].into_iter().enumerate() {
        d.rewrite_config(&cfg(workers));
        d.signal(Signal::SIGHUP).unwrap();
        assert!(
            store.wait_count("READY=1", n + 2, Duration::from_secs(10)),
            "{}",
            d.log()
        );
        // Let the notify messages land.
        let stored = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            udp(&store) == workers
        });
        assert!(stored, "{workers} workers: {:?}", store.names());
        std::thread::sleep(Duration::from_millis(400));
    }
    stop.store(true, Ordering::SeqCst);
    let seen = load.join().unwrap();
    assert_eq!(
        d.log().matches("configuration reloaded").count(),
        3,
        "{}",
        d.log()
    );
    assert!(seen.sent > 1000, "{seen:?}");
    assert_eq!(seen.answered, seen.sent, "{seen:?}\n{}", d.log());
    d.kill();
}
