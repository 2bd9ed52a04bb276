//! `[[rule]]`: parsing into rules, and every error at its line and column.

use super::tests::rendered;
use super::*;
use crate::rules::names::wire_name;
use crate::rules::{Action, FixedRecord, Match, Query, RuleSet};

const BASE: &str = "[[listener]]\nname = \"udp\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"fwd\"\n\n\
[[pool]]\nname = \"fwd\"\n[[pool.backend]]\nname = \"f\"\naddress = \"192.0.2.1\"\n\n\
[[pool]]\nname = \"auth\"\n[[pool.backend]]\nname = \"a\"\naddress = \"192.0.2.2\"\n";

/// `BASE` is 17 lines: rules start on line 18.
fn with(rules: &str) -> String {
    format!("{BASE}{rules}")
}

#[test]
fn rules_parse_into_matches_and_actions_in_order() {
    let c = Config::parse(&with(
        r#"
[[rule]]
name = "internal"
qname_suffix = ["corp.example", "10.in-addr.arpa"]
pool = "auth"

[[rule]]
name = "no-any-from-outside"
qtype = ["ANY"]
not = { client = ["10.0.0.0/8", "2001:db8::/32"] }
action = "refuse"

[[rule]]
name = "walled"
qname = ["portal.test"]
answer = ["192.0.2.80", "2001:db8::80", "TXT welcome"]
answer_ttl = 5

[[rule]]
name = "either"
any = [{ listener = ["udp"], edns = false }, { opcode = ["NOTIFY"], dnssec_ok = true }]
action = "log"
"#,
    ))
    .unwrap();
    let names: Vec<&str> = c.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["internal", "no-any-from-outside", "walled", "either"]
    );
    assert_eq!(c.rules[0].action, Action::Pool("auth".into()));
    assert_eq!(c.rules[1].action, Action::Refuse);
    assert_eq!(
        c.rules[2].action,
        Action::Answer {
            records: vec![
                FixedRecord::A("192.0.2.80".parse().unwrap()),
                FixedRecord::Aaaa("2001:db8::80".parse().unwrap()),
                FixedRecord::Txt("welcome".into()),
            ],
            ttl: 5,
        }
    );
    assert!(matches!(&c.rules[3].matcher, Match::Any(list) if list.len() == 2));
    // Evaluated as written.
    let set = RuleSet::new(c.rules.clone());
    let decide = |name: &str, qtype: u16, client: &str| {
        let w = wire_name(name).unwrap();
        let q = Query {
            qname: &w,
            qtype,
            client: client.parse().unwrap(),
            listener: "udp",
            edns: None,
            opcode: 0,
        };
        set.evaluate(&q, |_| {}).rule
    };
    assert_eq!(decide("www.corp.example", 1, "8.8.8.8"), Some(0));
    assert_eq!(decide("www.example.org", 255, "8.8.8.8"), Some(1));
    assert_eq!(decide("www.example.org", 255, "10.1.1.1"), None);
    assert_eq!(decide("portal.test", 1, "10.1.1.1"), Some(2));
}

#[test]
fn bad_rules_are_reported_at_their_line_and_column() {
    let src = with(
        r#"
[[rule]]
name = "r1"
qname_suffix = ["ok.example", "bad..name"]
client = ["10.0.0.0/33", "10.1.2.3/8"]
qtype = ["A", "NOPE"]
opcode = ["SHOUT"]
listener = ["tcp"]
pool = "nowhere"

[[rule]]
name = "r2"
action = "refuse"
pool = "auth"

[[rule]]
name = "r3"
answer = ["not-an-address"]

[[rule]]
name = "r1"
qnme = ["typo.example"]
action = "dance"
"#,
    );
    let errors = rendered(&src);
    let expected = [
        "t.toml:21:31: qname_suffix: bad domain name \"bad..name\"",
        "t.toml:22:11: client: bad network \"10.0.0.0/33\"",
        "t.toml:22:26: client: network \"10.1.2.3/8\" has host bits set: did you mean 10.0.0.0/8?",
        "t.toml:23:15: qtype: unknown type `NOPE`",
        "t.toml:24:11: opcode: unknown opcode `SHOUT`",
        "t.toml:25:13: unknown listener `tcp`",
        "t.toml:26:8: unknown pool `nowhere`",
        "t.toml:29:8: a rule needs exactly one of `pool`, `action` or `answer`",
        "t.toml:35:11: answer: `not-an-address` is neither an address nor \"TXT text\"",
        "t.toml:38:8: duplicate rule name `r1`",
        "t.toml:39:1: unknown key `qnme` in [[rule]]; did you mean `qname`?",
        "t.toml:40:10: action: unknown value \"dance\"",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
}

#[test]
fn a_rule_after_a_catch_all_is_reported_unreachable() {
    let src = with(
        r#"
[[rule]]
name = "everything"
action = "log"

[[rule]]
name = "the-rest"
client = ["0.0.0.0/0", "::/0"]
pool = "fwd"

[[rule]]
name = "too-late"
qname_suffix = ["corp.example"]
pool = "auth"
"#,
    );
    assert_eq!(
        rendered(&src),
        ["t.toml:29:8: rule `too-late` is never reached: rule `the-rest` before it matches every query"]
    );
}

#[test]
fn empty_lists_and_stray_keys_are_errors() {
    let src = with(
        r#"
[[rule]]
name = "empty"
qname_suffix = []
any = []
answer_ttl = 5
pool = "fwd"
"#,
    );
    assert_eq!(
        rendered(&src),
        [
            "t.toml:21:16: qname_suffix = []: matches nothing",
            "t.toml:22:1: any = []: matches nothing",
            "t.toml:23:14: answer_ttl goes with `answer`",
        ]
    );
}

#[test]
fn ten_thousand_suffixes_load_and_route() {
    let zones: Vec<String> = (0..10_000)
        .map(|i| format!("\"z{i}.corp.example\""))
        .collect();
    let src = with(&format!(
        "\n[[rule]]\nname = \"zones\"\nqname_suffix = [{}]\npool = \"auth\"\n",
        zones.join(", ")
    ));
    let c = Config::parse(&src).unwrap();
    let set = RuleSet::new(c.rules);
    for i in [0, 4_999, 9_999] {
        let w = wire_name(&format!("host.z{i}.corp.example")).unwrap();
        let q = Query {
            qname: &w,
            qtype: 1,
            client: "192.0.2.9".parse().unwrap(),
            listener: "udp",
            edns: None,
            opcode: 0,
        };
        assert_eq!(
            set.evaluate(&q, |_| {}).action,
            Some(&Action::Pool("auth".into()))
        );
    }
}
