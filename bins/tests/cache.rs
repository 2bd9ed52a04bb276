//! The packet cache in front of a real NSD (real TTLs): hits after a miss,
//! TTL aging and expiry, negative caching from the SOA, DO and CD kept
//! apart, the client's name casing kept, truncated answers never stored,
//! serve-stale only while the pool is down, purges, a reload that keeps the
//! cache, and memory bounded by `max_entries` under a flood of random names.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;

const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// A balancer (UDP and TCP on one address) in front of one NSD, its pool
/// checked every 200 ms, with `[pool.cache]` holding `cache`.
struct Lab {
    nsd: Nsd,
    d: Dnsha,
    listen: SocketAddr,
    admin: SocketAddr,
    /// `/metrics` and the backend's query count once started: the counts
    /// the tests look at are taken from there (waiting for the listener
    /// sent a query).
    base_metrics: String,
    base_queries: u64,
}

/// The value of the series `series` in a `/metrics` text (0 when absent).
fn series(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn config(listen: SocketAddr, admin: SocketAddr, nsd: SocketAddr, cache: &str) -> String {
    let pool = format!(
        "[pool.health]\ncheck = \"dns\"\nquery_name = \"www.example.test\"\ninterval_ms = 200\ntimeout_ms = 200\nrise = 1\nfall = 1\n\n[pool.cache]\n{cache}\n"
    );
    config_with(listen, admin, "", &pool, &[("n1", nsd, 1)])
}

impl Lab {
    fn start(cache: &str) -> Self {
        init_tracing();
        let nsd = Nsd::start(IP);
        let (listen, admin) = (free_addr(), free_addr());
        let mut d = Dnsha::start(bin(), &config(listen, admin, nsd.addr(), cache));
        d.wait_udp(listen);
        d.wait_tcp(listen);
        // Waiting for the listener cached its query: start empty.
        let out = std::process::Command::new(bin())
            .args(["cache", "purge", "--admin", &admin.to_string(), "p"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut lab = Self {
            nsd,
            d,
            listen,
            admin,
            base_metrics: String::new(),
            base_queries: 0,
        };
        lab.base_metrics = http_get(admin, "/metrics");
        lab.base_queries = lab.backend_queries();
        lab
    }

    /// The growth of `dnsha_cache_NAME{pool="p"}` since the start.
    fn cache_metric(&self, name: &str) -> u64 {
        let s = format!("dnsha_cache_{name}{{pool=\"p\"}}");
        series(&http_get(self.admin, "/metrics"), &s) - series(&self.base_metrics, &s)
    }

    /// Queries the backend has had from the pool since the start (health
    /// checks aside: those are not counted there).
    fn backend_queries(&self) -> u64 {
        let n = status(self.admin)["pools"][0]["backends"][0]["queries"]
            .as_u64()
            .unwrap();
        n - self.base_queries
    }

    fn udp(&self, q: &Message) -> Message {
        send_udp(self.listen, q, T).unwrap()
    }
}

fn query(name: &str, rtype: RecordType) -> Message {
    build_query(name, rtype).unwrap()
}

fn with_edns(mut q: Message, dnssec_ok: bool, checking_disabled: bool) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(1232).set_dnssec_ok(dnssec_ok);
    q.set_edns(e).set_checking_disabled(checking_disabled);
    q
}

/// The TTLs of the answer section, or of the authority section when the
/// answer section is empty (a negative answer's SOA).
fn ttls(m: &Message) -> Vec<u32> {
    let records = if m.answers().is_empty() {
        m.name_servers()
    } else {
        m.answers()
    };
    records.iter().map(|r| r.ttl()).collect()
}

#[test]
fn hit_after_miss_with_aged_ttls_then_expiry() {
    let lab = Lab::start("");
    let q = query("www.example.test", RecordType::A);
    let first = lab.udp(&q);
    assert_eq!(a_record(&first), Some(IP));
    assert_eq!(ttls(&first), [300]);
    assert_eq!(lab.backend_queries(), 1);
    thread::sleep(Duration::from_millis(1100));
    // Another ID, over UDP and TCP: answered from the cache, aged.
    let hit = lab.udp(&query("www.example.test", RecordType::A));
    assert_eq!(a_record(&hit), Some(IP));
    assert!(
        ttls(&hit)[0] == 299 || ttls(&hit)[0] == 298,
        "{:?}",
        ttls(&hit)
    );
    let tcp = send_tcp(lab.listen, &query("www.example.test", RecordType::A), T).unwrap();
    assert_eq!(a_record(&tcp), Some(IP));
    assert_eq!(lab.backend_queries(), 1, "hits reached the backend");
    assert_eq!(lab.cache_metric("hits_total"), 2);
    assert_eq!(lab.cache_metric("misses_total"), 1);
    let text = http_get(lab.admin, "/metrics");
    let udp_hits = text
        .lines()
        .find(|l| l.starts_with("dnsha_cache_answers_total{listener=\"udp\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(udp_hits, Some(1), "{text}");

    // `short` lives 2 s: a hit within, a miss (the backend asked) after.
    let short = query("short.example.test", RecordType::A);
    assert_eq!(ttls(&lab.udp(&short)), [2]);
    let stored = Instant::now();
    assert_eq!(ttls(&lab.udp(&short)).len(), 1);
    assert_eq!(lab.backend_queries(), 2);
    thread::sleep(Duration::from_millis(2100).saturating_sub(stored.elapsed()));
    assert_eq!(ttls(&lab.udp(&short)), [2]);
    assert_eq!(lab.backend_queries(), 3, "an expired answer was served");

    let st = status(lab.admin);
    let cache = &st["pools"][0]["cache"];
    assert!(cache["entries"].as_u64().unwrap() >= 2, "{cache}");
    assert!(cache["hit_ratio"].as_f64().unwrap() > 0.0, "{cache}");
    let out = std::process::Command::new(bin())
        .args(["status", "--admin", &lab.admin.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cache: "), "{text}");
    println!("{}", text.lines().find(|l| l.contains("cache: ")).unwrap());
}

#[test]
fn negative_answers_live_for_the_soa_minimum() {
    let lab = Lab::start("");
    // NODATA: the zone's SOA has MINIMUM 2.
    let q = query("www.example.test", RecordType::AAAA);
    let first = lab.udp(&q);
    assert!(first.answers().is_empty());
    assert_eq!(ttls(&first), [2], "NSD's SOA TTL in a negative answer");
    let t0 = Instant::now();
    lab.udp(&query("www.example.test", RecordType::AAAA));
    assert_eq!(lab.backend_queries(), 1, "NODATA not cached");
    thread::sleep(Duration::from_millis(2100).saturating_sub(t0.elapsed()));
    lab.udp(&q);
    assert_eq!(lab.backend_queries(), 2, "NODATA kept past the SOA minimum");
}

#[test]
fn do_and_cd_are_kept_apart_and_the_case_is_the_clients() {
    let lab = Lab::start("");
    let base = || query("www.example.test", RecordType::A);
    let variants = [
        with_edns(base(), false, false),
        with_edns(base(), true, false),
        with_edns(base(), false, true),
        with_edns(base(), true, true),
    ];
    for (i, q) in variants.iter().enumerate() {
        lab.udp(q);
        assert_eq!(lab.backend_queries(), i as u64 + 1, "variant {i} was a hit");
    }
    for q in &variants {
        let mut q = q.clone();
        q.set_id(q.id().wrapping_add(1));
        lab.udp(&q);
    }
    assert_eq!(lab.backend_queries(), 4, "a variant missed the second time");
    assert_eq!(lab.cache_metric("hits_total"), 4);
    // 0x20: the client's letters come back as sent.
    let q = with_edns(query("wWw.ExAmPlE.tEsT", RecordType::A), false, false);
    let m = lab.udp(&q);
    assert_eq!(m.queries()[0].name().to_ascii(), "wWw.ExAmPlE.tEsT.");
    assert_eq!(m.id(), q.id());
    assert_eq!(lab.backend_queries(), 4);
}

#[test]
fn truncated_answers_are_never_stored_and_big_ones_are_cut_for_udp() {
    let lab = Lab::start("");
    let big = || query("big.example.test", RecordType::TXT);
    // Plain UDP: NSD truncates, the truncated answer is not stored.
    assert!(lab.udp(&big()).truncated());
    assert!(lab.udp(&big()).truncated());
    assert_eq!(lab.backend_queries(), 2);
    assert!(lab.cache_metric("not_stored_total") >= 2);
    // Over TCP the whole answer (over 2 KB) is stored...
    let full = send_tcp(lab.listen, &big(), T).unwrap();
    assert_eq!(full.answers().len(), BIG_TXT_RECORDS);
    let full = send_tcp(lab.listen, &big(), T).unwrap();
    assert_eq!(full.answers().len(), BIG_TXT_RECORDS);
    assert_eq!(lab.backend_queries(), 3);
    // ...and a UDP client of 512 bytes gets it cut to TC=1 from the cache.
    let m = lab.udp(&big());
    assert!(m.truncated() && m.answers().is_empty());
    assert_eq!(lab.backend_queries(), 3);
}

#[test]
fn stale_answers_only_while_the_pool_is_down() {
    let mut lab = Lab::start("stale_ttl = 30\n");
    let short = || query("short.example.test", RecordType::A);
    assert_eq!(ttls(&lab.udp(&short())), [2]);
    lab.nsd.stop();
    let down = Instant::now();
    while status(lab.admin)["pools"][0]["backends"][0]["state"] != "down" {
        assert!(down.elapsed() < Duration::from_secs(3), "pool never down");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(2100));
    // Expired, pool down: the stale answer with stale_ttl.
    let m = lab.udp(&short());
    assert_eq!(a_record(&m), Some(IP));
    assert_eq!(ttls(&m), [30]);
    let m = send_tcp(lab.listen, &short(), T).unwrap();
    assert_eq!(ttls(&m), [30]);
    assert_eq!(lab.cache_metric("stale_hits_total"), 2);
    // A name never cached: SERVFAIL as before.
    let m = lab.udp(&query("never.example.test", RecordType::A));
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    // The backend is back: fresh answers again.
    lab.nsd.restart();
    let up = Instant::now();
    while status(lab.admin)["pools"][0]["backends"][0]["state"] != "up" {
        assert!(up.elapsed() < Duration::from_secs(3), "pool never up");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ttls(&lab.udp(&short())), [2]);
    assert_eq!(lab.cache_metric("stale_hits_total"), 2);
}

#[test]
fn purge_by_name_type_and_suffix_from_the_command_line() {
    let lab = Lab::start("");
    for n in ["a.example.test", "b.a.example.test", "www.example.test"] {
        lab.udp(&query(n, RecordType::A));
    }
    lab.udp(&query("www.example.test", RecordType::AAAA));
    let purge = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(["cache", "purge", "--admin", &lab.admin.to_string()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(
        purge(&["p", "WWW.example.test", "AAAA"]),
        (true, "removed 1 entries from the cache of pool p\n".into())
    );
    assert_eq!(
        purge(&["--suffix", "p", "a.example.test"]).1,
        "removed 2 entries from the cache of pool p\n"
    );
    let before = lab.backend_queries();
    lab.udp(&query("a.example.test", RecordType::A));
    lab.udp(&query("www.example.test", RecordType::A));
    assert_eq!(
        lab.backend_queries(),
        before + 1,
        "only the purged name went to the backend"
    );
    // Left: www A and a A.
    assert_eq!(
        purge(&["p"]).1,
        "removed 2 entries from the cache of pool p\n"
    );
    let (ok, text) = purge(&["nopool"]);
    assert!(
        !ok && text.contains("404") && text.contains("no [pool.cache]"),
        "{text}"
    );
    let (ok, text) = purge(&["p", "www.example.test", "NOTATYPE"]);
    assert!(!ok && text.contains("400"), "{text}");
    assert_eq!(lab.cache_metric("purged_total"), 5);
}

#[test]
fn a_reload_keeps_the_cache_unless_its_settings_change() {
    let lab = Lab::start("max_entries = 5000\n");
    lab.udp(&query("www.example.test", RecordType::A));
    assert_eq!(lab.backend_queries(), 1);
    lab.d.signal(Signal::SIGHUP).unwrap();
    assert!(
        lab.d.wait_log("configuration reloaded", T),
        "{}",
        lab.d.log()
    );
    lab.udp(&query("www.example.test", RecordType::A));
    assert_eq!(lab.backend_queries(), 1, "the reload emptied the cache");
    let changed = config(
        lab.listen,
        lab.admin,
        lab.nsd.addr(),
        "max_entries = 6000\n",
    );
    lab.d.rewrite_config(&changed);
    lab.d.signal(Signal::SIGHUP).unwrap();
    let t0 = Instant::now();
    while status(lab.admin)["pools"][0]["cache"]["max_entries"] != 6000 {
        assert!(t0.elapsed() < T, "{}", lab.d.log());
        thread::sleep(Duration::from_millis(20));
    }
    lab.udp(&query("www.example.test", RecordType::A));
    assert_eq!(lab.backend_queries(), 2, "new settings, new cache");
}

#[test]
fn memory_stays_bounded_under_a_flood_of_random_names() {
    let lab = Lab::start("max_entries = 2000\n");
    let before = rss_kib(lab.d.pid());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(lab.listen).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut answered = 0;
    // 20 000 distinct names (the zone's wildcard answers them all), 50 in
    // flight at a time.
    for round in 0..400 {
        for i in 0..50 {
            let q = query(&format!("r{round}-{i}.example.test"), RecordType::A);
            socket.send(&q.to_vec().unwrap()).unwrap();
        }
        for _ in 0..50 {
            if socket.recv(&mut buf).is_ok() {
                answered += 1;
            }
        }
    }
    assert!(answered > 19_000, "{answered}");
    let st = status(lab.admin);
    let cache = &st["pools"][0]["cache"];
    let entries = cache["entries"].as_u64().unwrap();
    let bytes = cache["bytes"].as_u64().unwrap();
    let after = rss_kib(lab.d.pid());
    println!(
        "20 000 random names, max_entries 2000: {entries} entries, {bytes} bytes; RSS {before} -> {after} KiB; evictions {}",
        lab.cache_metric("evictions_total")
    );
    assert!(entries <= 2000 + 64, "{cache}");
    assert!(entries >= 1000, "{cache}");
    assert!(lab.cache_metric("evictions_total") >= 17_000);
    assert!(bytes < 2_100 * 300, "{cache}");
}
