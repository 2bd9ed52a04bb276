//! Policy pick cost: one pick from a pool of 4 backends, per policy
//! (`chash` with the query name's hash).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dnsha_core::policy::hash_labels;
use dnsha_core::{Backend, Millis, PolicyKind, Pool, PoolSettings};

fn pool(kind: PolicyKind) -> Pool {
    let backends = (1..=4)
        .map(|i| {
            Arc::new(Backend::new(
                format!("b{i}"),
                format!("192.0.2.{i}:53").parse().unwrap(),
                i,
            ))
        })
        .collect();
    Pool::new("bench", kind, PoolSettings::default(), backends)
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for kind in [
        PolicyKind::RoundRobin,
        PolicyKind::WeightedRoundRobin,
        PolicyKind::LeastOutstanding,
        PolicyKind::FirstAvailable,
    ] {
        let p = pool(kind);
        g.bench_function(kind.as_str(), |b| {
            b.iter(|| {
                let g = p.with_snapshot(|s| s.pick(black_box(&[]), Millis(0)));
                black_box(g)
            });
        });
    }
    // chash: the name hashed and its point found on a ring of 4 x 100 points
    // (weights 1 to 4: 1 000 points), the load bound computed.
    let p = pool(PolicyKind::ConsistentHash);
    let name: [&[u8]; 3] = [b"www", b"example", b"com"];
    g.bench_function("chash", |b| {
        b.iter(|| {
            let key = hash_labels(black_box(name));
            let g = p.with_snapshot(|s| s.pick_keyed(black_box(&[]), Millis(0), Some(key)));
            black_box(g)
        });
    });
    g.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
