//! The packet cache's hit path, and what sharding buys when two workers
//! look up at once: the same lookups from two threads on a cache of one
//! shard (every lookup takes the same lock) and of the default shard count.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dnsha_core::config::CacheConfig;
use dnsha_core::Millis;
use dnsha_proxy::cache::{InPlace, PacketCache};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};

/// Query and answer for name `i`.
fn pair(i: usize) -> (Vec<u8>, Vec<u8>) {
    let name = Name::from_ascii(format!("n{i}.example.test.")).unwrap();
    let mut q = Message::new();
    q.set_id(1)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), RecordType::A));
    let mut a = q.clone();
    a.set_message_type(MessageType::Response)
        .add_answer(Record::from_rdata(
            name,
            300,
            RData::A(A::new(192, 0, 2, 1)),
        ));
    (q.to_vec().unwrap(), a.to_vec().unwrap())
}

fn filled(shards: Option<usize>, names: usize) -> (Arc<PacketCache>, Vec<Vec<u8>>) {
    let cfg = CacheConfig::default();
    let cache = match shards {
        Some(n) => PacketCache::with_shards(cfg, n),
        None => PacketCache::new(cfg),
    };
    let queries: Vec<Vec<u8>> = (0..names)
        .map(|i| {
            let (q, a) = pair(i);
            cache
                .insert(&cache.key(&q).unwrap(), &a, Millis(0))
                .unwrap();
            q
        })
        .collect();
    (Arc::new(cache), queries)
}

/// One lookup written in place, as the UDP worker does it.
fn hit(cache: &PacketCache, q: &[u8], buf: &mut [u8; 512]) {
    buf[..q.len()].copy_from_slice(q);
    let key = cache.key(q).unwrap();
    let r = cache.answer_in_place(&key, buf, q.len(), 512, Millis(1_000));
    assert!(matches!(r, InPlace::Answered(_)));
}

fn single(c: &mut Criterion) {
    let (cache, queries) = filled(None, 1000);
    let mut buf = [0u8; 512];
    let mut i = 0;
    c.bench_function("cache/hit_in_place", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            hit(&cache, black_box(&queries[i]), &mut buf);
        });
    });
}

fn two_threads(c: &mut Criterion) {
    for (label, shards) in [("1_shard", Some(1)), ("default_shards", None)] {
        let (cache, queries) = filled(shards, 1000);
        let queries = Arc::new(queries);
        c.bench_function(&format!("cache/two_threads/{label}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let workers: Vec<_> = (0..2)
                    .map(|t| {
                        let (cache, queries) = (Arc::clone(&cache), Arc::clone(&queries));
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 512];
                            for n in 0..iters as usize {
                                hit(
                                    &cache,
                                    &queries[(n * 7 + t * 500) % queries.len()],
                                    &mut buf,
                                );
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().unwrap();
                }
                // Time per lookup pair (one on each thread).
                start.elapsed().max(Duration::from_nanos(1))
            });
        });
    }
}

criterion_group!(benches, single, two_threads);
criterion_main!(benches);
