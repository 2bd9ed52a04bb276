//! The UDP fast path allocates nothing per query once warmed up: receiving a
//! batch of queries, admitting each through the pipeline (ACL, header and
//! question only), starting its flight (the pool's pick), entering it in the
//! pending table under a random ID, sending the batch upstream, receiving
//! the answers, matching them, finishing each flight (passive health, the
//! client's ID) and sending them back. Counted by a global allocator that
//! counts the allocations of this test's thread.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::time::Duration;

use std::sync::Arc;

use dnsha_core::config::{Config, Protocol};
use dnsha_core::{Backend, Millis, Pool};
use dnsha_proxy::acl::Acl;
use dnsha_proxy::cache::PacketCache;
use dnsha_proxy::metrics::{get, ListenerMetrics};
use dnsha_proxy::pipeline::cache::lookup_in_place;
use dnsha_proxy::pipeline::{admit, Admission, Flight, ListenerShared, Next, Rules, Target};
use dnsha_proxy::sys::{RecvBatch, SendBatch};
use dnsha_proxy::upstream::Routes;
use dnsha_proxy::wire::dns::{parse_answer, rewrite_id};
use dnsha_proxy::wire::pending::PendingTable;
use rand::rngs::StdRng;
use rand::SeedableRng;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated and not yet freed, while counting.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts, in thread-local cells that need no allocation.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
            BYTES.with(|b| b.set(b.get() + layout.size() as u64));
            LIVE.with(|l| l.set(l.get() + layout.size() as i64));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.with(Cell::get) {
            LIVE.with(|l| l.set(l.get() - layout.size() as i64));
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
            BYTES.with(|b| b.set(b.get() + new_size as u64));
            LIVE.with(|l| l.set(l.get() + new_size as i64 - layout.size() as i64));
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap());
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The client side of a round (not the proxy, so outside the count): sends
/// `queries` to `listener` and lets them arrive; then counting starts, from
/// round 10 on (the first rounds warm the buffers up). Whether it counts.
fn client_sends(
    client: &UdpSocket,
    listener: &UdpSocket,
    queries: &[Vec<u8>],
    round: usize,
) -> bool {
    for q in queries {
        client.send_to(q, listener.local_addr().unwrap()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2));
    let counting = round >= 10;
    COUNTING.with(|c| c.set(counting));
    counting
}

/// An answer to `q`: QR set, one A record pointing at the question.
fn answer_to(q: &[u8]) -> Vec<u8> {
    let mut a = q.to_vec();
    a[2] |= 0x80;
    a[7] = 1;
    a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
    a
}

/// A UDP listener's settings in front of `backend`, as the server builds
/// them (no access log: writing one allocates, off the data path), with
/// `pool` lines (a `[pool.cache]` table, say) in the pool and maybe
/// `[[rule]]` tables after it.
fn udp_listener_with(
    backend: std::net::SocketAddr,
    pool: &str,
) -> (ListenerShared, ListenerMetrics) {
    let cfg = Config::parse(&format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"{backend}\"\n{pool}"
    ))
    .unwrap();
    let (l, p) = (cfg.listeners[0].clone(), cfg.pools[0].clone());
    let pool = Pool::new(
        p.name.clone(),
        p.policy,
        p.settings.clone(),
        vec![Arc::new(Backend::new("b", backend, 1))],
    );
    let metrics = ListenerMetrics::new("l", Protocol::Udp, l.listen);
    let target = Arc::new(Target {
        pool: Arc::new(pool),
        routes: Arc::new(Routes::default()),
        cache: p.cache.map(|c| Arc::new(PacketCache::new(c))),
    });
    let rules = Rules::new(
        cfg.rules.clone(),
        |name| (name == p.name).then(|| Arc::clone(&target)),
        None,
    );
    let shared = ListenerShared {
        acl: Acl::new(l.allow.clone()),
        config: l,
        target,
        rules: Arc::new(rules),
        limits: Vec::new(),
        dynblocks: None,
        access_log: None,
    };
    (shared, metrics)
}

#[test]
fn udp_query_path_allocates_nothing_per_query() {
    const BATCH: usize = 16;
    const ROUNDS: usize = 200;
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream.connect(backend.local_addr().unwrap()).unwrap();
    for s in [&client, &listener, &backend, &upstream] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let queries: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| query(u16::try_from(i).unwrap(), &format!("q{i}.example.test")))
        .collect();
    let mut recv = RecvBatch::new(32);
    let mut send = SendBatch::new(32);
    // With rules on the way: suffix sets, a network set, a type, and the
    // query routed by a suffix rule.
    let (shared, metrics) = udp_listener_with(backend.local_addr().unwrap(), RULES);
    let mut table: PendingTable<(Flight, Vec<u8>)> = PendingTable::new(1024);
    let mut rng = StdRng::seed_from_u64(1);
    let mut spare: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut ids: Vec<u16> = Vec::with_capacity(BATCH);
    let mut answers: Vec<Vec<u8>> = Vec::new();
    let mut answered = 0;

    for round in 0..ROUNDS {
        let counting = client_sends(&client, &listener, &queries, round);

        // Proxy: queries in, validated, entered, sent upstream in one batch.
        let mut got = 0;
        while got < BATCH {
            let n = recv.recv(&listener).unwrap();
            ids.clear();
            for i in 0..n {
                let src = recv.received()[i].src;
                let bytes = recv.datagram(i).unwrap();
                let Admission::Forward(info) =
                    admit(&shared, &metrics, src.ip(), Protocol::Udp, bytes)
                else {
                    panic!("valid query refused");
                };
                let now = Millis::now();
                let mut flight = Flight::new(src, Protocol::Udp, info, now);
                let Next::Send(attempt) = flight.start(&shared, &metrics, now) else {
                    panic!("no backend");
                };
                let mut buf = spare.pop().unwrap();
                buf.clear();
                buf.extend_from_slice(bytes);
                let deadline = now.plus(attempt.timeout_ms);
                let id = table
                    .insert(0, (flight, buf), deadline, &mut rng)
                    .ok()
                    .unwrap();
                rewrite_id(&mut table.get_mut((0, id)).unwrap().1, id);
                ids.push(id);
            }
            let msgs: smallvec::SmallVec<[(&[u8], Option<std::net::SocketAddr>); 32]> = ids
                .iter()
                .map(|&id| (table.get((0, id)).unwrap().1.as_slice(), None))
                .collect();
            assert_eq!(send.send(&upstream, &msgs).unwrap(), n);
            got += n;
        }

        // The backend (not the proxy): outside the count.
        COUNTING.with(|c| c.set(false));
        answers.clear();
        let mut buf = [0u8; 512];
        for _ in 0..BATCH {
            let (n, from) = backend.recv_from(&mut buf).unwrap();
            let a = answer_to(&buf[..n]);
            backend.send_to(&a, from).unwrap();
            answers.push(a);
        }
        std::thread::sleep(Duration::from_millis(2));
        COUNTING.with(|c| c.set(counting));

        // Proxy: answers in, matched, ID restored, sent back in one batch.
        let mut got = 0;
        while got < BATCH {
            let n = recv.recv(&upstream).unwrap();
            let mut replies: smallvec::SmallVec<[(usize, std::net::SocketAddr); 32]> =
                smallvec::SmallVec::new();
            for i in 0..n {
                let a = recv.datagram_mut(i).unwrap();
                let ai = parse_answer(a).unwrap();
                let (mut flight, buf) = table.remove((0, ai.id)).unwrap();
                assert_eq!(flight.check_answer(&ai), Ok(()));
                flight.answered(&shared, &metrics, a, ai.rcode, Millis::now());
                spare.push(buf);
                replies.push((i, flight.client()));
            }
            let msgs: smallvec::SmallVec<[(&[u8], Option<std::net::SocketAddr>); 32]> = replies
                .iter()
                .map(|&(i, to)| (recv.datagram(i).unwrap(), Some(to)))
                .collect();
            assert_eq!(send.send(&listener, &msgs).unwrap(), n);
            got += n;
        }
        // As the worker does before it sleeps: the next deadline (drops the
        // deadlines of answered queries).
        assert_eq!(table.next_deadline(), None);
        COUNTING.with(|c| c.set(false));

        // The client gets every answer with its own ID.
        for _ in 0..BATCH {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            let q = &queries[id];
            assert_eq!(
                &buf[12..q.len()],
                &q[12..],
                "answer {id} carries its question"
            );
            assert!(n > q.len());
            answered += 1;
        }
    }
    assert_eq!(answered, ROUNDS * BATCH);
    assert_eq!(get(&metrics.queries), (ROUNDS * BATCH) as u64);
    assert_eq!(get(&metrics.answers), (ROUNDS * BATCH) as u64);
    let routed = shared.rules.counts().find(|(n, _)| *n == "all-to-p");
    assert_eq!(routed, Some(("all-to-p", (ROUNDS * BATCH) as u64)));
    let allocs = ALLOCS.with(Cell::get);
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations over {} queries",
        (ROUNDS - 10) * BATCH
    );
}

/// Rules every query of the allocation test walks: none matches but the
/// last, which routes it to the listener's own pool.
const RULES: &str = r#"
[[rule]]
name = "internal"
qname_suffix = ["corp.example", "other.test"]
pool = "p"

[[rule]]
name = "office"
client = ["192.168.0.0/16", "2001:db8::/32"]
action = "refuse"

[[rule]]
name = "mx"
qtype = ["MX"]
action = "log"

[[rule]]
name = "all-to-p"
qname_suffix = ["example.test"]
pool = "p"
"#;

/// A cache hit is answered from the worker without allocating: the batch
/// of queries is received, admitted, looked up (the key read from the
/// wire, the shard locked, the stored answer written over the query with
/// the client's ID and name casing and aged TTLs) and sent back in one
/// sendmmsg.
#[test]
fn udp_cache_hit_path_allocates_nothing() {
    const BATCH: usize = 16;
    const ROUNDS: usize = 200;
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&client, &listener] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let backend = "127.0.0.1:9".parse().unwrap();
    let (shared, metrics) = udp_listener_with(backend, "[pool.cache]\nmax_entries = 1000\n");
    let cache = shared.target.cache.clone().unwrap();
    let queries: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| query(u16::try_from(i).unwrap(), &format!("q{i}.example.test")))
        .collect();
    for q in &queries {
        let key = cache.key(q).unwrap();
        cache.insert(&key, &answer_to(q), Millis::now()).unwrap();
    }
    let mut recv = RecvBatch::new(32);
    let mut send = SendBatch::new(32);
    let mut buf = [0u8; 512];
    for round in 0..ROUNDS {
        client_sends(&client, &listener, &queries, round);
        let mut got = 0;
        while got < BATCH {
            let n = recv.recv(&listener).unwrap();
            let mut hits: smallvec::SmallVec<[(usize, std::net::SocketAddr); 32]> =
                smallvec::SmallVec::new();
            for i in 0..n {
                let d = recv.received()[i];
                let Admission::Forward(info) = admit(
                    &shared,
                    &metrics,
                    d.src.ip(),
                    Protocol::Udp,
                    recv.datagram(i).unwrap(),
                ) else {
                    panic!("valid query refused");
                };
                let slot = recv.slot_mut(i).unwrap();
                let now = Millis::now();
                let Ok(len) = lookup_in_place(&shared, &metrics, d.src, &info, slot, d.len, now)
                else {
                    panic!("no hit");
                };
                recv.set_len(i, len);
                hits.push((i, d.src));
            }
            let msgs: smallvec::SmallVec<[(&[u8], Option<std::net::SocketAddr>); 32]> = hits
                .iter()
                .map(|&(i, to)| (recv.datagram(i).unwrap(), Some(to)))
                .collect();
            assert_eq!(send.send(&listener, &msgs).unwrap(), n);
            got += n;
        }
        COUNTING.with(|c| c.set(false));
        for _ in 0..BATCH {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            assert_eq!(&buf[..n], &answer_to(&queries[id])[..], "answer {id}");
        }
    }
    assert_eq!(get(&metrics.cache_hits), (ROUNDS * BATCH) as u64);
    assert_eq!(cache.stats().hits, (ROUNDS * BATCH) as u64);
    let allocs = ALLOCS.with(Cell::get);
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations over {} hits",
        (ROUNDS - 10) * BATCH
    );
}

/// Case 5 of the conventions' bad-input list: record counts of 65 535
/// with a tiny body. Validation rejects them from the header and the
/// packet's length (FORMERR) before anything is parsed or allocated for
/// the records: they allocate no more than any FORMERR does (its reply),
/// whatever the counts claim.
#[test]
fn huge_record_counts_allocate_no_more_than_any_formerr() {
    use dnsha_proxy::wire::dns::{classify_query, Verdict};
    let allocated = |q: &[u8]| {
        BYTES.with(|b| b.set(0));
        COUNTING.with(|c| c.set(true));
        let verdict = classify_query(q);
        COUNTING.with(|c| c.set(false));
        assert!(
            matches!(verdict, Verdict::Reply(_, _)),
            "{:02x?}: {verdict:?}",
            &q[4..12]
        );
        BYTES.with(Cell::get)
    };
    // A plain FORMERR: no question at all.
    let mut empty = query(7, "www.example.test");
    empty[5] = 0;
    let formerr = allocated(&empty);
    assert!(formerr <= 1024, "{formerr}");
    let mut cases = Vec::new();
    for counts in [
        [0xffu8, 0xff, 0, 0, 0, 0],
        [0, 0, 0xff, 0xff, 0, 0],
        [0, 0, 0, 0, 0xff, 0xff],
        [0xff; 6],
    ] {
        let mut q = query(7, "www.example.test");
        q[6..12].copy_from_slice(&counts);
        cases.push(q);
    }
    let mut q = query(7, "www.example.test");
    q[4..6].copy_from_slice(&[0xff, 0xff]);
    cases.push(q);
    for q in &cases {
        let bytes = allocated(q);
        assert!(
            bytes <= formerr,
            "{bytes} bytes allocated for counts {:02x?}, a FORMERR takes {formerr}",
            &q[4..12]
        );
    }
}

/// A `[[limit]]`'s table holds at most `max_clients` prefixes whatever the
/// number of sources: measured, the memory it holds after its first 65 536
/// clients grows once (each shard's index makes room for the places that
/// churn leaves behind), then not at all while millions more one-off
/// sources pass.
#[test]
fn a_rate_limit_table_stays_within_its_size_under_millions_of_sources() {
    use dnsha_core::ratelimit::{RateLimiter, RateSettings};
    LIVE.with(|l| l.set(0));
    COUNTING.with(|c| c.set(true));
    let l = RateLimiter::new(RateSettings {
        max_clients: 65_536,
        ..RateSettings::default()
    });
    let source = |i: u32| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
    let mut next = 0u32;
    let mut pass = |n: u32| {
        for _ in 0..n {
            l.allow(source(next), Millis(0));
            next += 1;
        }
        LIVE.with(Cell::get)
    };
    let full = pass(65_536);
    let churned = pass(1_000_000);
    let later = pass(2_000_000);
    COUNTING.with(|c| c.set(false));
    eprintln!(
        "rate limit table of 65 536: {:.1} MB full, {:.1} MB after 1 M more sources, {:.1} MB after 3 M",
        full as f64 / 1e6,
        churned as f64 / 1e6,
        later as f64 / 1e6
    );
    assert!(l.clients() <= l.capacity());
    assert!(full < 10_000_000, "{full} bytes for 65 536 clients");
    assert!(churned <= full * 2, "{full} bytes, then {churned}");
    assert_eq!(later, churned, "the table grew under churn");
}
