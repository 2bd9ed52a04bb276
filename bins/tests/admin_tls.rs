//! The admin endpoint over HTTPS (`[admin] tls_cert`, `tls_key`): the
//! command-line clients reach it as `https://HOST:PORT`, checking its
//! certificate against `DNSHA_ADMIN_CA`; a plain HTTP client gets nothing;
//! a reload serves a renewed certificate without closing the endpoint.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use test_support::TestCa;

/// `dnsha ARGS` with `env`: exit status, stdout, stderr.
fn dnsha(args: &[&str], env: &[(&str, &std::path::Path)]) -> (bool, String, String) {
    let mut c = Command::new(bin());
    c.args(args).env_remove("DNSHA_ADMIN_CA");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tls_config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr, dir: &str) -> String {
    config(listen, admin, "", &[("ns1", backend, 1)]).replacen(
        &format!("listen = \"{admin}\"\n"),
        &format!(
            "listen = \"{admin}\"\ntls_cert = \"{dir}/admin.crt\"\ntls_key = \"{dir}/admin.key\"\n"
        ),
        1,
    )
}

#[test]
fn the_clients_reach_an_https_admin_endpoint_and_a_reload_renews_its_certificate() {
    init_tracing();
    let nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let ca1 = TestCa::new();
    let files = ca1.write(dir.path(), "admin", &["localhost"]);
    std::fs::copy(&files.ca, first.join("ca.crt")).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = tls_config(listen, admin, nsd.addr(), &dir.path().display().to_string());
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    let url = format!("https://localhost:{}", admin.port());
    let ca1_file = first.join("ca.crt");

    // Trusting its CA: status and an action work over HTTPS.
    let (ok, out, err) = dnsha(
        &["status", "--admin", &url],
        &[("DNSHA_ADMIN_CA", &ca1_file)],
    );
    assert!(ok, "{out}{err}\n{}", d.log());
    assert!(out.contains("ns1"), "{out}");
    let (ok, out, err) = dnsha(
        &["backend", "drain", "--admin", &url, "p", "ns1"],
        &[("DNSHA_ADMIN_CA", &ca1_file)],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("now drain"), "{out}");
    // Without it, the certificate is refused; over plain HTTP, no answer.
    let (ok, _, err) = dnsha(&["status", "--admin", &url], &[]);
    assert!(!ok && err.contains("certificate"), "{err}");
    let (ok, _, err) = dnsha(&["status", "--admin", &admin.to_string()], &[]);
    assert!(!ok, "plain HTTP to an HTTPS endpoint answered: {err}");

    // A renewed certificate from another CA, same files: served after a
    // SIGHUP, by the same endpoint.
    let ca2 = TestCa::new();
    let renewed = ca2.write(&second, "admin", &["localhost"]);
    std::fs::copy(&renewed.cert, &files.cert).unwrap();
    std::fs::copy(&renewed.key, &files.key).unwrap();
    d.signal(Signal::SIGHUP).unwrap();
    let ca2_file = second.join("ca.crt");
    let renewed_served = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        dnsha(
            &["status", "--admin", &url],
            &[("DNSHA_ADMIN_CA", &ca2_file)],
        )
        .0
    });
    assert!(renewed_served, "{}", d.log());
    assert!(
        d.log().contains("admin certificate reloaded"),
        "{}",
        d.log()
    );
    let (ok, _, err) = dnsha(
        &["status", "--admin", &url],
        &[("DNSHA_ADMIN_CA", &ca1_file)],
    );
    assert!(!ok && err.contains("certificate"), "{err}");
}
