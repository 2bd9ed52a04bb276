//! DNS over TLS and DNS over HTTPS (issue 5), with real clients: kdig, dig,
//! curl, dnsperf, openssl, and raw HTTP/2 for the abuse cases. Certificates
//! are made at test time ([`TestCa`]).

#![allow(clippy::unwrap_used)]

mod common;

#[path = "dot_doh/client.rs"]
mod client;

#[path = "dot_doh/bad_input.rs"]
mod bad_input;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The name in the test certificates.
const HOST: &str = "dns.test";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

/// A CA and a server certificate for `dns.test` and 127.0.0.1 in a
/// temporary directory (kept alive by the returned value).
struct Pki {
    _dir: tempfile::TempDir,
    ca: TestCa,
    files: CertFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let files = ca.write(dir.path(), "server", &[HOST, "127.0.0.1"]);
    Pki {
        _dir: dir,
        ca,
        files,
    }
}

/// A DoT and a DoH listener (plus UDP, for readiness) in front of
/// `backends`; `doh` lines are added to the DoH listener, `pool` to the pool.
fn tls_config(
    listen: SocketAddr,
    doh: SocketAddr,
    admin: SocketAddr,
    files: &CertFiles,
    doh_extra: &str,
    pool: &str,
    backends: &[(&str, SocketAddr)],
) -> String {
    let (cert, key) = (files.cert.display(), files.key.display());
    let mut s = format!(
        r#"
[admin]
listen = "{admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{listen}"
pool = "p"

[[listener]]
name = "dot"
protocol = "dot"
listen = "{listen}"
pool = "p"
tls_cert = "{cert}"
tls_key = "{key}"
handshake_timeout_ms = 1000
max_handshakes_per_client = 4
max_connections_per_client = 8

[[listener]]
name = "doh"
protocol = "doh"
listen = "{doh}"
pool = "p"
tls_cert = "{cert}"
tls_key = "{key}"
read_timeout_ms = 1000
{doh_extra}

[[pool]]
name = "p"
{pool}
"#
    );
    for (name, addr) in backends {
        s.push_str(&format!(
            "\n[[pool.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    s
}

/// Runs a command and returns stdout and stderr together.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn kdig(addr: SocketAddr, ca: &std::path::Path, extra: &[&str]) -> String {
    kdig_for(addr, ca, &["www.example.test", "A"], extra)
}

/// kdig to `addr` verifying the certificate against `ca` for `HOST`,
/// asking `question` (name and type), with `extra` options after it.
fn kdig_for(addr: SocketAddr, ca: &std::path::Path, question: &[&str], extra: &[&str]) -> String {
    let port = addr.port().to_string();
    let ca = format!("+tls-ca={}", ca.display());
    let host = format!("+tls-hostname={HOST}");
    let mut args = vec![
        "@127.0.0.1",
        "-p",
        &port,
        ca.as_str(),
        host.as_str(),
        "+time=3",
        "+retry=0",
    ];
    args.extend_from_slice(question);
    args.extend_from_slice(extra);
    run("kdig", &args)
}

/// The `10.0.0.x` addresses in a client's output.
fn answers(out: &str) -> Vec<String> {
    out.split_whitespace()
        .filter(|w| w.starts_with("10.0.0."))
        .map(str::to_string)
        .collect()
}

struct Stack {
    pki: Pki,
    n1: Nsd,
    n2: Nsd,
    d: Dnsha,
    listen: SocketAddr,
    doh: SocketAddr,
    admin: SocketAddr,
}

fn stack(doh_extra: &str) -> Stack {
    stack_with(doh_extra, "policy = \"rr\"")
}

/// The same with `pool` lines in the pool.
fn stack_with(doh_extra: &str, pool: &str) -> Stack {
    init_tracing();
    let pki = pki();
    let (n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, doh, admin) = (free_addr(), free_addr(), free_addr());
    let cfg = tls_config(
        listen,
        doh,
        admin,
        &pki.files,
        doh_extra,
        pool,
        &[("a", n1.addr()), ("b", n2.addr())],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    d.wait_tcp(listen);
    d.wait_tcp(doh);
    Stack {
        pki,
        n1,
        n2,
        d,
        listen,
        doh,
        admin,
    }
}

#[test]
fn kdig_and_dig_over_dot_and_doh_balance_per_query() {
    let s = stack("");
    let ca = &s.pki.files.ca;
    let mut seen = Vec::new();
    // kdig over DoT, verifying the certificate.
    for _ in 0..4 {
        let out = kdig(s.listen, ca, &["+tls"]);
        assert!(out.contains("TLS session (TLS1.3)"), "{out}");
        seen.extend(answers(&out));
    }
    // kdig over DoH: HTTP/2 POST, then GET.
    let out = kdig(s.doh, ca, &["+https"]);
    assert!(
        out.contains("HTTP session (HTTP/2-POST)") && out.contains("status: 200"),
        "{out}"
    );
    seen.extend(answers(&out));
    let out = kdig(s.doh, ca, &["+https-get"]);
    assert!(out.contains("HTTP session (HTTP/2-GET)"), "{out}");
    seen.extend(answers(&out));
    // dig 9.18.
    let (dot_port, doh_port) = (s.listen.port().to_string(), s.doh.port().to_string());
    let dig_ca = format!("+tls-ca={}", ca.display());
    let dig_host = format!("+tls-hostname={HOST}");
    for (port, mode) in [
        (&dot_port, "+tls"),
        (&doh_port, "+https"),
        (&doh_port, "+https-get"),
    ] {
        let out = dig(&[
            "@127.0.0.1",
            "-p",
            port,
            mode,
            &dig_ca,
            &dig_host,
            "+tries=1",
            "+time=3",
            "www.example.test",
            "+short",
        ]);
        let got = answers(&out);
        assert_eq!(got.len(), 1, "dig {mode}: {out}");
        seen.extend(got);
    }
    // Balanced per query: both backends answered.
    assert!(seen.iter().any(|a| a == "10.0.0.1"), "{seen:?}");
    assert!(seen.iter().any(|a| a == "10.0.0.2"), "{seen:?}");
    assert_eq!(seen.len(), 9, "{seen:?}");
    assert_eq!(metric(s.admin, "dnsha_queries_total{listener=\"dot\""), 5);
    assert_eq!(metric(s.admin, "dnsha_queries_total{listener=\"doh\""), 4);
    let _ = (&s.n1, &s.n2, &s.d);
}

#[test]
fn tls12_alpn_and_session_resumption() {
    let s = stack("");
    let connect = format!("127.0.0.1:{}", s.listen.port());
    let sess = s.pki.files.ca.with_file_name("session.pem");
    let sess = sess.to_str().unwrap();
    let ca = s.pki.files.ca.to_str().unwrap();
    let base = [
        "s_client", "-connect", &connect, "-tls1_2", "-alpn", "dot", "-CAfile", ca,
    ];
    let first = run_stdin_closed("openssl", &[&base[..], &["-sess_out", sess]].concat());
    assert!(first.contains("New, TLSv1.2"), "{first}");
    assert!(first.contains("ALPN protocol: dot"), "{first}");
    assert!(first.contains("Verify return code: 0 (ok)"), "{first}");
    let second = run_stdin_closed("openssl", &[&base[..], &["-sess_in", sess]].concat());
    assert!(second.contains("Reused, TLSv1.2"), "{second}");
    // DoH offers h2 and http/1.1; a client asking for something else fails.
    let doh = format!("127.0.0.1:{}", s.doh.port());
    let h2 = run_stdin_closed(
        "openssl",
        &["s_client", "-connect", &doh, "-alpn", "h2", "-CAfile", ca],
    );
    assert!(h2.contains("ALPN protocol: h2"), "{h2}");
    let bad = run_stdin_closed(
        "openssl",
        &[
            "s_client", "-connect", &connect, "-alpn", "imap", "-CAfile", ca,
        ],
    );
    assert!(!bad.contains("ALPN protocol: imap"), "{bad}");
    assert!(metric(s.admin, "dnsha_tls_resumed_total{listener=\"dot\"") >= 1);
    assert!(
        metric(
            s.admin,
            "dnsha_tls_handshake_failures_total{listener=\"dot\""
        ) >= 1
    );
}

fn run_stdin_closed(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl` exit status line: "CODE VERSION" and the headers.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (headers, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().to_string(), headers.to_lowercase())
}

/// The wire form of an `A` query for `name`.
fn a_query(name: &str) -> Vec<u8> {
    build_query(name, RecordType::A).unwrap().to_vec().unwrap()
}

/// The path of a DoH GET for `query` (`/dns-query?dns=...`).
fn get_path(query: &[u8]) -> String {
    format!(
        "/dns-query?dns={}",
        dnsha_proxy::frontend::doh::encode_get_param(query)
    )
}

/// With `[pool.cache]`, DoH and DoT are answered from the cache too: a
/// second DoH GET a second later gets the cached answer with `max-age`
/// aged by that second, and DoT (kdig) gets it without a backend query.
#[test]
fn doh_and_dot_answer_from_the_cache_with_an_aged_max_age() {
    let s = stack_with("", "policy = \"rr\"\n[pool.cache]\n");
    let ca = s.pki.files.ca.to_str().unwrap().to_string();
    let resolve = format!("{HOST}:{}:127.0.0.1", s.doh.port());
    let query = a_query("cached.example.test");
    let get = format!("https://{HOST}:{}{}", s.doh.port(), get_path(&query));
    let args = [
        "--cacert",
        ca.as_str(),
        "--resolve",
        resolve.as_str(),
        get.as_str(),
    ];
    let (code, headers) = curl(&args);
    assert_eq!(code, "200 2", "{headers}");
    assert!(headers.contains("cache-control: max-age=300"), "{headers}");
    let backend_queries = |s: &Stack| -> u64 {
        status(s.admin)["pools"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["queries"].as_u64().unwrap())
            .sum()
    };
    let before = backend_queries(&s);
    std::thread::sleep(Duration::from_millis(1100));
    let (code, headers) = curl(&args);
    assert_eq!(code, "200 2", "{headers}");
    assert!(
        headers.contains("cache-control: max-age=299")
            || headers.contains("cache-control: max-age=298"),
        "{headers}"
    );
    // The DoH query's flags, for the same cache key.
    let out = kdig_for(
        s.listen,
        &s.pki.files.ca,
        &["cached.example.test", "A"],
        &["+tls", "+noedns", "+noadflag"],
    );
    assert!(out.contains("10.0.0."), "{out}");
    assert_eq!(
        backend_queries(&s),
        before,
        "a cached answer went to a backend"
    );
    assert!(metric(s.admin, "dnsha_cache_answers_total{listener=\"doh\"") >= 1);
    assert!(metric(s.admin, "dnsha_cache_answers_total{listener=\"dot\"") >= 1);
}

#[test]
fn curl_gets_every_status_over_http1_and_http2() {
    let s = stack("");
    let ca = s.pki.files.ca.to_str().unwrap().to_string();
    let base = format!("https://{HOST}:{}", s.doh.port());
    let resolve = format!("{HOST}:{}:127.0.0.1", s.doh.port());
    let query = a_query("www.example.test");
    let dir = tempfile::tempdir().unwrap();
    let qfile = dir.path().join("q.bin");
    std::fs::write(&qfile, &query).unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 1_000_000]).unwrap();
    let response = dir.path().join("response.bin");
    std::fs::write(&response, vec![0xffu8; 40]).unwrap();
    let get = format!("{base}{}", get_path(&query));
    let at = |f: &std::path::Path| format!("@{}", f.display());
    let ct = "content-type: application/dns-message";
    for (version, label) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let common = [
            "--cacert",
            ca.as_str(),
            "--resolve",
            resolve.as_str(),
            version,
        ];
        let cases: Vec<(Vec<String>, &str)> = vec![
            (vec![get.clone()], "200"),
            (
                vec![
                    "-H".into(),
                    ct.into(),
                    "--data-binary".into(),
                    at(&qfile),
                    format!("{base}/dns-query"),
                ],
                "200",
            ),
            (vec![format!("{base}/dns-query?dns=!!notbase64")], "400"),
            (
                vec![
                    "-H".into(),
                    ct.into(),
                    "--data-binary".into(),
                    at(&response),
                    format!("{base}/dns-query"),
                ],
                "400",
            ),
            (vec![format!("{base}/other?dns=AAAA")], "404"),
            (
                vec!["-X".into(), "PUT".into(), format!("{base}/dns-query")],
                "405",
            ),
            (
                vec![
                    "-H".into(),
                    ct.into(),
                    "--data-binary".into(),
                    at(&big),
                    format!("{base}/dns-query"),
                ],
                "413",
            ),
            (
                vec![
                    "-H".into(),
                    "content-type: text/plain".into(),
                    "--data-binary".into(),
                    at(&qfile),
                    format!("{base}/dns-query"),
                ],
                "415",
            ),
        ];
        for (args, want) in cases {
            let mut all: Vec<&str> = common.to_vec();
            all.extend(args.iter().map(String::as_str));
            let (status, headers) = curl(&all);
            assert_eq!(status, format!("{want} {label}"), "curl {all:?}\n{headers}");
            if want == "200" {
                assert!(
                    headers.contains("content-type: application/dns-message"),
                    "{headers}"
                );
                assert!(headers.contains("cache-control: max-age=300"), "{headers}");
            }
            if want == "405" {
                assert!(headers.contains("allow: get, post"), "{headers}");
            }
        }
    }
    for (status, n) in [
        ("200", 4),
        ("400", 4),
        ("404", 2),
        ("405", 2),
        ("413", 2),
        ("415", 2),
    ] {
        let got = metric(
            s.admin,
            &format!("dnsha_http_responses_total{{listener=\"doh\",protocol=\"doh\",status=\"{status}\"}}"),
        );
        assert_eq!(got, n, "status {status}");
    }
}

#[test]
fn plain_http_doh_trusts_forwarded_for_only_from_proxies() {
    init_tracing();
    let n1 = Nsd::start(ip(1));
    let (trusting, strict, admin) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = format!(
        r#"
[admin]
listen = "{admin}"

[[listener]]
name = "trusting"
protocol = "doh"
listen = "{trusting}"
pool = "p"
tls = false
trusted_proxies = ["127.0.0.0/8"]
access_log = "{log}"

[[listener]]
name = "strict"
protocol = "doh"
listen = "{strict}"
pool = "p"
tls = false
allow = ["127.0.0.0/8"]

[[pool]]
name = "p"

[[pool.backend]]
name = "a"
address = "{a}"
"#,
        log = log.display(),
        a = n1.addr()
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(trusting);
    d.wait_tcp(strict);
    let query = a_query("www.example.test");
    let path = get_path(&query);
    // HTTP/1.1 and HTTP/2 with prior knowledge, through a "proxy" at 127.0.0.1.
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let (status, _) = curl(&[
            version,
            "-H",
            "X-Forwarded-For: 203.0.113.50, 10.20.30.40",
            &format!("http://127.0.0.1:{}{path}", trusting.port()),
        ]);
        assert!(status.starts_with("200"), "{status}");
    }
    assert!(
        wait_file(&log, "10.20.30.40"),
        "access log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The strict listener trusts nobody: the header cannot get a client
    // past its ACL, and the real peer (127.0.0.1) is allowed.
    let (status, _) = curl(&[
        "-H",
        "X-Forwarded-For: 8.8.8.8",
        &format!("http://127.0.0.1:{}{path}", strict.port()),
    ]);
    assert!(status.starts_with("200"), "{status}");
    // The trusting listener applies its ACL to the forwarded client.
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            "X-Forwarded-For: 8.8.8.8",
            &format!("http://127.0.0.1:{}{path}", trusting.port()),
        ])
        .output()
        .unwrap();
    let m = Message::from_vec(&out.stdout).expect("a DNS answer");
    assert_eq!(m.response_code(), ResponseCode::Refused);
}

fn wait_file(path: &std::path::Path, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn dnsperf_over_dot_loses_nothing() {
    let s = stack("");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("queries.txt");
    std::fs::write(
        &data,
        "www.example.test A\nwhoami.example.test TXT\nexample.test SOA\nnx.example.test AAAA\n",
    )
    .unwrap();
    let port = s.listen.port().to_string();
    let failures = || {
        metric(
            s.admin,
            "dnsha_tls_handshake_failures_total{listener=\"dot\"",
        )
    };
    let failures_before = failures();
    let out = run(
        "dnsperf",
        &[
            "-m",
            "dot",
            "-s",
            "127.0.0.1",
            "-p",
            &port,
            "-d",
            data.to_str().unwrap(),
            "-c",
            "4",
            "-q",
            "64",
            "-l",
            "3",
        ],
    );
    let field = |name: &str| -> u64 {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{out}"))
    };
    let (sent, lost) = (field("Queries sent"), field("Queries lost"));
    assert!(sent > 500, "{out}");
    assert_eq!(lost, 0, "{out}");
    assert_eq!(failures(), failures_before);
}

/// UDP client → dnsha A → DoT → dnsha B (DoT listener) → NSD.
#[test]
fn udp_to_dot_backend_chain_reconnects_after_restart() {
    init_tracing();
    let pki = pki();
    let backend_files = pki
        .ca
        .write(pki.files.ca.parent().unwrap(), "backend", &["backend.test"]);
    let nsd = Nsd::start(ip(7));
    let (b_dot, b_udp, b_admin) = (free_addr(), free_addr(), free_addr());
    let b_cfg = format!(
        r#"
[admin]
listen = "{b_admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{b_udp}"
pool = "p"

[[listener]]
name = "dot"
protocol = "dot"
listen = "{b_dot}"
pool = "p"
tls_cert = "{cert}"
tls_key = "{key}"

[[pool]]
name = "p"

[[pool.backend]]
name = "nsd"
address = "{nsd}"
"#,
        cert = backend_files.cert.display(),
        key = backend_files.key.display(),
        nsd = nsd.addr()
    );
    let mut b = Dnsha::start(bin(), &b_cfg);
    b.wait_udp(b_udp);
    b.wait_tcp(b_dot);
    let (a_listen, a_admin) = (free_addr(), free_addr());
    let a_cfg = format!(
        r#"
[admin]
listen = "{a_admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{a_listen}"
pool = "p"

[[listener]]
name = "tcp"
protocol = "tcp"
listen = "{a_listen}"
pool = "p"

[[pool]]
name = "p"
timeout_ms = 1000
max_fails = 0

[[pool.backend]]
name = "b"
address = "{b_dot}"
transport = "dot"
tls_name = "backend.test"
tls_ca = "{ca}"
"#,
        ca = backend_files.ca.display()
    );
    let mut a = Dnsha::start(bin(), &a_cfg);
    a.wait_tcp(a_listen);
    // (B's readiness probe was one connection.)
    let conns_before = metric(b_admin, "dnsha_connections_total{listener=\"dot\"");
    for _ in 0..20 {
        let m = query_udp(a_listen, "www.example.test.", RecordType::A, T).expect("udp via dot");
        assert_eq!(a_record(&m), Some(ip(7)));
    }
    // Twenty queries, one pooled TLS connection to B.
    assert_eq!(
        metric(b_admin, "dnsha_connections_total{listener=\"dot\""),
        conns_before + 1
    );
    let m = query_tcp(a_listen, "www.example.test.", RecordType::A, T).expect("tcp via dot");
    assert_eq!(a_record(&m), Some(ip(7)));
    // An answer over the UDP client's 512 bytes: TC=1, and its TCP retry
    // gets everything.
    let m = query_udp(a_listen, "big.example.test.", RecordType::TXT, T).expect("big over udp");
    assert!(m.truncated(), "{m:?}");
    let m = query_tcp(a_listen, "big.example.test.", RecordType::TXT, T).expect("big over tcp");
    assert_eq!(txt_strings(&m).len(), BIG_TXT_RECORDS);
    // The TCP listener's workers keep their own upstream connections: one
    // more per worker that took a client connection (two TCP clients).
    let conns = metric(b_admin, "dnsha_connections_total{listener=\"dot\"");
    assert!(
        (conns_before + 2..=conns_before + 3).contains(&conns),
        "{conns_before} -> {conns}"
    );
    assert_eq!(metric(b_admin, "dnsha_queries_total{listener=\"dot\""), 23);

    // B restarts: A's connection dies; A reconnects on the next queries.
    b.kill();
    let m = query_udp(a_listen, "www.example.test.", RecordType::A, T).expect("servfail");
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    let mut b = Dnsha::start(bin(), &b_cfg);
    b.wait_tcp(b_dot);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ok = 0;
    while Instant::now() < deadline && ok < 5 {
        match query_udp(a_listen, "www.example.test.", RecordType::A, T) {
            Ok(m) if a_record(&m) == Some(ip(7)) => ok += 1,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    assert_eq!(ok, 5, "no answers after the DoT backend restarted");
    assert!(metric(a_admin, "dnsha_tls_upstream_failures_total") == 0);
}

#[test]
fn sighup_swaps_the_certificate_without_dropping_connections() {
    let s = stack("");
    let cfg_old = client::client_config(&s.pki.files.ca, &[b"dot"]);
    let mut conn = client::connect(s.listen, &cfg_old, HOST).expect("tls connect");
    let m = client::dot_query(&mut conn, "www.example.test.").unwrap();
    assert!(a_record(&m).is_some());
    // A new certificate from another CA, same files, same configuration.
    let ca2 = TestCa::new();
    let dir = s.pki.files.cert.parent().unwrap().join("new");
    std::fs::create_dir(&dir).unwrap();
    let new = ca2.write(&dir, "new", &[HOST, "127.0.0.1"]);
    std::fs::copy(&new.cert, &s.pki.files.cert).unwrap();
    std::fs::copy(&new.key, &s.pki.files.key).unwrap();
    s.d.signal(Signal::SIGHUP).unwrap();
    assert!(
        s.d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        s.d.log()
    );
    // The open connection keeps working.
    let m = client::dot_query(&mut conn, "www.example.test.").expect("same connection");
    assert!(a_record(&m).is_some());
    // New handshakes present the new certificate (a fresh client: one that
    // resumes its session is not shown a certificate at all).
    let fresh_old = client::client_config(&s.pki.files.ca, &[b"dot"]);
    assert!(client::connect(s.listen, &fresh_old, HOST).is_err());
    let cfg_new = client::client_config(&new.ca, &[b"dot"]);
    let mut fresh = client::connect(s.listen, &cfg_new, HOST).expect("new certificate");
    assert!(client::dot_query(&mut fresh, "www.example.test.").is_ok());
    // A broken key on the next reload is refused; the running one stays.
    std::fs::write(&s.pki.files.key, "garbage").unwrap();
    s.d.signal(Signal::SIGHUP).unwrap();
    assert!(
        s.d.wait_log("reload refused", Duration::from_secs(5)),
        "{}",
        s.d.log()
    );
    let mut again = client::connect(s.listen, &cfg_new, HOST).expect("still serving");
    assert!(client::dot_query(&mut again, "www.example.test.").is_ok());
}

#[test]
fn check_reports_missing_mismatched_and_expired_certificates() {
    let pki = pki();
    let dir = pki.files.cert.parent().unwrap();
    let other = pki.ca.write(dir, "other", &[HOST]);
    let expired = pki.ca.try_write(dir, "old", &[HOST], true).unwrap();
    let write = |cert: &std::path::Path, key: &std::path::Path| {
        let cfg = format!(
            "[[listener]]\nname = \"dot\"\nprotocol = \"dot\"\nlisten = \"127.0.0.1:853\"\npool = \"p\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n[[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"127.0.0.1\"\n",
            cert.display(),
            key.display()
        );
        let path = dir.join("check.toml");
        std::fs::write(&path, cfg).unwrap();
        let out = Command::new(bin())
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _) = write(&pki.files.cert, &pki.files.key);
    assert!(ok);
    let (ok, err) = write(&dir.join("missing.crt"), &pki.files.key);
    assert!(!ok);
    assert!(err.contains("check.toml:6:12: tls_cert `"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
    let (ok, err) = write(&pki.files.cert, &other.key);
    assert!(!ok);
    assert!(err.contains("check.toml:7:11: tls_key `"), "{err}");
    assert!(err.contains("does not match"), "{err}");
    let (ok, err) = write(&expired.cert, &expired.key);
    assert!(!ok);
    assert!(
        err.contains("check.toml:6:12:") && err.contains("expired"),
        "{err}"
    );
}

/// HTTP/1.1 keep-alive lasts `idle_timeout_ms`, not `read_timeout_ms`.
#[test]
fn http1_keep_alive_outlives_the_read_timeout() {
    use std::io::{Read, Write};
    let s = stack("");
    let cfg = client::client_config(&s.pki.files.ca, &[b"http/1.1"]);
    let mut c = client::connect(s.doh, &cfg, HOST).unwrap();
    let q = a_query("www.example.test");
    let req = format!("GET {} HTTP/1.1\r\nHost: {HOST}\r\n\r\n", get_path(&q));
    for _ in 0..2 {
        c.write_all(req.as_bytes()).unwrap();
        c.flush().unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // Longer than the listener's read_timeout_ms (1 s).
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// DoH sends queries for `udp` backends over UDP, as dnsdist does: the
/// backend here is a second dnsha with only a UDP listener, so a query sent
/// over TCP would be refused. A truncated UDP answer is asked again over
/// TCP (straight to NSD, which has both) and arrives whole.
#[test]
fn doh_reaches_udp_backends_over_udp_and_retries_truncated_answers_over_tcp() {
    init_tracing();
    let pki = pki();
    let nsd = Nsd::start(ip(8));
    let (b_udp, b_admin) = (free_addr(), free_addr());
    let b_cfg = format!(
        r#"
[admin]
listen = "{b_admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{b_udp}"
pool = "p"

[[pool]]
name = "p"

[[pool.backend]]
name = "nsd"
address = "{nsd}"
"#,
        nsd = nsd.addr()
    );
    let mut b = Dnsha::start(bin(), &b_cfg);
    b.wait_udp(b_udp);
    let (udp, doh, doh_big, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
    let (cert, key) = (pki.files.cert.display(), pki.files.key.display());
    let a_cfg = format!(
        r#"
[admin]
listen = "{admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{udp}"
pool = "via-b"

[[listener]]
name = "doh"
protocol = "doh"
listen = "{doh}"
pool = "via-b"
tls_cert = "{cert}"
tls_key = "{key}"

[[listener]]
name = "doh-big"
protocol = "doh"
listen = "{doh_big}"
pool = "nsd"
tls_cert = "{cert}"
tls_key = "{key}"

[[pool]]
name = "via-b"

[[pool.backend]]
name = "b"
address = "{b_udp}"

[[pool]]
name = "nsd"

[[pool.backend]]
name = "nsd"
address = "{nsd}"
"#,
        nsd = nsd.addr()
    );
    let mut a = Dnsha::start(bin(), &a_cfg);
    a.wait_udp(udp);
    a.wait_tcp(doh);
    a.wait_tcp(doh_big);
    let before = metric(b_admin, "dnsha_queries_total{listener=\"udp\"");
    let ca = &pki.files.ca;
    for mode in ["+https", "+https-get", "+https", "+https-get"] {
        let out = kdig(doh, ca, &[mode]);
        assert!(out.contains("status: 200"), "{out}");
        assert_eq!(answers(&out), vec!["10.0.0.8".to_string()], "{out}");
    }
    // All four reached B over UDP (B has no TCP listener at all).
    assert!(metric(b_admin, "dnsha_queries_total{listener=\"udp\"") >= before + 4);
    assert_eq!(
        metric(admin, "dnsha_tcp_fallbacks_total{listener=\"doh\""),
        0
    );
    assert_eq!(metric(admin, "dnsha_servfail_total{listener=\"doh\""), 0);

    // NSD truncates the big answer over UDP; DoH has no size limit, so
    // dnsha asks again over TCP and the client gets every record.
    let out = kdig_for(
        doh_big,
        ca,
        &["big.example.test", "TXT"],
        &["+https", "+bufsize=1232"],
    );
    assert!(out.contains("status: 200"), "{out}");
    assert!(!out.contains(" tc"), "answer still truncated: {out}");
    let txt = out
        .lines()
        .filter(|l| l.contains("\tTXT\t") || l.contains(" TXT "))
        .filter(|l| l.starts_with("big.example.test"))
        .count();
    assert_eq!(txt, BIG_TXT_RECORDS, "{out}");
    assert_eq!(
        metric(admin, "dnsha_tcp_fallbacks_total{listener=\"doh-big\""),
        1
    );
    let _ = (&nsd, &b);
}
