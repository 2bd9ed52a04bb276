//! Sets of domain names, matched against a query's name as exact names or
//! as suffixes (a zone and everything under it).
//!
//! Names are kept in DNS wire format, lowercased (`\x03www\x07example\x00`),
//! in a hash set. A query name, in wire format as it arrives (the question
//! of a validated query has no compression pointer), is lowercased once
//! into a buffer on the stack; each of its label boundaries is then one
//! lookup of the rest of the name. A five-label name costs six lookups,
//! whatever the size of the set, and no allocation.

use std::collections::{HashMap, HashSet};

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::BinEncodable;

use crate::error::Error;

/// Longest name in wire format (RFC 1035 §3.1).
pub const MAX_NAME: usize = 255;

/// A set of names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet {
    names: HashSet<Box<[u8]>>,
}

impl NameSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name`, in presentation format (`example.com`, `Example.COM.`,
    /// `.` for the root; escapes as in zone files).
    pub fn insert(&mut self, name: &str) -> Result<(), Error> {
        let wire = wire_name(name)?;
        self.names.insert(wire.into_boxed_slice());
        Ok(())
    }

    /// Names in the set.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether `qname` (wire format, any case) is in the set.
    pub fn contains(&self, qname: &[u8]) -> bool {
        let mut buf = [0u8; MAX_NAME];
        lowered(qname, &mut buf).is_some_and(|n| self.names.contains(n))
    }

    /// Whether `qname` (wire format, any case) is a name of the set or
    /// under one.
    pub fn contains_suffix_of(&self, qname: &[u8]) -> bool {
        let mut buf = [0u8; MAX_NAME];
        lowered(qname, &mut buf).is_some_and(|name| suffixes(name).any(|s| self.names.contains(s)))
    }
}

/// Names mapped to the first of several rules that hold them: a run of
/// rules that each match names as suffixes, looked up at once.
#[derive(Debug, Clone, Default)]
pub struct SuffixIndex {
    first: HashMap<Box<[u8]>, u32>,
}

impl SuffixIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that rule `rule` matches the names of `set` and below. A
    /// name already held by an earlier rule keeps that rule.
    pub fn add(&mut self, set: &NameSet, rule: u32) {
        for name in &set.names {
            self.first
                .entry(name.clone())
                .and_modify(|r| *r = (*r).min(rule))
                .or_insert(rule);
        }
    }

    /// The first rule whose names hold `qname` (wire format, any case) or
    /// one of its parents.
    pub fn first_match(&self, qname: &[u8]) -> Option<u32> {
        let mut buf = [0u8; MAX_NAME];
        let name = lowered(qname, &mut buf)?;
        suffixes(name)
            .filter_map(|s| self.first.get(s).copied())
            .min()
    }
}

/// `name` (whole wire format) and each of its parents down to the root:
/// `\x01a\x01b\x00`, `\x01b\x00`, `\x00`.
fn suffixes(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = Some(0usize);
    std::iter::from_fn(move || {
        let rest = name.get(at?..)?;
        at = match rest.first() {
            Some(&len) if len > 0 => at.map(|a| a + 1 + usize::from(len)),
            _ => None,
        };
        Some(rest)
    })
}

/// `name` (presentation format) in lowercase wire format.
pub fn wire_name(name: &str) -> Result<Vec<u8>, Error> {
    let bad = |source| Error::BadName {
        name: name.to_string(),
        source,
    };
    let mut parsed = Name::from_ascii(name).map_err(bad)?.to_lowercase();
    parsed.set_fqdn(true);
    parsed.to_bytes().map_err(bad)
}

/// `qname` lowercased into `buf`, up to and including its root label; `None`
/// when it is not a whole, uncompressed name.
fn lowered<'a>(qname: &[u8], buf: &'a mut [u8; MAX_NAME]) -> Option<&'a [u8]> {
    let mut at = 0;
    loop {
        let len = usize::from(*qname.get(at)?);
        if len > 63 {
            return None;
        }
        let end = at + 1 + len;
        if end > MAX_NAME {
            return None;
        }
        let label = qname.get(at..end)?;
        let out = buf.get_mut(at..end)?;
        for (o, &b) in out.iter_mut().zip(label) {
            *o = b.to_ascii_lowercase();
        }
        if len == 0 {
            return buf.get(..end);
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> NameSet {
        let mut s = NameSet::new();
        for n in names {
            s.insert(n).unwrap();
        }
        s
    }

    fn wire(name: &str) -> Vec<u8> {
        let mut w = Vec::new();
        for label in name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            w.push(u8::try_from(label.len()).unwrap());
            w.extend_from_slice(label.as_bytes());
        }
        w.push(0);
        w
    }

    #[test]
    fn suffixes_match_the_zone_and_below_in_any_case() {
        let s = set(&["corp.example", "10.in-addr.arpa."]);
        assert!(s.contains_suffix_of(&wire("corp.example")));
        assert!(s.contains_suffix_of(&wire("WWW.Corp.Example")));
        assert!(s.contains_suffix_of(&wire("4.3.2.10.in-addr.arpa")));
        assert!(!s.contains_suffix_of(&wire("notcorp.example")));
        assert!(!s.contains_suffix_of(&wire("example")));
        assert!(!s.contains_suffix_of(&wire("corp.example.org")));
    }

    #[test]
    fn exact_names_match_only_themselves() {
        let s = set(&["health.dnsha.test"]);
        assert!(s.contains(&wire("HEALTH.dnsha.test")));
        assert!(!s.contains(&wire("x.health.dnsha.test")));
        assert!(!s.contains(&wire("dnsha.test")));
    }

    #[test]
    fn the_root_is_a_suffix_of_every_name() {
        let s = set(&["."]);
        assert!(s.contains_suffix_of(&wire("anything.at.all")));
        assert!(s.contains_suffix_of(&[0]));
    }

    #[test]
    fn bad_names_are_refused_with_the_name() {
        let mut s = NameSet::new();
        let long = "a".repeat(64);
        let e = s.insert(&format!("{long}.example")).unwrap_err();
        assert!(e.to_string().contains(&long), "{e}");
        assert!(s.insert("a..b").is_err());
        assert!(s.is_empty());
    }

    #[test]
    fn broken_query_names_match_nothing() {
        let s = set(&["."]);
        for bad in [&b""[..], b"\x03ww", b"\xc0\x0c", b"\x40aaaa"] {
            assert!(!s.contains_suffix_of(bad), "{bad:?}");
            assert!(!s.contains(bad), "{bad:?}");
        }
        // Longer than 255 bytes in all.
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert!(!s.contains_suffix_of(&long));
    }

    #[test]
    fn an_index_finds_the_first_rule_holding_any_parent_of_the_name() {
        let mut idx = SuffixIndex::new();
        idx.add(&set(&["www.corp.example"]), 7);
        idx.add(&set(&["corp.example", "other.test"]), 3);
        idx.add(&set(&["example"]), 5);
        idx.add(&set(&["corp.example"]), 9);
        assert_eq!(idx.first_match(&wire("a.WWW.corp.example")), Some(3));
        assert_eq!(idx.first_match(&wire("www.example")), Some(5));
        assert_eq!(idx.first_match(&wire("x.other.test")), Some(3));
        assert_eq!(idx.first_match(&wire("example.org")), None);
        assert_eq!(idx.first_match(b"\x03ww"), None);
    }

    #[test]
    fn ten_thousand_suffixes_each_match_their_names() {
        let names: Vec<String> = (0..10_000).map(|i| format!("zone{i}.example")).collect();
        let mut s = NameSet::new();
        for n in &names {
            s.insert(n).unwrap();
        }
        assert_eq!(s.len(), 10_000);
        for (i, n) in names.iter().enumerate() {
            assert!(s.contains_suffix_of(&wire(&format!("host.{n}"))), "{i}");
        }
        assert!(!s.contains_suffix_of(&wire("host.zone10000.example")));
    }
}
