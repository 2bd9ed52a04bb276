//! The dynamic blocks step: every valid query's client is looked up in the
//! blocks in force; queries and answers are recorded for the once-a-second
//! evaluation ([`DynBlocks::tick`]) that sets and lifts blocks
//! ([`dnsha_core::dynblock`]).
//!
//! Recording costs one short lock of a shard (picked by the client's
//! address) per query and per answer; the shards are bounded, so a flood
//! cannot grow them: past [`MAX_EVENTS`] the oldest events are forgotten,
//! and the evaluation takes its rates over the history it still holds.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use dnsha_core::dynblock::{evaluate, Block, BlockAction, BlockTable, DynRule, Event, EventKind};
use dnsha_core::Millis;
use ipnet::IpNet;

/// Most events kept for the evaluation, over all shards (about 40 bytes
/// each).
pub const MAX_EVENTS: usize = 262_144;

/// Recording shards.
const SHARDS: usize = 16;

/// What became of a tick: the blocks set and lifted.
#[derive(Debug, Default)]
pub struct Tick {
    /// Blocks set.
    pub added: Vec<Block>,
    /// Blocks that ended.
    pub lifted: Vec<Block>,
}

/// The dynamic block rules of a configuration, the events recorded and the
/// blocks in force.
#[derive(Debug)]
pub struct DynBlocks {
    rules: Vec<DynRule>,
    shards: Vec<Mutex<VecDeque<Event>>>,
    /// Events drained from the shards, within the longest window.
    history: Mutex<VecDeque<Event>>,
    table: ArcSwap<BlockTable>,
    /// Serialises the writers of `table` (the tick, an operator's lift).
    writer: Mutex<()>,
    /// Per rule: queries stopped by its blocks.
    stopped: Vec<AtomicU64>,
}

impl DynBlocks {
    /// `rules`; the blocks of `previous` whose rule is still configured
    /// stay in force (a reload does not free a blocked prefix).
    pub fn new(rules: Vec<DynRule>, previous: Option<&Self>) -> Self {
        let mut table = BlockTable::new();
        if let Some(p) = previous {
            let old = p.table.load();
            for b in old.blocks() {
                if let Some(r) = rules.iter().find(|r| r.name == b.rule) {
                    let c = dnsha_core::dynblock::Crossing {
                        prefix: b.prefix,
                        rule: 0,
                        reason: b.reason.clone(),
                    };
                    let left = b.until.0.saturating_sub(Millis::now().0);
                    let mut kept = r.clone();
                    kept.block_s = u32::try_from(left.div_ceil(1000)).unwrap_or(u32::MAX);
                    table.block(&c, &kept, Millis::now());
                }
            }
        }
        Self {
            stopped: rules.iter().map(|_| AtomicU64::new(0)).collect(),
            rules,
            shards: (0..SHARDS).map(|_| Mutex::new(VecDeque::new())).collect(),
            history: Mutex::new(VecDeque::new()),
            table: ArcSwap::from_pointee(table),
            writer: Mutex::new(()),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[DynRule] {
        &self.rules
    }

    /// What a query from `client` gets, when a block covers it (counted).
    pub fn check(&self, client: IpAddr) -> Option<BlockAction> {
        let table = self.table.load();
        let b = table.lookup(client)?;
        if let Some(i) = self.rules.iter().position(|r| r.name == b.rule) {
            if let Some(c) = self.stopped.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(b.action)
    }

    /// Records a query or an answer.
    pub fn record(&self, client: IpAddr, kind: EventKind, now: Millis) {
        let i = shard_of(client);
        let Some(shard) = self.shards.get(i) else {
            return;
        };
        let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if s.len() >= MAX_EVENTS / SHARDS {
            s.pop_front();
        }
        s.push_back(Event {
            at: now,
            client,
            kind,
        });
    }

    /// Once a second: drains the recorded events into the history, keeps
    /// the longest window of it, evaluates the rules, sets the new blocks
    /// and lifts the ended ones.
    pub fn tick(&self, now: Millis) -> Tick {
        let longest_ms = self
            .rules
            .iter()
            .map(|r| u64::from(r.window_s.max(1)) * 1000)
            .max()
            .unwrap_or(1000);
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            history.extend(s.drain(..));
        }
        let since = now.0.saturating_sub(longest_ms);
        history.make_contiguous().sort_by_key(|e| e.at);
        while history.front().is_some_and(|e| e.at.0 <= since) || history.len() > MAX_EVENTS {
            history.pop_front();
        }
        let from = history.front().map_or(now, |e| e.at);
        // Events were dropped by a shard or the cap when the history starts
        // after the window does.
        let history_from = if history.len() >= MAX_EVENTS / 2 {
            from
        } else {
            Millis(since)
        };
        let crossings = evaluate(&self.rules, history.make_contiguous(), now, history_from);
        drop(history);

        let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = BlockTable::clone(&self.table.load());
        let mut tick = Tick {
            lifted: table.expire(now),
            ..Tick::default()
        };
        for c in &crossings {
            let Some(rule) = self.rules.get(c.rule) else {
                continue;
            };
            if table.block(c, rule, now) {
                if let Some(b) = table.lookup_exact(c.prefix) {
                    tick.added.push(b.clone());
                }
            }
        }
        self.table.store(Arc::new(table));
        tick
    }

    /// Lifts the block of exactly `prefix`, if there is one, and forgets
    /// the prefix's recorded traffic: the next evaluation judges it afresh
    /// rather than blocking it again for what it did before.
    pub fn lift(&self, prefix: IpNet) -> Option<Block> {
        let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = BlockTable::clone(&self.table.load());
        let b = table.lift(prefix)?;
        self.table.store(Arc::new(table));
        let outside = |e: &Event| !prefix.contains(&e.client);
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(outside);
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(outside);
        }
        Some(b)
    }

    /// The blocks in force.
    pub fn blocks(&self) -> Vec<Block> {
        self.table.load().blocks().into_iter().cloned().collect()
    }

    /// Per rule: its name and the queries its blocks stopped.
    pub fn stopped(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rules
            .iter()
            .zip(&self.stopped)
            .map(|(r, c)| (r.name.as_str(), c.load(Ordering::Relaxed)))
    }
}

fn shard_of(ip: IpAddr) -> usize {
    let low = match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => (u128::from(a) >> 64) as u64,
    };
    usize::try_from(low.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60).unwrap_or(0) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnsha_core::dynblock::RCODE_NXDOMAIN;

    fn rule() -> DynRule {
        DynRule {
            name: "nx".into(),
            window_s: 2,
            prefix_v4: 24,
            prefix_v6: 64,
            qps: None,
            nxdomain_rate: Some(50.0),
            servfail_rate: None,
            nxdomain_ratio: None,
            min_answers: 10,
            qtype_rate: None,
            bytes_rate: None,
            block_s: 3,
            action: BlockAction::Refuse,
        }
    }

    const NX: EventKind = EventKind::Answer {
        rcode: RCODE_NXDOMAIN,
        bytes: 80,
    };

    #[test]
    fn a_prefix_over_a_threshold_is_blocked_at_the_next_tick_and_released_after() {
        let d = DynBlocks::new(vec![rule()], None);
        let attacker: IpAddr = "192.0.2.9".parse().unwrap();
        let neighbour: IpAddr = "192.0.2.10".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        for i in 0..300u64 {
            d.record(attacker, NX, Millis(10_000 + i * 3));
        }
        d.record(other, NX, Millis(10_500));
        assert!(d.check(attacker).is_none());
        let t = d.tick(Millis(11_000));
        assert_eq!(t.added.len(), 1);
        assert_eq!(t.added[0].prefix.to_string(), "192.0.2.0/24");
        assert!(
            t.added[0].reason.starts_with("nxdomain"),
            "{}",
            t.added[0].reason
        );
        assert_eq!(d.check(attacker), Some(BlockAction::Refuse));
        assert_eq!(d.check(neighbour), Some(BlockAction::Refuse));
        assert_eq!(d.check(other), None);
        assert_eq!(d.stopped().next(), Some(("nx", 2)));
        // Quiet: the block ends after block_s.
        assert!(d.tick(Millis(13_000)).lifted.is_empty());
        let t = d.tick(Millis(14_000));
        assert_eq!(t.lifted.len(), 1);
        assert!(d.check(attacker).is_none());
    }

    #[test]
    fn an_operator_lifts_a_block_and_a_reload_keeps_the_others() {
        let d = DynBlocks::new(vec![rule()], None);
        for i in 0..300u64 {
            d.record("192.0.2.9".parse().unwrap(), NX, Millis(10_000 + i * 3));
            d.record("203.0.113.9".parse().unwrap(), NX, Millis(10_000 + i * 3));
        }
        d.tick(Millis(11_000));
        assert_eq!(d.blocks().len(), 2);
        assert!(d.lift("192.0.2.0/24".parse().unwrap()).is_some());
        assert!(d.lift("192.0.2.0/24".parse().unwrap()).is_none());
        // Its past traffic is forgotten: the next evaluation does not block
        // it again; the other prefix stays blocked.
        let t = d.tick(Millis(11_500));
        assert!(t.added.is_empty(), "{:?}", t.added);
        assert_eq!(d.blocks().len(), 1);
        let again = DynBlocks::new(vec![rule()], Some(&d));
        assert_eq!(again.blocks().len(), 1);
        let renamed = DynBlocks::new(
            vec![DynRule {
                name: "other".into(),
                ..rule()
            }],
            Some(&d),
        );
        assert!(renamed.blocks().is_empty());
    }

    #[test]
    fn recording_is_bounded_whatever_the_flood() {
        let d = DynBlocks::new(vec![rule()], None);
        for i in 0..(MAX_EVENTS as u64 * 2) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(u32::try_from(i).unwrap()));
            d.record(ip, EventKind::Query { qtype: 1 }, Millis(10_000));
        }
        let held: usize = d.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= MAX_EVENTS, "{held}");
        d.tick(Millis(10_500));
        assert!(d.history.lock().unwrap().len() <= MAX_EVENTS);
    }
}
