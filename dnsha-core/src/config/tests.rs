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

/// Every error of `src` as `dnsha check` prints it, the file named
/// `t.toml`.
pub(super) fn rendered(src: &str) -> Vec<String> {
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
    assert!(
        e[1].starts_with("t.toml:6:1: unknown key `foo` in [[listener]]; the keys there are `name`, `protocol`, `listen`, `pool`,"),
        "{e:?}"
    );
    // Reading went on: the missing pool is reported too.
    assert_eq!(e[0], "t.toml:5:8: unknown pool `p`");
    assert_eq!(e.len(), 2, "{e:?}");
    // A misspelt key is named.
    let e = rendered(&src.replace("foo = 1", "wrokers = 2"));
    assert_eq!(
        e[1],
        "t.toml:6:1: unknown key `wrokers` in [[listener]]; did you mean `workers`?"
    );
}

#[test]
fn bad_protocol_and_policy_are_errors() {
    let src = GOOD.replace("protocol = \"udp\"", "protocol = \"sctp\"");
    assert!(rendered(&src)[0].contains(
        "protocol: unknown value \"sctp\", expected one of `udp`, `tcp`, `tcp-passthrough`, `dot`, `doh`"
    ));
    let src = GOOD.replace("policy = \"rr\"", "policy = \"random\"");
    assert!(rendered(&src)[0].contains("policy: unknown value \"random\""));
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
    assert_eq!(
        e,
        ["t.toml: no [[listener]] and no [[vrrp]]: nothing to serve"]
    );
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

const HEALTHY: &str = r#"
[[listener]]
name = "dns-udp"
protocol = "udp"
listen = "0.0.0.0:53"
pool = "coredns"

[[pool]]
name = "coredns"

[pool.health]
check = "dns"
query_name = "{random}.example.test"
query_type = "A"
must_resolve = true
expect_address = "10.0.0.1"
cd_flag = true
transport = "tcp"
interval_ms = 500
timeout_ms = 200
rise = 3
fall = 2
passive_threshold = 5

[[pool.backend]]
name = "coredns-001"
address = "192.168.1.1:53"

[[pool.backend]]
name = "coredns-002"
address = "192.168.1.2:53"

[pool.backend.health]
check = "tcp"
transport = "udp"
"#;

#[test]
fn no_health_table_means_no_active_check() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.pools[0].health, None);
    assert!(c.pools[0].backend_health.is_empty());
    assert_eq!(c.pools[0].health_for("coredns-001"), None);
}

#[test]
fn health_table_with_defaults() {
    let src = GOOD.replace("retries = 1\n", "retries = 1\n\n[pool.health]\n");
    let c = Config::parse(&src).unwrap();
    let h = c.pools[0].health.as_ref().unwrap();
    assert_eq!(*h, HealthConfig::default());
    assert_eq!(h.check, CheckKind::Dns);
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.rise, h.fall),
        (1000, 1000, 2, 3)
    );
    assert_eq!(h.query_name, ".");
    assert_eq!(h.query_type, QueryType::SOA);
    assert_eq!(h.path, "/dns-query");
    assert!(h.tls_verify);
    assert_eq!(c.pools[0].health_for("coredns-002"), Some(h));
}

#[test]
fn every_health_key_and_backend_override() {
    let src = HEALTHY.replace(
        "check = \"tcp\"\ntransport = \"udp\"\n",
        "timeout_ms = 300\n",
    );
    let c = Config::parse(&src).unwrap();
    let p = &c.pools[0];
    let h = p.health.as_ref().unwrap();
    assert_eq!(h.query_name, "{random}.example.test");
    assert_eq!(h.query_type, QueryType(1));
    assert!(h.must_resolve && h.cd_flag);
    assert_eq!(h.expect_address, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(h.transport, Some(CheckTransport::Tcp));
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.rise, h.fall),
        (500, 200, 3, 2)
    );
    assert_eq!(h.passive_threshold, 5);
    // The backend's table overrides key by key, the rest comes from the pool.
    let b = p.health_for("coredns-002").unwrap();
    assert_eq!(b.timeout_ms, 300);
    assert_eq!(b.interval_ms, 500);
    assert_eq!(b.query_name, "{random}.example.test");
    assert_eq!(p.health_for("coredns-001"), Some(h));
}

#[test]
fn keepalived_retry_and_delay_before_retry() {
    let src = HEALTHY
        .replace("fall = 2\n", "retry = 2\ndelay_before_retry = 0.25\n")
        .replace("check = \"tcp\"\ntransport = \"udp\"\n", "fall = 4\n");
    let c = Config::parse(&src).unwrap();
    let h = c.pools[0].health.as_ref().unwrap();
    // retry counts the probes after the first failure: fall = retry + 1.
    assert_eq!(h.fall, 3);
    assert_eq!(h.retry_interval_ms, Some(250));
    assert_eq!(h.retry_interval(), 250);
    // A backend's fall replaces the pool's retry.
    assert_eq!(c.pools[0].health_for("coredns-002").unwrap().fall, 4);
    // Both in one table is an error.
    let src = HEALTHY.replace("fall = 2\n", "fall = 2\nretry = 2\n");
    let e = rendered(&src);
    assert!(e[0].contains("set either fall or retry"), "{e:?}");
}

#[test]
fn health_errors_are_located() {
    let src = r#"
[[listener]]
name = "l"
protocol = "udp"
listen = "127.0.0.1:53"
pool = "p"

[[pool]]
name = "p"

[pool.health]
check = "ping"
interval_ms = 0
rise = 0
query_type = "BOGUS"
expect_address = "10.0.0.256"
query_name = "a..b"
delay_before_retry = -1

[[pool.backend]]
name = "a"
address = "127.0.0.1:53"

[pool.backend.health]
check = "exec"

[[pool.backend]]
name = "b"
address = "127.0.0.1:54"

[pool.backend.health]
check = "dns"
command = "true"
payload = "xyz"
path = "dns-query"
tls_name = "x"
timeout_ms = 0

[[pool.backend]]
name = "c"
address = "127.0.0.1:55"

[pool.backend.health]
check = "tcp"
transport = "quic"
"#;
    let e = rendered(src);
    let expect = [
        "t.toml:12:9: unknown check kind `ping` (expected one of dns, tcp, udp, tls, doh, exec, none)",
        "t.toml:13:15: interval_ms must be greater than 0",
        "t.toml:14:8: rise must be at least 1",
        "t.toml:15:14: unknown query_type `BOGUS`",
        "t.toml:16:18: invalid expect_address `10.0.0.256`",
        "t.toml:17:14: invalid query_name `a..b`: empty label",
        "t.toml:18:22: delay_before_retry must be a number of seconds greater than 0",
        "t.toml:25:9: check = \"exec\" needs a command",
        "t.toml:33:11: command is only used by check = \"exec\", not \"dns\"",
        "t.toml:34:11: payload is only used by check = \"udp\", not \"dns\"",
        "t.toml:34:11: payload must be a non-empty even number of hex digits",
        "t.toml:35:8: invalid path `dns-query`",
        "t.toml:35:8: path is only used by check = \"doh\", not \"dns\"",
        "t.toml:36:12: tls_name is only used by check = \"dns\" with transport = \"dot\"",
        "t.toml:37:14: timeout_ms must be greater than 0",
        "t.toml:45:13: transport is only used by check = \"dns\", not \"tcp\"",
        "t.toml:45:13: unknown transport `quic` (expected udp, tcp, dot, doh or doq)",
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
fn check_kinds_and_their_keys() {
    let with = |health: &str| {
        GOOD.replace(
            "retries = 1\n",
            &format!("retries = 1\n\n[pool.health]\n{health}\n"),
        )
    };
    let c = Config::parse(&with(
        "check = \"exec\"\ncommand = \"dig @$DNSHA_BACKEND_IP\"",
    ))
    .unwrap();
    let h = c.pools[0].health.as_ref().unwrap();
    assert_eq!(h.command, ["/bin/sh", "-c", "dig @$DNSHA_BACKEND_IP"]);
    let c = Config::parse(&with(
        "check = \"exec\"\ncommand = [\"/usr/local/bin/chk\", \"-q\"]",
    ))
    .unwrap();
    assert_eq!(
        c.pools[0].health.as_ref().unwrap().command,
        ["/usr/local/bin/chk", "-q"]
    );
    let c = Config::parse(&with("check = \"udp\"\npayload = \"de:ad be ef\"")).unwrap();
    assert_eq!(
        c.pools[0].health.as_ref().unwrap().payload,
        Some(vec![0xde, 0xad, 0xbe, 0xef])
    );
    let c = Config::parse(&with(
        "check = \"doh\"\npath = \"/q\"\ntls_name = \"dns.example\"\ntls_verify = false\ntls_ca = \"/etc/ca.pem\"",
    ))
    .unwrap();
    let h = c.pools[0].health.as_ref().unwrap();
    assert_eq!((h.check, h.path.as_str()), (CheckKind::Doh, "/q"));
    assert_eq!(h.tls_name.as_deref(), Some("dns.example"));
    assert!(!h.tls_verify);
    let c = Config::parse(&with("check = \"none\"")).unwrap();
    assert!(!c.pools[0].health.as_ref().unwrap().is_active());
    let e = rendered(&with("bogus_key = 1"));
    assert!(
        e[0].contains("unknown key `bogus_key` in [pool.health]"),
        "{e:?}"
    );
}

#[test]
fn an_error_inherited_by_many_backends_is_reported_once() {
    let src = HEALTHY
        .replace("interval_ms = 500", "interval_ms = 0")
        .replace("check = \"tcp\"\ntransport = \"udp\"\n", "rise = 1\n");
    let e = rendered(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("interval_ms must be greater than 0"));
}

#[test]
fn upstream_socket_and_connection_limits() {
    let src = |extra: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\n\
             [[pool]]\nname = \"p\"\n{extra}\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    let c = Config::parse(&src("")).unwrap();
    let s = &c.pools[0].settings;
    assert_eq!(
        (
            s.udp_sockets_per_backend,
            s.max_connections_per_backend,
            s.max_in_flight_per_connection
        ),
        (2, 8, 100)
    );
    let c = Config::parse(&src(
        "udp_sockets_per_backend = 16\nmax_connections_per_backend = 4\nmax_in_flight_per_connection = 500",
    ))
    .unwrap();
    let s = &c.pools[0].settings;
    assert_eq!(
        (
            s.udp_sockets_per_backend,
            s.max_connections_per_backend,
            s.max_in_flight_per_connection
        ),
        (16, 4, 500)
    );
    let bad = src(
        "udp_sockets_per_backend = 0\nmax_connections_per_backend = 5000\nmax_in_flight_per_connection = 30001",
    );
    assert_eq!(
        rendered(&bad),
        [
            "t.toml:9:27: udp_sockets_per_backend must be between 1 and 64, not 0",
            "t.toml:10:31: max_connections_per_backend must be between 1 and 1024, not 5000",
            "t.toml:11:32: max_in_flight_per_connection must be between 1 and 30000, not 30001",
        ]
    );
    let negative = src("udp_sockets_per_backend = -1");
    let e = rendered(&negative);
    assert!(e.iter().any(|e| e.starts_with("t.toml:9:")), "{e:?}");
}

#[test]
fn adaptive_workers_is_on_for_udp_unless_pinned_or_set_off() {
    let src = |protocol: &str, extra: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n{extra}\n\n\
             [[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    let adaptive = |protocol: &str, extra: &str| {
        Config::parse(&src(protocol, extra)).unwrap().listeners[0].adaptive_workers
    };
    assert!(adaptive("udp", ""));
    assert!(!adaptive("udp", "adaptive_workers = false"));
    assert!(!adaptive("udp", "pin_workers = true"));
    assert!(!adaptive("tcp", ""));
    assert!(!adaptive("tcp", "adaptive_workers = false"));
    assert_eq!(
        rendered(&src("tcp", "adaptive_workers = true")),
        ["t.toml:6:20: adaptive_workers applies to udp listeners only"]
    );
    assert_eq!(
        rendered(&src("udp", "pin_workers = true\nadaptive_workers = true")),
        ["t.toml:7:20: adaptive_workers = true cannot go with pin_workers = true: a pinned worker takes the datagrams processed on its CPU"]
    );
    let wrong_type = rendered(&src("udp", "adaptive_workers = 1"));
    assert!(
        wrong_type.iter().any(|e| e.contains("adaptive_workers")),
        "{wrong_type:?}"
    );
}

#[test]
fn pin_workers_is_for_udp_listeners() {
    let src = |protocol: &str, extra: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n{extra}\n\n\
             [[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    assert!(!Config::parse(&src("udp", "")).unwrap().listeners[0].pin_workers);
    assert!(
        Config::parse(&src("udp", "pin_workers = true"))
            .unwrap()
            .listeners[0]
            .pin_workers
    );
    assert_eq!(
        rendered(&src("tcp", "pin_workers = true")),
        ["t.toml:6:15: pin_workers applies to udp listeners only"]
    );
    assert!(
        !Config::parse(&src("tcp", "pin_workers = false"))
            .unwrap()
            .listeners[0]
            .pin_workers
    );
}

#[test]
fn udp_answer_limits_are_for_udp_listeners() {
    let src = |protocol: &str, extra: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n{extra}\n\n\
             [[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    let l = &Config::parse(&src("udp", "")).unwrap().listeners[0];
    assert_eq!(l.max_udp_size, DEFAULT_MAX_UDP_SIZE);
    assert_eq!(l.any_over_udp, AnyOverUdp::Truncate);
    let l = &Config::parse(&src(
        "udp",
        "max_udp_size = 4096\nany_over_udp = \"refuse\"",
    ))
    .unwrap()
    .listeners[0];
    assert_eq!((l.max_udp_size, l.any_over_udp), (4096, AnyOverUdp::Refuse));
    assert_eq!(
        rendered(&src("udp", "max_udp_size = 100")),
        ["t.toml:6:16: max_udp_size must be between 512 and 65535, not 100"]
    );
    assert_eq!(
        rendered(&src("tcp", "max_udp_size = 1232\nany_over_udp = \"allow\"")),
        [
            "t.toml:6:16: max_udp_size applies to udp listeners only",
            "t.toml:7:16: any_over_udp applies to udp listeners only"
        ]
    );
}

#[test]
fn fail_percent_is_a_share() {
    let src = |extra: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\n\
             [[pool]]\nname = \"p\"\n{extra}\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    assert_eq!(
        Config::parse(&src("")).unwrap().pools[0]
            .settings
            .fail_percent,
        50
    );
    assert_eq!(
        Config::parse(&src("fail_percent = 100")).unwrap().pools[0]
            .settings
            .fail_percent,
        100
    );
    assert_eq!(
        rendered(&src("fail_percent = 0")),
        ["t.toml:9:16: fail_percent must be between 1 and 100, not 0"]
    );
}

#[test]
fn durations_longer_than_a_day_are_refused_not_overflowed() {
    let src = format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\
         idle_timeout_ms = {max}\n\n[[pool]]\nname = \"p\"\ntimeout_ms = {huge}\n\n\
         [[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n",
        max = MAX_DURATION_MS,
        huge = i64::MAX
    );
    assert_eq!(
        rendered(&src),
        [format!(
            "t.toml:10:14: timeout_ms must be at most 86400000 (one day), not {}",
            i64::MAX
        )]
    );
}

#[test]
fn an_admin_endpoint_beyond_loopback_must_say_who_may_reach_it() {
    let src = |admin: &str| {
        format!(
            "[admin]\n{admin}\n\n[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\n\
             [[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    let a = Config::parse(&src("listen = \"127.0.0.1:8088\""))
        .unwrap()
        .admin
        .unwrap();
    assert_eq!(a.allow, admin_default_allow());
    assert_eq!(a.max_connections, DEFAULT_ADMIN_MAX_CONNECTIONS);
    assert_eq!(
        rendered(&src("listen = \"8088\"")),
        ["t.toml:2:10: admin listen `0.0.0.0:8088` is not a loopback address: set [admin] allow to the networks that may read /status and /metrics"]
    );
    let a = Config::parse(&src(
        "listen = \"0.0.0.0:8088\"\nallow = [\"10.1.0.0/16\"]\nmax_connections = 4",
    ))
    .unwrap()
    .admin
    .unwrap();
    assert_eq!(a.allow, vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]);
    assert_eq!(a.max_connections, 4);
}

#[test]
fn per_client_query_and_write_limits_are_for_stream_listeners() {
    let src = |protocol: &str, extra: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n{extra}\n\n\
             [[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    let l = &Config::parse(&src("tcp", "")).unwrap().listeners[0];
    assert_eq!(l.max_queries_per_client, DEFAULT_MAX_QUERIES_PER_CLIENT);
    assert_eq!(l.write_timeout_ms, DEFAULT_WRITE_TIMEOUT_MS);
    let l = &Config::parse(&src(
        "dot",
        "max_queries_per_client = 64\nwrite_timeout_ms = 500\ntls_cert = \"c\"\ntls_key = \"k\"",
    ))
    .unwrap()
    .listeners[0];
    assert_eq!((l.max_queries_per_client, l.write_timeout_ms), (64, 500));
    assert_eq!(
        rendered(&src("udp", "max_queries_per_client = 64")),
        ["t.toml:6:26: max_queries_per_client applies to tcp, dot, doh, doq and doh3 listeners only"]
    );
}

#[test]
fn the_ipv6_client_prefix_is_a_prefix_length() {
    let src = |extra: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n{extra}\n\n\
             [[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    assert_eq!(
        Config::parse(&src("")).unwrap().listeners[0].client_prefix_v6,
        64
    );
    assert_eq!(
        Config::parse(&src("client_prefix_v6 = 56"))
            .unwrap()
            .listeners[0]
            .client_prefix_v6,
        56
    );
    assert_eq!(
        rendered(&src("client_prefix_v6 = 129")),
        ["t.toml:6:20: client_prefix_v6 must be between 32 and 128, not 129"]
    );
}

#[test]
fn type_errors_do_not_hide_the_others() {
    // The issue's example: a wrong type used to stop the reading, hiding
    // the value errors after it.
    let src = r#"
[[listener]]
name = "udp"
protocol = "udp"
listen = "127.0.0.1:53"
pool = "p"
workers = "two"
idle_timeout_ms = 5000

[[pool]]
name = "p"
policy = "random"
timeout_ms = 0
retries = -1
randomize_case = "yes"

[[pool.backend]]
name = "a"
address = "127.0.0.1:5300"
weight = 2.5

[pool.backend.health]
check = "exec"
command = 5
"#;
    assert_eq!(
        rendered(src),
        [
            "t.toml:7:11: workers: expected a whole number, got the string \"two\"",
            "t.toml:8:19: idle_timeout_ms applies to tcp, tcp-passthrough, dot, doh, doq and doh3 listeners only (udp has no connections)",
            "t.toml:12:10: policy: unknown value \"random\", expected one of `rr`, `wrr`, `lc`, `first`, `chash`",
            "t.toml:13:14: timeout_ms must be greater than 0",
            "t.toml:14:11: retries: expected a whole number of 0 or more, got -1",
            "t.toml:15:18: randomize_case: expected true or false, got the string \"yes\"",
            "t.toml:20:10: weight: expected a whole number, got the number 2.5",
            "t.toml:23:9: check = \"exec\" needs a command",
            "t.toml:24:11: command: expected a shell line in quotes or a list of strings [\"/path/program\", \"arg\"], got the number 5",
        ]
    );
}

#[test]
fn keys_without_effect_are_errors() {
    let with = |listener: &str, health: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n{listener}\n\
             [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"a\"\naddress = \"127.0.0.1:5300\"\n\
             [pool.backend.health]\n{health}\n"
        )
    };
    let e = rendered(&with("workers = 100000", ""));
    assert_eq!(
        e,
        ["t.toml:6:11: workers: expected a whole number from 0 (one per CPU) to 1024, got 100000"]
    );
    let e = rendered(&with("", "check = \"tcp\"\nexpect_address = \"10.0.0.1\""));
    assert_eq!(
        e,
        ["t.toml:14:18: expect_address is only used by check = \"dns\" or \"doh\" (which send a query), not \"tcp\""]
    );
    let e = rendered(&with("read_timeout_ms = 100\nmax_connections = 5", ""));
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn a_backend_that_changes_the_check_kind_does_not_inherit_the_pools_query_keys() {
    let src = r#"
[[listener]]
name = "l"
protocol = "udp"
listen = "127.0.0.1:53"
pool = "p"

[[pool]]
name = "p"

[pool.health]
check = "dns"
query_name = "www.example.test"
expect_address = "10.0.0.1"
interval_ms = 700

[[pool.backend]]
name = "a"
address = "127.0.0.1:5300"

[[pool.backend]]
name = "b"
address = "127.0.0.1:5301"

[pool.backend.health]
check = "tcp"
"#;
    let c = Config::parse(src).unwrap();
    let p = &c.pools[0];
    let b = &p.backend_health["b"];
    assert_eq!(b.check, CheckKind::Tcp);
    assert_eq!(b.interval_ms, 700, "timing is inherited");
    assert_eq!(b.expect_address, None, "the dns check's keys are not");
    assert_eq!(
        p.health.as_ref().unwrap().expect_address,
        Some("10.0.0.1".parse().unwrap())
    );
}

#[test]
fn chash_keys_go_with_the_chash_policy() {
    let src = |pool: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\n\
             [[pool]]\nname = \"p\"\n{pool}\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    let c = Config::parse(&src("policy = \"chash\"")).unwrap();
    assert_eq!(c.pools[0].policy, PolicyKind::ConsistentHash);
    assert_eq!(c.pools[0].settings.hash_key, crate::HashKey::Qname);
    assert_eq!(c.pools[0].settings.hash_balance_percent, 150);
    let c = Config::parse(&src(
        "policy = \"chash\"\nhash_key = \"client\"\nhash_balance = 1.25",
    ))
    .unwrap();
    assert_eq!(c.pools[0].settings.hash_key, crate::HashKey::Client);
    assert_eq!(c.pools[0].settings.hash_balance_percent, 125);
    let c = Config::parse(&src("policy = \"chash\"\nhash_balance = 0")).unwrap();
    assert_eq!(c.pools[0].settings.hash_balance_percent, 0);
    assert_eq!(
        rendered(&src("policy = \"rr\"\nhash_key = \"client\"")),
        ["t.toml:10:12: hash_key applies to pools with policy = \"chash\" only"]
    );
    let e = rendered(&src("policy = \"chash\"\nhash_balance = 0.5"));
    assert!(
        e.iter()
            .any(|e| e.contains("hash_balance = 0.5: 0 (no bound) or a factor from 1.0 to 100.0")),
        "{e:?}"
    );
    let e = rendered(&src("policy = \"chash\"\nhash_key = \"server\""));
    assert!(
        e.iter()
            .any(|e| e.contains("hash_key: unknown value \"server\"")),
        "{e:?}"
    );
}

#[test]
fn max_outstanding_per_backend_is_a_bounded_number() {
    let src = |v: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\n\
             [[pool]]\nname = \"p\"\nmax_outstanding_per_backend = {v}\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n"
        )
    };
    let c = Config::parse(&src("500")).unwrap();
    assert_eq!(c.pools[0].settings.max_outstanding_per_backend, 500);
    assert_eq!(
        rendered(&src("2000000")),
        ["t.toml:9:31: max_outstanding_per_backend must be from 0 to 1000000"]
    );
}

#[test]
fn kernel_forwarding_takes_a_specific_address_and_plain_backends_of_its_family() {
    let src = |protocol: &str, listen: &str, extra: &str, backend: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"{protocol}\"\nlisten = \"{listen}\"\npool = \"p\"\n{extra}\n\n\
             [[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\n{backend}\n"
        )
    };
    let plain = "address = \"192.0.2.1\"";
    for protocol in ["udp", "tcp"] {
        let cfg = Config::parse(&src(
            protocol,
            "192.168.1.5:53",
            "forwarding = \"kernel\"",
            plain,
        ))
        .unwrap();
        assert_eq!(cfg.listeners[0].forwarding, Forwarding::Kernel);
    }
    let cfg = Config::parse(&src("udp", "192.168.1.5:53", "", plain)).unwrap();
    assert_eq!(cfg.listeners[0].forwarding, Forwarding::Userspace);
    let k = "forwarding = \"kernel\"";
    assert_eq!(
        rendered(&src("tcp-passthrough", "192.168.1.5:53", k, plain)),
        ["t.toml:6:14: forwarding = \"kernel\" applies to udp and tcp listeners only, not tcp-passthrough"]
    );
    assert_eq!(
        rendered(&src("udp", "0.0.0.0:53", k, plain)),
        ["t.toml:4:10: forwarding = \"kernel\" needs a specific address, not 0.0.0.0:53: the kernel rule matches the address clients send to (a VIP or one of the host's)"]
    );
    assert_eq!(
        rendered(&src("udp", "192.168.1.5:53", k, "address = \"[2001:db8::1]:53\"")),
        ["t.toml:5:8: forwarding = \"kernel\": backend b ([2001:db8::1]:53) is not in the listener's address family (the kernel path does not translate IPv4 to IPv6)"]
    );
    let dot = "address = \"192.0.2.1:853\"\ntransport = \"dot\"\ntls_name = \"ns.example\"";
    let e = rendered(&src("tcp", "192.168.1.5:53", k, dot));
    assert!(
        e.iter().any(|e| e.starts_with(
            "t.toml:5:8: forwarding = \"kernel\": backend b uses transport = \"dot\""
        )),
        "{e:?}"
    );
    assert_eq!(
        rendered(&src("udp", "192.168.1.5:53", "forwarding = \"kernel\"\naccess_log = \"stderr\"", plain)),
        ["t.toml:7:14: access_log is not available with forwarding = \"kernel\": the queries never reach dnsha (per-backend packet counters are in /status and /metrics)"]
    );
    let e = rendered(&src(
        "udp",
        "192.168.1.5:53",
        "forwarding = \"nftables\"",
        plain,
    ));
    assert!(e.iter().any(|e| e.starts_with("t.toml:6:14:")), "{e:?}");
}
