//! The Grafana dashboard (`examples/grafana/dnsha.json`) and the Prometheus
//! alerts (`examples/prometheus/alerts.yml`) name only series a running
//! dnsha exposes, and `promtool` accepts the alerts.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::*;

const DASHBOARD: &str = include_str!("../../examples/grafana/dnsha.json");
const ALERTS: &str = include_str!("../../examples/prometheus/alerts.yml");
const PROMTOOL: &str = "/usr/bin/promtool";

/// The `dnsha_*` metric families a text names (a histogram's `_bucket`,
/// `_sum` and `_count` series stand for their family).
fn families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("dnsha_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .map_or_else(|| name.clone(), str::to_string);
        out.insert(name);
    }
    out
}

#[test]
fn the_dashboard_and_the_alerts_name_only_series_dnsha_exposes() {
    init_tracing();
    if let Some(why) = netns::skip_reason(&[PROMTOOL]) {
        skip(&why);
        return;
    }
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| p.len() >= 10));
    let mut wanted = families(DASHBOARD);
    wanted.extend(families(ALERTS));
    assert!(wanted.len() > 15, "{wanted:?}");

    // A balancer with everything the dashboard shows: listeners, a checked
    // pool with a cache, and a VRRP instance.
    let mut lab = netns::Lab::with_subnet("obs", 87, &["lb"]);
    let local: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let nsd = Nsd::start_in(&lab.ns("lb"), local, Ipv4Addr::new(10, 0, 0, 1));
    let vip = lab.host(100);
    let top = "[admin]\nlisten = \"127.0.0.1:8090\"\n";
    let cfg = vrrp_balancer(top, vip, nsd.addr(), true, (71, 100, "0.1"))
        + "[pool.health]\ninterval_ms = 500\n[pool.cache]\n";
    let path = lab.dir.path().join("dnsha.toml");
    std::fs::write(&path, cfg).unwrap();
    let i = run_in_lab(&mut lab, "lb", &path);
    let held = lab.wait(Duration::from_secs(10), |l| l.holds("lb", vip));
    assert!(held.is_some(), "{}", lab.proc_ref(i).log_text());
    let server = SocketAddr::from((vip, 53));
    for _ in 0..5 {
        let answer = lab.run_in("lb", || {
            query_udp(server, "www.example.test.", RecordType::A, T)
        });
        assert!(answer.is_ok(), "{}", lab.proc_ref(i).log_text());
    }
    let metrics = lab.run_in("lb", || {
        http_get("127.0.0.1:8090".parse().unwrap(), "/metrics")
    });
    let exposed: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = wanted.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "not in /metrics: {missing:?}\n{metrics}"
    );

    // promtool (Debian's prometheus package) accepts the rules.
    let alerts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/prometheus/alerts.yml");
    let out = std::process::Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(&alerts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn series_names_are_read_from_expressions() {
    let f = families(
        "rate(dnsha_queries_total[1m]) + histogram_quantile(0.5, dnsha_h_seconds_bucket{le})",
    );
    assert_eq!(
        f.into_iter().collect::<Vec<_>>(),
        ["dnsha_h_seconds", "dnsha_queries_total"]
    );
}
