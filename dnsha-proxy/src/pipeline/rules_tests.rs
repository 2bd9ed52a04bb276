//! The rules and limits steps of admission: routing to a rule's pool, the
//! answers made at once, `no_cache`, the per-rule counts, and what becomes
//! of a client over a `[[limit]]`.

use std::net::IpAddr;
use std::sync::Arc;

use dnsha_core::config::{Config, Protocol};
use dnsha_core::{Backend, Millis, Pool};
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::cache::{lookup, lookup_in_place, Cached};
use super::*;
use crate::acl::Acl;
use crate::cache::PacketCache;
use crate::metrics::{get, ListenerMetrics};
use crate::upstream::Routes;
use crate::wire::dns::DropReason;

/// A UDP listener on pool `fwd` and a second pool `auth` with a cache,
/// with `rules` (TOML `[[rule]]` tables).
fn listener(rules: &str) -> (ListenerShared, ListenerMetrics) {
    let cfg = Config::parse(&format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"fwd\"\n\n\
         [[pool]]\nname = \"fwd\"\n[[pool.backend]]\nname = \"f\"\naddress = \"192.0.2.1\"\n\n\
         [[pool]]\nname = \"auth\"\n[pool.cache]\nmax_entries = 100\n[[pool.backend]]\nname = \"a\"\naddress = \"192.0.2.2\"\n\n{rules}"
    ))
    .unwrap();
    let targets: Vec<(String, Arc<Target>)> = cfg
        .pools
        .iter()
        .map(|p| {
            let backends = p
                .backends
                .iter()
                .map(|b| Arc::new(Backend::new(b.name.clone(), b.address, b.weight)))
                .collect();
            let pool = Pool::new(p.name.clone(), p.policy, p.settings.clone(), backends);
            let target = Target {
                pool: Arc::new(pool),
                routes: Arc::new(Routes::default()),
                cache: p.cache.map(|c| Arc::new(PacketCache::new(c))),
            };
            (p.name.clone(), Arc::new(target))
        })
        .collect();
    let target_of = |name: &str| {
        targets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| Arc::clone(t))
    };
    let rules = Rules::new(cfg.rules.clone(), target_of, None);
    let l = cfg.listeners[0].clone();
    let m = ListenerMetrics::new("l", Protocol::Udp, l.listen);
    let shared = ListenerShared {
        acl: Acl::new(l.allow.clone()),
        config: l,
        target: target_of("fwd").unwrap(),
        rules: Arc::new(rules),
        limits: Limits::new(&cfg.limits, None).for_listener("l"),
        dynblocks: None,
        access_log: None,
    };
    (shared, m)
}

fn query(name: &str, rtype: RecordType, dnssec_ok: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242)
        .set_recursion_desired(true)
        .add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            rtype,
        ));
    if dnssec_ok {
        let mut e = Edns::new();
        e.set_dnssec_ok(true);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn admit_from(shared: &ListenerShared, m: &ListenerMetrics, client: &str, q: &[u8]) -> Admission {
    admit(
        shared,
        m,
        client.parse::<IpAddr>().unwrap(),
        Protocol::Udp,
        q,
    )
}

fn pool_of(a: &Admission) -> &str {
    match a {
        Admission::Forward(f) => f.target.pool.name(),
        other => panic!("not forwarded: {other:?}"),
    }
}

const ROUTING: &str = r#"
[[rule]]
name = "internal"
qname_suffix = ["corp.example"]
pool = "auth"

[[rule]]
name = "signed"
dnssec_ok = true
pool = "auth"

[[rule]]
name = "refuse-any"
qtype = ["ANY"]
action = "refuse"

[[rule]]
name = "gone"
qname_suffix = ["gone.test"]
action = "nxdomain"

[[rule]]
name = "silent"
qname = ["silent.test"]
action = "drop"

[[rule]]
name = "prove-it"
qname_suffix = ["tc.test"]
action = "truncate"

[[rule]]
name = "portal"
qname = ["portal.test"]
answer = ["192.0.2.80", "TXT welcome"]
answer_ttl = 30
"#;

#[test]
fn rules_route_queries_to_their_pool_by_name_and_edns() {
    let (shared, m) = listener(ROUTING);
    let q = query("www.Corp.Example.", RecordType::A, false);
    assert_eq!(pool_of(&admit_from(&shared, &m, "10.0.0.1", &q)), "auth");
    let q = query("www.example.org.", RecordType::A, false);
    assert_eq!(pool_of(&admit_from(&shared, &m, "10.0.0.1", &q)), "fwd");
    let q = query("www.example.org.", RecordType::A, true);
    assert_eq!(pool_of(&admit_from(&shared, &m, "10.0.0.1", &q)), "auth");
    assert_eq!(get(&m.queries), 3);
    let counts: Vec<(String, u64)> = shared
        .rules
        .counts()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    assert_eq!(counts[0], ("internal".to_string(), 1));
    assert_eq!(counts[1], ("signed".to_string(), 1));
}

#[test]
fn rules_answer_refuse_nxdomain_drop_and_truncate_at_once() {
    let (shared, m) = listener(ROUTING);
    let reply = |a: Admission| match a {
        Admission::Reply(bytes, DropReason::Rule) => Message::from_vec(&bytes).unwrap(),
        other => panic!("no rule reply: {other:?}"),
    };
    // Over UDP the listener's `any_over_udp` answers ANY before the rules;
    // over TCP the rule does.
    let any = query("x.test.", RecordType::ANY, false);
    let r = reply(admit(
        &shared,
        &m,
        "10.0.0.1".parse().unwrap(),
        Protocol::Tcp,
        &any,
    ));
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert_eq!(r.id(), 4242);
    let r = reply(admit_from(
        &shared,
        &m,
        "10.0.0.1",
        &query("a.gone.test.", RecordType::A, false),
    ));
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert_eq!(
        admit_from(
            &shared,
            &m,
            "10.0.0.1",
            &query("silent.test.", RecordType::A, false)
        ),
        Admission::Drop(DropReason::Rule)
    );
    let r = reply(admit_from(
        &shared,
        &m,
        "10.0.0.1",
        &query("x.tc.test.", RecordType::A, false),
    ));
    assert!(r.truncated() && r.answers().is_empty());
    // Over TCP the client has proven its address: the query goes on.
    let q = query("x.tc.test.", RecordType::A, false);
    let over_tcp = admit(&shared, &m, "10.0.0.1".parse().unwrap(), Protocol::Tcp, &q);
    assert_eq!(pool_of(&over_tcp), "fwd");
    assert_eq!(m.drops(DropReason::Rule), 4);
    assert_eq!(get(&m.refused), 1);
}

#[test]
fn a_fixed_answer_holds_the_records_of_the_asked_type() {
    let (shared, m) = listener(ROUTING);
    let answer = |rtype| match admit_from(
        &shared,
        &m,
        "10.0.0.1",
        &query("portal.test.", rtype, false),
    ) {
        Admission::Reply(bytes, _) => Message::from_vec(&bytes).unwrap(),
        other => panic!("{other:?}"),
    };
    let a = answer(RecordType::A);
    assert!(a.authoritative());
    assert_eq!(a.answers().len(), 1);
    assert_eq!(a.answers()[0].ttl(), 30);
    assert!(
        matches!(a.answers()[0].data(), RData::A(ip) if ip.0 == std::net::Ipv4Addr::new(192, 0, 2, 80))
    );
    let txt = answer(RecordType::TXT);
    assert!(matches!(txt.answers()[0].data(), RData::TXT(t) if t.to_string() == "welcome"));
    // Another type: NOERROR, no records (the name exists).
    let aaaa = answer(RecordType::AAAA);
    assert_eq!(aaaa.response_code(), ResponseCode::NoError);
    assert!(aaaa.answers().is_empty());
    assert_eq!(get(&m.answers), 3);
}

#[test]
fn no_cache_keeps_a_query_out_of_its_pools_cache() {
    let (shared, m) = listener(
        r#"
[[rule]]
name = "health-no-cache"
qname = ["health.corp.example"]
action = "no_cache"

[[rule]]
name = "internal"
qname_suffix = ["corp.example"]
pool = "auth"
"#,
    );
    let client: std::net::SocketAddr = "10.0.0.1:5300".parse().unwrap();
    let admitted = |name: &str| match admit_from(
        &shared,
        &m,
        "10.0.0.1",
        &query(name, RecordType::A, false),
    ) {
        Admission::Forward(a) => a,
        other => panic!("{other:?}"),
    };
    let health = admitted("health.corp.example.");
    assert_eq!(health.target.pool.name(), "auth");
    assert!(!health.cache);
    let q = query("health.corp.example.", RecordType::A, false);
    // No key: the answer will not be stored, nothing is looked up.
    assert!(matches!(
        lookup(&shared, &m, client, Protocol::Udp, &health, &q, Millis(0)),
        Err(None)
    ));
    let other = admitted("www.corp.example.");
    assert!(other.cache);
    let mut buf = query("www.corp.example.", RecordType::A, false);
    let len = buf.len();
    buf.resize(4096, 0);
    assert!(matches!(
        lookup_in_place(&shared, &m, client, &other, &mut buf, len, Millis(0)),
        Err(Cached::Miss(Some(_)))
    ));
}

#[test]
fn a_reload_keeps_the_counts_of_rules_by_name() {
    let (shared, m) = listener(ROUTING);
    for _ in 0..3 {
        admit_from(
            &shared,
            &m,
            "10.0.0.1",
            &query("a.gone.test.", RecordType::A, false),
        );
    }
    let cfg = Config::parse(
        "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\
         [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n\
         [[rule]]\nname = \"new\"\nqtype = [\"MX\"]\naction = \"drop\"\n\
         [[rule]]\nname = \"gone\"\nqname_suffix = [\"gone.test\"]\naction = \"refuse\"\n",
    )
    .unwrap();
    let next = Rules::new(cfg.rules, |_| None, Some(&shared.rules));
    let counts: Vec<(&str, u64)> = next.counts().collect();
    assert_eq!(counts, [("new", 0), ("gone", 3)]);
}

#[test]
fn a_client_over_its_limit_is_dropped_refused_or_truncated() {
    let (shared, m) = listener(
        r#"
[[limit]]
name = "host"
qps = 1
burst = 3
"#,
    );
    let q = query("www.example.org.", RecordType::A, false);
    for _ in 0..3 {
        assert_eq!(pool_of(&admit_from(&shared, &m, "10.0.0.1", &q)), "fwd");
    }
    assert_eq!(
        admit_from(&shared, &m, "10.0.0.1", &q),
        Admission::Drop(DropReason::RateLimit)
    );
    // Another client has its own bucket.
    assert_eq!(pool_of(&admit_from(&shared, &m, "10.0.0.2", &q)), "fwd");
    assert_eq!(m.drops(DropReason::RateLimit), 1);
    assert_eq!(shared.limits[0].exceeded(), 1);
    assert_eq!(shared.limits[0].clients(), 2);
    // Counted as queries all the same.
    assert_eq!(get(&m.queries), 5);

    let (shared, m) =
        listener("[[limit]]\nname = \"r\"\nqps = 1\nburst = 1\naction = \"refuse\"\n");
    admit_from(&shared, &m, "10.0.0.1", &q);
    match admit_from(&shared, &m, "10.0.0.1", &q) {
        Admission::Reply(bytes, DropReason::RateLimit) => {
            assert_eq!(
                Message::from_vec(&bytes).unwrap().response_code(),
                ResponseCode::Refused
            );
        }
        other => panic!("{other:?}"),
    }

    let (shared, m) =
        listener("[[limit]]\nname = \"t\"\nqps = 1\nburst = 1\naction = \"truncate\"\n");
    admit_from(&shared, &m, "10.0.0.1", &q);
    match admit_from(&shared, &m, "10.0.0.1", &q) {
        Admission::Reply(bytes, DropReason::RateLimit) => {
            assert!(Message::from_vec(&bytes).unwrap().truncated());
        }
        other => panic!("{other:?}"),
    }
    // Over TCP the address is proven: truncation lets the query on.
    let over_tcp = admit(&shared, &m, "10.0.0.1".parse().unwrap(), Protocol::Tcp, &q);
    assert_eq!(pool_of(&over_tcp), "fwd");
}

#[test]
fn a_limit_for_one_listener_leaves_the_others_alone() {
    let (shared, _) = listener("[[limit]]\nname = \"x\"\nqps = 1\nlistener = [\"l\"]\n");
    assert_eq!(shared.limits.len(), 1);
    let cfg = Config::parse(
        "[[listener]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\
         [[listener]]\nname = \"b\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\
         [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n\
         [[limit]]\nname = \"only-a\"\nqps = 5\nlistener = [\"a\"]\n",
    )
    .unwrap();
    let limits = Limits::new(&cfg.limits, None);
    assert_eq!(limits.for_listener("a").len(), 1);
    assert!(limits.for_listener("b").is_empty());
    // A reload with the same limit keeps its buckets.
    let again = Limits::new(&cfg.limits, Some(&limits));
    assert!(Arc::ptr_eq(
        &limits.for_listener("a")[0],
        &again.for_listener("a")[0]
    ));
}
