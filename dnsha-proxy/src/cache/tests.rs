#![allow(clippy::unwrap_used)]

use dnsha_core::config::CacheConfig;
use dnsha_core::Millis;
use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A query for `qname`/`qtype` with ID `id`, EDNS as given.
fn query_msg(id: u16, qname: &str, qtype: RecordType, edns: Option<Edns>) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_recursion_desired(true)
        .add_query(Query::query(name(qname), qtype));
    if let Some(e) = edns {
        m.set_edns(e);
    }
    m
}

fn edns(payload: u16, dnssec_ok: bool) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(payload).set_dnssec_ok(dnssec_ok);
    e
}

fn query(id: u16, qname: &str) -> Vec<u8> {
    query_msg(id, qname, RecordType::A, None).to_vec().unwrap()
}

/// An answer to `q` with one A record per TTL.
fn answer(q: &Message, ttls: &[u32]) -> Vec<u8> {
    let mut a = q.clone();
    a.set_message_type(MessageType::Response);
    let qname = q.queries()[0].name().clone();
    for (i, &ttl) in ttls.iter().enumerate() {
        a.add_answer(Record::from_rdata(
            qname.clone(),
            ttl,
            RData::A(A::new(192, 0, 2, i as u8 + 1)),
        ));
    }
    a.to_vec().unwrap()
}

/// A negative answer (`rcode`, no answer records) with an SOA of TTL
/// `ttl` and MINIMUM `minimum` in the authority section.
fn negative(q: &Message, rcode: ResponseCode, ttl: u32, minimum: u32) -> Vec<u8> {
    let mut a = q.clone();
    a.set_message_type(MessageType::Response)
        .set_response_code(rcode);
    let soa = SOA::new(name("ns.example."), name("h.example."), 1, 2, 3, 4, minimum);
    a.add_name_server(Record::from_rdata(name("example."), ttl, RData::SOA(soa)));
    a.to_vec().unwrap()
}

fn ttls(bytes: &[u8]) -> Vec<u32> {
    let m = Message::from_vec(bytes).unwrap();
    m.answers()
        .iter()
        .chain(m.name_servers())
        .map(Record::ttl)
        .collect()
}

fn cache() -> PacketCache {
    PacketCache::new(CacheConfig {
        stale_ttl: 30,
        ..CacheConfig::default()
    })
}

/// Stores the answer to `q` fetched at `at`.
fn store(c: &PacketCache, q: &Message, a: &[u8], at: Millis) -> Result<(), NotStored> {
    let bytes = q.to_vec().unwrap();
    c.insert(&c.key(&bytes).unwrap(), a, at)
}

fn lookup(c: &PacketCache, q: &[u8], at: Millis) -> Option<Vec<u8>> {
    c.get(&c.key(q).unwrap(), q, at)
}

#[test]
fn hit_after_miss_with_the_clients_id_and_aged_ttls() {
    let c = cache();
    let q = query_msg(1, "www.example.", RecordType::A, None);
    assert_eq!(lookup(&c, &query(1, "www.example."), Millis(0)), None);
    store(&c, &q, &answer(&q, &[300, 60]), Millis(1_000)).unwrap();
    let hit = lookup(&c, &query(4242, "www.example."), Millis(1_000)).unwrap();
    assert_eq!(Message::from_vec(&hit).unwrap().id(), 4242);
    assert_eq!(ttls(&hit), [300, 60]);
    // 59.9 s later: aged by whole seconds, never above what was given.
    let hit = lookup(&c, &query(5, "www.example."), Millis(60_900)).unwrap();
    assert_eq!(ttls(&hit), [241, 1]);
    // The smallest TTL (60 s) is the entry's life: expired after it.
    assert_eq!(lookup(&c, &query(5, "www.example."), Millis(61_000)), None);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.inserts), (2, 2, 1));
}

#[test]
fn the_clients_name_casing_is_kept() {
    let c = cache();
    let q = query_msg(1, "www.example.", RecordType::A, None);
    store(&c, &q, &answer(&q, &[300]), Millis(0)).unwrap();
    let asked = query(2, "wWw.ExAmple.");
    let hit = Message::from_vec(&lookup(&c, &asked, Millis(0)).unwrap()).unwrap();
    assert_eq!(hit.queries()[0].name().to_ascii(), "wWw.ExAmple.");
    assert_eq!(hit.answers()[0].data(), &RData::A(A::new(192, 0, 2, 1)));
}

#[test]
fn in_place_answers_over_the_query_up_to_the_limit() {
    let c = cache();
    let q = query_msg(1, "www.example.", RecordType::A, None);
    store(&c, &q, &answer(&q, &[300, 300, 300]), Millis(0)).unwrap();
    let asked = query(77, "WWW.example.");
    let key = c.key(&asked).unwrap();
    assert_eq!(key.udp_size, 512);
    let mut buf = [0u8; 512];
    buf[..asked.len()].copy_from_slice(&asked);
    let InPlace::Answered(n) = c.answer_in_place(&key, &mut buf, asked.len(), 512, Millis(0))
    else {
        panic!("no hit");
    };
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!((m.id(), m.answers().len()), (77, 3));
    assert_eq!(m.queries()[0].name().to_ascii(), "WWW.example.");
    buf[..asked.len()].copy_from_slice(&asked);
    assert_eq!(
        c.answer_in_place(&key, &mut buf, asked.len(), 40, Millis(0)),
        InPlace::TooLarge
    );
    let other = query(1, "nothing.example.");
    buf[..other.len()].copy_from_slice(&other);
    let k = c.key(&other).unwrap();
    assert_eq!(
        c.answer_in_place(&k, &mut buf, other.len(), 512, Millis(0)),
        InPlace::Miss
    );
}

#[test]
fn do_cd_and_payload_class_are_apart_but_cookies_are_not() {
    let c = cache();
    let plain = query_msg(1, "a.example.", RecordType::A, Some(edns(1232, false)));
    store(&c, &plain, &answer(&plain, &[100]), Millis(0)).unwrap();
    let key_of = |m: &Message| c.key(&m.to_vec().unwrap()).unwrap();
    let with_do = query_msg(1, "a.example.", RecordType::A, Some(edns(1232, true)));
    assert_ne!(key_of(&with_do), key_of(&plain));
    let mut with_cd = plain.clone();
    with_cd.set_checking_disabled(true);
    assert_ne!(key_of(&with_cd), key_of(&plain));
    let small = query_msg(1, "a.example.", RecordType::A, Some(edns(512, false)));
    assert_ne!(key_of(&small), key_of(&plain));
    let big = query_msg(1, "a.example.", RecordType::A, Some(edns(4096, false)));
    assert_eq!(key_of(&big).hash, key_of(&plain).hash);
    assert_eq!(key_of(&big).udp_size, 4096);
    let no_edns = query_msg(1, "a.example.", RecordType::A, None);
    assert_ne!(key_of(&no_edns), key_of(&plain));
    let mut cookie = edns(1232, false);
    cookie
        .options_mut()
        .insert(EdnsOption::Unknown(10, vec![1, 2, 3, 4, 5, 6, 7, 8]));
    let with_cookie = query_msg(9, "a.example.", RecordType::A, Some(cookie));
    let bytes = with_cookie.to_vec().unwrap();
    assert!(
        lookup(&c, &bytes, Millis(0)).is_some(),
        "a cookie changes nothing"
    );
    let mut nsid = edns(1232, false);
    nsid.options_mut().insert(EdnsOption::Unknown(3, vec![]));
    let with_nsid = query_msg(9, "a.example.", RecordType::A, Some(nsid));
    assert_ne!(key_of(&with_nsid).hash, key_of(&plain).hash);
}

#[test]
fn ecs_queries_are_not_cached_unless_keyed() {
    let mut e = edns(1232, false);
    let subnet = ClientSubnet::new("198.51.100.0".parse().unwrap(), 24, 0);
    e.options_mut().insert(EdnsOption::Subnet(subnet));
    let q = query_msg(1, "a.example.", RecordType::A, Some(e))
        .to_vec()
        .unwrap();
    let c = cache();
    assert_eq!(c.key(&q), Err(Uncacheable::Ecs));
    assert_eq!(c.uncacheable().0, 1);
    let keyed = PacketCache::new(CacheConfig {
        ecs: true,
        ..CacheConfig::default()
    });
    assert!(keyed.key(&q).is_ok());
}

#[test]
fn truncated_and_zero_ttl_answers_are_never_stored() {
    let c = cache();
    let q = query_msg(1, "t.example.", RecordType::A, None);
    let mut tc = Message::from_vec(&answer(&q, &[300])).unwrap();
    tc.set_truncated(true);
    assert_eq!(
        store(&c, &q, &tc.to_vec().unwrap(), Millis(0)),
        Err(NotStored::Truncated)
    );
    assert_eq!(
        store(&c, &q, &answer(&q, &[300, 0]), Millis(0)),
        Err(NotStored::ShortTtl)
    );
    let strict = PacketCache::new(CacheConfig {
        min_ttl: 60,
        ..CacheConfig::default()
    });
    assert_eq!(
        store(&strict, &q, &answer(&q, &[59]), Millis(0)),
        Err(NotStored::ShortTtl)
    );
    assert_eq!(lookup(&c, &query(1, "t.example."), Millis(0)), None);
    assert_eq!(c.uncacheable().1, 2);
}

#[test]
fn max_ttl_caps_the_life_not_the_ttls() {
    let c = PacketCache::new(CacheConfig {
        max_ttl: 10,
        ..CacheConfig::default()
    });
    let q = query_msg(1, "m.example.", RecordType::A, None);
    store(&c, &q, &answer(&q, &[3600]), Millis(0)).unwrap();
    assert_eq!(
        ttls(&lookup(&c, &query(1, "m.example."), Millis(9_999)).unwrap()),
        [3591]
    );
    assert_eq!(lookup(&c, &query(1, "m.example."), Millis(10_000)), None);
}

#[test]
fn negative_answers_live_for_the_soa_minimum() {
    let c = cache();
    let q = query_msg(1, "nx.example.", RecordType::A, None);
    store(
        &c,
        &q,
        &negative(&q, ResponseCode::NXDomain, 3600, 30),
        Millis(0),
    )
    .unwrap();
    let hit = lookup(&c, &query(2, "nx.example."), Millis(29_000)).unwrap();
    let m = Message::from_vec(&hit).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(ttls(&hit), [3600 - 29]);
    assert_eq!(lookup(&c, &query(2, "nx.example."), Millis(30_000)), None);
    // NODATA the same way, capped by max_negative_ttl.
    let capped = PacketCache::new(CacheConfig {
        max_negative_ttl: 5,
        ..CacheConfig::default()
    });
    let q = query_msg(1, "nodata.example.", RecordType::AAAA, None);
    store(
        &capped,
        &q,
        &negative(&q, ResponseCode::NoError, 300, 300),
        Millis(0),
    )
    .unwrap();
    let asked = query_msg(3, "nodata.example.", RecordType::AAAA, None)
        .to_vec()
        .unwrap();
    assert!(lookup(&capped, &asked, Millis(4_999)).is_some());
    assert_eq!(lookup(&capped, &asked, Millis(5_000)), None);
    // Without an SOA: not stored (RFC 2308).
    let mut bare = q.clone();
    bare.set_message_type(MessageType::Response)
        .set_response_code(ResponseCode::NXDomain);
    assert_eq!(
        store(&c, &q, &bare.to_vec().unwrap(), Millis(0)),
        Err(NotStored::Negative)
    );
}

#[test]
fn servfail_only_with_servfail_ttl() {
    let q = query_msg(1, "sf.example.", RecordType::A, None);
    let mut sf = q.clone();
    sf.set_message_type(MessageType::Response)
        .set_response_code(ResponseCode::ServFail);
    let sf = sf.to_vec().unwrap();
    assert_eq!(store(&cache(), &q, &sf, Millis(0)), Err(NotStored::Rcode));
    let c = PacketCache::new(CacheConfig {
        servfail_ttl: 2,
        ..CacheConfig::default()
    });
    store(&c, &q, &sf, Millis(0)).unwrap();
    assert!(lookup(&c, &query(1, "sf.example."), Millis(1_999)).is_some());
    assert_eq!(lookup(&c, &query(1, "sf.example."), Millis(2_000)), None);
}

#[test]
fn stale_answers_only_through_stale_and_within_max_stale() {
    let c = PacketCache::new(CacheConfig {
        stale_ttl: 30,
        max_stale: 100,
        ..CacheConfig::default()
    });
    let q = query_msg(1, "s.example.", RecordType::A, None);
    store(&c, &q, &answer(&q, &[10]), Millis(0)).unwrap();
    let asked = query(8, "s.example.");
    let key = c.key(&asked).unwrap();
    // Fresh: served as is by both.
    assert_eq!(ttls(&c.stale(&key, &asked, Millis(1_000)).unwrap()), [9]);
    // Expired: a miss, but served stale with stale_ttl.
    assert_eq!(c.get(&key, &asked, Millis(20_000)), None);
    let stale = c.stale(&key, &asked, Millis(20_000)).unwrap();
    assert_eq!(ttls(&stale), [30]);
    assert_eq!(Message::from_vec(&stale).unwrap().id(), 8);
    assert_eq!(c.stats().stale_hits, 1);
    // Past max_stale: gone.
    assert_eq!(c.stale(&key, &asked, Millis(110_000)), None);
    assert_eq!(c.size().entries, 0);
    // Serve-stale off: nothing.
    let off = PacketCache::new(CacheConfig::default());
    store(&off, &q, &answer(&q, &[10]), Millis(0)).unwrap();
    assert_eq!(
        off.stale(&off.key(&asked).unwrap(), &asked, Millis(20_000)),
        None
    );
}

#[test]
fn a_colliding_question_is_a_counted_miss() {
    let c = cache();
    let q = query_msg(1, "c.example.", RecordType::A, None);
    store(&c, &q, &answer(&q, &[100]), Millis(0)).unwrap();
    let key = c.key(&q.to_vec().unwrap()).unwrap();
    // Another question of the same length under the same key.
    let other = query(1, "d.example.");
    assert_eq!(c.get(&key, &other, Millis(0)), None);
    assert_eq!(c.stats().collisions, 1);
}

#[test]
fn entries_stay_within_max_entries() {
    let c = PacketCache::new(CacheConfig {
        max_entries: 100,
        ..CacheConfig::default()
    });
    for i in 0..10_000 {
        let q = query_msg(1, &format!("n{i}.example."), RecordType::A, None);
        store(&c, &q, &answer(&q, &[300]), Millis(0)).unwrap();
    }
    let size = c.size();
    let per_shard = 100_usize.div_ceil(c.shards.len());
    assert!(size.entries <= per_shard * c.shards.len(), "{size:?}");
    assert!(size.entries >= 50, "{size:?}");
    assert!(size.bytes > 0);
    assert!(c.stats().evictions >= 10_000 - size.entries as u64 - 1);
    // The newest is there.
    assert!(lookup(&c, &query(1, "n9999.example."), Millis(0)).is_some());
}

#[test]
fn purge_by_name_type_and_suffix() {
    let c = cache();
    for (n, t) in [
        ("a.zone.", RecordType::A),
        ("a.zone.", RecordType::AAAA),
        ("b.a.zone.", RecordType::A),
        ("zone.", RecordType::A),
        ("notzone.", RecordType::A),
    ] {
        let q = query_msg(1, n, t, None);
        store(&c, &q, &answer(&q, &[300]), Millis(0)).unwrap();
    }
    let wire =
        |s: &str| hickory_proto::serialize::binary::BinEncodable::to_bytes(&name(s)).unwrap();
    assert_eq!(c.purge(Some(&wire("A.zone.")), Some(28), false), 1);
    assert_eq!(c.purge(Some(&wire("a.zone.")), None, true), 2);
    assert_eq!(c.size().entries, 2);
    assert_eq!(c.purge(Some(&wire("zone.")), None, true), 1);
    assert_eq!(c.purge(None, None, false), 1);
    assert_eq!(c.stats().purged, 5);
}

#[test]
fn signed_or_odd_queries_have_no_key() {
    let c = cache();
    let mut q = query_msg(1, "x.example.", RecordType::A, None);
    q.add_additional(Record::from_rdata(
        name("x.example."),
        0,
        RData::A(A::new(1, 2, 3, 4)),
    ));
    assert_eq!(c.key(&q.to_vec().unwrap()), Err(Uncacheable::Records));
    assert_eq!(c.key(&[0; 5]), Err(Uncacheable::Records));
}

#[test]
fn answers_that_do_not_parse_are_not_stored() {
    let c = cache();
    let q = query_msg(1, "w.example.", RecordType::A, None);
    let good = answer(&q, &[300, 300]);
    for cut in [good.len() - 1, good.len() - 10, 13, 30] {
        assert_eq!(
            store(&c, &q, &good[..cut], Millis(0)),
            Err(NotStored::Malformed),
            "{cut}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        store(&c, &q, &trailing, Millis(0)),
        Err(NotStored::Malformed)
    );
}

#[test]
fn a_served_answer_gets_a_second_chance_before_eviction() {
    let c = PacketCache::with_shards(
        CacheConfig {
            max_entries: 4,
            ..CacheConfig::default()
        },
        1,
    );
    let put = |n: &str| {
        let q = query_msg(1, n, RecordType::A, None);
        store(&c, &q, &answer(&q, &[300]), Millis(0)).unwrap();
    };
    for n in ["a.x.", "b.x.", "c.x.", "d.x."] {
        put(n);
    }
    assert!(lookup(&c, &query(1, "a.x."), Millis(0)).is_some());
    put("e.x.");
    // The oldest, a, was served: b goes instead.
    assert!(lookup(&c, &query(1, "a.x."), Millis(0)).is_some());
    assert!(lookup(&c, &query(1, "b.x."), Millis(0)).is_none());
    assert_eq!(c.size().entries, 4);
    assert_eq!(c.stats().evictions, 1);
}
