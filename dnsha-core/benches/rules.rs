//! Rule evaluation cost per query: 10 000 suffix rules (each a zone routed
//! to a pool), a rule of 1 000 client networks, a qtype rule and a
//! catch-all, for names that hit early, late, and nothing.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::IpAddr;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dnsha_core::rules::names::wire_name;
use dnsha_core::rules::{Action, Match, NameSet, NetSet, Query, Rule, RuleSet};

fn rules() -> RuleSet {
    let mut rules = Vec::new();
    rules.push(Rule::new("any", Match::Qtype(vec![255]), Action::Refuse));
    for i in 0..10_000 {
        let mut zone = NameSet::new();
        zone.insert(&format!("zone{i}.corp.example")).unwrap();
        rules.push(Rule::new(
            format!("zone{i}"),
            Match::Suffix(zone),
            Action::Pool(format!("p{}", i % 4)),
        ));
    }
    let nets: Vec<String> = (0..1000u32)
        .map(|i| format!("{}.{}.{}.0/24", 10 + i / 65536, (i / 256) % 256, i % 256))
        .collect();
    rules.push(Rule::new(
        "offices",
        Match::Client(NetSet::parse(nets.iter().map(String::as_str)).unwrap()),
        Action::Pool("office".into()),
    ));
    rules.push(Rule::new(
        "rest",
        Match::Always,
        Action::Pool("forwarders".into()),
    ));
    RuleSet::new(rules)
}

fn evaluate(c: &mut Criterion) {
    let set = rules();
    let mut g = c.benchmark_group("rules");
    let cases = [
        ("zone_hit", "www.zone9999.corp.example", "8.8.8.8"),
        ("client_hit", "www.example.org", "10.3.200.1"),
        ("catch_all", "a.b.c.www.example.org", "8.8.8.8"),
    ];
    for (label, name, client) in cases {
        let qname = wire_name(name).unwrap();
        let client: IpAddr = client.parse().unwrap();
        g.bench_function(label, |b| {
            b.iter(|| {
                let q = Query {
                    qname: black_box(&qname),
                    qtype: 1,
                    client: black_box(client),
                    listener: "udp",
                    edns: None,
                    opcode: 0,
                };
                black_box(set.evaluate(&q, |i| {
                    black_box(i);
                }))
                .rule
            });
        });
    }
    g.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
