//! Query rules: ordered matches and actions, compiled once per
//! configuration and evaluated per query without allocating.
//!
//! A [`RuleSet`] holds [`Rule`]s in order. Each has a [`Match`] (names as
//! suffixes or exact, query types, client networks, listener, EDNS and its
//! DO bit, opcode; `not`, `all`, `any`) and an [`Action`]. Evaluation walks
//! the rules in order: a *terminal* action (route to a pool, refuse,
//! NXDOMAIN, drop, truncate, a fixed answer) ends it; `no_cache` and `log`
//! are noted and evaluation goes on, as dnsdist's non-terminal actions do.
//!
//! ```
//! use std::net::IpAddr;
//! use dnsha_core::rules::{Action, Match, NameSet, Query, Rule, RuleSet};
//!
//! let mut internal = NameSet::new();
//! internal.insert("corp.example").unwrap();
//! let rules = RuleSet::new(vec![
//!     Rule::new("internal", Match::Suffix(internal), Action::Pool("auth".into())),
//!     Rule::new("rest", Match::Always, Action::Pool("forwarders".into())),
//! ]);
//! let q = Query {
//!     qname: b"\x03www\x04corp\x07example\x00",
//!     qtype: 1,
//!     client: "10.1.2.3".parse::<IpAddr>().unwrap(),
//!     listener: "udp",
//!     edns: None,
//!     opcode: 0,
//! };
//! let d = rules.evaluate(&q, |_| {});
//! assert_eq!(d.action, Some(&Action::Pool("auth".into())));
//! assert_eq!(d.rule, Some(0));
//! ```

pub mod names;
pub mod nets;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use names::{NameSet, SuffixIndex};
pub use nets::NetSet;

/// What rules look at in a query.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The question's name, in wire format as received (any case).
    pub qname: &'a [u8],
    /// The question's type.
    pub qtype: u16,
    /// The client's address.
    pub client: IpAddr,
    /// The name of the listener the query came in on.
    pub listener: &'a str,
    /// The query's EDNS record, if it has one.
    pub edns: Option<Edns>,
    /// The header's opcode (0 QUERY, 4 NOTIFY, 5 UPDATE...).
    pub opcode: u8,
}

/// What rules look at in a query's EDNS (OPT) record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The DNSSEC OK bit.
    pub dnssec_ok: bool,
}

/// A condition on a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Every query.
    Always,
    /// The name is one of these or under one (`qname_suffix`).
    Suffix(NameSet),
    /// The name is exactly one of these (`qname`).
    Name(NameSet),
    /// The type is one of these (`qtype`).
    Qtype(Vec<u16>),
    /// The client is in one of these networks (`client`).
    Client(NetSet),
    /// The query came in on one of these listeners (`listener`).
    Listener(Vec<String>),
    /// The query has an EDNS record (true) or has none (false).
    Edns(bool),
    /// The query has EDNS with the DO bit set (true), or not (false).
    DnssecOk(bool),
    /// The opcode is one of these.
    Opcode(Vec<u8>),
    /// The inner match fails.
    Not(Box<Self>),
    /// Every inner match holds (true when empty).
    All(Vec<Self>),
    /// At least one inner match holds (false when empty).
    Any(Vec<Self>),
}

impl Match {
    /// Whether `q` meets the condition.
    pub fn matches(&self, q: &Query<'_>) -> bool {
        match self {
            Self::Always => true,
            Self::Suffix(s) => s.contains_suffix_of(q.qname),
            Self::Name(s) => s.contains(q.qname),
            Self::Qtype(t) => t.contains(&q.qtype),
            Self::Client(n) => n.contains(q.client),
            Self::Listener(l) => l.iter().any(|l| l == q.listener),
            Self::Edns(present) => q.edns.is_some() == *present,
            Self::DnssecOk(set) => q.edns.is_some_and(|e| e.dnssec_ok) == *set,
            Self::Opcode(o) => o.contains(&q.opcode),
            Self::Not(m) => !m.matches(q),
            Self::All(ms) => ms.iter().all(|m| m.matches(q)),
            Self::Any(ms) => ms.iter().any(|m| m.matches(q)),
        }
    }

    /// Whether every query meets it, as far as can be told without a
    /// query: a rule after a terminal catch-all is never reached.
    pub fn is_catch_all(&self) -> bool {
        match self {
            Self::Always => true,
            Self::All(ms) => ms.iter().all(Self::is_catch_all),
            Self::Any(ms) => ms.iter().any(Self::is_catch_all),
            // The root is a suffix of every name.
            Self::Suffix(s) => s.contains(&[0]),
            Self::Client(n) => n.is_everything(),
            _ => false,
        }
    }
}

/// A record of a fixed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixedRecord {
    /// An IPv4 address, answered to A queries.
    A(Ipv4Addr),
    /// An IPv6 address, answered to AAAA queries.
    Aaaa(Ipv6Addr),
    /// A text, answered to TXT queries.
    Txt(String),
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the query to this pool (terminal).
    Pool(String),
    /// Answer REFUSED (terminal).
    Refuse,
    /// Answer NXDOMAIN (terminal).
    Nxdomain,
    /// Answer nothing (terminal; counted).
    Drop,
    /// Answer empty with TC=1, so the client asks again over TCP (terminal;
    /// over streams, where there is no truncation, the query goes on).
    Truncate,
    /// Answer these records, with this TTL, to a query of their type; an
    /// empty answer (NOERROR) to other types (terminal).
    Answer {
        /// The records.
        records: Vec<FixedRecord>,
        /// Their TTL in seconds.
        ttl: u32,
    },
    /// Neither look the answer up in the cache nor store it (goes on).
    NoCache,
    /// Log the query (goes on).
    Log,
}

impl Action {
    /// Whether evaluation ends at this action.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::NoCache | Self::Log)
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name, for logs and metrics.
    pub name: String,
    /// Its condition.
    pub matcher: Match,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// A rule named `name`.
    pub fn new(name: impl Into<String>, matcher: Match, action: Action) -> Self {
        Self {
            name: name.into(),
            matcher,
            action,
        }
    }
}

/// What the rules decided for a query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision<'r> {
    /// The terminal action, if a rule with one matched.
    pub action: Option<&'r Action>,
    /// The index of the rule of that action.
    pub rule: Option<usize>,
    /// A `no_cache` rule matched first.
    pub no_cache: bool,
    /// A `log` rule matched first.
    pub log: bool,
}

/// Rules in order.
///
/// Consecutive rules that match only names as suffixes and end evaluation
/// (the routing tables of split-horizon setups: thousands of zones, each to
/// a pool) are compiled into one [`SuffixIndex`], so a query costs one
/// lookup per label of its name for the whole run instead of one test per
/// rule.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    /// One rule, tested on its own.
    One(usize),
    /// A run of terminal suffix rules.
    Suffixes(SuffixIndex),
}

impl RuleSet {
    /// `rules`, evaluated in this order.
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut segments = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let Match::Suffix(names) = &rule.matcher else {
                segments.push(Segment::One(i));
                continue;
            };
            let index = u32::try_from(i).ok();
            match (index, segments.last_mut()) {
                (Some(index), Some(Segment::Suffixes(run))) if rule.action.is_terminal() => {
                    run.add(names, index);
                }
                (Some(index), _) if rule.action.is_terminal() => {
                    let mut run = SuffixIndex::new();
                    run.add(names, index);
                    segments.push(Segment::Suffixes(run));
                }
                _ => segments.push(Segment::One(i)),
            }
        }
        Self { rules, segments }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluates the rules for `q` in order; `matched` is told the index of
    /// every rule that matched (for per-rule counters).
    pub fn evaluate(&self, q: &Query<'_>, mut matched: impl FnMut(usize)) -> Decision<'_> {
        let mut d = Decision::default();
        for segment in &self.segments {
            let i = match segment {
                Segment::One(i) => *i,
                Segment::Suffixes(run) => match run.first_match(q.qname) {
                    Some(i) => i as usize,
                    None => continue,
                },
            };
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            if matches!(segment, Segment::One(_)) && !rule.matcher.matches(q) {
                continue;
            }
            matched(i);
            match &rule.action {
                Action::NoCache => d.no_cache = true,
                Action::Log => d.log = true,
                terminal => {
                    d.action = Some(terminal);
                    d.rule = Some(i);
                    return d;
                }
            }
        }
        d
    }

    /// Indices of the rules no query can reach: those after a terminal rule
    /// that matches every query.
    pub fn unreachable(&self) -> Vec<usize> {
        let first_catch_all = self
            .rules
            .iter()
            .position(|r| r.action.is_terminal() && r.matcher.is_catch_all());
        first_catch_all.map_or_else(Vec::new, |i| ((i + 1)..self.rules.len()).collect())
    }
}

#[cfg(test)]
mod tests;
