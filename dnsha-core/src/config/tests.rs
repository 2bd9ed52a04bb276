use super::*;

const GOOD: &str = r#"
[admin]
listen = "127.0.0.1:8088"

[[listener]]
name = "dns-udp"
protocol = "udp"
listen = "0.0.0.0:53"
pool = "coredns"

[[listener]]
name = "dns-tcp"
protocol = "tcp"
listen = "0.0.0.0:53"
pool = "coredns"
allow = ["10.0.0.0/8", "192.0.2.7"]
access_log = "stderr"
format = "json"

[[pool]]
name = "coredns"
policy = "rr"
timeout_ms = 1000
retries = 1

[[pool.backend]]
name = "coredns-001"
address = "192.168.1.1:53"
weight = 1

[[pool.backend]]
name = "coredns-002"
address = "192.168.1.2:53"
"#;

fn rendered(src: &str) -> Vec<String> {
    Config::parse(src)
        .unwrap_err()
        .iter()
        .map(|e| e.render("t.toml", src))
        .collect()
}

#[test]
fn contract_example_parses() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(
        c.admin.as_ref().unwrap().listen,
        "127.0.0.1:8088".parse().unwrap()
    );
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].allow, default_allow());
    assert_eq!(c.listeners[1].allow.len(), 2);
    assert_eq!(c.listeners[1].access_log, Some(AccessLogTarget::Stderr));
    assert_eq!(c.listeners[1].format, LogFormat::Json);
    assert_eq!(c.listeners[0].idle_timeout_ms, 10_000);
    let p = c.pool("coredns").unwrap();
    assert_eq!(p.settings, PoolSettings::default());
    assert_eq!(p.backends[1].weight, 1);
    assert_eq!(
        c.summary(),
        "2 listener(s), 1 pool(s), 2 backend(s), admin on 127.0.0.1:8088"
    );
}

#[test]
fn unknown_key_is_located() {
    let src =
        "[[listener]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = \"53\"\npool = \"p\"\nfoo = 1\n";
    let e = rendered(src);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.toml:6:1: unknown field `foo`"), "{e:?}");
}

#[test]
fn bad_protocol_and_policy_are_errors() {
    let src = GOOD.replace("protocol = \"udp\"", "protocol = \"sctp\"");
    assert!(rendered(&src)[0].contains("unknown variant `sctp`"));
    let src = GOOD.replace("policy = \"rr\"", "policy = \"random\"");
    assert!(rendered(&src)[0].contains("unknown variant `random`"));
}

#[test]
fn every_semantic_error_is_reported_with_its_line() {
    let src = r#"
[admin]
listen = "nowhere"

[[listener]]
name = "a"
protocol = "udp"
listen = "1.2.3.4:99999"
pool = "missing"

[[listener]]
name = "a"
protocol = "udp"
listen = "127.0.0.1:53"
pool = ""
allow = ["10.0.0.0/33"]

[[pool]]
name = "p"
timeout_ms = 0

[[pool.backend]]
name = "x"
address = "192.168.1.1:0"
weight = 0

[[pool.backend]]
name = "x"
address = "not-an-ip"

[[pool]]
name = "p"

[[pool]]
name = "empty"
"#;
    let e = rendered(src);
    let expect = [
        "t.toml:3:10: invalid listen address `nowhere`",
        "t.toml:8:10: invalid listen address `1.2.3.4:99999`",
        "t.toml:9:8: unknown pool `missing`",
        "t.toml:12:8: duplicate listener name `a`",
        "t.toml:15:8: listener pool is empty",
        "t.toml:16:10: invalid network `10.0.0.0/33`",
        "t.toml:20:14: timeout_ms must be greater than 0",
        "t.toml:24:11: backend address `192.168.1.1:0` has port 0",
        "t.toml:25:10: weight must be at least 1",
        "t.toml:28:8: duplicate backend name `x`",
        "t.toml:29:11: invalid backend address `not-an-ip`",
        "t.toml:32:8: duplicate pool name `p`",
        "t.toml:32:8: pool `p` has no backends",
        "t.toml:35:8: pool `empty` has no backends",
    ];
    for (want, got) in expect.iter().zip(&e) {
        assert!(
            got.starts_with(want),
            "want {want}\n got {got}\nall: {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
}

#[test]
fn addresses_accept_operator_spellings() {
    let src = GOOD
        .replace("\"0.0.0.0:53\"", "\"5300\"")
        .replace("192.168.1.1:53", "192.168.1.1")
        .replace("192.168.1.2:53", "[2001:db8::2]:5353");
    let c = Config::parse(&src).unwrap();
    assert_eq!(c.listeners[0].listen, "0.0.0.0:5300".parse().unwrap());
    assert_eq!(
        c.pools[0].backends[0].address,
        "192.168.1.1:53".parse().unwrap()
    );
    assert_eq!(
        c.pools[0].backends[1].address,
        "[2001:db8::2]:5353".parse().unwrap()
    );
}

#[test]
fn same_address_twice_per_transport_is_an_error() {
    let src = GOOD.replace("protocol = \"tcp\"", "protocol = \"udp\"");
    let e = rendered(&src);
    assert!(e[0].contains("already binds 0.0.0.0:53 over udp"), "{e:?}");
}

#[test]
fn syntax_error_is_located() {
    let e = rendered("[[pool]\nname = 1\n");
    assert!(e[0].starts_with("t.toml:1:"), "{e:?}");
}

#[test]
fn empty_config_has_nothing_to_serve() {
    let e = rendered("");
    assert_eq!(e, ["t.toml: no [[listener]]: nothing to serve"]);
}

#[test]
fn constructors_match_toml_defaults() {
    let c = Config::parse(GOOD).unwrap();
    let mut l = ListenerConfig::new(
        "dns-udp",
        Protocol::Udp,
        "0.0.0.0:53".parse().unwrap(),
        "coredns",
    );
    assert_eq!(l, c.listeners[0]);
    l.name = "x".into();
    let p = PoolConfig::new(
        "coredns",
        PolicyKind::RoundRobin,
        c.pools[0].backends.clone(),
    );
    assert_eq!(p, c.pools[0]);
}
