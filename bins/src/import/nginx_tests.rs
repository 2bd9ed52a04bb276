//! Tests of the nginx reader.

use super::super::syntax::{parse, Ends, Source, NGINX};
use super::*;

fn plan_of(name: &str, text: &str) -> Result<Plan> {
    let stmts = parse(&Source::new(name, text), NGINX, Ends::Semicolon)?;
    let mut plan = Plan::default();
    let hash = |_: &str| None;
    let exists = |_: &str| false;
    let opts = Options {
        log_dir: "/var/log/dnsha",
        hash: &hash,
        exists: &exists,
    };
    import(&stmts, &mut plan, &opts)?;
    Ok(plan)
}

#[test]
fn the_seed_stream_conf_becomes_listeners_and_three_pools() {
    let text = include_str!("../../tests/data/import/seed-nginx-coredns.conf");
    let plan = plan_of("coredns.conf", text).unwrap();
    let ls: Vec<String> = plan
        .listeners
        .iter()
        .map(|l| format!("{} {} {}", l.name, l.listen, l.pool))
        .collect();
    assert_eq!(
        ls,
        [
            "udp-53 0.0.0.0:53 dns_udp53_backend",
            "tcp-53 0.0.0.0:53 dns_udp53_backend",
            "tcp-passthrough-853 0.0.0.0:853 dot_backend",
            "tcp-passthrough-443 0.0.0.0:443 doh_backend",
        ]
    );
    assert_eq!(plan.pools.len(), 3);
    assert_eq!(plan.pools[0].keys, vec![("timeout_ms", int(1000))]);
    assert_eq!(plan.pools[1].keys, vec![("timeout_ms", int(3000))]);
    assert_eq!(plan.pools[0].origins.len(), 2);
    let log = plan.listeners[0]
        .keys
        .iter()
        .find(|(k, _)| *k == "access_log")
        .unwrap();
    assert_eq!(log.1.as_str(), Some("/var/log/dnsha/dns.log"));
    let error_logs = plan
        .warnings
        .iter()
        .filter(|w| w.message.starts_with("error_log"))
        .count();
    assert_eq!(error_logs, 4);
    // `basic` is defined in nginx.conf, not in this file.
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.message.starts_with("access_log ... basic")));
}

#[test]
fn the_same_file_inside_stream_with_its_log_format_needs_no_format_warning() {
    let inner = include_str!("../../tests/data/import/seed-nginx-coredns.conf");
    let text = format!("stream {{\n log_format basic '{BASIC_FIELDS}';\n{inner}\n}}\nhttp {{ }}\n");
    let plan = plan_of("nginx.conf", &text).unwrap();
    assert_eq!(plan.listeners.len(), 4);
    assert!(!plan
        .warnings
        .iter()
        .any(|w| w.message.starts_with("access_log")));
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.message.starts_with("http { }")));
}

#[test]
fn weights_balancing_ssl_and_errors() {
    let plan = plan_of(
        "n.conf",
        "upstream u { least_conn; server 10.0.0.1:853 weight=3 max_fails=2 fail_timeout=30s; server 10.0.0.2:853; }\n\
         server { listen 192.0.2.1:853 ssl; ssl_certificate c.pem; ssl_certificate_key k.pem; proxy_pass u;\n proxy_ssl on; allow 10.0.0.0/8; deny all; }\n",
    )
    .unwrap();
    let p = &plan.pools[0];
    assert_eq!(p.policy, Policy::Lc);
    assert_eq!(p.backends[0].weight, 3);
    assert!(p.keys.contains(&("max_fails", int(2))));
    assert!(p.keys.contains(&("fail_timeout_ms", int(30_000))));
    assert!(p.backends[1].keys.contains(&("transport", s("dot"))));
    let l = &plan.listeners[0];
    assert_eq!(l.proto, Proto::Dot);
    assert!(l.keys.contains(&("tls_cert", s("c.pem"))));
    assert!(l
        .keys
        .contains(&("allow", toml::Value::Array(vec![s("10.0.0.0/8")]))));
    let e = |t: &str| plan_of("n.conf", t).unwrap_err().to_string();
    assert_eq!(
        e("upstream u { server 10.0.0.1:53; }\nserver { listen 53; proxy_pass u; proxy_tmeout 1s; }\n"),
        "n.conf:2: unknown directive `proxy_tmeout` in server (nginx would refuse it too, unless a module defines it)"
    );
    assert_eq!(
        e("upstream u { server 10.0.0.1; }\nserver { listen 53; proxy_pass u; }\n"),
        "n.conf:1: server 10.0.0.1: the stream module needs a port"
    );
    assert_eq!(
        e("server { listen 53; proxy_pass nowhere; }\n"),
        "n.conf:1: proxy_pass nowhere: no upstream of that name, and not an address with a port"
    );
}
