use crate::config::tests::rendered;
use crate::config::*;

const POOL: &str =
    "\n[[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n";

fn listener(protocol: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:853\"\npool = \"p\"\n{extra}\n{POOL}"
    )
}

#[test]
fn dot_and_doh_listeners_with_defaults() {
    let c = Config::parse(&listener(
        "dot",
        "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
    ))
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.protocol, Protocol::Dot);
    let tls = l.tls.as_ref().unwrap();
    assert_eq!(tls.cert, PathBuf::from("c.pem"));
    assert_eq!(tls.key, PathBuf::from("k.pem"));
    assert!(tls.cert_span.is_some() && tls.key_span.is_some());
    assert_eq!(l.handshake_timeout_ms, DEFAULT_HANDSHAKE_TIMEOUT_MS);
    assert_eq!(
        l.max_handshakes_per_client,
        DEFAULT_MAX_HANDSHAKES_PER_CLIENT
    );

    let c = Config::parse(&listener(
        "doh",
        "tls = false\npath = \"/q\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\nmax_streams = 10\nmax_header_bytes = 4096\nmax_requests_per_second = 50\nhandshake_timeout_ms = 700",
    ))
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.tls, None);
    assert_eq!(l.path, "/q");
    assert_eq!(l.trusted_proxies.len(), 2);
    assert_eq!(
        (l.max_streams, l.max_header_bytes, l.max_requests_per_second),
        (10, 4096, 50)
    );
    assert_eq!(l.handshake_timeout_ms, 700);
    let c = Config::parse(&listener("doh", "tls_cert = \"c\"\ntls_key = \"k\"")).unwrap();
    assert_eq!(c.listeners[0].path, DEFAULT_DOH_PATH);
    assert_eq!(c.listeners[0].max_streams, DEFAULT_MAX_STREAMS);
    assert_eq!(c.listeners[0].max_requests_per_second, 0);
}

#[test]
fn tls_listener_errors_are_located() {
    let e = rendered(&listener("dot", ""));
    assert_eq!(
        e,
        ["t.toml:2:8: dot listener `l` needs tls_cert and tls_key"]
    );
    let e = rendered(&listener("doh", "tls_cert = \"c\""));
    assert_eq!(
        e,
        ["t.toml:2:8: doh listener `l` needs tls_key (or tls = false)"]
    );
    let e = rendered(&listener(
        "doh",
        "tls = false\ntls_cert = \"c\"\npath = \"nope\"",
    ));
    assert_eq!(
        e,
        [
            "t.toml:7:12: certificate files are not used with tls = false",
            "t.toml:8:8: path `nope` must start with / and have no query",
        ]
    );
    let e = rendered(&listener(
        "udp",
        "tls_cert = \"c\"\npath = \"/x\"\nmax_streams = 5\ntrusted_proxies = [\"nope\"]",
    ));
    assert_eq!(
        e,
        [
            "t.toml:6:12: `tls_cert` applies to dot, doh, doq and doh3 listeners only, not udp",
            "t.toml:7:8: `path` applies to doh and doh3 listeners only, not udp",
            "t.toml:8:15: `max_streams` applies to doh and doh3 listeners only, not udp",
            "t.toml:9:20: `trusted_proxies` applies to doh listeners only, not udp",
        ]
    );
    let e = rendered(&listener(
        "doh",
        "tls = false\nmax_streams = 0\nmax_header_bytes = 10\ntrusted_proxies = [\"10.0.0.0/33\"]",
    ));
    assert_eq!(
        e,
        [
            "t.toml:7:15: max_streams must be greater than 0",
            "t.toml:8:20: max_header_bytes must be between 1024 and 1048576",
            "t.toml:9:20: invalid network `10.0.0.0/33` in trusted_proxies (expected CIDR or IP)",
        ]
    );
}

#[test]
fn stream_listeners_share_the_tcp_port_space() {
    let src = format!(
        "[[listener]]\nname = \"t\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:853\"\npool = \"p\"\n\n{}",
        listener("dot", "tls_cert = \"c\"\ntls_key = \"k\"")
    );
    let e = rendered(&src);
    assert!(
        e[0].contains("already binds 127.0.0.1:853 over tcp"),
        "{e:?}"
    );
}

#[test]
fn quic_listeners_share_the_udp_port_space() {
    let tls = "tls_cert = \"c\"\ntls_key = \"k\"";
    // DoT over TCP and DoQ over UDP on one port, DoH and DoH3 likewise.
    let src = format!(
        "[[listener]]\nname = \"q\"\nprotocol = \"doq\"\nlisten = \"127.0.0.1:853\"\npool = \"p\"\n{tls}\n\n{}",
        listener("dot", tls)
    );
    assert!(Config::parse(&src).is_ok(), "{:?}", rendered(&src));
    let src = format!(
        "[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:853\"\npool = \"p\"\n\n{}",
        listener("doh3", tls)
    );
    let e = rendered(&src);
    assert!(
        e[0].contains("already binds 127.0.0.1:853 over udp"),
        "{e:?}"
    );
}

#[test]
fn doh3_takes_the_http_keys_and_quic_retry() {
    let c = Config::parse(&listener(
        "doh3",
        "tls_cert = \"c\"\ntls_key = \"k\"\npath = \"/q\"\nmax_streams = 10\nmax_header_bytes = 4096\nmax_requests_per_second = 50\nhandshake_timeout_ms = 700\nquic_retry = \"always\"",
    ))
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.protocol, Protocol::Doh3);
    assert_eq!(l.path, "/q");
    assert_eq!(
        (l.max_streams, l.max_header_bytes, l.max_requests_per_second),
        (10, 4096, 50)
    );
    assert_eq!(l.handshake_timeout_ms, 700);
    assert_eq!(l.quic_retry, QuicRetry::Always);
    let c = Config::parse(&listener("doq", "tls_cert = \"c\"\ntls_key = \"k\"")).unwrap();
    assert_eq!(c.listeners[0].quic_retry, QuicRetry::Auto);
    assert_eq!(
        rendered(&listener(
            "doq",
            "tls_cert = \"c\"\ntls_key = \"k\"\npath = \"/q\"\ntls = false"
        )),
        [
            "t.toml:8:8: `path` applies to doh and doh3 listeners only, not doq",
            "t.toml:9:7: `tls` applies to doh listeners only, not doq",
        ]
    );
    assert_eq!(
        rendered(&listener(
            "dot",
            "tls_cert = \"c\"\ntls_key = \"k\"\nquic_retry = \"auto\""
        )),
        ["t.toml:8:14: `quic_retry` applies to doq and doh3 listeners only, not dot"]
    );
    assert_eq!(
        rendered(&listener("doh3", "tls_cert = \"c\"")),
        ["t.toml:2:8: doh3 listener `l` needs tls_key"]
    );
}

#[test]
fn a_doh_listener_advertises_the_doh3_listener_with_its_certificate() {
    let l = |name: &str, proto: &str, listen: &str, cert: &str| {
        format!("[[listener]]\nname = \"{name}\"\nprotocol = \"{proto}\"\nlisten = \"{listen}\"\npool = \"p\"\ntls_cert = \"{cert}\"\ntls_key = \"k\"\n\n")
    };
    let src = [
        l("h2", "doh", "192.0.2.1:443", "a.pem"),
        l("h3", "doh3", "0.0.0.0:8443", "a.pem"),
        l("other", "doh", "192.0.2.1:444", "b.pem"),
        l("elsewhere", "doh", "192.0.2.9:445", "c.pem"),
        l("h3c", "doh3", "192.0.2.8:445", "c.pem"),
        POOL.to_string(),
    ]
    .concat();
    let c = Config::parse(&src).unwrap();
    let alt: Vec<Option<&str>> = c.listeners.iter().map(|l| l.alt_svc.as_deref()).collect();
    assert_eq!(
        alt,
        [Some("h3=\":8443\"; ma=86400"), None, None, None, None]
    );
}

fn backend(extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"53\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n{extra}\n"
    )
}

#[test]
fn backend_transports() {
    let c = Config::parse(&backend("")).unwrap();
    let b = &c.pools[0].backends[0];
    assert_eq!((b.transport, &b.tls), (Transport::Udp, &None));
    assert_eq!(
        b,
        &BackendConfig::new("b", "192.0.2.1:53".parse().unwrap(), 1)
    );

    let c = Config::parse(&backend("transport = \"tcp\"")).unwrap();
    assert_eq!(c.pools[0].backends[0].transport, Transport::Tcp);

    // DoT: port 853 by default, verification on.
    let c = Config::parse(&backend("transport = \"dot\"")).unwrap();
    let b = &c.pools[0].backends[0];
    assert_eq!(b.address, "192.0.2.1:853".parse().unwrap());
    let tls = b.tls.as_ref().unwrap();
    assert!(tls.verify);
    assert_eq!((tls.name.as_deref(), tls.ca.as_deref()), (None, None));

    let c = Config::parse(
        &backend("transport = \"dot\"\ntls_verify = false\ntls_name = \"dns.example.\"\ntls_ca = \"ca.pem\"")
            .replace("192.0.2.1", "192.0.2.1:8853"),
    )
    .unwrap();
    let b = &c.pools[0].backends[0];
    assert_eq!(b.address.port(), 8853);
    let tls = b.tls.as_ref().unwrap();
    assert!(!tls.verify);
    assert_eq!(tls.name.as_deref(), Some("dns.example"));
    assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    assert!(tls.ca_span.is_some());
}

#[test]
fn backend_tls_errors_are_located() {
    let e = rendered(&backend("tls_name = \"x\"\ntls_verify = false"));
    assert_eq!(
        e,
        [
            "t.toml:13:12: `tls_name` applies to transport = \"dot\", \"doh\" or \"doq\" backends only",
            "t.toml:14:14: `tls_verify` applies to transport = \"dot\", \"doh\" or \"doq\" backends only",
        ]
    );
    let e = rendered(&backend(
        "transport = \"dot\"\ntls_name = \"bad name!\"\ntls_ca = \"\"",
    ));
    assert_eq!(
        e,
        [
            "t.toml:14:12: invalid tls_name `bad name!` (expected a host name or IP)",
            "t.toml:15:10: tls_ca is empty",
        ]
    );
    let e = rendered(&backend("transport = \"quic\""));
    assert!(e[0].contains("transport: unknown value \"quic\""), "{e:?}");
}

/// A pool of a udp, a tcp and a dot backend with `health` as its
/// `[pool.health]`.
fn pool_with_health(health: &str) -> String {
    format!(
        r#"[[listener]]
name = "l"
protocol = "udp"
listen = "53"
pool = "p"

[[pool]]
name = "p"

[pool.health]
{health}

[[pool.backend]]
name = "u"
address = "192.0.2.1"

[[pool.backend]]
name = "t"
address = "192.0.2.2"
transport = "tcp"

[[pool.backend]]
name = "d"
address = "192.0.2.3"
transport = "dot"
tls_name = "dns.example"
tls_ca = "ca.pem"
"#
    )
}

/// The check each backend of the first pool gets, by name.
fn effective(c: &Config) -> Vec<(String, HealthConfig)> {
    let p = &c.pools[0];
    p.backends
        .iter()
        .map(|b| {
            (
                b.name.clone(),
                p.health_for(&b.name).unwrap().for_backend(b),
            )
        })
        .collect()
}

#[test]
fn dns_checks_use_the_backend_transport_unless_set() {
    let c = Config::parse(&pool_with_health("check = \"dns\"")).unwrap();
    assert_eq!(c.pools[0].health.as_ref().unwrap().transport, None);
    let e = effective(&c);
    let transports: Vec<_> = e.iter().map(|(n, h)| (n.as_str(), h.transport)).collect();
    assert_eq!(
        transports,
        [
            ("u", Some(CheckTransport::Udp)),
            ("t", Some(CheckTransport::Tcp)),
            ("d", Some(CheckTransport::Dot)),
        ]
    );
    // Over DoT, with the backend's TLS settings.
    let dot = &e[2].1;
    assert_eq!(dot.tls_name.as_deref(), Some("dns.example"));
    assert_eq!(dot.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    assert!(dot.tls_verify);
    // Other kinds are left alone.
    let c = Config::parse(&pool_with_health("check = \"tcp\"")).unwrap();
    assert!(effective(&c).iter().all(|(_, h)| h.transport.is_none()));
}

#[test]
fn an_explicit_health_transport_wins() {
    let c = Config::parse(&pool_with_health("transport = \"udp\"")).unwrap();
    assert!(effective(&c)
        .iter()
        .all(|(_, h)| h.transport == Some(CheckTransport::Udp)));
    // Explicit dot: its own TLS keys first, then the backend's; either side
    // can turn verification off.
    let c = Config::parse(&pool_with_health(
        "transport = \"dot\"\ntls_name = \"health.example\"\ntls_verify = false",
    ))
    .unwrap();
    let e = effective(&c);
    assert!(e
        .iter()
        .all(|(_, h)| h.transport == Some(CheckTransport::Dot)));
    let (u, d) = (&e[0].1, &e[2].1);
    assert_eq!(u.tls_name.as_deref(), Some("health.example"));
    assert_eq!(u.tls_ca, None);
    assert_eq!(d.tls_name.as_deref(), Some("health.example"));
    assert_eq!(d.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    assert!(!u.tls_verify && !d.tls_verify);
    let lax_backend = pool_with_health("transport = \"dot\"")
        .replace("tls_ca = \"ca.pem\"", "tls_verify = false");
    let e = effective(&Config::parse(&lax_backend).unwrap());
    assert!(e[0].1.tls_verify);
    assert!(!e[2].1.tls_verify);
    // A backend's own health table can set it too.
    let src = format!(
        "{}\n[pool.backend.health]\ntransport = \"tcp\"\n",
        pool_with_health("check = \"dns\"")
    );
    let e = effective(&Config::parse(&src).unwrap());
    assert_eq!(e[2].1.transport, Some(CheckTransport::Tcp));
    assert_eq!(e[0].1.transport, Some(CheckTransport::Udp));
}

#[test]
fn health_transport_errors_are_located() {
    let e = rendered(&pool_with_health(
        "transport = \"quic\"\ntls_name = \"x.example\"",
    ));
    assert_eq!(
        e,
        [
            "t.toml:11:13: unknown transport `quic` (expected udp, tcp, dot, doh or doq)",
            "t.toml:12:12: tls_name is only used by check = \"dns\" with transport = \"dot\", \"doh\" or \"doq\" (a TLS backend's own tls_name is used by default)",
        ]
    );
    let e = rendered(&pool_with_health("tls_name = \"x.example\""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "t.toml:11:12: tls_name is only used by check = \"dns\" with transport = \"dot\""
        ),
        "{e:?}"
    );
    let e = rendered(&pool_with_health("check = \"tcp\"\ntransport = \"dot\""));
    assert_eq!(
        e,
        ["t.toml:12:13: transport is only used by check = \"dns\", not \"tcp\""]
    );
}

#[test]
fn the_handshake_rate_is_for_tls_listeners() {
    let l = &Config::parse(&listener("dot", "tls_cert = \"c\"\ntls_key = \"k\""))
        .unwrap()
        .listeners[0];
    assert_eq!(
        l.max_handshakes_per_second,
        DEFAULT_MAX_HANDSHAKES_PER_SECOND
    );
    let l = &Config::parse(&listener(
        "doh",
        "tls = false\nmax_handshakes_per_second = 0",
    ))
    .unwrap()
    .listeners[0];
    assert_eq!(l.max_handshakes_per_second, 0);
    assert_eq!(
        rendered(&listener("tcp", "max_handshakes_per_second = 10")),
        ["t.toml:6:29: `max_handshakes_per_second` applies to dot, doh, doq and doh3 listeners only, not tcp"]
    );
}

#[test]
fn doh_and_doq_backends_take_tls_keys_ports_and_a_path() {
    // DoH: port 443 by default, path /dns-query by default.
    let c = Config::parse(&backend("transport = \"doh\"\ntls_name = \"dns.example\"")).unwrap();
    let b = &c.pools[0].backends[0];
    assert_eq!(b.transport, Transport::Doh);
    assert_eq!(b.address, "192.0.2.1:443".parse().unwrap());
    assert_eq!(b.doh_path, "/dns-query");
    let tls = b.tls.as_ref().unwrap();
    assert!(tls.verify);
    assert_eq!(tls.name.as_deref(), Some("dns.example"));
    let c = Config::parse(
        &backend("transport = \"doh\"\ndoh_path = \"/q\"\ntls_verify = false")
            .replace("192.0.2.1", "192.0.2.1:8443"),
    )
    .unwrap();
    let b = &c.pools[0].backends[0];
    assert_eq!((b.address.port(), b.doh_path.as_str()), (8443, "/q"));
    assert!(!b.tls.as_ref().unwrap().verify);

    // DoQ: port 853 by default (RFC 9250), TLS keys as for DoT.
    let c = Config::parse(&backend("transport = \"doq\"\ntls_ca = \"ca.pem\"")).unwrap();
    let b = &c.pools[0].backends[0];
    assert_eq!(b.transport, Transport::Doq);
    assert_eq!(b.address, "192.0.2.1:853".parse().unwrap());
    assert_eq!(
        b.tls.as_ref().unwrap().ca.as_deref(),
        Some(std::path::Path::new("ca.pem"))
    );
}

#[test]
fn doh_path_errors_are_located() {
    assert_eq!(
        rendered(&backend("transport = \"dot\"\ndoh_path = \"/dns-query\"")),
        ["t.toml:14:12: `doh_path` applies to transport = \"doh\" backends only"]
    );
    assert_eq!(
        rendered(&backend("doh_path = \"/dns-query\"")),
        ["t.toml:13:12: `doh_path` applies to transport = \"doh\" backends only"]
    );
    assert_eq!(
        rendered(&backend("transport = \"doh\"\ndoh_path = \"dns-query\"")),
        ["t.toml:14:12: doh_path `dns-query` must start with / and have no query"]
    );
    assert_eq!(
        rendered(&backend("transport = \"doh\"\ndoh_path = \"/q?dns=x\"")),
        ["t.toml:14:12: doh_path `/q?dns=x` must start with / and have no query"]
    );
    let e = rendered(&backend("transport = \"quic\""));
    assert_eq!(
        e,
        ["t.toml:13:13: transport: unknown value \"quic\", expected one of `udp`, `tcp`, `dot`, `doh`, `doq`"]
    );
}

#[test]
fn health_checks_follow_doh_and_doq_backends() {
    let src = |transport: &str| {
        pool_with_health("check = \"dns\"").replace(
            "transport = \"dot\"",
            &format!("transport = \"{transport}\"\ndoh_path = \"/x\""),
        )
    };
    // Each backend's effective check: its own transport, with its TLS keys,
    // and over DoH its path.
    let c = Config::parse(&src("doh")).unwrap();
    let e = effective(&c);
    let (_, doh) = e.iter().find(|(n, _)| n == "d").expect("backend d").clone();
    assert_eq!(doh.transport, Some(CheckTransport::Doh));
    assert_eq!(doh.path, "/x");
    assert_eq!(doh.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    let e = rendered(&src("doq"));
    assert_eq!(
        e,
        ["t.toml:26:12: `doh_path` applies to transport = \"doh\" backends only"]
    );
    let c = Config::parse(&src("doq").replace("doh_path = \"/x\"\n", "")).unwrap();
    let e = effective(&c);
    let (_, doq) = e.iter().find(|(n, _)| n == "d").expect("backend d").clone();
    assert_eq!(doq.transport, Some(CheckTransport::Doq));
    assert_eq!(doq.tls_name.as_deref(), Some("dns.example"));
    // Explicit transports are accepted, and tls_name with them.
    for t in ["doh", "doq"] {
        let c = Config::parse(&pool_with_health(&format!(
            "transport = \"{t}\"\ntls_name = \"x.example\""
        )))
        .unwrap();
        let h = c.pools[0].health.as_ref().unwrap();
        assert_eq!(h.transport.map(CheckTransport::as_str), Some(t));
    }
}
