//! Hot pieces of the data path: query validation and ID rewrite, answer
//! matching, and the pending-query table.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dnsha_core::Millis;
use dnsha_proxy::wire::dns::{answer_matches, classify_query, parse_answer, rewrite_id, Verdict};
use dnsha_proxy::wire::pending::PendingTable;
use hickory_proto::op::{Edns, Message, MessageType, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn query(edns: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x1234)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        ));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn validation(c: &mut Criterion) {
    for (name, q) in [("plain", query(false)), ("edns", query(true))] {
        c.bench_function(&format!("classify_and_rewrite/{name}"), |b| {
            let mut out = q.clone();
            b.iter(|| {
                let v = classify_query(black_box(&q));
                out.copy_from_slice(&q);
                rewrite_id(&mut out, 0xBEEF);
                black_box((v, &out));
            });
        });
    }
    let q = query(false);
    let mut answer = Message::from_vec(&q).unwrap();
    answer.set_message_type(MessageType::Response);
    let answer = answer.to_vec().unwrap();
    let Verdict::Forward(info) = classify_query(&q) else {
        unreachable!()
    };
    c.bench_function("parse_and_match_answer", |b| {
        b.iter(|| {
            let a = parse_answer(black_box(&answer)).unwrap();
            black_box(answer_matches(&a, &info.question))
        });
    });
}

fn pending(c: &mut Criterion) {
    c.bench_function("pending/insert_remove", |b| {
        let mut t = PendingTable::new(65_536);
        let mut rng = StdRng::seed_from_u64(1);
        // a realistic standing population of queries in flight
        let mut keys = std::collections::VecDeque::new();
        for i in 0..1000u64 {
            let id = t.insert(0, i, Millis(i), &mut rng).unwrap();
            keys.push_back(id);
        }
        let mut now = 1000u64;
        b.iter(|| {
            now += 1;
            let id = t.insert(0, now, Millis(now), &mut rng).unwrap();
            keys.push_back(id);
            let old = keys.pop_front().unwrap();
            black_box(t.remove((0, old)));
            black_box(t.next_deadline());
        });
    });
}

criterion_group!(benches, validation, pending);
criterion_main!(benches);
