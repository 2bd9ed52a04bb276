//! Dynamic blocks: client prefixes whose recent traffic crosses a threshold
//! are blocked for a while (dnsdist's `dynBlockRulesGroup`).
//!
//! The data path records what happened — a query (its client and type), an
//! answer (its client, response code and size) — as [`Event`]s. Once a
//! second the caller hands the events of the last window to [`evaluate`],
//! which counts them per client prefix for each [`DynRule`] and says which
//! prefixes cross a threshold: queries per second, NXDOMAIN or SERVFAIL
//! answers per second, the share of NXDOMAIN answers, queries of one type
//! per second, answer bytes per second. The [`BlockTable`] holds the blocks
//! until they expire (or an operator lifts them), and is what the data path
//! asks for every query.
//!
//! Pure: no clock, no threads; the caller passes the time.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::clock::Millis;

/// Response codes the rules count.
pub const RCODE_SERVFAIL: u16 = 2;
/// NXDOMAIN.
pub const RCODE_NXDOMAIN: u16 = 3;

/// What the data path saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: Millis,
    /// The client.
    pub client: IpAddr,
    /// What.
    pub kind: EventKind,
}

/// A query or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A valid query of this type.
    Query {
        /// Its type.
        qtype: u16,
    },
    /// An answer sent to the client.
    Answer {
        /// Its response code.
        rcode: u16,
        /// Its size in bytes.
        bytes: u32,
    },
}

/// What a blocked prefix's queries get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockAction {
    /// No answer.
    #[default]
    Drop,
    /// REFUSED.
    Refuse,
    /// An empty answer with TC=1 over UDP (over streams the query goes on).
    Truncate,
}

impl BlockAction {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Refuse => "refuse",
            Self::Truncate => "truncate",
        }
    }
}

/// One dynamic block rule: thresholds over a window, per client prefix.
/// A threshold of `None` is not checked; a prefix crossing any one is
/// blocked.
#[derive(Debug, Clone, PartialEq)]
pub struct DynRule {
    /// Name, for logs, `/status` and metrics.
    pub name: String,
    /// The window the rates are averaged over, in seconds.
    pub window_s: u32,
    /// Leading bits of an IPv4 client that make one prefix.
    pub prefix_v4: u8,
    /// Leading bits of an IPv6 client that make one prefix.
    pub prefix_v6: u8,
    /// Queries per second.
    pub qps: Option<f64>,
    /// NXDOMAIN answers per second.
    pub nxdomain_rate: Option<f64>,
    /// SERVFAIL answers per second.
    pub servfail_rate: Option<f64>,
    /// Share of answers that are NXDOMAIN (0–1), once the prefix had at
    /// least `min_answers` answers in the window.
    pub nxdomain_ratio: Option<f64>,
    /// Answers needed before `nxdomain_ratio` is judged.
    pub min_answers: u32,
    /// Queries of `qtype` per second.
    pub qtype_rate: Option<(u16, f64)>,
    /// Answer bytes per second.
    pub bytes_rate: Option<f64>,
    /// How long a block lasts, in seconds.
    pub block_s: u32,
    /// What blocked queries get.
    pub action: BlockAction,
}

impl DynRule {
    /// The prefix `ip` belongs to under this rule (IPv4-mapped as IPv4).
    pub fn prefix_of(&self, ip: IpAddr) -> IpNet {
        prefix_of(ip, self.prefix_v4, self.prefix_v6)
    }
}

fn prefix_of(ip: IpAddr, v4: u8, v6: u8) -> IpNet {
    let ip = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        other => other,
    };
    let len = if ip.is_ipv4() {
        v4.min(32)
    } else {
        v6.min(128)
    };
    IpNet::new(ip, len).map_or_else(|_| IpNet::from(ip), |n| n.trunc())
}

/// Counts of one prefix in one window.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    queries: u64,
    answers: u64,
    nxdomain: u64,
    servfail: u64,
    qtype: u64,
    bytes: u64,
}

/// A prefix crossing a threshold of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    /// The prefix.
    pub prefix: IpNet,
    /// The rule's index.
    pub rule: usize,
    /// Which threshold, with the measured rate: `nxdomain_rate 312.0/s`.
    pub reason: String,
}

/// The prefixes of `events` (those within each rule's window before `now`)
/// that cross a threshold of one of `rules`; a prefix is named once per
/// rule, with the first threshold crossed. `history_from` is the oldest
/// time the events cover (a bounded buffer may hold less than a window):
/// rates are taken over the part of the window the events cover, at least
/// a second.
pub fn evaluate(
    rules: &[DynRule],
    events: &[Event],
    now: Millis,
    history_from: Millis,
) -> Vec<Crossing> {
    let mut out = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        let window_ms = u64::from(rule.window_s.max(1)) * 1000;
        let since = now.0.saturating_sub(window_ms);
        let mut counts: HashMap<IpNet, Counts> = HashMap::new();
        for e in events.iter().filter(|e| e.at.0 > since && e.at <= now) {
            let c = counts.entry(rule.prefix_of(e.client)).or_default();
            match e.kind {
                EventKind::Query { qtype } => {
                    c.queries += 1;
                    if rule.qtype_rate.is_some_and(|(t, _)| t == qtype) {
                        c.qtype += 1;
                    }
                }
                EventKind::Answer { rcode, bytes } => {
                    c.answers += 1;
                    c.bytes += u64::from(bytes);
                    match rcode {
                        RCODE_NXDOMAIN => c.nxdomain += 1,
                        RCODE_SERVFAIL => c.servfail += 1,
                        _ => {}
                    }
                }
            }
        }
        let covered_ms = now.0.saturating_sub(since.max(history_from.0)).max(1000);
        #[allow(clippy::cast_precision_loss)]
        let secs = covered_ms as f64 / 1000.0;
        for (prefix, c) in counts {
            if let Some(reason) = crossed(rule, &c, secs) {
                out.push(Crossing {
                    prefix,
                    rule: ri,
                    reason,
                });
            }
        }
    }
    out.sort_by_key(|c| (c.rule, c.prefix));
    out
}

/// The first threshold of `rule` that `c` crosses, as words.
#[allow(clippy::cast_precision_loss)]
fn crossed(rule: &DynRule, c: &Counts, secs: f64) -> Option<String> {
    let rate = |n: u64| n as f64 / secs;
    let over = |what: &str, value: f64, limit: Option<f64>| {
        limit
            .filter(|&l| value > l)
            .map(|l| format!("{what} {value:.1}/s over {l}/s"))
    };
    over("queries", rate(c.queries), rule.qps)
        .or_else(|| over("nxdomain", rate(c.nxdomain), rule.nxdomain_rate))
        .or_else(|| over("servfail", rate(c.servfail), rule.servfail_rate))
        .or_else(|| over("qtype", rate(c.qtype), rule.qtype_rate.map(|(_, r)| r)))
        .or_else(|| over("answer bytes", rate(c.bytes), rule.bytes_rate))
        .or_else(|| {
            let ratio = rule.nxdomain_ratio?;
            if c.answers < u64::from(rule.min_answers.max(1)) {
                return None;
            }
            let share = c.nxdomain as f64 / c.answers as f64;
            (share > ratio).then(|| format!("nxdomain share {share:.2} over {ratio}"))
        })
}

/// A block in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The blocked prefix.
    pub prefix: IpNet,
    /// The rule that set it.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// What its queries get.
    pub action: BlockAction,
    /// When it was set.
    pub since: Millis,
    /// When it ends.
    pub until: Millis,
}

/// The blocks in force, looked up per query.
#[derive(Debug, Clone, Default)]
pub struct BlockTable {
    blocks: HashMap<IpNet, Block>,
    /// Prefix lengths in use, longest first (a lookup tries each).
    lengths_v4: BTreeSet<std::cmp::Reverse<u8>>,
    lengths_v6: BTreeSet<std::cmp::Reverse<u8>>,
}

impl BlockTable {
    /// No block.
    pub fn new() -> Self {
        Self::default()
    }

    /// The block covering `ip`, the most specific first.
    pub fn lookup(&self, ip: IpAddr) -> Option<&Block> {
        if self.blocks.is_empty() {
            return None;
        }
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            other => other,
        };
        let lengths = if ip.is_ipv4() {
            &self.lengths_v4
        } else {
            &self.lengths_v6
        };
        lengths.iter().find_map(|&std::cmp::Reverse(len)| {
            let net = IpNet::new(ip, len).ok()?.trunc();
            self.blocks.get(&net)
        })
    }

    /// Sets or extends the block of `c`'s prefix under `rule` at `now`;
    /// true when the prefix was not blocked before.
    pub fn block(&mut self, c: &Crossing, rule: &DynRule, now: Millis) -> bool {
        let until = now.plus(u64::from(rule.block_s) * 1000);
        if let Some(b) = self.blocks.get_mut(&c.prefix) {
            b.until = b.until.max(until);
            return false;
        }
        self.blocks.insert(
            c.prefix,
            Block {
                prefix: c.prefix,
                rule: rule.name.clone(),
                reason: c.reason.clone(),
                action: rule.action,
                since: now,
                until,
            },
        );
        self.index();
        true
    }

    /// Removes the blocks that ended by `now`, and returns them.
    pub fn expire(&mut self, now: Millis) -> Vec<Block> {
        let ended: Vec<IpNet> = self
            .blocks
            .values()
            .filter(|b| b.until <= now)
            .map(|b| b.prefix)
            .collect();
        let gone: Vec<Block> = ended.iter().filter_map(|p| self.blocks.remove(p)).collect();
        if !gone.is_empty() {
            self.index();
        }
        gone
    }

    /// The block of exactly `prefix`.
    pub fn lookup_exact(&self, prefix: IpNet) -> Option<&Block> {
        self.blocks.get(&prefix.trunc())
    }

    /// Lifts the block of exactly `prefix` (an operator's decision).
    pub fn lift(&mut self, prefix: IpNet) -> Option<Block> {
        let b = self.blocks.remove(&prefix.trunc())?;
        self.index();
        Some(b)
    }

    /// The blocks, by prefix.
    pub fn blocks(&self) -> Vec<&Block> {
        let mut v: Vec<&Block> = self.blocks.values().collect();
        v.sort_by_key(|b| b.prefix);
        v
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is in force.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    fn index(&mut self) {
        self.lengths_v4.clear();
        self.lengths_v6.clear();
        for p in self.blocks.keys() {
            let set = match p {
                IpNet::V4(_) => &mut self.lengths_v4,
                IpNet::V6(_) => &mut self.lengths_v6,
            };
            set.insert(std::cmp::Reverse(p.prefix_len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> DynRule {
        DynRule {
            name: "r".into(),
            window_s: 10,
            prefix_v4: 32,
            prefix_v6: 64,
            qps: None,
            nxdomain_rate: None,
            servfail_rate: None,
            nxdomain_ratio: None,
            min_answers: 10,
            qtype_rate: None,
            bytes_rate: None,
            block_s: 60,
            action: BlockAction::Drop,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `n` events of `kind` from `client`, spread evenly over the 10 s
    /// before `now`.
    fn spread(client: &str, kind: EventKind, n: u64, now: u64) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                at: Millis(now - 9_999 + i * 9_999 / n.max(1)),
                client: ip(client),
                kind,
            })
            .collect()
    }

    const Q: EventKind = EventKind::Query { qtype: 1 };
    const NX: EventKind = EventKind::Answer {
        rcode: RCODE_NXDOMAIN,
        bytes: 100,
    };
    const OK: EventKind = EventKind::Answer {
        rcode: 0,
        bytes: 100,
    };

    #[test]
    fn a_prefix_over_a_rate_crosses_and_one_under_does_not() {
        let r = DynRule {
            qps: Some(100.0),
            ..rule()
        };
        let mut events = spread("192.0.2.1", Q, 1_500, 20_000);
        events.extend(spread("192.0.2.2", Q, 900, 20_000));
        let c = evaluate(&[r], &events, Millis(20_000), Millis(0));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].prefix, "192.0.2.1/32".parse::<IpNet>().unwrap());
        assert!(
            c[0].reason.starts_with("queries 150.0/s over 100/s"),
            "{}",
            c[0].reason
        );
    }

    #[test]
    fn rcode_rates_ratios_types_and_bytes() {
        let events: Vec<Event> = [
            spread("10.0.0.1", NX, 600, 20_000),
            spread("10.0.0.2", OK, 600, 20_000),
            spread("10.0.0.3", NX, 30, 20_000),
            spread("10.0.0.3", OK, 10, 20_000),
            spread("10.0.0.4", EventKind::Query { qtype: 255 }, 200, 20_000),
            spread(
                "10.0.0.5",
                EventKind::Answer {
                    rcode: 0,
                    bytes: 4_000,
                },
                300,
                20_000,
            ),
        ]
        .concat();
        let rules = [
            DynRule {
                name: "nx-rate".into(),
                nxdomain_rate: Some(50.0),
                ..rule()
            },
            DynRule {
                name: "nx-share".into(),
                nxdomain_ratio: Some(0.5),
                min_answers: 20,
                ..rule()
            },
            DynRule {
                name: "any".into(),
                qtype_rate: Some((255, 10.0)),
                ..rule()
            },
            DynRule {
                name: "bytes".into(),
                bytes_rate: Some(100_000.0),
                ..rule()
            },
        ];
        let got: Vec<(usize, String)> = evaluate(&rules, &events, Millis(20_000), Millis(0))
            .into_iter()
            .map(|c| (c.rule, c.prefix.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "10.0.0.1/32".to_string()),
                (1, "10.0.0.1/32".to_string()),
                (1, "10.0.0.3/32".to_string()),
                (2, "10.0.0.4/32".to_string()),
                (3, "10.0.0.5/32".to_string()),
            ]
        );
    }

    #[test]
    fn prefixes_aggregate_clients_and_old_events_fall_out_of_the_window() {
        let r = DynRule {
            qps: Some(100.0),
            prefix_v4: 24,
            prefix_v6: 48,
            ..rule()
        };
        // 600 from each of two hosts of one /24: 120/s together.
        let mut events = spread("198.51.100.1", Q, 600, 20_000);
        events.extend(spread("198.51.100.2", Q, 600, 20_000));
        events.extend(spread("2001:db8:1:2::1", Q, 700, 20_000));
        events.extend(spread("2001:db8:1:3::1", Q, 700, 20_000));
        let c = evaluate(std::slice::from_ref(&r), &events, Millis(20_000), Millis(0));
        let prefixes: Vec<String> = c.iter().map(|c| c.prefix.to_string()).collect();
        assert_eq!(prefixes, ["198.51.100.0/24", "2001:db8:1::/48"]);
        // Ten seconds later the same events are out of the window.
        assert!(evaluate(&[r], &events, Millis(30_001), Millis(0)).is_empty());
    }

    #[test]
    fn rates_are_taken_over_the_history_the_events_cover() {
        let r = DynRule {
            qps: Some(100.0),
            ..rule()
        };
        // 600 queries in the last 4 s: 60/s over a 10 s window, but the
        // buffer only reaches 4 s back, so 150/s.
        let events: Vec<Event> = (0..600u64)
            .map(|i| Event {
                at: Millis(16_001 + i * 6),
                client: ip("192.0.2.1"),
                kind: Q,
            })
            .collect();
        assert!(evaluate(std::slice::from_ref(&r), &events, Millis(20_000), Millis(0)).is_empty());
        assert_eq!(
            evaluate(&[r], &events, Millis(20_000), Millis(16_000)).len(),
            1
        );
    }

    #[test]
    fn the_table_blocks_extends_expires_and_lifts() {
        let r = DynRule {
            block_s: 5,
            ..rule()
        };
        let mut t = BlockTable::new();
        let c = |p: &str| Crossing {
            prefix: p.parse().unwrap(),
            rule: 0,
            reason: "test".into(),
        };
        assert!(t.block(&c("192.0.2.0/24"), &r, Millis(1_000)));
        assert!(t.block(&c("2001:db8::/64"), &r, Millis(1_000)));
        assert_eq!(
            t.lookup(ip("192.0.2.77")).map(|b| b.until),
            Some(Millis(6_000))
        );
        assert!(t.lookup(ip("::ffff:192.0.2.1")).is_some());
        assert!(t.lookup(ip("2001:db8::9")).is_some());
        assert!(t.lookup(ip("192.0.3.1")).is_none());
        // Crossing again extends it.
        assert!(!t.block(&c("192.0.2.0/24"), &r, Millis(4_000)));
        assert_eq!(t.expire(Millis(6_000)).len(), 1);
        assert!(t.lookup(ip("2001:db8::9")).is_none());
        assert!(t.lookup(ip("192.0.2.1")).is_some());
        let lifted = t.lift("192.0.2.0/24".parse().unwrap()).unwrap();
        assert_eq!(lifted.until, Millis(9_000));
        assert!(t.is_empty() && t.lookup(ip("192.0.2.1")).is_none());
        assert!(t.lift("10.0.0.0/8".parse().unwrap()).is_none());
    }

    #[test]
    fn the_most_specific_block_answers_a_lookup() {
        let mut t = BlockTable::new();
        let wide = DynRule {
            name: "wide".into(),
            ..rule()
        };
        let narrow = DynRule {
            name: "narrow".into(),
            ..rule()
        };
        let c = |p: &str| Crossing {
            prefix: p.parse().unwrap(),
            rule: 0,
            reason: String::new(),
        };
        t.block(&c("10.0.0.0/8"), &wide, Millis(0));
        t.block(&c("10.1.2.3/32"), &narrow, Millis(0));
        assert_eq!(
            t.lookup(ip("10.1.2.3")).map(|b| b.rule.as_str()),
            Some("narrow")
        );
        assert_eq!(
            t.lookup(ip("10.9.9.9")).map(|b| b.rule.as_str()),
            Some("wide")
        );
    }
}
