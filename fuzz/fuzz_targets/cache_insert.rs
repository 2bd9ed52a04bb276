//! The packet cache's insert path fed arbitrary answers (and the key path
//! arbitrary admitted queries): never panics, and an answer it stores is
//! served back whole, by both lookups alike, with the asking query's ID and
//! question.
//!
//! Input layout: `[query length][query][answer]`.
#![no_main]

use dnsha_core::config::CacheConfig;
use dnsha_core::Millis;
use dnsha_proxy::cache::{InPlace, PacketCache};
use dnsha_proxy::wire::dns::{classify_query, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (query, answer) = rest.split_at(usize::from(n).min(rest.len()));
    if !matches!(classify_query(query), Verdict::Forward(_)) {
        return;
    }
    let cache = PacketCache::new(CacheConfig {
        servfail_ttl: 5,
        stale_ttl: 30,
        ..CacheConfig::default()
    });
    let Ok(key) = cache.key(query) else {
        return;
    };
    let now = Millis(1_000);
    if cache.insert(&key, answer, now).is_err() {
        assert!(cache.get(&key, query, now).is_none());
        return;
    }
    let got = cache.get(&key, query, now).expect("a stored answer is served");
    assert_eq!(got.len(), answer.len());
    assert_eq!(got[..2], query[..2], "the query's ID");
    let qend = query.len().min(got.len());
    let question_end = 12 + query[12..].iter().position(|&b| b == 0).unwrap_or(0) + 5;
    assert_eq!(got[12..question_end.min(qend)], query[12..question_end.min(qend)]);
    let mut buf = vec![0u8; 65_535];
    buf[..query.len()].copy_from_slice(query);
    match cache.answer_in_place(&key, &mut buf, query.len(), usize::MAX, now) {
        InPlace::Answered(len) => assert_eq!(&buf[..len], &got[..]),
        other => panic!("in place: {other:?}"),
    }
    // Much later: past its life, and past serving stale too.
    let later = Millis(1_000 + 700_000_000);
    assert!(cache.get(&key, query, later).is_none());
    assert!(cache.stale(&key, query, later).is_none());
});
