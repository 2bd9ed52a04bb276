use super::*;
use names::wire_name;

fn wire(name: &str) -> Vec<u8> {
    wire_name(name).unwrap()
}

fn names(list: &[&str]) -> NameSet {
    let mut s = NameSet::new();
    for n in list {
        s.insert(n).unwrap();
    }
    s
}

fn query<'a>(qname: &'a [u8], qtype: u16, client: &str) -> Query<'a> {
    Query {
        qname,
        qtype,
        client: client.parse().unwrap(),
        listener: "udp",
        edns: None,
        opcode: 0,
    }
}

/// Internal zones to `auth`, an office network to `office`, ANY refused,
/// the rest to `forwarders`; `log` and `no_cache` rules on the way.
fn routing() -> RuleSet {
    RuleSet::new(vec![
        Rule::new(
            "log-internal",
            Match::Suffix(names(&["corp.example"])),
            Action::Log,
        ),
        Rule::new("any", Match::Qtype(vec![255]), Action::Refuse),
        Rule::new(
            "internal",
            Match::Suffix(names(&["corp.example", "10.in-addr.arpa"])),
            Action::Pool("auth".into()),
        ),
        Rule::new(
            "no-cache-health",
            Match::Name(names(&["health.test"])),
            Action::NoCache,
        ),
        Rule::new(
            "office",
            Match::Client(NetSet::parse(["192.168.0.0/16"]).unwrap()),
            Action::Pool("office".into()),
        ),
        Rule::new("rest", Match::Always, Action::Pool("forwarders".into())),
    ])
}

#[test]
fn rules_route_by_name_type_and_client_in_order() {
    let rules = routing();
    let pool = |name: &str, qtype: u16, client: &str| {
        let w = wire(name);
        rules
            .evaluate(&query(&w, qtype, client), |_| {})
            .action
            .cloned()
    };
    assert_eq!(
        pool("www.corp.example", 1, "8.8.8.8"),
        Some(Action::Pool("auth".into()))
    );
    assert_eq!(
        pool("1.0.0.10.in-addr.arpa", 12, "8.8.8.8"),
        Some(Action::Pool("auth".into()))
    );
    assert_eq!(
        pool("www.example.org", 1, "192.168.1.1"),
        Some(Action::Pool("office".into()))
    );
    assert_eq!(
        pool("www.example.org", 1, "8.8.8.8"),
        Some(Action::Pool("forwarders".into()))
    );
    // The ANY rule comes before the internal one.
    assert_eq!(pool("corp.example", 255, "8.8.8.8"), Some(Action::Refuse));
}

#[test]
fn non_terminal_actions_are_noted_and_evaluation_goes_on() {
    let rules = routing();
    let w = wire("www.corp.example");
    let mut seen = Vec::new();
    let d = rules.evaluate(&query(&w, 1, "8.8.8.8"), |i| seen.push(i));
    assert!(d.log && !d.no_cache);
    assert_eq!(d.rule, Some(2));
    assert_eq!(seen, [0, 2]);
    let w = wire("health.test");
    let d = rules.evaluate(&query(&w, 1, "8.8.8.8"), |_| {});
    assert!(d.no_cache && !d.log);
    assert_eq!(d.rule, Some(5));
}

#[test]
fn no_rule_matching_decides_nothing() {
    let rules = RuleSet::new(vec![Rule::new("x", Match::Qtype(vec![28]), Action::Drop)]);
    let w = wire("a.b");
    assert_eq!(
        rules.evaluate(&query(&w, 1, "::1"), |_| {}),
        Decision::default()
    );
    assert_eq!(
        RuleSet::default().evaluate(&query(&w, 1, "::1"), |_| panic!()),
        Decision::default()
    );
}

#[test]
fn combinators_edns_opcode_and_listener() {
    let w = wire("x.test");
    let mut q = query(&w, 1, "10.0.0.1");
    let not_any = Match::Not(Box::new(Match::Qtype(vec![255])));
    assert!(not_any.matches(&q));
    assert!(Match::All(vec![]).matches(&q));
    assert!(!Match::Any(vec![]).matches(&q));
    let both = Match::All(vec![Match::Edns(true), Match::DnssecOk(true)]);
    assert!(!both.matches(&q));
    assert!(Match::Edns(false).matches(&q));
    q.edns = Some(Edns { dnssec_ok: false });
    assert!(Match::Edns(true).matches(&q) && !both.matches(&q));
    assert!(Match::DnssecOk(false).matches(&q));
    q.edns = Some(Edns { dnssec_ok: true });
    assert!(both.matches(&q));
    assert!(Match::Opcode(vec![0]).matches(&q));
    q.opcode = 5;
    assert!(!Match::Opcode(vec![0]).matches(&q));
    assert!(Match::Listener(vec!["tcp".into(), "udp".into()]).matches(&q));
    q.listener = "dot";
    assert!(!Match::Listener(vec!["udp".into()]).matches(&q));
    let either = Match::Any(vec![Match::Listener(vec!["dot".into()]), Match::Always]);
    assert!(either.matches(&q));
}

#[test]
fn rules_after_a_terminal_catch_all_are_unreachable() {
    assert_eq!(routing().unreachable(), Vec::<usize>::new());
    let everyone = NetSet::parse(["0.0.0.0/0", "::/0"]).unwrap();
    for catch_all in [
        Match::Always,
        Match::Suffix(names(&["."])),
        Match::Client(everyone),
        Match::All(vec![Match::Always, Match::Suffix(names(&["example", "."]))]),
        Match::Any(vec![Match::Qtype(vec![1]), Match::Always]),
    ] {
        let rules = RuleSet::new(vec![
            Rule::new("a", Match::Qtype(vec![1]), Action::Drop),
            Rule::new("log all", Match::Always, Action::Log),
            Rule::new("all", catch_all.clone(), Action::Refuse),
            Rule::new("late", Match::Qtype(vec![28]), Action::Drop),
            Rule::new("later", Match::Always, Action::Drop),
        ]);
        assert_eq!(rules.unreachable(), [3, 4], "{catch_all:?}");
    }
    // Only IPv4's every address is not every client.
    let v4 = RuleSet::new(vec![
        Rule::new(
            "v4",
            Match::Client(NetSet::parse(["0.0.0.0/0"]).unwrap()),
            Action::Drop,
        ),
        Rule::new("v6", Match::Always, Action::Drop),
    ]);
    assert!(v4.unreachable().is_empty());
}

#[test]
fn runs_of_suffix_rules_give_the_same_answers_as_testing_each_rule() {
    // Rules of every kind interleaved with runs of suffix rules, some of
    // them non-terminal: the compiled set must decide as rule-by-rule
    // evaluation does, for names under each zone, under several, or none.
    let zones = [
        "a.test",
        "b.a.test",
        "c.test",
        "test",
        "x.b.a.test",
        "d.test",
    ];
    let mut rules = Vec::new();
    for (i, z) in zones.iter().enumerate() {
        rules.push(Rule::new(
            format!("s{i}"),
            Match::Suffix(names(&[z])),
            Action::Pool(format!("p{i}")),
        ));
        if i == 2 {
            rules.push(Rule::new(
                "log d",
                Match::Suffix(names(&["d.test"])),
                Action::Log,
            ));
            rules.push(Rule::new("aaaa", Match::Qtype(vec![28]), Action::Nxdomain));
        }
    }
    let set = RuleSet::new(rules.clone());
    for name in [
        "q.x.b.a.test",
        "b.a.test",
        "zz.c.test",
        "d.test",
        "other.org",
        "test",
        "A.TEST",
    ] {
        for qtype in [1, 28] {
            let w = wire(name);
            let q = query(&w, qtype, "10.0.0.1");
            let mut expected = Decision::default();
            let mut expected_seen = Vec::new();
            for (i, r) in rules.iter().enumerate() {
                if r.matcher.matches(&q) {
                    expected_seen.push(i);
                    match &r.action {
                        Action::Log => expected.log = true,
                        Action::NoCache => expected.no_cache = true,
                        a => {
                            expected.action = Some(a);
                            expected.rule = Some(i);
                            break;
                        }
                    }
                }
            }
            let mut seen = Vec::new();
            assert_eq!(
                set.evaluate(&q, |i| seen.push(i)),
                expected,
                "{name} {qtype}"
            );
            assert_eq!(seen, expected_seen, "{name} {qtype}");
        }
    }
}
