//! Consistent hashing with bounded loads (`chash`).
//!
//! Each backend owns `weight × POINTS_PER_WEIGHT` points on a 64-bit ring,
//! placed by a hash of its name (so every balancer node, and every reload,
//! builds the same ring). A query's key — a hash of its name or of its
//! client's address, see [`HashKey`] — goes to the owner of the first point
//! at or after it, clockwise. When that backend is down or already tried,
//! the walk goes on to the next owner: only the keys of a backend that goes
//! away move, each to the backend after it on the ring.
//!
//! Bounded load (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing
//! with Bounded Loads", 2017; dnsdist's `setConsistentHashingBalancingFactor`):
//! with a balance factor `c` (in percent, see
//! [`crate::PoolSettings::hash_balance_percent`]), a backend takes a query
//! only while its outstanding queries are below
//! `ceil(c × (total outstanding + 1) / eligible backends)`, and at least
//! [`LOAD_BOUND_FLOOR`]; past it the walk goes on, so one hot name cannot
//! pile its queries on one backend.
//!
//! The hashes are FNV-1a with a SplitMix64 finish: fixed (not keyed), so
//! that two balancers agree on the mapping, which keeps the backends'
//! caches warm across a VRRP failover. An outsider who picks names to land
//! on one backend is held by the load bound.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Candidates, Policy};
use crate::backend::Backend;

/// Ring points per unit of weight.
pub const POINTS_PER_WEIGHT: u32 = 100;

/// A backend with fewer outstanding queries than this always takes its
/// keys: at a light load the average is a fraction of a query, and a bound
/// computed from it would send a name's second query elsewhere.
pub const LOAD_BOUND_FLOOR: u64 = 8;

/// What a `chash` pool hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashKey {
    /// The query name, without regard to case: each name's answers cached
    /// on one backend.
    #[default]
    Qname,
    /// The client's address (an IPv6 client by its /64): a client's
    /// queries on one backend (LVS `sh`, the seed's `persistence_timeout`).
    Client,
}

impl HashKey {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qname => "qname",
            Self::Client => "client",
        }
    }
}

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv(mut h: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// SplitMix64's finish: spreads FNV's low-entropy high bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of a query name given as its labels (any case, no root label),
/// as hickory's `Name::iter` yields them.
pub fn hash_labels<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = FNV_OFFSET;
    for label in labels {
        h = fnv(h, [u8::try_from(label.len()).unwrap_or(u8::MAX)]);
        h = fnv(h, label.iter().map(u8::to_ascii_lowercase));
    }
    mix(h)
}

/// The key of a client address: IPv4 whole, IPv6 by its /64 (one host's
/// privacy addresses change within it); IPv4-mapped IPv6 as IPv4.
pub fn hash_client(ip: IpAddr) -> u64 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => mix(fnv(FNV_OFFSET, a.octets())),
        IpAddr::V6(a) => mix(fnv(FNV_OFFSET ^ 6, a.octets().into_iter().take(8))),
    }
}

fn point(name: &str, i: u32) -> u64 {
    mix(fnv(fnv(FNV_OFFSET, name.bytes()), i.to_le_bytes()))
}

/// The ring of one snapshot of backends.
#[derive(Debug)]
pub struct ConsistentHash {
    /// (point, backend index), sorted by point.
    ring: Vec<(u64, u32)>,
}

impl ConsistentHash {
    /// The ring of `backends`: `weight × POINTS_PER_WEIGHT` points each.
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        let mut ring = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let Ok(index) = u32::try_from(i) else { break };
            let points = b.weight().max(1).saturating_mul(POINTS_PER_WEIGHT);
            ring.extend((0..points).map(|p| (point(b.name(), p), index)));
        }
        ring.sort_unstable();
        Self { ring }
    }

    /// Ring positions from the first point at or after `key`, once round.
    fn from(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.ring.partition_point(|&(p, _)| p < key);
        let (before, after) = self.ring.split_at(start.min(self.ring.len()));
        after.iter().chain(before).map(|&(_, i)| i as usize)
    }
}

impl Policy for ConsistentHash {
    fn name(&self) -> &str {
        "chash"
    }

    fn pick(&self, c: &Candidates<'_>) -> Option<usize> {
        // A connection (the TCP passthrough) has no query to hash: the
        // least loaded eligible backend.
        let Some(key) = c.key() else {
            return c
                .eligible()
                .min_by_key(|&i| c.get(i).map_or(u64::MAX, |b| b.outstanding()));
        };
        let bound = load_bound(c);
        let mut fallback = None;
        for i in self.from(key.hash) {
            if !c.is_eligible(i) {
                continue;
            }
            let load = c.get(i).map_or(u64::MAX, |b| b.outstanding());
            if bound.is_none_or(|b| load < b) {
                return Some(i);
            }
            // Every eligible backend at its bound: the first on the ring.
            fallback = fallback.or(Some(i));
        }
        fallback
    }
}

/// The most outstanding queries an eligible backend may hold and still
/// take one more; `None` when the pool sets no balance factor.
fn load_bound(c: &Candidates<'_>) -> Option<u64> {
    let percent = u64::from(c.key()?.balance_percent);
    if percent == 0 {
        return None;
    }
    let (total, eligible) = c.eligible().fold((0u64, 0u64), |(t, n), i| {
        let load = c.get(i).map_or(0, |b| b.outstanding());
        (t.saturating_add(load), n + 1)
    });
    let eligible = eligible.max(1);
    Some(
        percent
            .saturating_mul(total.saturating_add(1))
            .div_ceil(100 * eligible)
            .max(LOAD_BOUND_FLOOR),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::{Candidates, HashedKey, PolicyKind};
    use super::*;
    use crate::clock::Millis;

    fn pick(p: &ConsistentHash, bs: &[Arc<Backend>], key: u64, balance: u32) -> Option<usize> {
        let k = HashedKey {
            hash: key,
            balance_percent: balance,
        };
        p.pick(&Candidates::new(bs, &[], Millis(0)).with_key(Some(k)))
    }

    fn keys(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| hash_labels([format!("name{i}").as_bytes(), b"example"]))
    }

    #[test]
    fn the_same_key_always_goes_to_the_same_backend() {
        let bs = backends(&[1, 1, 1, 1]);
        let p = ConsistentHash::new(&bs);
        for k in keys(500) {
            let first = pick(&p, &bs, k, 0);
            assert!(first.is_some());
            assert_eq!(pick(&p, &bs, k, 0), first);
            // A ring built again (a reload, another balancer) agrees.
            assert_eq!(pick(&ConsistentHash::new(&bs), &bs, k, 0), first);
        }
    }

    #[test]
    fn keys_spread_in_proportion_to_weight() {
        let bs = backends(&[1, 1, 2]);
        let p = ConsistentHash::new(&bs);
        let mut h = [0usize; 3];
        for k in keys(40_000) {
            h[pick(&p, &bs, k, 0).unwrap()] += 1;
        }
        // Expected 10 000, 10 000, 20 000: within 15 % with 100 points per
        // unit of weight.
        for (got, want) in h.iter().zip([10_000.0, 10_000.0, 20_000.0]) {
            let ratio = *got as f64 / want;
            assert!((0.85..1.15).contains(&ratio), "{h:?}");
        }
    }

    #[test]
    fn only_the_keys_of_a_backend_that_goes_down_move() {
        let bs = backends(&[1, 1, 1, 1, 1]);
        let p = ConsistentHash::new(&bs);
        let before: Vec<(u64, usize)> = keys(20_000)
            .map(|k| (k, pick(&p, &bs, k, 0).unwrap()))
            .collect();
        down(&bs[2]);
        let mut moved = 0;
        let mut on_down = 0;
        for &(k, was) in &before {
            let now = pick(&p, &bs, k, 0).unwrap();
            assert_ne!(now, 2);
            if was == 2 {
                on_down += 1;
            }
            if now != was {
                moved += 1;
                assert_eq!(was, 2, "key {k:x} moved off a healthy backend");
            }
        }
        // Exactly the down backend's keys moved (about a fifth).
        assert_eq!(moved, on_down);
        assert!((3_000..5_000).contains(&moved), "{moved}");
        // It comes back: every key returns where it was.
        bs[2].set_state(crate::backend::BackendState::Up);
        for &(k, was) in &before {
            assert_eq!(pick(&p, &bs, k, 0), Some(was));
        }
    }

    #[test]
    fn a_hot_key_spills_over_once_its_backend_is_over_the_bound() {
        let bs = backends(&[1, 1, 1, 1]);
        let p = ConsistentHash::new(&bs);
        let hot = hash_labels([&b"hot"[..], b"example"]);
        let home = pick(&p, &bs, hot, 150).unwrap();
        // The hot name's queries pile up on its backend...
        let mut held = Vec::new();
        let mut picked = [0usize; 4];
        for _ in 0..100 {
            let i = pick(&p, &bs, hot, 150).unwrap();
            picked[i] += 1;
            held.push(bs[i].start_query());
        }
        // ...until the bound sends them on: no backend holds more than
        // ceil(1.5 × (99 + 1) / 4) = 38.
        assert!(picked[home] <= 38, "{picked:?}");
        assert!(picked.iter().all(|&n| n <= 38), "{picked:?}");
        // Without a bound, all on one backend.
        drop(held);
        let unbounded: Vec<usize> = (0..100).map(|_| pick(&p, &bs, hot, 0).unwrap()).collect();
        assert!(unbounded.iter().all(|&i| i == home));
    }

    #[test]
    fn tried_backends_are_skipped_in_ring_order() {
        let bs = backends(&[1, 1, 1]);
        let p = ConsistentHash::new(&bs);
        let k = hash_labels([&b"www"[..], b"example"]);
        let first = pick(&p, &bs, k, 0).unwrap();
        let ex = [bs[first].id()];
        let key = HashedKey {
            hash: k,
            balance_percent: 0,
        };
        let second = p
            .pick(&Candidates::new(&bs, &ex, Millis(0)).with_key(Some(key)))
            .unwrap();
        assert_ne!(second, first);
        // The retry target is the one the key would move to if the first
        // went down.
        down(&bs[first]);
        assert_eq!(pick(&p, &bs, k, 0), Some(second));
    }

    #[test]
    fn names_hash_without_regard_to_case_and_clients_by_their_slash_64() {
        assert_eq!(
            hash_labels([&b"WWW"[..], b"Example"]),
            hash_labels([&b"www"[..], b"example"])
        );
        assert_ne!(
            hash_labels([&b"www"[..], b"example"]),
            hash_labels([&b"wwwexample"[..]])
        );
        let a = |s: &str| hash_client(s.parse().unwrap());
        assert_eq!(a("2001:db8:1:2::1"), a("2001:db8:1:2:ffff::9"));
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
        assert_eq!(a("::ffff:192.0.2.1"), a("192.0.2.1"));
        assert_ne!(a("192.0.2.1"), a("192.0.2.2"));
    }

    #[test]
    fn without_a_key_the_least_loaded_backend() {
        let bs = backends(&[1, 1]);
        let p = ConsistentHash::new(&bs);
        let _held = bs[0].start_query();
        assert_eq!(p.pick(&Candidates::new(&bs, &[], Millis(0))), Some(1));
    }

    #[test]
    fn common() {
        common_checks(PolicyKind::ConsistentHash);
        concurrent_checks(PolicyKind::ConsistentHash);
    }
}
