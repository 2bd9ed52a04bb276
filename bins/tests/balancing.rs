//! The daemon in front of real NSD servers: balancing, failover, reload.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn who_udp(addr: SocketAddr) -> Ipv4Addr {
    let m = query_udp(addr, "www.example.test.", RecordType::A, T).expect("udp query");
    a_record(&m).expect("A record")
}

fn who_tcp(addr: SocketAddr) -> Ipv4Addr {
    let m = query_tcp(addr, "www.example.test.", RecordType::A, T).expect("tcp query");
    a_record(&m).expect("A record")
}

#[test]
fn round_robin_alternates_over_udp_and_tcp() {
    init_tracing();
    let (n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        "policy = \"rr\"",
        &[("a", n1.addr(), 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    d.wait_tcp(listen);
    let udp: Vec<_> = (0..10).map(|_| who_udp(listen)).collect();
    for w in udp.windows(2) {
        assert_ne!(w[0], w[1], "UDP did not alternate: {udp:?}");
    }
    let tcp: Vec<_> = (0..10).map(|_| who_tcp(listen)).collect();
    for w in tcp.windows(2) {
        assert_ne!(w[0], w[1], "TCP did not alternate: {tcp:?}");
    }
    // dig, as an operator would.
    let port = listen.port().to_string();
    let out = dig(&["@127.0.0.1", "-p", &port, "www.example.test", "+short"]);
    assert!(
        out.trim() == "10.0.0.1" || out.trim() == "10.0.0.2",
        "{out}"
    );
    let out = dig(&[
        "@127.0.0.1",
        "-p",
        &port,
        "www.example.test",
        "+short",
        "+tcp",
    ]);
    assert!(
        out.trim() == "10.0.0.1" || out.trim() == "10.0.0.2",
        "{out}"
    );
    assert_eq!(outstanding_total(admin), 0);
}

#[test]
fn weighted_round_robin_three_to_one() {
    init_tracing();
    let (n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        "policy = \"wrr\"",
        &[("a", n1.addr(), 3), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    // wait_udp itself sent queries; count from a fresh cycle boundary by
    // looking only at the distribution.
    let mut counts: HashMap<Ipv4Addr, usize> = HashMap::new();
    for _ in 0..40 {
        *counts.entry(who_udp(listen)).or_default() += 1;
    }
    assert_eq!(counts.get(&ip(1)), Some(&30), "{counts:?}");
    assert_eq!(counts.get(&ip(2)), Some(&10), "{counts:?}");
}

#[test]
fn killed_backend_costs_no_failed_query() {
    init_tracing();
    let (mut n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        "policy = \"rr\"\ntimeout_ms = 500",
        &[("a", n1.addr(), 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    d.wait_tcp(listen);
    n1.stop();
    let start = Instant::now();
    for i in 0..20 {
        assert_eq!(who_udp(listen), ip(2), "udp query {i}");
        assert_eq!(who_tcp(listen), ip(2), "tcp query {i}");
    }
    // ICMP refusals and TCP resets are retried at once, not after a timeout.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let st = status(admin);
    let a = &st["pools"][0]["backends"][0];
    assert_eq!(a["name"], "a");
    assert_eq!(a["state"], "down", "{st}");
    assert!(a["failures"].as_u64().unwrap() >= 3);
}

#[test]
fn silent_backend_costs_one_timeout_then_is_skipped() {
    init_tracing();
    let hole = Blackhole::start();
    let n2 = Nsd::start(ip(2));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        "policy = \"rr\"\ntimeout_ms = 300\nmax_fails = 1\nfail_timeout_ms = 60000",
        &[("hole", hole.addr(), 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    let mut slow = 0;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(who_udp(listen), ip(2));
        if t.elapsed() > Duration::from_millis(250) {
            slow += 1;
        }
    }
    assert!(slow <= 1, "{slow} queries waited for the silent backend");
    assert!(
        hole.datagrams() <= 1,
        "silent backend got {} queries",
        hole.datagrams()
    );
    assert!(metric(admin, "dnsha_timeouts_total{listener=\"udp\"") <= 1);
}

#[test]
fn all_backends_down_gives_servfail_or_drop() {
    init_tracing();
    let dead = free_addr();
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(listen, admin, "timeout_ms = 200", &[("dead", dead, 1)]);
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    let m = query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    let m = query_tcp(listen, "www.example.test.", RecordType::A, T).unwrap();
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert!(metric(admin, "dnsha_servfail_total{listener=\"udp\"") >= 1);
    drop(d);

    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        "timeout_ms = 200\non_no_backend = \"drop\"",
        &[("dead", dead, 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    let r = query_udp(
        listen,
        "www.example.test.",
        RecordType::A,
        Duration::from_secs(1),
    );
    assert!(r.is_err(), "{r:?}");
    assert!(
        metric(
            admin,
            "dnsha_dropped_total{listener=\"udp\",protocol=\"udp\",reason=\"no_backend\"}"
        ) >= 1
    );
}

#[test]
fn truncated_answers_pass_through_and_edns_payload_intact() {
    init_tracing();
    let n1 = Nsd::start(ip(1));
    let (listen, admin) = (free_addr(), free_addr());
    // Answers up to 4096 bytes over UDP (1232 by default, see hardening.rs).
    let cfg = config(listen, admin, "", &[("a", n1.addr(), 1)]).replacen(
        "protocol = \"udp\"",
        "protocol = \"udp\"\nmax_udp_size = 4096",
        1,
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    d.wait_tcp(listen);
    // Without EDNS the big TXT set does not fit 512 bytes: TC=1 reaches the client.
    let m = query_udp(listen, "big.example.test.", RecordType::TXT, T).unwrap();
    assert!(m.truncated(), "expected TC=1");
    // The client's TCP retry gets it all.
    let m = query_tcp(listen, "big.example.test.", RecordType::TXT, T).unwrap();
    assert!(!m.truncated());
    assert_eq!(txt_strings(&m).len(), BIG_TXT_RECORDS);
    // With EDNS 4096 the full answer comes over UDP, byte for byte as NSD sends it.
    let port = listen.port().to_string();
    let via = dig(&[
        "@127.0.0.1",
        "-p",
        &port,
        "big.example.test",
        "TXT",
        "+bufsize=4096",
        "+ignore",
    ]);
    assert!(!via.contains(" tc "), "{via}");
    assert!(via.contains("MSG SIZE  rcvd:"), "{via}");
    let direct_port = n1.addr().port().to_string();
    let direct = dig(&[
        "@127.0.0.1",
        "-p",
        &direct_port,
        "big.example.test",
        "TXT",
        "+bufsize=4096",
        "+ignore",
    ]);
    let size = |s: &str| {
        s.lines()
            .find(|l| l.contains("MSG SIZE"))
            .map(str::to_string)
    };
    assert_eq!(size(&via), size(&direct));
    assert!(
        via.contains("udp: 1232") || via.contains("udp: 4096") || via.contains("udp:"),
        "{via}"
    );
}

#[test]
fn wildcard_listener_answers_from_the_destination_address() {
    init_tracing();
    let n1 = Nsd::start(ip(1));
    let port = free_port();
    let admin = free_addr();
    let listen: SocketAddr = (Ipv4Addr::UNSPECIFIED, port).into();
    let cfg = config(listen, admin, "", &[("a", n1.addr(), 1)]);
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp((Ipv4Addr::LOCALHOST, port).into());
    // A connected socket only accepts datagrams from the address it sent to.
    for last in [1u8, 2, 77] {
        let dst: SocketAddr = (Ipv4Addr::new(127, 0, 0, last), port).into();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(dst).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let q = build_query("www.example.test.", RecordType::A).unwrap();
        s.send(&q.to_vec().unwrap()).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = s
            .recv_from(&mut buf)
            .expect("answer from the queried address");
        assert_eq!(from, dst);
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.id(), q.id());
        assert_eq!(a_record(&m), Some(ip(1)));
    }
}

#[test]
fn reload_adds_and_removes_backends_under_load_without_failures() {
    init_tracing();
    let (n1, n2, n3) = (Nsd::start(ip(1)), Nsd::start(ip(2)), Nsd::start(ip(3)));
    let (listen, admin) = (free_addr(), free_addr());
    let before = config(
        listen,
        admin,
        "",
        &[("a", n1.addr(), 1), ("b", n2.addr(), 1)],
    );
    let after = config(
        listen,
        admin,
        "",
        &[("b", n2.addr(), 1), ("c", n3.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &before);
    d.wait_udp(listen);
    d.wait_tcp(listen);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, failures, ok) = (Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&ok));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = if i % 2 == 0 {
                        query_udp(listen, "www.example.test.", RecordType::A, T)
                    } else {
                        query_tcp(listen, "www.example.test.", RecordType::A, T)
                    };
                    match r {
                        Ok(m) if a_record(&m).is_some() => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed query: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    d.rewrite_config(&after);
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    // A bad config is refused and the running one stays.
    d.rewrite_config("[[pool]]\nname = 1\n");
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("reload refused", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "log:\n{}", d.log());
    assert!(ok.load(Ordering::Relaxed) > 50);
    let seen: Vec<_> = (0..10).map(|_| who_udp(listen)).collect();
    assert!(seen.contains(&ip(3)), "{seen:?}");
    assert!(!seen.contains(&ip(1)), "{seen:?}");
    let st = status(admin);
    let names: Vec<_> = st["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["b", "c"]);
    // b kept its counters across the reload
    assert!(st["pools"][0]["backends"][0]["queries"].as_u64().unwrap() > 10);
    assert_eq!(outstanding_total(admin), 0);
    d.signal(Signal::SIGTERM).unwrap();
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_finishes_queries_in_flight() {
    init_tracing();
    let hole = Blackhole::start();
    let n2 = Nsd::start(ip(2));
    let (listen, admin) = (free_addr(), free_addr());
    // The first attempt goes to the silent backend: the query is in flight
    // for 800 ms, then retried on NSD.
    let cfg = config(
        listen,
        admin,
        "policy = \"first\"\ntimeout_ms = 800",
        &[("hole", hole.addr(), 1), ("b", n2.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    let q = std::thread::spawn(move || {
        query_udp(
            listen,
            "www.example.test.",
            RecordType::A,
            Duration::from_secs(5),
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    d.signal(Signal::SIGTERM).unwrap();
    let answer = q
        .join()
        .unwrap()
        .expect("in-flight query answered during shutdown");
    assert_eq!(a_record(&answer), Some(ip(2)));
    let status = d.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(status.success());
}

#[test]
fn listener_binds_an_address_not_held_yet() {
    // IP_FREEBIND: a VIP that VRRP will bring later. 198.51.100.7 is not on
    // any interface of this machine.
    init_tracing();
    let n1 = Nsd::start(ip(1));
    let (admin, port) = (free_addr(), free_port());
    let vip: SocketAddr = (Ipv4Addr::new(198, 51, 100, 7), port).into();
    let cfg = config(vip, admin, "", &[("a", n1.addr(), 1)]);
    let mut d = Dnsha::start(bin(), &cfg);
    assert!(
        d.wait_log("dnsha running", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert!(d.is_running());
    let st = status(admin);
    assert_eq!(st["listeners"][0]["address"], vip.to_string());
}

#[test]
fn tcp_passthrough_spreads_connections() {
    init_tracing();
    let (n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        "",
        &[("a", n1.addr(), 1), ("b", n2.addr(), 1)],
    )
    .replace("protocol = \"tcp\"", "protocol = \"tcp-passthrough\"");
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    // One backend per connection, round robin over connections (the
    // readiness probe's connections take turns too, so count, not order).
    let seen: Vec<_> = (0..8).map(|_| who_tcp(listen)).collect();
    let ones = seen.iter().filter(|&&a| a == ip(1)).count();
    assert!((3..=5).contains(&ones), "{seen:?}");
}

#[test]
fn upstream_queries_use_random_ids_and_several_source_ports() {
    init_tracing();
    // A backend that records the source port and ID of every query, then answers.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let backend = sock.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            seen2.lock().unwrap().push((from.port(), q.id()));
            let mut a = q.clone();
            a.set_message_type(hickory_proto::op::MessageType::Response);
            let _ = sock.send_to(&a.to_vec().unwrap(), from);
        }
    });
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config_with(
        listen,
        admin,
        "workers = 1",
        "udp_sockets_per_backend = 5",
        &[("rec", backend, 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    let mut client_ids = Vec::new();
    for _ in 0..40 {
        let q = build_query("www.example.test.", RecordType::A).unwrap();
        client_ids.push(q.id());
        let m = send_udp(listen, &q, T).unwrap();
        assert_eq!(m.id(), q.id(), "the client gets its own ID back");
    }
    let seen_for_test = Arc::clone(&seen);
    let seen = seen.lock().unwrap().clone();
    let ports: std::collections::HashSet<u16> = seen.iter().map(|s| s.0).collect();
    // 40 queries in turn over the worker's 5 sockets to this backend.
    assert_eq!(ports.len(), 5, "source ports: {ports:?}");
    let ids: std::collections::HashSet<u16> = seen.iter().map(|s| s.1).collect();
    assert!(
        ids.len() >= 35,
        "upstream IDs repeat: {} distinct of {}",
        ids.len(),
        seen.len()
    );
    // upstream IDs are not the clients' IDs
    let same = seen
        .iter()
        .rev()
        .take(40)
        .zip(client_ids.iter().rev())
        .filter(|(s, c)| s.1 == **c)
        .count();
    assert!(same <= 2, "{same} upstream IDs equal the client's");

    // A reload raising the socket count opens the new sockets on next use.
    d.rewrite_config(&config_with(
        listen,
        admin,
        "workers = 1",
        "udp_sockets_per_backend = 8",
        &[("rec", backend, 1)],
    ));
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    let before = seen_for_test.lock().unwrap().len();
    for _ in 0..40 {
        let q = build_query("www.example.test.", RecordType::A).unwrap();
        let m = send_udp(listen, &q, T).unwrap();
        assert_eq!(m.id(), q.id());
    }
    let after: std::collections::HashSet<u16> = seen_for_test.lock().unwrap()[before..]
        .iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(after.len(), 8, "source ports after the reload: {after:?}");
    assert!(ports.is_subset(&after), "the first sockets stay in use");
}

#[test]
fn pin_workers_puts_each_udp_worker_on_its_own_cpu() {
    init_tracing();
    let allowed = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_string())
        })
        .unwrap();
    let first_two: Vec<String> = expand_cpu_list(&allowed)
        .into_iter()
        .take(2)
        .map(|c| c.to_string())
        .collect();
    let n1 = Nsd::start(ip(1));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config_with(listen, admin, "workers = 2", "", &[("a", n1.addr(), 1)]).replacen(
        "protocol = \"udp\"",
        "protocol = \"udp\"\npin_workers = true",
        1,
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    assert_eq!(who_udp(listen), ip(1));
    let mut pinned = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        pinned.push((comm.trim().to_string(), cpus));
    }
    pinned.sort();
    for (i, want) in first_two.iter().enumerate() {
        let name = format!("udp-udp-{i}");
        let got = pinned.iter().find(|(c, _)| *c == name);
        // With one allowed CPU both workers share it.
        let want = if first_two.len() == 1 {
            &first_two[0]
        } else {
            want
        };
        assert_eq!(got.map(|g| &g.1), Some(want), "{pinned:?}");
    }
    // The TCP listener's workers are not pinned.
    let tcp = pinned
        .iter()
        .find(|(c, _)| c.starts_with("tcp-tcp-0"))
        .unwrap();
    assert_eq!(tcp.1, allowed, "{pinned:?}");
}

/// `0-3,6` → [0, 1, 2, 3, 6].
fn expand_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// CPU time, in nanoseconds, of the thread of process `pid` named `name`
/// (first field of its schedstat).
fn thread_cpu_ns(pid: u32, name: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            (comm.trim() == name).then(|| std::fs::read_to_string(dir.join("schedstat")).ok())?
        })
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `n` queries one after another, each from a new source port, each
/// answered by the backend at `ip(1)` (a client's second try allowed: a
/// listener restarted by a reload loses the datagrams left in its old
/// sockets as it closes them).
fn light_load(listen: SocketAddr, n: usize) {
    for _ in 0..n {
        let answer =
            (0..2).find_map(|_| query_udp(listen, "www.example.test.", RecordType::A, T).ok());
        assert_eq!(answer.as_ref().and_then(a_record), Some(ip(1)));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Light load until `active` workers take queries, for at most 15 s.
fn light_load_until(listen: SocketAddr, admin: SocketAddr, active: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        light_load(listen, 50);
        if metric(admin, "dnsha_udp_active_workers{") == active {
            return true;
        }
    }
    false
}

#[test]
fn adaptive_workers_send_a_light_udp_load_to_one_worker_and_a_backlog_to_all() {
    init_tracing();
    let n1 = Nsd::start(ip(1));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config_with(listen, admin, "workers = 2", "", &[("a", n1.addr(), 1)]);
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    let changes = || metric(admin, "dnsha_udp_steering_changes_total{");
    assert_eq!(metric(admin, "dnsha_udp_active_workers{"), 2);
    assert_eq!(changes(), 0);

    // A light load from many source ports ends on one worker.
    assert!(light_load_until(listen, admin, 1), "{}", d.log());
    assert_eq!(changes(), 1);
    let cpu = || {
        (
            thread_cpu_ns(d.pid(), "udp-udp-0"),
            thread_cpu_ns(d.pid(), "udp-udp-1"),
        )
    };
    let before = cpu();
    light_load(listen, 200);
    let after = cpu();
    let (w0, w1) = (after.0 - before.0, after.1 - before.1);
    // Worker 1 only wakes for its timers (every 250 ms).
    assert!(w1 * 10 < w0, "worker 0 {w0} ns, worker 1 {w1} ns");

    // A burst that queues up in the socket: both workers at once.
    let burst = build_query("www.example.test.", RecordType::A)
        .unwrap()
        .to_vec()
        .unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5000 {
        let _ = tx.send_to(&burst, listen);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(admin, "dnsha_udp_active_workers{") != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(admin, "dnsha_udp_active_workers{"), 2, "{}", d.log());
    assert_eq!(changes(), 2);

    // A reload that rebinds the listener (3 workers): the new one steers
    // once the old one has drained and left the socket group.
    d.rewrite_config(&config_with(
        listen,
        admin,
        "workers = 3",
        "",
        &[("a", n1.addr(), 1)],
    ));
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert_eq!(metric(admin, "dnsha_udp_active_workers{"), 3);
    assert!(light_load_until(listen, admin, 1), "{}", d.log());
}

#[test]
fn chash_keeps_each_name_on_its_backend_and_moves_only_a_dead_ones_names() {
    init_tracing();
    let mut nsd = vec![Nsd::start(ip(1)), Nsd::start(ip(2)), Nsd::start(ip(3))];
    let (listen, admin) = (free_addr(), free_addr());
    let backends: Vec<(String, SocketAddr)> = nsd
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("b{i}"), n.addr()))
        .collect();
    let list: Vec<(&str, SocketAddr, u32)> = backends
        .iter()
        .map(|(name, a)| (name.as_str(), *a, 1))
        .collect();
    // A dead backend's queries time out before its names move on: short.
    let cfg = config(listen, admin, "policy = \"chash\"\ntimeout_ms = 200", &list);
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    let names: Vec<String> = (0..60).map(|i| format!("name{i}.example.test.")).collect();
    let ask = |name: &str| {
        let m = query_udp(listen, name, RecordType::A, T).expect("udp query");
        a_record(&m).expect("A record")
    };
    let before: Vec<Ipv4Addr> = names.iter().map(|n| ask(n)).collect();
    // Asked again, over UDP or TCP, in any case: the same backend.
    for (n, &was) in names.iter().zip(&before) {
        assert_eq!(ask(&n.to_uppercase()), was, "{n}");
        assert_eq!(
            a_record(&query_tcp(listen, n, RecordType::A, T).unwrap()),
            Some(was)
        );
    }
    for b in [1, 2, 3] {
        let on_b = before.iter().filter(|&&a| a == ip(b)).count();
        assert!(on_b >= 5, "backend {b} holds {on_b} of 60 names");
    }
    // Backend 2 dies: its names move, every other name stays.
    let mut dead = nsd.remove(1);
    dead.stop();
    let after: Vec<Ipv4Addr> = names.iter().map(|n| ask(n)).collect();
    let mut moved = 0;
    for ((n, &was), &now) in names.iter().zip(&before).zip(&after) {
        assert_ne!(now, ip(2), "{n}");
        if was == ip(2) {
            moved += 1;
        } else {
            assert_eq!(now, was, "{n} moved off a live backend");
        }
    }
    assert_eq!(moved, before.iter().filter(|&&a| a == ip(2)).count());
    // And they stay where they moved to.
    for (n, &now) in names.iter().zip(&after) {
        assert_eq!(ask(n), now, "{n}");
    }
}

#[test]
fn a_backend_at_its_cap_of_outstanding_queries_passes_the_next_ones_on() {
    init_tracing();
    let hole = Blackhole::start();
    let n1 = Nsd::start(ip(1));
    let (listen, admin) = (free_addr(), free_addr());
    // The silent backend first: it holds every query it gets for 3 s.
    let cfg = config(
        listen,
        admin,
        "policy = \"first\"\nmax_outstanding_per_backend = 3\ntimeout_ms = 3000\nretries = 0\nmax_fails = 0\n\
         [pool.health]\ncheck = \"none\"",
        &[("silent", hole.addr(), 1), ("a", n1.addr(), 1)],
    );
    let d = Dnsha::start(bin(), &cfg);
    // Not wait_udp: its probe queries would take the silent backend's
    // slots.
    assert!(
        d.wait_log("dnsha running", Duration::from_secs(10)),
        "{}",
        d.log()
    );
    // Three queries take the silent backend's three slots.
    let held: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                query_udp(
                    listen,
                    &format!("held{i}.example.test."),
                    RecordType::A,
                    Duration::from_secs(6),
                )
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while hole.datagrams() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(hole.datagrams(), 3);
    // The next ones go straight to the second backend, not into the hole.
    let start = Instant::now();
    for i in 0..10 {
        let m = query_udp(listen, &format!("n{i}.example.test."), RecordType::A, T).unwrap();
        assert_eq!(a_record(&m), Some(ip(1)));
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(hole.datagrams(), 3);
    // The held ones end with the pool's SERVFAIL once their time is up.
    for h in held {
        let m = h.join().unwrap().unwrap();
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }
}
