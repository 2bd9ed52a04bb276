//! The incident actions on one backend of a running dnsha: `dnsha backend
//! drain|enable|check` (and `POST /backends/...` under them), as
//! `ipvsadm -e -w 0` or HAProxy's `disable server`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::*;

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

/// `dnsha ARGS`: exit status, stdout, stderr.
fn dnsha(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Which backends answered `n` UDP queries (by the address they give).
fn answerers(listen: SocketAddr, n: usize) -> BTreeSet<Ipv4Addr> {
    (0..n)
        .filter_map(|_| {
            query_udp(listen, "www.example.test.", RecordType::A, T)
                .ok()
                .and_then(|m| a_record(&m))
        })
        .collect()
}

#[test]
fn drain_enable_and_check_a_backend_from_the_command_line() {
    init_tracing();
    let (n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, admin) = (free_addr(), free_addr());
    let backends = |w: u32| [("ns1", n1.addr(), 1), ("ns2", n2.addr(), w)];
    // An active check (a pool without `[pool.health]` only has passive
    // marking), slow enough that only the forced probe runs in the test.
    let health = "[pool.health]\ninterval_ms = 60000\n";
    let mut d = Dnsha::start(bin(), &config(listen, admin, health, &backends(1)));
    d.wait_udp(listen);
    let admin_arg = admin.to_string();
    assert_eq!(answerers(listen, 20), BTreeSet::from([ip(1), ip(2)]));

    let (ok, out, err) = dnsha(&["backend", "drain", "--admin", &admin_arg, "p", "ns2"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.trim(),
        "backend ns2 of pool p drained: now drain, 0 queries in flight"
    );
    assert_eq!(answerers(listen, 20), BTreeSet::from([ip(1)]));
    assert!(
        d.log().contains("backend drained by the operator"),
        "{}",
        d.log()
    );
    // `dnsha status`, `/status` and `/metrics` say so.
    let (ok, table, err) = dnsha(&["status", "--admin", &admin_arg]);
    assert!(ok, "{err}");
    let row = table
        .lines()
        .find(|l| l.contains("ns2"))
        .unwrap_or_default();
    assert!(row.contains("drain"), "{table}");
    assert_eq!(status(admin)["pools"][0]["backends"][1]["state"], "drain");
    assert!(
        http_get(admin, "/metrics").contains("dnsha_backend_drained{pool=\"p\",backend=\"ns2\""),
        "metrics"
    );
    assert_eq!(
        metric(admin, "dnsha_backend_drained{pool=\"p\",backend=\"ns2\""),
        1
    );

    // A reload that changes its weight keeps the drain.
    d.rewrite_config(&config(listen, admin, health, &backends(3)));
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert_eq!(status(admin)["pools"][0]["backends"][1]["state"], "drain");
    assert_eq!(answerers(listen, 20), BTreeSet::from([ip(1)]));

    // Its check still runs, and can be run now.
    let (ok, out, err) = dnsha(&["backend", "check", "--admin", &admin_arg, "p", "ns2"]);
    assert!(ok, "{out}{err}");
    assert!(
        d.wait_log("health check forced", Duration::from_secs(2)),
        "{}",
        d.log()
    );
    let probes = |d: &Dnsha| {
        let m = http_get(admin, "/metrics");
        m.lines()
            .find(|l| {
                l.starts_with("dnsha_health_checks_total{pool=\"p\",backend=\"ns2\",")
                    && l.contains("result=\"ok\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{m}\n{}", d.log()))
    };
    // The probe that one forced has finished.
    std::thread::sleep(Duration::from_millis(300));
    let before = probes(&d);
    let (ok, out, err) = dnsha(&["backend", "check", "--admin", &admin_arg, "p", "ns2"]);
    assert!(ok, "{out}{err}");
    let forced = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        probes(&d) > before
    });
    assert!(forced, "no probe at once\n{}", d.log());
    // A pool without an active check has nothing to force.
    let (ok, _, err) = dnsha(&["backend", "check", "--admin", &admin_arg, "nope", "ns2"]);
    assert!(!ok);
    assert!(err.contains("no backend `ns2` in pool `nope`"), "{err}");

    let (ok, out, err) = dnsha(&["backend", "enable", "--admin", &admin_arg, "p", "ns2"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.trim(),
        "backend ns2 of pool p enabled: now up, 0 queries in flight"
    );
    assert_eq!(answerers(listen, 20), BTreeSet::from([ip(1), ip(2)]));

    // A backend that does not exist is an error that names it.
    let (ok, _, err) = dnsha(&["backend", "drain", "--admin", &admin_arg, "p", "ns9"]);
    assert!(!ok);
    assert!(err.contains("no backend `ns9` in pool `p`"), "{err}");
    d.kill();
}

#[test]
fn a_pool_whose_backends_are_all_drained_answers_as_it_does_without_backends() {
    init_tracing();
    let n1 = Nsd::start(ip(1));
    let (listen, admin) = (free_addr(), free_addr());
    let mut d = Dnsha::start(bin(), &config(listen, admin, "", &[("ns1", n1.addr(), 1)]));
    d.wait_udp(listen);
    let admin_arg = admin.to_string();
    let (ok, out, err) = dnsha(&["backend", "drain", "--admin", &admin_arg, "p", "ns1"]);
    assert!(ok, "{out}{err}");
    // The default `on_no_backend` answers SERVFAIL at once.
    let m = query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    let (ok, out, err) = dnsha(&["backend", "enable", "--admin", &admin_arg, "p", "ns1"]);
    assert!(ok, "{out}{err}");
    let m = query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
    assert_eq!(a_record(&m), Some(ip(1)));
    d.kill();
}

/// `dnsha hash-password` with `input` on its stdin.
fn hash_password(input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dnsha ARGS` as `DNSHA_ADMIN_USER`/`DNSHA_ADMIN_PASSWORD`.
fn dnsha_as(user: &str, password: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env("DNSHA_ADMIN_USER", user)
        .env("DNSHA_ADMIN_PASSWORD", password)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `[admin] users`: the actions need a user (HTTP basic auth against an
/// Argon2 hash), reads stay open until `auth = "all"`.
#[test]
fn admin_users_guard_the_actions_and_with_auth_all_every_request() {
    init_tracing();
    let (ok, hash, err) = hash_password("s3cret\n");
    assert!(ok && hash.starts_with("$argon2id$"), "{hash}{err}");
    let (ok, _, err) = hash_password("\n");
    assert!(!ok && err.contains("empty password"), "{err}");
    let n1 = Nsd::start(ip(1));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = |auth: &str| {
        config(listen, admin, "", &[("ns1", n1.addr(), 1)]).replace(
            &format!("listen = \"{admin}\"\n"),
            &format!("listen = \"{admin}\"\nusers = [\"admin:{hash}\"]\n{auth}"),
        )
    };
    let mut d = Dnsha::start(bin(), &cfg(""));
    d.wait_udp(listen);
    let a = admin.to_string();
    let drain = ["backend", "drain", "--admin", a.as_str(), "p", "ns1"];
    // No user: 401.
    let (ok, _, err) = dnsha(&drain);
    assert!(!ok && err.contains("401 Unauthorized"), "{err}");
    // A wrong password: 401, logged.
    let (ok, _, err) = dnsha_as("admin", "wrong", &drain);
    assert!(!ok && err.contains("401 Unauthorized"), "{err}");
    assert!(
        d.wait_log("admin authentication failed", Duration::from_secs(2)),
        "{}",
        d.log()
    );
    let (ok, _, err) = dnsha_as("nobody", "s3cret", &drain);
    assert!(!ok && err.contains("401"), "{err}");
    assert_eq!(status(admin)["pools"][0]["backends"][0]["state"], "up");
    // The right one: done, and logged with its user.
    let (ok, out, err) = dnsha_as("admin", "s3cret", &drain);
    assert!(ok, "{out}{err}");
    assert!(d.log().contains("user=admin"), "{}", d.log());
    assert_eq!(status(admin)["pools"][0]["backends"][0]["state"], "drain");
    // Reads stay open (Prometheus)...
    assert!(http_get(admin, "/metrics").contains("dnsha_backend_drained"));
    // ...until auth = "all".
    d.rewrite_config(&cfg("auth = \"all\"\n"));
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    let refused = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let (ok, _, err) = dnsha(&["status", "--admin", &a]);
        !ok && err.contains("401")
    });
    assert!(refused, "{}", d.log());
    let (ok, table, err) = dnsha_as("admin", "s3cret", &["status", "--admin", &a]);
    assert!(ok && table.contains("drain"), "{table}{err}");
    assert!(d.log().contains("admin endpoint settings changed in place"));
    // A new connection limit rebinds the same address (the old socket is
    // closed first).
    d.rewrite_config(&cfg("auth = \"all\"\nmax_connections = 8\n"));
    d.signal(Signal::SIGHUP).unwrap();
    let rebound = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        d.log().matches("admin endpoint listening").count() == 2
    });
    assert!(rebound, "{}", d.log());
    assert!(
        !d.log().contains("admin endpoint not restarted"),
        "{}",
        d.log()
    );
    let (ok, _, err) = dnsha_as("admin", "s3cret", &["status", "--admin", &a]);
    assert!(ok, "{err}");
    d.kill();
}
