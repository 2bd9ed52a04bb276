//! `[[rule]]` through the daemon, in front of real NSD servers: routing by
//! name and client network, answers made at once, per-rule metrics, a
//! reload that swaps the rules, and a rule of 10 000 suffixes.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

/// Three pools of one NSD each (`auth` answers 10.0.0.1, `fwd` 10.0.0.2,
/// `office` 10.0.0.3); the listeners send to `fwd` unless `rules` say.
fn config(listen: SocketAddr, admin: SocketAddr, nsd: &[&Nsd; 3], rules: &str) -> String {
    let mut s = format!(
        "[admin]\nlisten = \"{admin}\"\n\n\
         [[listener]]\nname = \"udp\"\nprotocol = \"udp\"\nlisten = \"{listen}\"\npool = \"fwd\"\n\n\
         [[listener]]\nname = \"tcp\"\nprotocol = \"tcp\"\nlisten = \"{listen}\"\npool = \"fwd\"\n"
    );
    for (name, n) in ["auth", "fwd", "office"].iter().zip(nsd) {
        s.push_str(&format!(
            "\n[[pool]]\nname = \"{name}\"\n[[pool.backend]]\nname = \"{name}-1\"\naddress = \"{}\"\n",
            n.addr()
        ));
    }
    s.push_str(rules);
    s
}

const RULES: &str = r#"
[[rule]]
name = "internal"
qname_suffix = ["corp.example.test"]
pool = "auth"

[[rule]]
name = "office"
client = ["127.0.0.2/32"]
pool = "office"

[[rule]]
name = "portal"
qname = ["portal.example.test"]
answer = ["192.0.2.80"]

[[rule]]
name = "blocked"
qname_suffix = ["blocked.example.test"]
action = "nxdomain"
"#;

/// The A record answered for `name` over UDP, asked from `from`.
fn a_from(from: Ipv4Addr, listen: SocketAddr, name: &str) -> Option<Ipv4Addr> {
    let s = UdpSocket::bind((from, 0)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let q = build_query(name, RecordType::A).unwrap();
    s.send_to(&q.to_vec().unwrap(), listen).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    a_record(&Message::from_vec(&buf[..n]).unwrap())
}

fn a_udp(listen: SocketAddr, name: &str) -> Option<Ipv4Addr> {
    a_record(&query_udp(listen, name, RecordType::A, T).unwrap())
}

fn a_tcp(listen: SocketAddr, name: &str) -> Option<Ipv4Addr> {
    a_record(&query_tcp(listen, name, RecordType::A, T).unwrap())
}

#[test]
fn rules_route_by_name_and_client_and_answer_at_once() {
    init_tracing();
    let nsd = [Nsd::start(ip(1)), Nsd::start(ip(2)), Nsd::start(ip(3))];
    let (listen, admin) = (free_addr(), free_addr());
    let mut d = Dnsha::start(
        bin(),
        &config(listen, admin, &[&nsd[0], &nsd[1], &nsd[2]], RULES),
    );
    d.wait_udp(listen);
    d.wait_tcp(listen);
    // Internal names to `auth`, over UDP and TCP.
    assert_eq!(a_udp(listen, "host.corp.example.test."), Some(ip(1)));
    assert_eq!(a_tcp(listen, "HOST.Corp.Example.Test."), Some(ip(1)));
    // Everything else to the listener's pool.
    assert_eq!(a_udp(listen, "www.example.test."), Some(ip(2)));
    assert_eq!(a_tcp(listen, "www.example.test."), Some(ip(2)));
    // The office network to its own pool (its internal names still first).
    assert_eq!(
        a_from(Ipv4Addr::new(127, 0, 0, 2), listen, "www.example.test."),
        Some(ip(3))
    );
    assert_eq!(
        a_from(Ipv4Addr::new(127, 0, 0, 2), listen, "x.corp.example.test."),
        Some(ip(1))
    );
    // A fixed answer and an NXDOMAIN, without a backend.
    assert_eq!(
        a_udp(listen, "portal.example.test."),
        Some(Ipv4Addr::new(192, 0, 2, 80))
    );
    let blocked = query_tcp(listen, "a.blocked.example.test.", RecordType::A, T).unwrap();
    assert_eq!(blocked.response_code(), ResponseCode::NXDomain);
    // Per-rule counters.
    assert_eq!(
        metric(admin, "dnsha_rule_matches_total{rule=\"internal\"}"),
        3
    );
    assert_eq!(
        metric(admin, "dnsha_rule_matches_total{rule=\"office\"}"),
        1
    );
    assert_eq!(
        metric(admin, "dnsha_rule_matches_total{rule=\"portal\"}"),
        1
    );
    assert_eq!(
        metric(admin, "dnsha_rule_matches_total{rule=\"blocked\"}"),
        1
    );

    // A reload swaps the rule set: internal names now go to `office`, the
    // portal rule is gone; the counts of rules kept by name stay.
    let swapped = RULES
        .replacen("pool = \"auth\"", "pool = \"office\"", 1)
        .replace("[[rule]]\nname = \"portal\"\nqname = [\"portal.example.test\"]\nanswer = [\"192.0.2.80\"]\n", "");
    d.rewrite_config(&config(
        listen,
        admin,
        &[&nsd[0], &nsd[1], &nsd[2]],
        &swapped,
    ));
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert_eq!(a_udp(listen, "host.corp.example.test."), Some(ip(3)));
    assert_eq!(a_tcp(listen, "host.corp.example.test."), Some(ip(3)));
    assert_eq!(a_udp(listen, "portal.example.test."), Some(ip(2)));
    assert_eq!(
        metric(admin, "dnsha_rule_matches_total{rule=\"internal\"}"),
        5
    );
    assert!(!http_get(admin, "/metrics").contains("rule=\"portal\""));
}

#[test]
fn a_rule_of_ten_thousand_suffixes_loads_and_routes() {
    init_tracing();
    let nsd = [Nsd::start(ip(1)), Nsd::start(ip(2)), Nsd::start(ip(3))];
    let (listen, admin) = (free_addr(), free_addr());
    let zones: Vec<String> = (0..10_000)
        .map(|i| format!("\"z{i}.example.test\""))
        .collect();
    let rules = format!(
        "\n[[rule]]\nname = \"zones\"\nqname_suffix = [{}]\npool = \"auth\"\n",
        zones.join(", ")
    );
    let mut d = Dnsha::start(
        bin(),
        &config(listen, admin, &[&nsd[0], &nsd[1], &nsd[2]], &rules),
    );
    d.wait_udp(listen);
    for i in [0, 1234, 9_999] {
        assert_eq!(
            a_udp(listen, &format!("host.z{i}.example.test.")),
            Some(ip(1)),
            "z{i}"
        );
    }
    assert_eq!(a_udp(listen, "host.z10000.example.test."), Some(ip(2)));
    assert_eq!(a_udp(listen, "www.example.test."), Some(ip(2)));
}

/// Sends `name` queries from `from` to `listen` at `rate` per second for
/// `secs`, and counts the answers (each ID once) until a second after.
fn paced_client(from: Ipv4Addr, listen: SocketAddr, rate: u64, secs: u64) -> (u64, u64) {
    let s = UdpSocket::bind((from, 0)).unwrap();
    s.connect(listen).unwrap();
    let rx = s.try_clone().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let total = rate * secs;
    let counter = std::thread::spawn(move || {
        let mut seen = vec![false; 65_536];
        let mut answered = 0u64;
        let mut buf = [0u8; 1500];
        let end = std::time::Instant::now() + Duration::from_secs(secs + 1);
        while std::time::Instant::now() < end {
            if let Ok(n) = rx.recv(&mut buf) {
                if n >= 2 {
                    let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    if !seen[id] {
                        seen[id] = true;
                        answered += 1;
                    }
                }
            }
        }
        answered
    });
    let mut q = build_query("www.example.test.", RecordType::A).unwrap();
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = (start.elapsed().as_micros() as u64 * rate / 1_000_000).min(total);
        while sent < due {
            // IDs 0..65535: a run of at most 65 536 queries per client.
            q.set_id(u16::try_from(sent % 65_536).unwrap());
            let _ = s.send(&q.to_vec().unwrap());
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    (sent, counter.join().unwrap())
}

#[test]
fn a_client_over_its_rate_gets_its_rate_and_another_loses_nothing() {
    init_tracing();
    let nsd = [Nsd::start(ip(1)), Nsd::start(ip(2)), Nsd::start(ip(3))];
    let (listen, admin) = (free_addr(), free_addr());
    let limit = "\n[[limit]]\nname = \"host\"\nqps = 1000\n";
    let mut d = Dnsha::start(
        bin(),
        &config(listen, admin, &[&nsd[0], &nsd[1], &nsd[2]], limit),
    );
    d.wait_udp(listen);
    std::thread::sleep(Duration::from_millis(1_100));
    let secs = 3;
    let flood =
        std::thread::spawn(move || paced_client(Ipv4Addr::new(127, 0, 0, 1), listen, 20_000, secs));
    let (fair_sent, fair_answered) = paced_client(Ipv4Addr::new(127, 0, 0, 2), listen, 500, secs);
    let (flood_sent, flood_answered) = flood.join().unwrap();
    eprintln!(
        "flood: {flood_sent} sent, {flood_answered} answered; fair: {fair_sent} sent, {fair_answered} answered"
    );
    // The flooder gets its burst (1 000) and 1 000 a second, within 10 %.
    let expected = 1_000 + 1_000 * secs;
    let ratio = flood_answered as f64 / expected as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "flooder answered {flood_answered}, expected about {expected}"
    );
    // The other client, under the limit, loses nothing.
    assert_eq!(fair_answered, fair_sent);
    assert_eq!(
        metric(admin, "dnsha_limit_exceeded_total{limit=\"host\"}"),
        flood_sent - flood_answered
    );
}

/// `POST path` on the admin endpoint: the status line and body.
fn http_post(addr: SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The response code `from` gets for `name`, or `None` without an answer.
fn rcode_from(from: Ipv4Addr, listen: SocketAddr, name: &str) -> Option<ResponseCode> {
    let s = UdpSocket::bind((from, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let q = build_query(name, RecordType::A).unwrap();
    s.send_to(&q.to_vec().unwrap(), listen).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok().map(|m| m.response_code())
}

/// A random-subdomain attack from `from` (names under `www.example.test.`,
/// which NSD answers NXDOMAIN) at about `rate` a second until the listener
/// answers REFUSED or `limit` passes; how long that took.
fn attack_until_refused(
    from: Ipv4Addr,
    listen: SocketAddr,
    rate: u64,
    limit: Duration,
) -> Option<Duration> {
    let s = UdpSocket::bind((from, 0)).unwrap();
    s.set_nonblocking(true).unwrap();
    let start = std::time::Instant::now();
    let mut q = build_query("x.www.example.test.", RecordType::A).unwrap();
    let mut buf = [0u8; 4096];
    let mut i = 0u64;
    while start.elapsed() < limit {
        let due = start.elapsed().as_millis() as u64 * rate / 1000;
        while i < due {
            let name = format!(
                "r{i:x}{}.www.example.test.",
                start.elapsed().as_nanos() % 9973
            );
            q.take_queries();
            q.add_query(hickory_proto::op::Query::query(
                hickory_proto::rr::Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
            q.set_id(u16::try_from(i % 65_536).unwrap());
            let _ = s.send_to(&q.to_vec().unwrap(), listen);
            i += 1;
        }
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            if Message::from_vec(&buf[..n])
                .is_ok_and(|m| m.response_code() == ResponseCode::Refused)
            {
                return Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn a_random_subdomain_attack_is_blocked_within_two_seconds_and_released_after() {
    init_tracing();
    let nsd = [Nsd::start(ip(1)), Nsd::start(ip(2)), Nsd::start(ip(3))];
    let (listen, admin) = (free_addr(), free_addr());
    let rules = "\n[[dynamic_block]]\nname = \"nxdomain-flood\"\nnxdomain_rate = 50\nwindow = 2\nblock_seconds = 3\naction = \"refuse\"\n";
    let mut d = Dnsha::start(
        bin(),
        &config(listen, admin, &[&nsd[0], &nsd[1], &nsd[2]], rules),
    );
    d.wait_udp(listen);
    let (attacker, bystander) = (Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4));
    assert_eq!(
        rcode_from(attacker, listen, "nope.www.example.test."),
        Some(ResponseCode::NXDomain)
    );

    // 400 NXDOMAIN a second against a threshold of 50/s: crossed within a
    // quarter of a second, blocked at the next evaluation (once a second).
    let took = attack_until_refused(attacker, listen, 400, Duration::from_secs(5));
    let took = took.unwrap_or_else(|| panic!("never blocked; log:\n{}", d.log()));
    assert!(
        took < Duration::from_millis(2_500),
        "blocked after {took:?}"
    );
    // Only the attacker: another client of the same machine is answered.
    assert_eq!(a_from(bystander, listen, "www.example.test."), Some(ip(2)));
    let st = status(admin);
    assert_eq!(st["blocks"][0]["prefix"], "127.0.0.3/32");
    assert_eq!(st["blocks"][0]["rule"], "nxdomain-flood");
    assert!(d.log().contains("dynamic block added"), "{}", d.log());
    let table = std::process::Command::new(bin())
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("127.0.0.3/32") && table.contains("nxdomain-flood"),
        "{table}"
    );
    assert!(
        metric(
            admin,
            "dnsha_dynamic_block_stopped_total{rule=\"nxdomain-flood\"}"
        ) >= 1
    );

    // The attack stops: released once the block time (3 s) is over.
    let stopped = std::time::Instant::now();
    let mut released = None;
    while stopped.elapsed() < Duration::from_secs(6) {
        if rcode_from(attacker, listen, "www.example.test.") == Some(ResponseCode::NoError) {
            released = Some(stopped.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let released = released.unwrap_or_else(|| panic!("never released; log:\n{}", d.log()));
    assert!(
        released >= Duration::from_secs(2),
        "released after {released:?}"
    );
    assert!(d.log().contains("dynamic block expired"), "{}", d.log());

    // Blocked again, then lifted by the operator before its time.
    assert!(attack_until_refused(attacker, listen, 400, Duration::from_secs(5)).is_some());
    let (status_line, body) = http_post(admin, "/blocks/lift?prefix=127.0.0.3");
    assert!(status_line.contains("200"), "{status_line} {body}");
    assert_eq!(
        rcode_from(attacker, listen, "www.example.test."),
        Some(ResponseCode::NoError)
    );
    let (status_line, _) = http_post(admin, "/blocks/lift?prefix=127.0.0.3");
    assert!(status_line.contains("404"), "{status_line}");
    let (status_line, _) = http_post(admin, "/blocks/lift?prefix=banana");
    assert!(status_line.contains("400"), "{status_line}");
}
