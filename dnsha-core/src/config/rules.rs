//! `[[rule]]` sections: read key by key with locations, then validated
//! into [`Rule`]s (names, networks, query types, pools and listeners
//! checked, unreachable rules reported).
//!
//! ```toml
//! [[rule]]
//! name = "internal"
//! qname_suffix = ["corp.example", "10.in-addr.arpa"]
//! pool = "auth"
//!
//! [[rule]]
//! name = "no-any"
//! qtype = ["ANY"]
//! not = { client = ["10.0.0.0/8"] }
//! action = "refuse"
//! ```
//!
//! The match keys of one table must all hold (`qname_suffix`, `qname`,
//! `qtype`, `client`, `listener`, `edns`, `dnssec_ok`, `opcode`, and the
//! combinators `not` (a table), `all` and `any` (lists of tables) of the
//! same keys); a rule without any matches every query. Its action is one of
//! `pool = "NAME"`, `action = "refuse" | "nxdomain" | "drop" | "truncate" |
//! "no_cache" | "log"` or `answer = ["192.0.2.1", "2001:db8::1", "TXT text"]`
//! (with `answer_ttl`, 60 s by default).

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use super::read::{Errors, Table};
use super::Validator;
use crate::rules::{nets, Action, FixedRecord, Match, NameSet, NetSet, Rule, RuleSet};

/// TTL of a fixed `answer` unless `answer_ttl` says otherwise.
pub(super) const DEFAULT_ANSWER_TTL: u32 = 60;

/// The words `action` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawAction {
    Refuse,
    Nxdomain,
    Drop,
    Truncate,
    NoCache,
    Log,
}

/// The match keys of a rule or of a combinator's table.
#[derive(Debug, Default)]
pub(super) struct RawMatch {
    qname_suffix: Option<Spanned<Vec<Spanned<String>>>>,
    qname: Option<Spanned<Vec<Spanned<String>>>>,
    qtype: Option<Vec<Spanned<String>>>,
    client: Option<Vec<Spanned<String>>>,
    listener: Option<Vec<Spanned<String>>>,
    edns: Option<Spanned<bool>>,
    dnssec_ok: Option<Spanned<bool>>,
    opcode: Option<Vec<Spanned<String>>>,
    not: Option<Box<Self>>,
    all: Option<Vec<Self>>,
    any: Option<Vec<Self>>,
    /// Where `any` is written.
    any_span: Range<usize>,
}

/// A `[[rule]]` as written.
#[derive(Debug)]
pub(super) struct RawRule {
    name: Option<Spanned<String>>,
    span: Range<usize>,
    matcher: RawMatch,
    pool: Option<Spanned<String>>,
    action: Option<Spanned<RawAction>>,
    /// `action` is written (a wrong word is reported by the reader).
    action_written: bool,
    answer: Option<Vec<Spanned<String>>>,
    answer_ttl: Option<Spanned<u64>>,
}

/// Reads one `[[rule]]` table.
pub(super) fn rule(mut t: Table<'_>, errs: &mut Errors) -> RawRule {
    let name = t.required(errs, "name");
    let pool = t.string(errs, "pool");
    let action_written = t.has("action");
    let action = t.choice::<RawAction>(errs, "action");
    let answer = t.strings(errs, "answer");
    let answer_ttl = t.u64(errs, "answer_ttl");
    let matcher = match_keys(&mut t, errs);
    let span = t.span();
    t.finish(errs);
    RawRule {
        name,
        span,
        matcher,
        pool,
        action,
        action_written,
        answer,
        answer_ttl,
    }
}

/// Reads the match keys of `t` (the caller finishes `t`).
fn match_keys(t: &mut Table<'_>, errs: &mut Errors) -> RawMatch {
    let m = RawMatch {
        qname_suffix: t.spanned_strings(errs, "qname_suffix"),
        qname: t.spanned_strings(errs, "qname"),
        qtype: t.strings(errs, "qtype"),
        client: t.strings(errs, "client"),
        listener: t.strings(errs, "listener"),
        edns: t.bool(errs, "edns"),
        dnssec_ok: t.bool(errs, "dnssec_ok"),
        opcode: t.strings(errs, "opcode"),
        not: t.table(errs, "not").map(|mut inner| {
            let m = match_keys(&mut inner, errs);
            inner.finish(errs);
            Box::new(m)
        }),
        all: nested(t, errs, "all"),
        any: nested(t, errs, "any"),
        any_span: t.key_span("any"),
    };
    for key in ["not", "all", "any"] {
        t.key_not_heading(key);
    }
    m
}

/// `all` or `any`: `None` when not written (read all the same, so the
/// key is known to the table).
fn nested(t: &mut Table<'_>, errs: &mut Errors, key: &'static str) -> Option<Vec<RawMatch>> {
    let written = t.has(key);
    let list = t
        .tables(errs, key)
        .into_iter()
        .map(|mut inner| {
            let m = match_keys(&mut inner, errs);
            inner.finish(errs);
            m
        })
        .collect();
    written.then_some(list)
}

/// What rules may name: the pools and listeners of the configuration.
pub(super) struct Names<'a> {
    pub(super) pools: &'a HashSet<&'a str>,
    pub(super) listeners: &'a HashSet<&'a str>,
}

impl Validator {
    /// The rules, in order; errors for bad values, unknown pools and
    /// listeners, and rules no query can reach.
    pub(super) fn rules(&mut self, raw: &[RawRule], names: &Names<'_>) -> Vec<Rule> {
        let mut seen = HashSet::new();
        let mut rules = Vec::new();
        let mut spans = Vec::new();
        for r in raw {
            let name = match &r.name {
                Some(n) => self.name("rule", n, &mut seen),
                None => continue,
            };
            let matcher = self.matcher(&r.matcher, names);
            let Some(action) = self.action(r, names) else {
                continue;
            };
            rules.push(Rule::new(name, matcher, action));
            spans.push(
                r.name
                    .as_ref()
                    .map_or_else(|| r.span.clone(), Spanned::span),
            );
        }
        let set = RuleSet::new(rules);
        if let Some(&first) = set.unreachable().first() {
            let catch_all = first.checked_sub(1).and_then(|i| set.rules().get(i));
            for i in set.unreachable() {
                if let (Some(span), Some(c)) = (spans.get(i), catch_all) {
                    self.err(
                        span.clone(),
                        format!(
                            "rule `{}` is never reached: rule `{}` before it matches every query",
                            set.rules().get(i).map_or("", |r| r.name.as_str()),
                            c.name
                        ),
                    );
                }
            }
        }
        set.rules().to_vec()
    }

    fn matcher(&mut self, m: &RawMatch, names: &Names<'_>) -> Match {
        let mut all = Vec::new();
        if let Some(list) = &m.qname_suffix {
            all.push(Match::Suffix(self.name_set("qname_suffix", list)));
        }
        if let Some(list) = &m.qname {
            all.push(Match::Name(self.name_set("qname", list)));
        }
        if let Some(list) = &m.qtype {
            all.push(Match::Qtype(
                list.iter().filter_map(|t| self.qtype(t)).collect(),
            ));
        }
        if let Some(list) = &m.client {
            let nets = list
                .iter()
                .filter_map(|n| match nets::parse_net(n.get_ref()) {
                    Ok(net) => Some(net),
                    Err(e) => {
                        self.err(n.span(), format!("client: {e}"));
                        None
                    }
                })
                .collect::<Vec<_>>();
            all.push(Match::Client(NetSet::new(nets)));
        }
        if let Some(list) = &m.listener {
            for l in list {
                if !names.listeners.contains(l.get_ref().trim()) {
                    self.err(l.span(), format!("unknown listener `{}`", l.get_ref()));
                }
            }
            all.push(Match::Listener(
                list.iter()
                    .map(|l| l.get_ref().trim().to_string())
                    .collect(),
            ));
        }
        if let Some(e) = &m.edns {
            all.push(Match::Edns(*e.get_ref()));
        }
        if let Some(d) = &m.dnssec_ok {
            all.push(Match::DnssecOk(*d.get_ref()));
        }
        if let Some(list) = &m.opcode {
            all.push(Match::Opcode(
                list.iter().filter_map(|o| self.opcode(o)).collect(),
            ));
        }
        if let Some(inner) = &m.not {
            all.push(Match::Not(Box::new(self.matcher(inner, names))));
        }
        if let Some(list) = &m.all {
            all.push(Match::All(
                list.iter().map(|i| self.matcher(i, names)).collect(),
            ));
        }
        if let Some(list) = &m.any {
            if list.is_empty() {
                self.err(m.any_span.clone(), "any = []: matches nothing");
            }
            all.push(Match::Any(
                list.iter().map(|i| self.matcher(i, names)).collect(),
            ));
        }
        match all.len() {
            0 => Match::Always,
            1 => all.pop().unwrap_or(Match::Always),
            _ => Match::All(all),
        }
    }

    fn name_set(&mut self, key: &str, list: &Spanned<Vec<Spanned<String>>>) -> NameSet {
        let mut set = NameSet::new();
        for n in list.get_ref() {
            if let Err(e) = set.insert(n.get_ref().trim()) {
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                self.err(n.span(), format!("{key}: {e}{cause}"));
            }
        }
        if list.get_ref().is_empty() {
            self.err(list.span(), format!("{key} = []: matches nothing"));
        }
        set
    }

    pub(super) fn qtype(&mut self, t: &Spanned<String>) -> Option<u16> {
        let text = t.get_ref().trim();
        let upper = text.to_ascii_uppercase();
        let number = upper
            .strip_prefix("TYPE")
            .and_then(|n| n.parse::<u16>().ok());
        let known = upper
            .parse::<hickory_proto::rr::RecordType>()
            .ok()
            .map(u16::from);
        let v = known.or(number);
        if v.is_none() {
            self.err(
                t.span(),
                format!("qtype: unknown type `{text}` (a name such as A, AAAA, ANY, or TYPE65)"),
            );
        }
        v
    }

    fn opcode(&mut self, o: &Spanned<String>) -> Option<u8> {
        let text = o.get_ref().trim();
        let v = match text.to_ascii_uppercase().as_str() {
            "QUERY" => Some(0),
            "IQUERY" => Some(1),
            "STATUS" => Some(2),
            "NOTIFY" => Some(4),
            "UPDATE" => Some(5),
            "DSO" => Some(6),
            other => other.parse::<u8>().ok().filter(|&n| n < 16),
        };
        if v.is_none() {
            self.err(
                o.span(),
                format!("opcode: unknown opcode `{text}` (QUERY, NOTIFY, UPDATE, IQUERY, STATUS, DSO or 0-15)"),
            );
        }
        v
    }

    fn action(&mut self, r: &RawRule, names: &Names<'_>) -> Option<Action> {
        let given = [r.pool.is_some(), r.action_written, r.answer.is_some()]
            .iter()
            .filter(|&&g| g)
            .count();
        let at = r
            .name
            .as_ref()
            .map_or_else(|| r.span.clone(), Spanned::span);
        if given != 1 {
            self.err(
                at,
                "a rule needs exactly one of `pool`, `action` or `answer`",
            );
            return None;
        }
        if r.answer.is_none() {
            if let Some(ttl) = &r.answer_ttl {
                self.err(ttl.span(), "answer_ttl goes with `answer`");
            }
        }
        if let Some(p) = &r.pool {
            let pool = p.get_ref().trim();
            if !names.pools.contains(pool) {
                self.err(p.span(), format!("unknown pool `{pool}`"));
            }
            return Some(Action::Pool(pool.to_string()));
        }
        if r.action_written {
            let a = r.action.as_ref()?;
            return Some(match a.get_ref() {
                RawAction::Refuse => Action::Refuse,
                RawAction::Nxdomain => Action::Nxdomain,
                RawAction::Drop => Action::Drop,
                RawAction::Truncate => Action::Truncate,
                RawAction::NoCache => Action::NoCache,
                RawAction::Log => Action::Log,
            });
        }
        let list = r.answer.as_deref().unwrap_or_default();
        let records = list
            .iter()
            .filter_map(|rec| self.fixed_record(rec))
            .collect::<Vec<_>>();
        if list.is_empty() {
            self.err(at, "answer = []: give at least one record");
        }
        let ttl = r.answer_ttl.as_ref().map_or(DEFAULT_ANSWER_TTL, |t| {
            u32::try_from(*t.get_ref()).unwrap_or_else(|_| {
                self.err(t.span(), "answer_ttl: at most 4294967295 seconds");
                DEFAULT_ANSWER_TTL
            })
        });
        Some(Action::Answer { records, ttl })
    }

    fn fixed_record(&mut self, rec: &Spanned<String>) -> Option<FixedRecord> {
        let text = rec.get_ref().trim();
        if let Some(txt) = text
            .strip_prefix("TXT ")
            .or_else(|| text.strip_prefix("txt "))
        {
            if txt.len() > 255 {
                self.err(rec.span(), "answer: a TXT text is at most 255 bytes");
                return None;
            }
            return Some(FixedRecord::Txt(txt.to_string()));
        }
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Some(FixedRecord::A(a)),
            Ok(IpAddr::V6(a)) => Some(FixedRecord::Aaaa(a)),
            Err(_) => {
                self.err(
                    rec.span(),
                    format!("answer: `{text}` is neither an address nor \"TXT text\""),
                );
                None
            }
        }
    }
}
