//! The rules step: the configuration's `[[rule]]`s, compiled once per
//! configuration ([`dnsha_core::rules::RuleSet`]), with the pools they
//! route to resolved and a match counter per rule.
//!
//! [`super::admit`] asks [`Rules::decide`] for each valid query; what a
//! rule says becomes the query's [`super::Admitted`] target, or an answer
//! made at once (REFUSED, NXDOMAIN, TC=1, a fixed answer), or a drop.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dnsha_core::rules::{Action, Decision, Query, Rule, RuleSet};

use super::Target;

/// The rules of a configuration.
#[derive(Debug, Default)]
pub struct Rules {
    set: RuleSet,
    /// Per rule: the target of a `pool` action.
    targets: Vec<Option<Arc<Target>>>,
    /// Per rule: queries it matched.
    matches: Vec<AtomicU64>,
}

/// What the rules say about one query.
#[derive(Debug)]
pub struct Ruling<'r> {
    /// The decision (terminal action, `no_cache`, `log`).
    pub decision: Decision<'r>,
    /// The pool of a `pool` action.
    pub target: Option<&'r Arc<Target>>,
    /// The name of the rule of the terminal action.
    pub rule: Option<&'r str>,
}

impl Rules {
    /// `rules`, with `target_of` giving each pool named by a `pool` action
    /// (a name it does not know leaves the query on its listener's pool:
    /// the configuration check has refused such a name already). A rule of
    /// `previous` with the same name keeps its match count.
    pub fn new(
        rules: Vec<Rule>,
        target_of: impl Fn(&str) -> Option<Arc<Target>>,
        previous: Option<&Self>,
    ) -> Self {
        let targets = rules
            .iter()
            .map(|r| match &r.action {
                Action::Pool(name) => target_of(name),
                _ => None,
            })
            .collect();
        let matches = rules
            .iter()
            .map(|r| AtomicU64::new(previous.map_or(0, |p| p.count_of(&r.name))))
            .collect();
        Self {
            set: RuleSet::new(rules),
            targets,
            matches,
        }
    }

    /// Whether there is no rule (the step costs nothing then).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// What the rules say about `q`; every rule that matched is counted.
    pub fn decide<'r>(&'r self, q: &Query<'_>) -> Ruling<'r> {
        let decision = self.set.evaluate(q, |i| {
            if let Some(c) = self.matches.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        let rule = decision.rule;
        Ruling {
            decision,
            target: rule
                .and_then(|i| self.targets.get(i))
                .and_then(Option::as_ref),
            rule: rule
                .and_then(|i| self.set.rules().get(i))
                .map(|r| r.name.as_str()),
        }
    }

    /// The pools the rules route to (once per rule naming one).
    pub fn targets(&self) -> impl Iterator<Item = &Arc<Target>> {
        self.targets.iter().flatten()
    }

    /// Each rule's name and match count, in order.
    pub fn counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.set
            .rules()
            .iter()
            .zip(&self.matches)
            .map(|(r, c)| (r.name.as_str(), c.load(Ordering::Relaxed)))
    }

    fn count_of(&self, name: &str) -> u64 {
        self.counts()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| c)
    }
}

/// The rules' view of a validated query: `msg` as received (its question
/// name is read in place).
pub(super) fn query_view<'a>(
    msg: &'a [u8],
    info: &crate::wire::dns::QueryInfo,
    client: IpAddr,
    listener: &'a str,
) -> Query<'a> {
    Query {
        qname: crate::wire::dns::question_name(msg).unwrap_or(&[0]),
        qtype: u16::from(info.question.query_type()),
        client,
        listener,
        edns: info.edns,
        // Only QUERY gets this far: other opcodes are answered NOTIMP by
        // validation.
        opcode: 0,
    }
}
