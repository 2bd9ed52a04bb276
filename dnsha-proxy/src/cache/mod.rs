//! A pool's packet cache, sans-IO: answers stored by a key read from the
//! query's wire bytes, served back with the asking client's ID and name
//! casing and TTLs aged by the time spent here (the shape of dnsdist's
//! packet cache).
//!
//! - The key ([`Key`]) covers the question (the name in lower case), the
//!   RD, CD and AD bits, EDNS presence and version, the DO bit, the payload
//!   size class and every EDNS option but cookies. Queries with an EDNS
//!   Client Subnet option are not cached unless the cache is keyed on it
//!   (`ecs = true`); signed queries (TSIG) never are.
//! - What is stored ([`NotStored`] says why not): NOERROR answers for their
//!   smallest TTL (capped by `max_ttl`, none under `min_ttl`), NXDOMAIN and
//!   NODATA for the SOA's TTL and MINIMUM (RFC 2308, capped by
//!   `max_negative_ttl`), SERVFAIL and REFUSED for `servfail_ttl` if set;
//!   never a truncated answer.
//! - A hit checks that the stored question is the query's (a hash collision
//!   is counted and served as a miss). Expired answers stay `max_stale`
//!   longer and are served with `stale_ttl` only when the pool cannot
//!   answer (RFC 8767), through [`PacketCache::stale`].
//! - Shards with a lock each keep workers apart; an insert that finds its
//!   shard busy is skipped (counted), it never waits. A full shard evicts
//!   in insertion order, but an answer served since it was stored gets a
//!   second chance (CLOCK), so popular answers stay.
//!
//! ```
//! use dnsha_core::{config::CacheConfig, Millis};
//! use dnsha_proxy::cache::PacketCache;
//! use hickory_proto::op::{Message, MessageType, Query};
//! use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};
//!
//! let cache = PacketCache::new(CacheConfig::default());
//! let name = Name::from_ascii("www.example.").unwrap();
//! let mut q = Message::new();
//! q.set_id(7).add_query(Query::query(name.clone(), RecordType::A));
//! let query = q.to_vec().unwrap();
//! let key = cache.key(&query).unwrap();
//! assert!(cache.get(&key, &query, Millis(0)).is_none());
//!
//! let mut a = q.clone();
//! a.set_message_type(MessageType::Response);
//! a.add_answer(Record::from_rdata(name, 300, RData::A(A::new(192, 0, 2, 1))));
//! cache.insert(&key, &a.to_vec().unwrap(), Millis(0)).unwrap();
//!
//! // 100 s later, another client asks in other letters.
//! let mut q2 = Message::new();
//! q2.set_id(9).add_query(Query::query(Name::from_ascii("WWW.example.").unwrap(), RecordType::A));
//! let query2 = q2.to_vec().unwrap();
//! let hit = cache.get(&cache.key(&query2).unwrap(), &query2, Millis(100_000)).unwrap();
//! let hit = Message::from_vec(&hit).unwrap();
//! assert_eq!(hit.id(), 9);
//! assert_eq!(hit.queries()[0].name().to_ascii(), "WWW.example.");
//! assert_eq!(hit.answers()[0].ttl(), 200);
//! ```

mod entry;
mod key;
mod store;
#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};

use dnsha_core::config::CacheConfig;
use dnsha_core::Millis;

pub use entry::{NotStored, MAX_STORED};
pub use key::{Key, Uncacheable};

use entry::Entry;
use store::{Shards, Slot};

/// Counters of a cache, summed over its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Queries answered fresh from the cache.
    pub hits: u64,
    /// Lookups that found nothing fresh.
    pub misses: u64,
    /// Queries answered with an expired entry (the pool could not answer).
    pub stale_hits: u64,
    /// Answers stored.
    pub inserts: u64,
    /// Entries pushed out by newer ones while still servable.
    pub evictions: u64,
    /// Entries removed once past serving, stale included.
    pub expired: u64,
    /// Lookups whose hash matched an entry of another question.
    pub collisions: u64,
    /// Entries removed by a purge.
    pub purged: u64,
}

/// What a lookup that writes in place found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlace {
    /// The answer is written over the query: send this many bytes.
    Answered(usize),
    /// There is an answer, but larger than the client takes over UDP (or
    /// than the buffer): answer with TC=1.
    TooLarge,
    /// Nothing fresh.
    Miss,
}

/// One pool's packet cache. Shared by every worker of every listener of
/// the pool (`Arc`), and kept over a reload that leaves its settings alone.
#[derive(Debug)]
pub struct PacketCache {
    config: CacheConfig,
    hashers: (RandomState, RandomState),
    shards: Shards,
    /// Inserts skipped because the shard was busy.
    skipped: AtomicU64,
    /// Queries that could not be keyed, and answers not stored.
    uncacheable: AtomicU64,
    not_stored: AtomicU64,
}

/// Entries and memory of a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    /// Answers held.
    pub entries: usize,
    /// Bytes they hold, about (answers, TTL tables, bookkeeping).
    pub bytes: usize,
}

impl PacketCache {
    /// An empty cache with these settings, in a few shards per core.
    pub fn new(config: CacheConfig) -> Self {
        Self::build(config, Shards::new(config.max_entries))
    }

    /// The same with `shards` shards (rounded up to a power of two, at
    /// least 1, at most 1024): one makes every lookup take the same lock,
    /// which the cache benchmark compares with the default.
    pub fn with_shards(config: CacheConfig, shards: usize) -> Self {
        Self::build(config, Shards::with_count(config.max_entries, shards))
    }

    fn build(config: CacheConfig, shards: Shards) -> Self {
        Self {
            shards,
            config,
            hashers: (RandomState::new(), RandomState::new()),
            skipped: AtomicU64::new(0),
            uncacheable: AtomicU64::new(0),
            not_stored: AtomicU64::new(0),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The key of an admitted query, or why it has none (counted).
    pub fn key(&self, query: &[u8]) -> Result<Key, Uncacheable> {
        let k = key::key_of(query, &self.hashers, self.config.ecs);
        if k.is_err() {
            self.uncacheable.fetch_add(1, Ordering::Relaxed);
        }
        k
    }

    /// Looks `query` up and, on a fresh hit, writes the answer over it in
    /// `buf` (whose first `len` bytes are the query; the client's ID and
    /// name casing stay), up to `limit` bytes. No allocation.
    pub fn answer_in_place(
        &self,
        key: &Key,
        buf: &mut [u8],
        len: usize,
        limit: usize,
        now: Millis,
    ) -> InPlace {
        let mut shard = self.shards.lock(key.hash);
        let Some(slot) = self.find(
            &mut shard,
            key,
            buf.get(..len).unwrap_or_default(),
            now,
            false,
        ) else {
            return InPlace::Miss;
        };
        let n = slot.entry.bytes.len();
        if n > limit || n > buf.len() {
            return InPlace::TooLarge;
        }
        slot.entry.write_over(buf, key.qname_len, now, None);
        InPlace::Answered(n)
    }

    /// Looks `query` up; a fresh hit is returned as the client's answer.
    pub fn get(&self, key: &Key, query: &[u8], now: Millis) -> Option<Vec<u8>> {
        self.serve(key, query, now, false)
    }

    /// An expired answer to `query` still within `max_stale`, its TTLs set
    /// to `stale_ttl`, for when the pool cannot answer; `None` when
    /// serve-stale is off (`stale_ttl = 0`). A fresh entry is served as it
    /// is.
    pub fn stale(&self, key: &Key, query: &[u8], now: Millis) -> Option<Vec<u8>> {
        if self.config.stale_ttl == 0 {
            return None;
        }
        self.serve(key, query, now, true)
    }

    fn serve(&self, key: &Key, query: &[u8], now: Millis, stale_ok: bool) -> Option<Vec<u8>> {
        let mut shard = self.shards.lock(key.hash);
        let slot = self.find(&mut shard, key, query, now, stale_ok)?;
        let mut out = query.to_vec();
        out.resize(slot.entry.bytes.len().max(query.len()), 0);
        out.truncate(slot.entry.bytes.len());
        let stale = (now >= slot.fresh_until).then_some(self.config.stale_ttl);
        slot.entry.write_over(&mut out, key.qname_len, now, stale);
        Some(out)
    }

    /// The entry for `key` if it is `query`'s and servable at `now`
    /// (fresh, or stale when `stale_ok`); counts the outcome.
    fn find<'s>(
        &self,
        shard: &'s mut store::Shard,
        key: &Key,
        query: &[u8],
        now: Millis,
        stale_ok: bool,
    ) -> Option<&'s Slot> {
        let state = match shard.map.get(&key.hash) {
            None => None,
            Some(s) if s.check != key.check || !s.entry.same_question(query, key.qname_len) => {
                shard.stats.collisions += 1;
                None
            }
            Some(s) if now < s.fresh_until => Some(false),
            Some(s) if now < s.stale_until => stale_ok.then_some(true),
            Some(_) => {
                shard.remove(key.hash);
                shard.stats.expired += 1;
                None
            }
        };
        match state {
            None => {
                shard.stats.misses += 1;
                None
            }
            Some(stale) => {
                if stale {
                    shard.stats.stale_hits += 1;
                } else {
                    shard.stats.hits += 1;
                }
                let slot = shard.map.get_mut(&key.hash)?;
                slot.referenced = true;
                Some(slot)
            }
        }
    }

    /// Stores a backend's `answer` to the query of `key` (checked by the
    /// pipeline to be that query's), unless it may not be stored (said and
    /// counted) or its shard is busy (skipped and counted: an insert never
    /// waits).
    pub fn insert(&self, key: &Key, answer: &[u8], now: Millis) -> Result<(), NotStored> {
        let entry = match Entry::analyse(answer, key.qname_len, &self.config, now) {
            Ok(e) => e,
            Err(e) => {
                self.not_stored.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let stale_ms = if self.config.stale_ttl > 0 {
            u64::from(self.config.max_stale) * 1000
        } else {
            0
        };
        let slot = Slot::new(key.check, entry, stale_ms);
        match self.shards.try_lock(key.hash) {
            Some(mut shard) => shard.insert(key.hash, slot, self.shards.cap, now),
            None => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Removes the entries for `name` (wire form, any case; every name
    /// under it too when `suffix`), of type `qtype` when given; all entries
    /// when `name` is `None`. How many went.
    pub fn purge(&self, name: Option<&[u8]>, qtype: Option<u16>, suffix: bool) -> usize {
        let mut n = 0;
        self.shards.each(|s| {
            let removed = s.purge(|e| {
                let name_ok = match name {
                    None => true,
                    Some(want) => {
                        let have = e.qname_wire();
                        if suffix {
                            is_under(have, want)
                        } else {
                            have.eq_ignore_ascii_case(want)
                        }
                    }
                };
                name_ok && qtype.is_none_or(|t| t == e.qtype())
            });
            s.stats.purged += removed as u64;
            n += removed;
        });
        n
    }

    /// Counters summed over the shards.
    pub fn stats(&self) -> Stats {
        let mut t = Stats::default();
        self.shards.each(|s| {
            let c = s.stats;
            t.hits += c.hits;
            t.misses += c.misses;
            t.stale_hits += c.stale_hits;
            t.inserts += c.inserts;
            t.evictions += c.evictions;
            t.expired += c.expired;
            t.collisions += c.collisions;
            t.purged += c.purged;
        });
        t
    }

    /// Entries and bytes held now.
    pub fn size(&self) -> Size {
        let mut z = Size::default();
        self.shards.each(|s| {
            z.entries += s.map.len();
            z.bytes += s.bytes;
        });
        z
    }

    /// Inserts skipped because another worker held the shard.
    pub fn skipped_inserts(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Queries that had no key (ECS, TSIG...), and answers not stored.
    pub fn uncacheable(&self) -> (u64, u64) {
        (
            self.uncacheable.load(Ordering::Relaxed),
            self.not_stored.load(Ordering::Relaxed),
        )
    }
}

/// Whether the wire name `name` is `zone` or below it (labels compared
/// from the right, ASCII case aside).
fn is_under(name: &[u8], zone: &[u8]) -> bool {
    // Wire names end in the same bytes exactly when one is under the other
    // at a label boundary: check the boundary by walking `name`'s labels.
    if zone.len() > name.len() {
        return false;
    }
    let start = name.len() - zone.len();
    let mut i = 0;
    while i < start {
        i += 1 + usize::from(name[i]);
    }
    i == start && name[start..].eq_ignore_ascii_case(zone)
}
