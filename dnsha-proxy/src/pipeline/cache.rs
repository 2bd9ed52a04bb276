//! The cache step, between admission and the first backend: a query the
//! pool's packet cache can answer never reaches a backend. The stale side
//! of the cache is asked by [`super::Flight`] when the pool cannot answer.

use std::net::SocketAddr;

use dnsha_core::config::Protocol;
use dnsha_core::Millis;

use super::{Admitted, ListenerShared};
use crate::accesslog::LogRecord;
use crate::cache::{InPlace, Key};
use crate::metrics::{inc, ListenerMetrics};
use crate::wire::dns::{rcode_label, truncated, QueryInfo};

/// What the cache made of a query it did not answer in place.
#[derive(Debug)]
pub enum Cached {
    /// An answer too large for the client over UDP: send it this TC=1
    /// answer, it asks again over TCP.
    Truncated(Vec<u8>),
    /// Not in the cache: forward it; its answer is stored under the key
    /// (`None`: the pool has no cache, or the query is not cacheable).
    Miss(Option<Key>),
}

/// A query the cache answered, for the access log and the counters.
struct Served<'a> {
    shared: &'a ListenerShared,
    m: &'a ListenerMetrics,
    client: SocketAddr,
    protocol: Protocol,
    info: &'a QueryInfo,
}

impl Served<'_> {
    fn record(&self, sent: &[u8]) {
        inc(&self.m.cache_hits);
        self.m.latency.record_ms(0);
        if let Some(d) = &self.shared.dynblocks {
            let rcode = sent.get(3).map_or(0, |b| u16::from(b & 0x0f));
            let bytes = u32::try_from(sent.len()).unwrap_or(u32::MAX);
            let kind = dnsha_core::dynblock::EventKind::Answer { rcode, bytes };
            d.record(self.client.ip(), kind, Millis::now());
        }
        if let Some(log) = &self.shared.access_log {
            log.log(LogRecord {
                client: self.client,
                backend: None,
                protocol: self.protocol,
                rcode: rcode_label(Some(sent)),
                duration: std::time::Duration::ZERO,
                qname: self.info.question.name().to_ascii(),
                qtype: self.info.question.query_type().to_string(),
            });
        }
    }
}

/// The cache of the query's pool, unless a rule said `no_cache`.
fn cache_of(admitted: &Admitted) -> Option<&crate::cache::PacketCache> {
    admitted.target.cache.as_deref().filter(|_| admitted.cache)
}

/// The UDP worker's lookup: on a fresh hit the answer is written over the
/// query in `buf` (its first `len` bytes), keeping the client's ID and
/// name casing, and `Ok(n)` says how many bytes to send. No allocation on
/// a hit.
pub fn lookup_in_place(
    shared: &ListenerShared,
    m: &ListenerMetrics,
    client: SocketAddr,
    admitted: &Admitted,
    buf: &mut [u8],
    len: usize,
    now: Millis,
) -> Result<usize, Cached> {
    let Some(cache) = cache_of(admitted) else {
        return Err(Cached::Miss(None));
    };
    let info = &admitted.info;
    let Some(query) = buf.get(..len) else {
        return Err(Cached::Miss(None));
    };
    let Ok(key) = cache.key(query) else {
        return Err(Cached::Miss(None));
    };
    let limit = key.udp_limit(shared.config.max_udp_size);
    let served = Served {
        shared,
        m,
        client,
        protocol: Protocol::Udp,
        info,
    };
    match cache.answer_in_place(&key, buf, len, limit, now) {
        InPlace::Answered(n) => {
            served.record(buf.get(..n).unwrap_or_default());
            Ok(n)
        }
        InPlace::TooLarge => {
            inc(&m.udp_truncated);
            let tc = truncated(info);
            served.record(&tc);
            Err(Cached::Truncated(tc))
        }
        InPlace::Miss => Err(Cached::Miss(Some(key))),
    }
}

/// The stream frontends' lookup (and UDP listeners in front of stream
/// backends): a fresh hit comes back as the client's answer, truncated
/// (TC=1) for a UDP client that takes less.
pub fn lookup(
    shared: &ListenerShared,
    m: &ListenerMetrics,
    client: SocketAddr,
    protocol: Protocol,
    admitted: &Admitted,
    query: &[u8],
    now: Millis,
) -> Result<Vec<u8>, Option<Key>> {
    let Some(cache) = cache_of(admitted) else {
        return Err(None);
    };
    let info = &admitted.info;
    let Ok(key) = cache.key(query) else {
        return Err(None);
    };
    let Some(mut answer) = cache.get(&key, query, now) else {
        return Err(Some(key));
    };
    if protocol == Protocol::Udp {
        let limit = key.udp_limit(shared.config.max_udp_size);
        if answer.len() > limit {
            inc(&m.udp_truncated);
            answer = truncated(info);
        }
    }
    Served {
        shared,
        m,
        client,
        protocol,
        info,
    }
    .record(&answer);
    Ok(answer)
}
