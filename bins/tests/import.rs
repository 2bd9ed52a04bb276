//! `dnsha import`: the seed tutorial's configurations, copied verbatim in
//! `tests/data/import/seed-*`, each become a dnsha configuration that
//! `dnsha check` accepts (run as a separate process on the written file,
//! as an operator would), with the values the sources hold; what has no
//! equivalent is a warning naming its file and line; malformed inputs are
//! located errors with exit status 1.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/import");

fn data(name: &str) -> String {
    format!("{DATA}/{name}")
}

/// A directory for the output and the access logs.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        Self { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("dnsha.toml")
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// `dnsha import ARGS --output OUT --log-dir LOGS`.
    fn import(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("import")
            .args(args)
            .arg("--output")
            .arg(self.out())
            .arg("--log-dir")
            .arg(self.logs())
            .output()
            .unwrap()
    }

    /// Imports `args`, which must succeed; the configuration as TOML and
    /// the warnings (stderr, with the data directory written `DIR`).
    fn imported(&self, args: &[&str]) -> (toml::Table, String, String) {
        let out = self.import(args);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let toml = std::fs::read_to_string(self.out()).unwrap();
        (toml.parse().unwrap(), toml, stderr)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace(DATA, "DIR")
}

/// `dnsha check --config PATH`, as a process: success and stderr.
fn check(path: &Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (out.status.success(), text(&out.stderr))
}

/// `dnsha check` passes, and the health checks it names can be set up as
/// `dnsha run` sets them up.
fn assert_checks(path: &Path) {
    let (ok, err) = check(path);
    assert!(
        ok,
        "dnsha check refused {}:\n{err}\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap()
    );
    let cfg = dnsha::daemon::load(path).unwrap();
    dnsha_health::HealthMonitor::validate(&cfg).unwrap();
}

fn listeners(doc: &toml::Table) -> Vec<String> {
    doc["listener"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {} {}",
                l["protocol"].as_str().unwrap(),
                l["listen"].as_str().unwrap(),
                l["pool"].as_str().unwrap()
            )
        })
        .collect()
}

fn pool<'a>(doc: &'a toml::Table, name: &str) -> &'a toml::Value {
    doc["pool"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no pool {name}"))
}

fn addresses(pool: &toml::Value) -> Vec<&str> {
    pool["backend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap())
        .collect()
}

fn vrrp(doc: &toml::Table) -> &toml::Value {
    &doc["vrrp"][0]
}

#[test]
fn the_seed_nginx_recipe_imports_with_its_keepalived_master_and_passes_check() {
    let place = Place::new();
    let master = data("seed-nginx-keepalived-master.conf");
    let nginx = data("seed-nginx-coredns.conf");
    let (doc, toml, warnings) = place.imported(&["--keepalived", &master, "--nginx", &nginx]);
    assert_checks(&place.out());
    assert_eq!(
        listeners(&doc),
        [
            "udp 0.0.0.0:53 dns_udp53_backend",
            "tcp 0.0.0.0:53 dns_udp53_backend",
            "tcp-passthrough 0.0.0.0:853 dot_backend",
            "tcp-passthrough 0.0.0.0:443 doh_backend",
        ]
    );
    let dns = pool(&doc, "dns_udp53_backend");
    assert_eq!(addresses(dns), ["192.168.1.1:53", "192.168.1.2:53"]);
    assert_eq!(dns["timeout_ms"].as_integer(), Some(1000));
    assert_eq!(
        addresses(pool(&doc, "dot_backend")),
        ["192.168.1.1:853", "192.168.1.2:853"]
    );
    assert_eq!(
        pool(&doc, "dot_backend")["timeout_ms"].as_integer(),
        Some(3000)
    );
    assert_eq!(
        addresses(pool(&doc, "doh_backend")),
        ["192.168.1.1:443", "192.168.1.2:443"]
    );
    let log = place.logs().join("dns.log").display().to_string();
    assert_eq!(
        doc["listener"][0]["access_log"].as_str(),
        Some(log.as_str())
    );
    let v = vrrp(&doc);
    assert_eq!(v["name"].as_str(), Some("VI_1"));
    assert_eq!(v["interface"].as_str(), Some("ens18"));
    assert_eq!(v["virtual_router_id"].as_integer(), Some(134));
    assert_eq!(v["priority"].as_integer(), Some(100));
    assert_eq!(v["advert_int"].as_integer(), Some(1));
    assert_eq!(v["auth_pass"].as_str(), Some("dnsvip"));
    assert_eq!(v["virtual_ipaddress"].to_string(), "[\"192.168.1.5/32\"]");
    // chk_nginx (weight -20) checked the proxy dnsha replaces.
    assert_eq!(
        v["track_pools"][0]["name"].as_str(),
        Some("dns_udp53_backend")
    );
    assert_eq!(v["track_pools"][0]["weight"].as_integer(), Some(-20));
    assert!(v.get("track_script").is_none());
    // Where each section came from.
    assert!(
        toml.contains(
            "# from DIR/seed-nginx-keepalived-master.conf:22 vrrp_instance VI_1\n"
                .replace("DIR", DATA)
                .as_str()
        ),
        "{toml}"
    );
    assert!(toml.contains(&format!("# from {DATA}/seed-nginx-coredns.conf:2 upstream dns_udp53_backend\n# and {DATA}/seed-nginx-coredns.conf:16 upstream dns_tcp53_backend\n")), "{toml}");
    // What has no equivalent, each at its line.
    for w in [
        "DIR/seed-nginx-keepalived-master.conf:2: warning: notification_email: dnsha sends no mail",
        "DIR/seed-nginx-keepalived-master.conf:8: warning: router_id: dnsha has no router id",
        "DIR/seed-nginx-coredns.conf:11: warning: error_log: dnsha logs to stderr",
        "DIR/seed-nginx-coredns.conf:12: warning: access_log ... basic: dnsha writes its own text format",
    ] {
        assert!(warnings.contains(w), "no `{w}` in:\n{warnings}");
    }
    assert!(warnings.contains("dnsha import: wrote "), "{warnings}");
}

#[test]
fn the_seed_nginx_backup_node_gets_priority_90() {
    let place = Place::new();
    let (doc, _, _) = place.imported(&[
        "--keepalived",
        &data("seed-nginx-keepalived-backup.conf"),
        "--nginx",
        &data("nginx-include.conf"),
    ]);
    assert_checks(&place.out());
    assert_eq!(vrrp(&doc)["priority"].as_integer(), Some(90));
    assert_eq!(vrrp(&doc)["virtual_router_id"].as_integer(), Some(134));
    // Through the include, with `log_format basic` defined: the same four
    // listeners.
    assert_eq!(doc["listener"].as_array().unwrap().len(), 4);
}

#[test]
fn the_seed_lvs_recipe_becomes_listeners_on_the_vip_with_health_checks() {
    let place = Place::new();
    let (doc, _, warnings) =
        place.imported(&["--keepalived", &data("seed-lvs-keepalived-master.conf")]);
    assert_checks(&place.out());
    assert_eq!(
        listeners(&doc),
        [
            "udp 192.168.1.5:53 vs-udp-192.168.1.5-53",
            "tcp 192.168.1.5:53 vs-tcp-192.168.1.5-53",
            "tcp-passthrough 192.168.1.5:853 vs-tcp-192.168.1.5-853",
            "tcp-passthrough 192.168.1.5:443 vs-tcp-192.168.1.5-443",
        ]
    );
    let udp = pool(&doc, "vs-udp-192.168.1.5-53");
    assert_eq!(udp["policy"].as_str(), Some("rr"));
    assert_eq!(addresses(udp), ["192.168.1.1:53", "192.168.1.2:53"]);
    assert_eq!(udp["health"]["check"].as_str(), Some("udp"));
    assert_eq!(udp["health"]["interval_ms"].as_integer(), Some(6000));
    assert_eq!(udp["health"]["timeout_ms"].as_integer(), Some(3000));
    // Only the first real server has nb_get_retry 3 and delay_before_retry 2.
    assert_eq!(udp["backend"][0]["health"]["retry"].as_integer(), Some(3));
    assert_eq!(
        udp["backend"][0]["health"]["delay_before_retry"].as_integer(),
        Some(2)
    );
    assert!(udp["backend"][1].get("health").is_none());
    let dot = pool(&doc, "vs-tcp-192.168.1.5-853");
    assert_eq!(dot["health"]["check"].as_str(), Some("tcp"));
    assert_eq!(addresses(dot), ["192.168.1.1:853", "192.168.1.2:853"]);
    assert_eq!(
        addresses(pool(&doc, "vs-tcp-192.168.1.5-443")),
        ["192.168.1.1:443", "192.168.1.2:443"]
    );
    let v = vrrp(&doc);
    assert_eq!(v["priority"].as_integer(), Some(100));
    assert_eq!(v["virtual_router_id"].as_integer(), Some(134));
    assert_eq!(v["auth_pass"].as_str(), Some("dnsvip"));
    for w in [
        "DIR/seed-lvs-keepalived-master.conf:3: warning: notification_email: dnsha sends no mail",
        "DIR/seed-lvs-keepalived-master.conf:36: warning: lb_kind DR: dnsha proxies the queries",
        "DIR/seed-lvs-keepalived-master.conf:62: warning: persistence_timeout 50: no timed persistence",
        "DIR/seed-lvs-keepalived-master.conf:12: warning: vrrp_garp_interval: no equivalent",
    ] {
        assert!(warnings.contains(w), "no `{w}` in:\n{warnings}");
    }
    // The backup node.
    let place = Place::new();
    let (doc, _, _) = place.imported(&["--keepalived", &data("seed-lvs-keepalived-backup.conf")]);
    assert_checks(&place.out());
    assert_eq!(vrrp(&doc)["priority"].as_integer(), Some(90));
    assert_eq!(doc["listener"].as_array().unwrap().len(), 4);
}

#[test]
fn the_seed_nftables_ruleset_becomes_pools_per_port() {
    let place = Place::new();
    let (doc, _, warnings) = place.imported(&["--nftables", &data("seed-nftables.conf")]);
    assert_checks(&place.out());
    assert_eq!(
        listeners(&doc),
        [
            "udp 0.0.0.0:53 nft-53",
            "tcp 0.0.0.0:53 nft-53",
            "tcp-passthrough 0.0.0.0:443 nft-443",
            "tcp-passthrough 0.0.0.0:853 nft-853",
        ]
    );
    assert_eq!(
        addresses(pool(&doc, "nft-53")),
        ["192.168.1.1:53", "192.168.1.2:53"]
    );
    assert_eq!(
        addresses(pool(&doc, "nft-853")),
        ["192.168.1.1:853", "192.168.1.2:853"]
    );
    assert_eq!(pool(&doc, "nft-53")["policy"].as_str(), Some("rr"));
    assert!(
        warnings.contains("DIR/seed-nftables.conf:4: warning: iifname ens18"),
        "{warnings}"
    );
    assert!(
        warnings.contains("DIR/seed-nftables.conf:14: warning: chain dnssnat:"),
        "{warnings}"
    );
}

#[test]
fn the_seed_haproxy_config_imports_and_check_only_misses_the_nodes_certificate() {
    let place = Place::new();
    let (doc, toml, warnings) = place.imported(&["--haproxy", &data("seed-haproxy.cfg")]);
    assert_eq!(
        listeners(&doc),
        [
            "tcp 0.0.0.0:53 dns_tcp_backend",
            "dot 0.0.0.0:853 dot_servers",
            "doh 0.0.0.0:443 doh_servers",
        ]
    );
    // DoH goes on to the servers' own DoH listeners, as HAProxy's mode
    // http does, each checked with a DoH query.
    let doh = pool(&doc, "doh_servers");
    assert_eq!(addresses(doh), ["192.168.1.1:443", "192.168.1.2:443"]);
    assert_eq!(doh["backend"][0]["transport"].as_str(), Some("doh"));
    assert_eq!(doh["backend"][0]["tls_verify"].as_bool(), Some(false));
    assert_eq!(doh["health"]["check"].as_str(), Some("dns"));
    assert_eq!(
        doc["listener"][1]["tls_cert"].as_str(),
        Some("/etc/haproxy/dns_cert.pem")
    );
    let dot = pool(&doc, "dot_servers");
    assert_eq!(dot["backend"][0]["name"].as_str(), Some("coredns-001"));
    assert_eq!(dot["backend"][0]["transport"].as_str(), Some("dot"));
    assert_eq!(dot["backend"][0]["tls_verify"].as_bool(), Some(false));
    assert_eq!(doc["admin"]["listen"].as_str(), Some("0.0.0.0:8088"));
    assert!(doc["admin"]["users"][0]
        .as_str()
        .unwrap()
        .starts_with("admin:$argon2id$"));
    assert!(!toml.contains("admin:password"), "{toml}");
    assert!(
        warnings.contains("DIR/seed-haproxy.cfg:33: warning: stats auth admin"),
        "{warnings}"
    );
    assert!(
        warnings.contains("DIR/seed-haproxy.cfg:3: warning: global: chroot /var/lib/haproxy"),
        "{warnings}"
    );
    // Everything validates: check's only complaints are the certificate
    // and key that live on the HAProxy node.
    let (ok, err) = check(&place.out());
    assert!(!ok);
    assert!(!err.trim().is_empty());
    for line in err.lines() {
        assert!(line.contains("/etc/haproxy/dns_cert.pem"), "{err}");
    }
}

#[test]
fn the_seed_haproxy_config_with_its_certificate_here_passes_check() {
    let place = Place::new();
    let certs = TestCa::new().write(place.dir.path(), "dns_cert", &["dns.rockylinux.cn"]);
    let crt = place.dir.path().join("dns_cert.pem");
    std::fs::copy(&certs.cert, &crt).unwrap();
    std::fs::copy(&certs.key, place.dir.path().join("dns_cert.pem.key")).unwrap();
    let cfg = std::fs::read_to_string(data("seed-haproxy.cfg"))
        .unwrap()
        .replace("/etc/haproxy/dns_cert.pem", &crt.display().to_string());
    let input = place.dir.path().join("haproxy.cfg");
    std::fs::write(&input, cfg).unwrap();
    let (doc, _, _) = place.imported(&["--haproxy", input.to_str().unwrap()]);
    assert_eq!(
        doc["listener"][2]["tls_key"].as_str(),
        Some(format!("{}.key", crt.display()).as_str())
    );
    assert_checks(&place.out());
}

#[test]
fn malformed_inputs_are_located_errors_with_exit_status_1() {
    let cases = [
        (
            "--keepalived",
            "bad-unbalanced.conf",
            "DIR/bad-unbalanced.conf:1: unbalanced braces: the block of `vrrp_instance VI_1` is never closed",
        ),
        (
            "--keepalived",
            "bad-include-loop-a.conf",
            "DIR/bad-include-loop-b.conf:2: include loop: DIR/bad-include-loop-a.conf -> DIR/bad-include-loop-b.conf -> DIR/bad-include-loop-a.conf",
        ),
        (
            "--nginx",
            "bad-unknown-directive.conf",
            "DIR/bad-unknown-directive.conf:8: unknown directive `proxy_timout` in server (nginx would refuse it too, unless a module defines it)",
        ),
        (
            "--nginx",
            "bad-missing-include.conf",
            "DIR/bad-missing-include.conf:2: include `DIR/stream_conf.d/coredns.conf`: cannot read: No such file or directory (os error 2)",
        ),
        ("--haproxy", "no-such-file.cfg", "DIR/no-such-file.cfg: cannot read: No such file or directory (os error 2)"),
        // Each reader refuses what the others are written in.
        ("--haproxy", "seed-nginx.conf", "DIR/seed-nginx.conf:1: `stream` outside of a section"),
        (
            "--nginx",
            "seed-lvs-keepalived-master.conf",
            "DIR/seed-lvs-keepalived-master.conf:5: unexpected `}`: `[email protected]` is missing its `;`",
        ),
    ];
    for (flag, file, expected) in cases {
        let place = Place::new();
        let out = place.import(&[flag, &data(file)]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert_eq!(err.trim(), expected, "{file}");
        assert!(!place.out().exists(), "{file}: an output was written");
    }
}

#[test]
fn without_output_the_configuration_goes_to_stdout_and_an_input_is_required() {
    let out = Command::new(bin())
        .args([
            "import",
            "--nftables",
            &data("seed-nftables.conf"),
            "--log-dir",
            "/tmp",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let doc: toml::Table = stdout.parse().unwrap();
    assert_eq!(doc["pool"].as_array().unwrap().len(), 3);
    assert!(
        text(&out.stderr).contains("dnsha import: 4 listener(s), 3 pool(s), 0 vrrp instance(s)")
    );
    let out = Command::new(bin())
        .args(["import", "--output", "x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--keepalived <FILE>"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn includes_take_shell_patterns_relative_to_the_including_file() {
    let place = Place::new();
    let conf_d = place.dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::copy(data("seed-nginx-coredns.conf"), conf_d.join("coredns.conf")).unwrap();
    std::fs::write(conf_d.join("coredns.conf.bak"), "garbage {").unwrap();
    std::fs::write(conf_d.join(".hidden.conf"), "garbage {").unwrap();
    let main = place.dir.path().join("nginx.conf");
    std::fs::write(
        &main,
        "stream {\n    include conf.d/*.conf;\n    include none.d/*.conf;\n}\n",
    )
    .unwrap();
    let (doc, _, warnings) = place.imported(&["--nginx", main.to_str().unwrap()]);
    assert_eq!(doc["listener"].as_array().unwrap().len(), 4);
    assert!(
        warnings.contains("nginx.conf:3: warning: include `none.d/*.conf` matches no file"),
        "{warnings}"
    );
    assert_checks(&place.out());
}

#[path = "vrrp_failover/lab.rs"]
mod lab;

/// The seed's nginx recipe, imported for each node, runs: two `dnsha run`
/// in network namespaces with the configurations `dnsha import` made from
/// the seed's files (its addresses replaced by the lab's, `ens18` by
/// `eth0`), two NSD backends and a client. The master's import (priority
/// 100) takes the VIP and the client's queries to the VIP are answered;
/// on SIGTERM the backup's (90) takes the VIP within its Skew_Time and
/// answers. Needs root, `ip` and NSD (`SKIPPED` otherwise).
#[test]
fn the_imported_nginx_recipe_fails_over_between_two_nodes() {
    if lab::skip(&[]) {
        return;
    }
    let lab = netns::Lab::with_subnet("imp", 93, &["a", "b", "n1", "n2", "c"]);
    let vip = lab.host(100);
    let (n1, n2) = (lab.node_addr("n1"), lab.node_addr("n2"));
    let _nsd1 = lab::nsd(&lab, "n1");
    let _nsd2 = lab::nsd(&lab, "n2");
    let files = tempfile::tempdir().unwrap();
    let adapt = |name: &str| {
        let text = std::fs::read_to_string(data(name))
            .unwrap()
            .replace("ens18", "eth0")
            .replace("192.168.1.5", &vip.to_string())
            .replace("192.168.1.1", &n1.to_string())
            .replace("192.168.1.2", &n2.to_string());
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let nginx = adapt("seed-nginx-coredns.conf");
    let node = |keepalived: &str| {
        let place = Place::new();
        let (doc, toml, _) =
            place.imported(&["--keepalived", &adapt(keepalived), "--nginx", &nginx]);
        assert_checks(&place.out());
        (place, doc, toml)
    };
    let (_pa, doc_a, conf_a) = node("seed-nginx-keepalived-master.conf");
    let (_pb, doc_b, conf_b) = node("seed-nginx-keepalived-backup.conf");
    assert_eq!(vrrp(&doc_a)["priority"].as_integer(), Some(100));
    assert_eq!(vrrp(&doc_b)["priority"].as_integer(), Some(90));

    let watch = lab::VipWatch::start(&lab, &["a", "b"], vip);
    let a = lab::start_balancer(&lab, "a", &conf_a);
    let _b = lab::start_balancer(&lab, "b", &conf_b);
    watch
        .wait(netns::mdi(90) + Duration::from_secs(5), |h| {
            h == [true, false]
        })
        .unwrap_or_else(|| {
            panic!(
                "the master's import never held the VIP alone\n{}{}",
                watch.timeline(),
                lab.logs()
            )
        });
    let answer = lab::ask_until(&lab, "c", vip, Duration::from_secs(5));
    assert!(answer == n1 || answer == n2, "{answer}");

    let stop = Instant::now();
    a.signal(Signal::SIGTERM).unwrap();
    let at = watch
        .wait(Duration::from_secs(3), |h| h == [false, true])
        .unwrap_or_else(|| {
            panic!(
                "the backup's import never took the VIP\n{}{}",
                watch.timeline(),
                lab.logs()
            )
        });
    let took = at - stop;
    println!(
        "imported nginx recipe: SIGTERM on the master, the backup holds the VIP after {took:?}"
    );
    assert!(
        took <= netns::skew(90) + Duration::from_millis(500),
        "{took:?}\n{}",
        watch.timeline()
    );
    let answer = lab::ask_until(&lab, "c", vip, Duration::from_secs(3));
    assert!(answer == n1 || answer == n2, "{answer}");
}

/// The seed's nginx.conf (its `stream` block includes
/// `/etc/nginx/stream_conf.d/*.conf`) and its stream file given together
/// (`--nginx` repeats); alone, nginx.conf holds nothing to serve here.
#[test]
fn the_seed_nginx_conf_and_its_stream_file_import_together() {
    let place = Place::new();
    let (doc, _, warnings) = place.imported(&[
        "--nginx",
        &data("seed-nginx.conf"),
        "--nginx",
        &data("seed-nginx-coredns.conf"),
    ]);
    assert_checks(&place.out());
    assert_eq!(doc["listener"].as_array().unwrap().len(), 4);
    if !Path::new("/etc/nginx/stream_conf.d").exists() {
        assert!(
            warnings.contains("DIR/seed-nginx.conf:3: warning: include `/etc/nginx/stream_conf.d/*.conf` matches no file"),
            "{warnings}"
        );
        let place = Place::new();
        let out = place.import(&["--nginx", &data("seed-nginx.conf")]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.ends_with("dnsha import: the inputs hold no listener and no VRRP instance dnsha can use (see the warnings above)\n"),
            "{err}"
        );
        assert!(
            err.contains("DIR/seed-nginx.conf:3: warning: include"),
            "{err}"
        );
    }
}
