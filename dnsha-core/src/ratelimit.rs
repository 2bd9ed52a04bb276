//! Per-client query rate limits: a token bucket per client prefix, in a
//! table of fixed size.
//!
//! A client is its address cut to a prefix (`/32` or `/24` for IPv4, `/64`
//! or `/56` for IPv6, as configured): a host, or a network that shares one
//! budget. Each prefix has a bucket of `burst` queries, refilled at `qps`
//! per second; a query takes one, and a query that finds the bucket empty
//! is over the limit (dnsdist's `MaxQPSIPRule`).
//!
//! Memory is bounded whatever the number of sources: the table holds at
//! most `max_clients` buckets, in shards with a lock each; when a shard is
//! full a new prefix takes the place of one not seen recently (CLOCK: a
//! prefix seen again since the hand last passed gets a second chance, a
//! new one none, so the heavy hitters keep their buckets while a flood of
//! one-off sources recycles its own slots). A forgotten prefix starts again
//! with a full bucket.
//!
//! Pure: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use crate::clock::Millis;

/// Most shards of a table.
const SHARDS: usize = 64;

/// How a limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    /// Queries per second a prefix may send, sustained.
    pub qps: u32,
    /// Queries a prefix may send at once after a quiet while.
    pub burst: u32,
    /// Leading bits of an IPv4 address that make one client (1–32).
    pub prefix_v4: u8,
    /// Leading bits of an IPv6 address that make one client (1–128).
    pub prefix_v6: u8,
    /// Most prefixes tracked at once.
    pub max_clients: usize,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self {
            qps: 100,
            burst: 200,
            prefix_v4: 32,
            prefix_v6: 64,
            max_clients: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    key: u128,
    /// Tokens, in thousandths of a query.
    milli: u64,
    last: Millis,
    referenced: bool,
}

#[derive(Debug, Default)]
struct Shard {
    index: HashMap<u128, usize>,
    buckets: Vec<Bucket>,
    hand: usize,
}

/// A rate limit's table of buckets.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RateSettings,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl RateLimiter {
    /// An empty table for `settings`.
    pub fn new(settings: RateSettings) -> Self {
        let max = settings.max_clients.max(1);
        let shards = max.clamp(1, SHARDS);
        Self {
            settings,
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max.div_ceil(shards),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RateSettings {
        &self.settings
    }

    /// The prefix `ip` belongs to, as a table key (IPv4-mapped IPv6 as
    /// IPv4).
    pub fn key(&self, ip: IpAddr) -> u128 {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(self.settings.prefix_v4.clamp(1, 32));
                let masked = u32::from(a) & (u32::MAX << (32 - bits));
                // IPv4 keys live outside the IPv6 space used below.
                (1u128 << 127) | (u128::from(bits) << 32) | u128::from(masked)
            }
            IpAddr::V6(a) => {
                let bits = u32::from(self.settings.prefix_v6.clamp(1, 128));
                let masked = u128::from(a) & (u128::MAX << (128 - bits));
                // The top bit of an IPv6 key is cleared: 8000::/1 shares
                // buckets with its lower half, nothing else changes.
                masked & !(1u128 << 127)
            }
        }
    }

    /// Takes one query from `ip`'s bucket at `now`: true when the client is
    /// within its rate, false when over it.
    pub fn allow(&self, ip: IpAddr, now: Millis) -> bool {
        let key = self.key(ip);
        let i = shard_of(key, self.shards.len());
        let Some(shard) = self.shards.get(i) else {
            return true;
        };
        let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let cap = u64::from(self.settings.burst.max(1)) * 1000;
        // A prefix seen before earns its second chance; a new one starts
        // without, so a flood of one-off sources recycles its own slots.
        let (slot, seen) = match s.index.get(&key) {
            Some(&slot) => (slot, true),
            None => (s.insert(key, cap, now, self.per_shard), false),
        };
        let Some(b) = s.buckets.get_mut(slot) else {
            return true;
        };
        let elapsed = now.0.saturating_sub(b.last.0);
        b.milli = b
            .milli
            .saturating_add(elapsed.saturating_mul(u64::from(self.settings.qps)))
            .min(cap);
        b.last = now;
        b.referenced |= seen;
        if b.milli >= 1000 {
            b.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// Prefixes tracked now.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .buckets
                    .len()
            })
            .sum()
    }

    /// Most prefixes the table holds.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }
}

impl Shard {
    /// A full bucket for `key`, in a free slot or in place of one not used
    /// since the hand last passed (CLOCK).
    fn insert(&mut self, key: u128, cap: u64, now: Millis, max: usize) -> usize {
        let fresh = Bucket {
            key,
            milli: cap,
            last: now,
            referenced: false,
        };
        if self.buckets.len() < max {
            self.buckets.push(fresh);
            let slot = self.buckets.len() - 1;
            self.index.insert(key, slot);
            return slot;
        }
        let n = self.buckets.len();
        // At most two turns: the first clears every reference bit.
        for _ in 0..2 * n {
            let slot = self.hand % n;
            self.hand = (slot + 1) % n;
            let Some(b) = self.buckets.get_mut(slot) else {
                break;
            };
            if b.referenced {
                b.referenced = false;
                continue;
            }
            let old = b.key;
            *b = fresh;
            self.index.remove(&old);
            self.index.insert(key, slot);
            return slot;
        }
        // Unreachable with n > 0: the second turn finds a cleared bit.
        usize::MAX
    }
}

fn shard_of(key: u128, shards: usize) -> usize {
    // Fold and mix the key: neighbouring prefixes spread over shards.
    let folded = (key as u64) ^ ((key >> 64) as u64);
    let mixed = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // `shards` is at most 64: the top bits index it.
    usize::try_from(mixed >> 58).unwrap_or(0) % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(qps: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(RateSettings {
            qps,
            burst,
            ..RateSettings::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = limiter(100, 20);
        let a = ip("192.0.2.1");
        let allowed = (0..50).filter(|_| l.allow(a, Millis(0))).count();
        assert_eq!(allowed, 20);
        // 100 qps: one more query every 10 ms.
        assert!(!l.allow(a, Millis(5)));
        assert!(l.allow(a, Millis(15)));
        assert!(!l.allow(a, Millis(15)));
        // Over ten seconds at 1 000 q/s offered, about 100/s pass.
        let mut passed = 0;
        for ms in 1_000..11_000u64 {
            if l.allow(a, Millis(ms)) {
                passed += 1;
            }
        }
        assert!((990..=1_020).contains(&passed), "{passed}");
    }

    #[test]
    fn clients_have_their_own_buckets_and_prefixes_share_one() {
        let l = RateLimiter::new(RateSettings {
            qps: 1,
            burst: 1,
            prefix_v4: 24,
            prefix_v6: 56,
            ..RateSettings::default()
        });
        assert!(l.allow(ip("192.0.2.1"), Millis(0)));
        // Same /24: the same bucket.
        assert!(!l.allow(ip("192.0.2.200"), Millis(0)));
        assert!(l.allow(ip("192.0.3.1"), Millis(0)));
        assert!(l.allow(ip("2001:db8:0:100::1"), Millis(0)));
        assert!(!l.allow(ip("2001:db8:0:1ff::9"), Millis(0)));
        assert!(l.allow(ip("2001:db8:0:200::1"), Millis(0)));
        // A dual-stack socket's mapped address is the IPv4 client.
        assert!(!l.allow(ip("::ffff:192.0.2.7"), Millis(0)));
    }

    #[test]
    fn the_table_never_grows_past_its_size_and_keeps_heavy_hitters() {
        let l = RateLimiter::new(RateSettings {
            qps: 10,
            burst: 10,
            max_clients: 1_000,
            ..RateSettings::default()
        });
        let heavy = ip("198.51.100.1");
        // The heavy hitter spends its burst.
        for _ in 0..10 {
            assert!(l.allow(heavy, Millis(0)));
        }
        assert!(!l.allow(heavy, Millis(0)));
        // A flood of one-off sources, the heavy hitter still sending.
        for i in 0..200_000u32 {
            l.allow(
                IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                Millis(0),
            );
            if i % 50 == 0 {
                assert!(
                    !l.allow(heavy, Millis(0)),
                    "heavy hitter got a fresh bucket at {i}"
                );
            }
        }
        assert!(l.clients() <= l.capacity());
        assert!(l.capacity() <= 1_000 + SHARDS);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let l = limiter(1000, 1);
        let a = ip("192.0.2.1");
        assert!(l.allow(a, Millis(1_000)));
        assert!(!l.allow(a, Millis(500)));
    }
}
