//! The pending-query table: sans-IO bookkeeping of queries sent upstream.
//!
//! A query sent to a backend is keyed by `(slot, id)`: the upstream socket it
//! left from and the fresh random ID it carries. Answers are looked up by the
//! same key; deadlines come out of [`PendingTable::pop_expired`]. The table is
//! bounded: when it is full, [`PendingTable::insert`] refuses and the caller
//! counts an overload drop, so a flood of unanswered queries cannot grow
//! memory.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use dnsha_core::Millis;
use rand::RngCore;

/// Key of a pending query: upstream slot and upstream ID.
pub type Key = (u32, u16);

struct Entry<T> {
    seq: u64,
    value: T,
}

/// The entries: values in a slab that reuses freed places (it never holds
/// more than the table's capacity, and never doubles past it), found
/// through a small index from key to place. A hash map of the values
/// themselves doubled its buckets, values and all, when removals had left
/// it full of tombstones: under a flood that churns a full table, tens of
/// MB at once.
struct Entries<T> {
    index: HashMap<Key, u32>,
    slab: Vec<Option<(Key, Entry<T>)>>,
    free: Vec<u32>,
}

impl<T> Entries<T> {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn contains_key(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    fn get(&self, key: &Key) -> Option<&Entry<T>> {
        let at = *self.index.get(key)?;
        self.slab.get(at as usize)?.as_ref().map(|(_, e)| e)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Entry<T>> {
        let at = *self.index.get(key)?;
        self.slab.get_mut(at as usize)?.as_mut().map(|(_, e)| e)
    }

    fn insert(&mut self, key: Key, entry: Entry<T>) {
        if let Some(old) = self.remove(&key) {
            drop(old);
        }
        let at = match self.free.pop() {
            Some(at) => at,
            None => {
                self.slab.push(None);
                u32::try_from(self.slab.len() - 1).unwrap_or(u32::MAX)
            }
        };
        if let Some(place) = self.slab.get_mut(at as usize) {
            *place = Some((key, entry));
            self.index.insert(key, at);
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Entry<T>> {
        let at = self.index.remove(key)?;
        let (_, e) = self.slab.get_mut(at as usize)?.take()?;
        self.free.push(at);
        Some(e)
    }

    fn keys(&self) -> impl Iterator<Item = &Key> + '_ {
        self.index.keys()
    }

    fn drain(&mut self) -> impl Iterator<Item = (Key, Entry<T>)> + '_ {
        self.index.clear();
        self.free.clear();
        self.slab.drain(..).flatten()
    }
}

/// Queries in flight, with their deadlines.
pub struct PendingTable<T> {
    entries: Entries<T>,
    per_slot: HashMap<u32, usize>,
    deadlines: BinaryHeap<Reverse<(Millis, u64, Key)>>,
    /// Queries in the order they were entered (with removed ones not yet
    /// swept), for [`Self::evict_oldest`].
    order: VecDeque<(u64, Key)>,
    capacity: usize,
    seq: u64,
}

impl<T> std::fmt::Debug for PendingTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingTable")
            .field("len", &self.entries.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Most IDs in use on one slot before it is considered full (leaves room for
/// random picks to succeed quickly).
const MAX_PER_SLOT: usize = 60_000;

impl<T> PendingTable<T> {
    /// An empty table holding at most `capacity` queries.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Entries::new(),
            per_slot: HashMap::new(),
            deadlines: BinaryHeap::new(),
            order: VecDeque::new(),
            capacity,
            seq: 0,
        }
    }

    /// Queries in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a query leaving on `slot`; returns the random upstream ID it
    /// must carry, or gives the value back when the table or slot is full.
    pub fn insert(
        &mut self,
        slot: u32,
        value: T,
        deadline: Millis,
        rng: &mut dyn RngCore,
    ) -> Result<u16, T> {
        let used = self.per_slot.get(&slot).copied().unwrap_or(0);
        if self.entries.len() >= self.capacity || used >= MAX_PER_SLOT {
            return Err(value);
        }
        let mut id = (rng.next_u32() & 0xffff) as u16;
        let mut tries = 0;
        while self.entries.contains_key(&(slot, id)) {
            tries += 1;
            id = if tries < 32 {
                (rng.next_u32() & 0xffff) as u16
            } else {
                id.wrapping_add(1)
            };
        }
        self.seq += 1;
        let seq = self.seq;
        self.entries.insert((slot, id), Entry { seq, value });
        *self.per_slot.entry(slot).or_insert(0) += 1;
        self.deadlines.push(Reverse((deadline, seq, (slot, id))));
        // Answered and expired queries leave their place in `order` behind:
        // swept when `order` is about to grow and at least half of it is
        // such places (so a sweep, linear, comes once per as many inserts:
        // constant time each), else it grows, to at most twice the live
        // queries. A table in its steady state allocates nothing.
        if self.order.len() == self.order.capacity() && self.order.len() >= 2 * self.entries.len() {
            let entries = &self.entries;
            self.order
                .retain(|(seq, key)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
        self.order.push_back((seq, (slot, id)));
        Ok(id)
    }

    /// Queries in flight on `slot`.
    pub fn slot_len(&self, slot: u32) -> usize {
        self.per_slot.get(&slot).copied().unwrap_or(0)
    }

    /// The value pending under `key`, if any.
    pub fn get(&self, key: Key) -> Option<&T> {
        self.entries.get(&key).map(|e| &e.value)
    }

    /// The value pending under `key`, mutable.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.entries.get_mut(&key).map(|e| &mut e.value)
    }

    /// Removes and returns the value pending under `key`.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let e = self.entries.remove(&key)?;
        self.dec_slot(key.0);
        Some(e.value)
    }

    fn dec_slot(&mut self, slot: u32) {
        if let Some(n) = self.per_slot.get_mut(&slot) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_slot.remove(&slot);
            }
        }
    }

    /// The earliest deadline of a query still pending.
    pub fn next_deadline(&mut self) -> Option<Millis> {
        while let Some(Reverse((deadline, seq, key))) = self.deadlines.peek().copied() {
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                return Some(deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Removes and returns one query whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Millis) -> Option<(Key, T)> {
        while let Some(Reverse((deadline, seq, key))) = self.deadlines.peek().copied() {
            let live = self.entries.get(&key).is_some_and(|e| e.seq == seq);
            if !live {
                self.deadlines.pop();
                continue;
            }
            if deadline > now {
                return None;
            }
            self.deadlines.pop();
            return self.remove(key).map(|v| (key, v));
        }
        None
    }

    /// True when no more queries fit.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    /// Removes and returns the query that has waited longest (the first
    /// entered), to make room for a new one when the table is full: under a
    /// flood of queries that are never answered, fresh queries keep getting
    /// a slot and those the backend answers quickly are still served. By
    /// entry, not by deadline: a query to a pool with a short timeout must
    /// not give way before the flood's queries to a pool with a long one.
    pub fn evict_oldest(&mut self) -> Option<(Key, T)> {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                return self.remove(key).map(|v| (key, v));
            }
        }
        None
    }

    /// Removes every query pending on `slot` (its socket reported an ICMP
    /// refusal, so all of them are lost).
    pub fn drain_slot(&mut self, slot: u32) -> Vec<(Key, T)> {
        let keys: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| k.0 == slot)
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|k| self.remove(k).map(|v| (k, v)))
            .collect()
    }

    /// Removes everything (shutdown).
    pub fn drain_all(&mut self) -> Vec<(Key, T)> {
        self.deadlines.clear();
        self.order.clear();
        self.per_slot.clear();
        self.entries.drain().map(|(k, e)| (k, e.value)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn insert_lookup_remove() {
        let mut t = PendingTable::new(10);
        let mut r = rng();
        let a = t.insert(1, "a", Millis(100), &mut r).unwrap();
        let b = t.insert(1, "b", Millis(100), &mut r).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.get((1, a)), Some(&"a"));
        assert_eq!(t.get((2, a)), None);
        assert_eq!(t.remove((1, a)), Some("a"));
        assert_eq!(t.remove((1, a)), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn expiry_in_deadline_order_skipping_answered() {
        let mut t = PendingTable::new(10);
        let mut r = rng();
        let a = t.insert(0, "a", Millis(300), &mut r).unwrap();
        let _b = t.insert(0, "b", Millis(100), &mut r).unwrap();
        let c = t.insert(0, "c", Millis(200), &mut r).unwrap();
        t.remove((0, c));
        assert_eq!(t.next_deadline(), Some(Millis(100)));
        assert_eq!(t.pop_expired(Millis(99)).map(|x| x.1), None);
        assert_eq!(t.pop_expired(Millis(250)).map(|x| x.1), Some("b"));
        assert_eq!(t.pop_expired(Millis(250)).map(|x| x.1), None);
        assert_eq!(t.next_deadline(), Some(Millis(300)));
        assert_eq!(t.pop_expired(Millis(300)), Some(((0, a), "a")));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn bounded_under_flood() {
        let mut t = PendingTable::new(1000);
        let mut r = rng();
        let mut refused = 0;
        for i in 0..5000u32 {
            if t.insert(i % 3, i, Millis(u64::from(i)), &mut r).is_err() {
                refused += 1;
            }
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(refused, 4000);
        // expiring frees room again
        while t.pop_expired(Millis(u64::MAX)).is_some() {}
        assert!(t.is_empty());
        assert!(t.insert(0, 1, Millis(0), &mut r).is_ok());
    }

    #[test]
    fn evicting_the_oldest_makes_room() {
        let mut t = PendingTable::new(3);
        let mut r = rng();
        let a = t.insert(0, "a", Millis(10), &mut r).unwrap();
        let b = t.insert(0, "b", Millis(20), &mut r).unwrap();
        t.insert(0, "c", Millis(30), &mut r).unwrap();
        assert!(t.is_full());
        t.remove((0, a));
        t.insert(0, "d", Millis(40), &mut r).unwrap();
        // "a" was answered: the oldest still pending is "b".
        assert_eq!(t.evict_oldest(), Some(((0, b), "b")));
        assert!(!t.is_full());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_first_entered_gives_way_whatever_its_deadline() {
        // A flood's queries to a pool with a long timeout, then a real
        // query to a pool with a short one: the flood's oldest gives way,
        // not the real query with the earlier deadline.
        let mut t = PendingTable::new(3);
        let mut r = rng();
        let flood = t.insert(0, "flood-1", Millis(5_000), &mut r).unwrap();
        t.insert(0, "flood-2", Millis(5_001), &mut r).unwrap();
        t.insert(1, "real", Millis(1_002), &mut r).unwrap();
        assert_eq!(t.evict_oldest(), Some(((0, flood), "flood-1")));
        // Deadlines still expire in their own order.
        assert_eq!(t.pop_expired(Millis(2_000)).map(|(_, v)| v), Some("real"));
    }

    #[test]
    fn the_entry_order_is_swept_of_answered_queries() {
        let mut t = PendingTable::new(10);
        let mut r = rng();
        for i in 0..100_000u64 {
            let id = t.insert(0, i, Millis(i), &mut r).unwrap();
            t.remove((0, id));
        }
        assert!(t.order.capacity() <= 64, "{}", t.order.capacity());
    }

    #[test]
    fn one_slot_id_space_is_bounded_and_ids_unique() {
        let mut t = PendingTable::new(100_000);
        let mut r = rng();
        let mut ids = std::collections::HashSet::new();
        for i in 0..MAX_PER_SLOT {
            let id = t.insert(0, i, Millis(0), &mut r).unwrap();
            assert!(ids.insert(id));
        }
        assert!(t.insert(0, 0, Millis(0), &mut r).is_err());
        assert!(t.insert(1, 0, Millis(0), &mut r).is_ok());
    }

    #[test]
    fn drain_slot_takes_only_that_slot() {
        let mut t = PendingTable::new(10);
        let mut r = rng();
        t.insert(0, "a", Millis(0), &mut r).unwrap();
        t.insert(1, "b", Millis(0), &mut r).unwrap();
        t.insert(1, "c", Millis(0), &mut r).unwrap();
        let mut got: Vec<_> = t.drain_slot(1).into_iter().map(|x| x.1).collect();
        got.sort_unstable();
        assert_eq!(got, ["b", "c"]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_expired(Millis(0)).map(|x| x.1), Some("a"));
    }
}
