//! The entries of one cache, in shards: each a map and an insertion-order
//! queue under its own lock, so workers rarely meet; inserts only try the
//! lock and give up rather than wait.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, TryLockError};

use dnsha_core::Millis;

use super::entry::Entry;
use super::Stats;

/// The key is already a keyed hash: used as is.
#[derive(Default)]
pub(super) struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Entries one insert may send to the back of the queue before it evicts
/// whatever comes next: the work of an insert stays bounded.
const SECOND_CHANCES: usize = 16;

/// A stored answer and its place in the queue.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) check: u64,
    pub(super) entry: Entry,
    /// Until when it is fresh, and until when it may be served stale.
    pub(super) fresh_until: Millis,
    pub(super) stale_until: Millis,
    /// Insertion number: the queue's item for this slot carries the same.
    seq: u64,
    /// Served since it last came to the front of the queue: it gets a
    /// second chance before eviction (CLOCK), so popular answers stay.
    pub(super) referenced: bool,
}

/// One shard.
#[derive(Debug, Default)]
pub(super) struct Shard {
    pub(super) map: HashMap<u64, Slot, BuildHasherDefault<Identity>>,
    /// Hashes in insertion order, with the insertion number: an item whose
    /// number is not its slot's (replaced or removed since) is skipped.
    queue: VecDeque<(u64, u64)>,
    next_seq: u64,
    pub(super) bytes: usize,
    pub(super) stats: Stats,
}

impl Shard {
    /// Stores `slot` under `hash` within `cap` entries: the oldest go first
    /// (counted as expired when they were past serving, else evicted),
    /// except that one served since it was queued goes to the back once
    /// (second chance: at most [`SECOND_CHANCES`] per insert).
    pub(super) fn insert(&mut self, hash: u64, mut slot: Slot, cap: usize, now: Millis) {
        if let Some(old) = self.map.remove(&hash) {
            self.bytes -= old.entry.size();
        }
        let mut chances = 0;
        while self.map.len() >= cap {
            let Some((h, seq)) = self.queue.pop_front() else {
                break;
            };
            let Some(s) = self.map.get_mut(&h).filter(|s| s.seq == seq) else {
                continue;
            };
            if s.referenced && chances < SECOND_CHANCES && s.stale_until > now {
                s.referenced = false;
                self.queue.push_back((h, seq));
                chances += 1;
                continue;
            }
            if let Some(old) = self.map.remove(&h) {
                self.bytes -= old.entry.size();
                if old.stale_until <= now {
                    self.stats.expired += 1;
                } else {
                    self.stats.evictions += 1;
                }
            }
        }
        slot.seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back((hash, slot.seq));
        self.bytes += slot.entry.size();
        self.map.insert(hash, slot);
        self.stats.inserts += 1;
        // Replaced and removed entries leave items behind: drop them before
        // the queue grows past twice the entries.
        if self.queue.len() > 2 * cap.max(self.map.len()) + 16 {
            let map = &self.map;
            self.queue
                .retain(|(h, seq)| map.get(h).is_some_and(|s| s.seq == *seq));
        }
    }

    /// Removes the entry under `hash` (an expired one found on lookup).
    pub(super) fn remove(&mut self, hash: u64) -> Option<Slot> {
        let old = self.map.remove(&hash)?;
        self.bytes -= old.entry.size();
        Some(old)
    }

    /// Removes every entry `doomed` says; how many.
    pub(super) fn purge(&mut self, mut doomed: impl FnMut(&Entry) -> bool) -> usize {
        let before = self.map.len();
        let mut freed = 0;
        self.map.retain(|_, s| {
            let keep = !doomed(&s.entry);
            if !keep {
                freed += s.entry.size();
            }
            keep
        });
        self.bytes -= freed;
        before - self.map.len()
    }
}

impl Slot {
    pub(super) fn new(check: u64, entry: Entry, stale_for_ms: u64) -> Self {
        let fresh_until = entry.inserted.plus(u64::from(entry.lifetime) * 1000);
        Self {
            check,
            fresh_until,
            stale_until: fresh_until.plus(stale_for_ms),
            entry,
            seq: 0,
            referenced: false,
        }
    }
}

/// The shards of a cache.
#[derive(Debug)]
pub(super) struct Shards {
    shards: Box<[Mutex<Shard>]>,
    /// Entries per shard.
    pub(super) cap: usize,
}

impl Shards {
    pub(super) fn new(max_entries: usize) -> Self {
        // A power of two, a few per core: two workers rarely want the same
        // one, and a small cache still has room in each.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_count(max_entries, (cores * 4).min(64))
    }

    /// `n` shards (a power of two from 1 to 1024, and no more than the
    /// entries), `max_entries` spread over them.
    pub(super) fn with_count(max_entries: usize, n: usize) -> Self {
        // At most the largest power of two within the entries, so that no
        // shard is left without room.
        let room = 1usize << (usize::BITS - 1 - max_entries.max(1).leading_zeros());
        let n = n.clamp(1, 1024).next_power_of_two().min(room);
        Self {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            cap: max_entries.div_ceil(n),
        }
    }

    /// How many shards.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.len()
    }

    fn index(&self, hash: u64) -> usize {
        // The top bits: the map inside uses the low ones.
        ((hash >> 48) as usize) & (self.shards.len() - 1)
    }

    /// The shard of `hash`, waiting for it.
    pub(super) fn lock(&self, hash: u64) -> MutexGuard<'_, Shard> {
        let m = &self.shards[self.index(hash)];
        // A worker that panicked while holding it left plain data behind.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shard of `hash` if it is free now.
    pub(super) fn try_lock(&self, hash: u64) -> Option<MutexGuard<'_, Shard>> {
        match self.shards[self.index(hash)].try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Every shard in turn.
    pub(super) fn each(&self, mut f: impl FnMut(&mut Shard)) {
        for m in self.shards.iter() {
            f(&mut m.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        }
    }
}
