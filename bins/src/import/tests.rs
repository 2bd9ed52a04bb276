//! The seed's configurations through the whole translation, without files.

use super::syntax::MapLoader;
use super::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/import/");

fn seed(name: &str) -> Source {
    let text = std::fs::read_to_string(format!("{DATA}{name}")).unwrap_or_default();
    Source::new(name, &text)
}

fn run(sources: &[(Kind, Source)]) -> Result<(toml::Table, Imported)> {
    let hash = |p: &str| crate::auth::hash_password(p).ok();
    let exists = |_: &str| true;
    let opts = Options {
        log_dir: "/var/log/dnsha",
        hash: &hash,
        exists: &exists,
    };
    let out = translate(sources, &mut MapLoader::default(), &opts)?;
    Ok((out.text.parse().unwrap(), out))
}

#[test]
fn nginx_and_its_keepalived_make_one_node_tracking_its_pools() {
    let (doc, out) = run(&[
        (Kind::Keepalived, seed("seed-nginx-keepalived-master.conf")),
        (Kind::Nginx, seed("seed-nginx-coredns.conf")),
    ])
    .unwrap();
    let vrrp = &doc["vrrp"][0];
    assert_eq!(vrrp["name"].as_str(), Some("VI_1"));
    assert_eq!(vrrp["priority"].as_integer(), Some(100));
    assert_eq!(
        vrrp["track_pools"].to_string(),
        "[{ name = \"dns_udp53_backend\", weight = -20 }, { name = \"dot_backend\", weight = -20 }, { name = \"doh_backend\", weight = -20 }]"
    );
    let listeners = doc["listener"].as_array().unwrap();
    assert_eq!(listeners.len(), 4);
    assert!(
        out.text
            .contains("# from seed-nginx-keepalived-master.conf:22 vrrp_instance VI_1\n"),
        "{}",
        out.text
    );
    assert!(
        out.summary
            .starts_with("4 listener(s), 3 pool(s), 1 vrrp instance(s)"),
        "{}",
        out.summary
    );
}

#[test]
fn haproxy_makes_dot_doh_tcp_and_admin() {
    let (doc, out) = run(&[(Kind::Haproxy, seed("seed-haproxy.cfg"))]).unwrap();
    let l = doc["listener"].as_array().unwrap();
    let brief: Vec<String> = l
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {}",
                l["name"].as_str().unwrap(),
                l["protocol"].as_str().unwrap(),
                l["listen"].as_str().unwrap(),
                l["pool"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            "dns_tcp_frontend tcp 0.0.0.0:53 dns_tcp_backend",
            "dot dot 0.0.0.0:853 dot_servers",
            "doh doh 0.0.0.0:443 doh_servers",
        ]
    );
    assert_eq!(l[1]["tls_cert"].as_str(), Some("/etc/haproxy/dns_cert.pem"));
    assert_eq!(
        l[1]["tls_key"].as_str(),
        Some("/etc/haproxy/dns_cert.pem.key")
    );
    assert_eq!(l[0]["idle_timeout_ms"].as_integer(), Some(60_000));
    assert_eq!(l[0]["max_connections"].as_integer(), Some(3000));
    let dot = &doc["pool"][1];
    assert_eq!(dot["backend"][0]["transport"].as_str(), Some("dot"));
    assert_eq!(dot["backend"][0]["tls_verify"].as_bool(), Some(false));
    assert_eq!(dot["health"]["check"].as_str(), Some("tls"));
    assert_eq!(doc["pool"][0]["retries"].as_integer(), Some(3));
    let admin = &doc["admin"];
    assert_eq!(admin["listen"].as_str(), Some("0.0.0.0:8088"));
    assert_eq!(admin["refresh_ms"].as_integer(), Some(30_000));
    assert_eq!(admin["auth"].as_str(), Some("all"));
    let users = admin["users"].as_array().unwrap();
    assert!(users[0].as_str().unwrap().starts_with("admin:$argon2id$"));
    assert!(!out.text.contains("admin:password"));
    assert!(
        out.warnings
            .iter()
            .any(|w| w.starts_with("seed-haproxy.cfg:33: warning: stats auth admin")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn lvs_and_nftables_import_alone() {
    let (doc, _) = run(&[(Kind::Keepalived, seed("seed-lvs-keepalived-backup.conf"))]).unwrap();
    assert_eq!(doc["vrrp"][0]["priority"].as_integer(), Some(90));
    assert_eq!(doc["listener"].as_array().unwrap().len(), 4);
    let (doc, _) = run(&[(Kind::Nftables, seed("seed-nftables.conf"))]).unwrap();
    assert_eq!(doc["pool"].as_array().unwrap().len(), 3);
}

#[test]
fn the_master_and_backup_of_one_pair_are_not_one_node() {
    let e = run(&[
        (Kind::Keepalived, seed("seed-lvs-keepalived-master.conf")),
        (Kind::Keepalived, seed("seed-lvs-keepalived-backup.conf")),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("seed-lvs-keepalived-backup.conf:15: vrrp_instance VI_1 is already imported from seed-lvs-keepalived-master.conf:16"), "{e}");
}

#[test]
fn shell_patterns_match_as_glob_does() {
    let m = |p: &str, n: &str| {
        let p: Vec<char> = p.chars().collect();
        let n: Vec<char> = n.chars().collect();
        matches(&p, &n)
    };
    assert!(m("*.conf", "coredns.conf"));
    assert!(m("*", "x"));
    assert!(!m("*.conf", "coredns.conf.bak"));
    assert!(m("a?c", "abc"));
    assert!(m("[a-c]x*", "bxyz"));
    assert!(!m("[!a-c]x", "bx"));
    assert!(m("*a*b", "xxaxxb"));
    assert!(!m("*a*b", "xxaxxbc"));
}

/// Seeds with bytes removed, braces, quotes and words inserted, cut
/// short: every result is a configuration or an error, never a panic.
#[test]
fn mangled_inputs_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let one_hash = crate::auth::hash_password("x").ok();
    let hash = move |_: &str| one_hash.clone();
    let exists = |_: &str| false;
    let opts = Options {
        log_dir: "/var/log/dnsha",
        hash: &hash,
        exists: &exists,
    };
    let pieces = [
        "{",
        "}",
        ";",
        "\"",
        "'",
        "#",
        "!",
        "\n",
        " ",
        "include x*",
        "include y",
        ":",
        ",",
        "\\",
        "server",
        "listen 53",
        "weight=0",
        "0",
        "99999999999999999999",
        "[",
        "]",
        "/",
        "*",
        "$VIP",
        "map {",
        "-",
        "::",
        "é",
    ];
    let seeds = [
        (Kind::Keepalived, "seed-lvs-keepalived-master.conf"),
        (Kind::Keepalived, "seed-nginx-keepalived-master.conf"),
        (Kind::Nginx, "seed-nginx-coredns.conf"),
        (Kind::Haproxy, "seed-haproxy.cfg"),
        (Kind::Nftables, "seed-nftables.conf"),
    ];
    let (mut ok, mut errors) = (0, 0);
    for (kind, name) in seeds {
        let text: Vec<char> = seed(name).text.chars().collect();
        for _ in 0..150 {
            let mut chars = text.clone();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..=chars.len());
                match rng.gen_range(0..4) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => chars.truncate(at),
                    _ => {
                        let p = pieces[rng.gen_range(0..pieces.len())];
                        chars.splice(at..at, p.chars());
                    }
                }
            }
            let text: String = chars.into_iter().collect();
            let mut loader = MapLoader::default();
            loader.files.insert("x1".into(), text.clone());
            match translate(&[(kind, Source::new(name, &text))], &mut loader, &opts) {
                Ok(_) => ok += 1,
                Err(Error::ImportInvalid { text, errors }) => {
                    panic!("an invalid configuration was made: {errors:?}\n{text}")
                }
                Err(_) => errors += 1,
            }
        }
    }
    assert!(ok > 50 && errors > 50, "{ok} imported, {errors} refused");
}

#[test]
fn values_dnsha_refuses_are_errors_at_their_source_line() {
    let vrrp = "vrrp_instance A {\n interface e\n virtual_router_id 300\n priority 0\n virtual_ipaddress {\n  10.0.0.1\n }\n}\n";
    let e = run(&[(Kind::Keepalived, Source::new("k.conf", vrrp))])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "k.conf:1: vrrp_instance A: virtual_router_id: 300 is outside 1..255\n\
         k.conf:1: vrrp_instance A: priority: 0 is outside 1..255"
    );
    let nginx = "upstream u { server 10.0.0.1:53; }\nserver { listen 53 udp; proxy_pass u; proxy_timeout 2d; }\n";
    let e = run(&[(Kind::Nginx, Source::new("n.conf", nginx))])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("n.conf:1: upstream u: timeout_ms"), "{e}");
}

#[test]
fn haproxy_listen_sections_weights_and_per_server_checks() {
    let cfg = "defaults\n    mode tcp\n    timeout connect 500ms\n\
               listen dns 192.0.2.53:53\n    balance leastconn\n    \
               server a 10.0.0.1:53 check inter 1s rise 3 fall 2 weight 2\n    \
               server b 10.0.0.2 check maxconn 100\n    \
               server c dns.example:53 check\n";
    let (doc, out) = run(&[(Kind::Haproxy, Source::new("h.cfg", cfg))]).unwrap();
    let l = &doc["listener"][0];
    assert_eq!(l["listen"].as_str(), Some("192.0.2.53:53"));
    assert_eq!(l["protocol"].as_str(), Some("tcp"));
    let p = &doc["pool"][0];
    assert_eq!(p["policy"].as_str(), Some("lc"));
    assert_eq!(p["backend"][1]["address"].as_str(), Some("10.0.0.2:53"));
    assert_eq!(p["backend"][0]["weight"].as_integer(), Some(2));
    assert_eq!(p["health"]["check"].as_str(), Some("tcp"));
    assert_eq!(
        p["backend"][0]["health"]["interval_ms"].as_integer(),
        Some(1000)
    );
    assert_eq!(p["health"]["timeout_ms"].as_integer(), Some(500));
    assert_eq!(
        p["backend"][1]["health"]["interval_ms"].as_integer(),
        Some(2000)
    );
    assert_eq!(p["backend"][0]["health"]["rise"].as_integer(), Some(3));
    let w = out.warnings.join("\n");
    assert!(
        w.contains("h.cfg:8: warning: server c dns.example:53: not an IP address"),
        "{w}"
    );
    assert!(w.contains("h.cfg:4: warning: server maxconn"), "{w}");
    let e = run(&[(
        Kind::Haproxy,
        Source::new(
            "h.cfg",
            "frontend f\n    bind :53\n    default_backend nope\n",
        ),
    )])
    .unwrap_err()
    .to_string();
    assert_eq!(e, "h.cfg:3: default_backend nope: no backend of that name");
    let e = run(&[(
        Kind::Haproxy,
        Source::new("h.cfg", "backend b\n    server a 10.0.0.1:53 chek\n"),
    )])
    .unwrap_err()
    .to_string();
    assert_eq!(e, "h.cfg:2: server a: unknown parameter `chek`");
}
