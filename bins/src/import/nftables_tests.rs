//! Tests of the nftables reader.

use super::super::syntax::MapLoader;
use super::*;

fn plan_of(text: &str) -> Result<Plan> {
    let mut plan = Plan::default();
    import(
        &Source::new("nftables.conf", text),
        &mut MapLoader::default(),
        &mut plan,
    )?;
    Ok(plan)
}

#[test]
fn the_seed_ruleset_becomes_three_pools_and_four_listeners() {
    let plan = plan_of(include_str!("../../tests/data/import/seed-nftables.conf")).unwrap();
    let ls: Vec<String> = plan
        .listeners
        .iter()
        .map(|l| format!("{} {} {}", l.name, l.listen, l.pool))
        .collect();
    assert_eq!(
        ls,
        [
            "udp-53 0.0.0.0:53 nft-53",
            "tcp-53 0.0.0.0:53 nft-53",
            "tcp-passthrough-443 0.0.0.0:443 nft-443",
            "tcp-passthrough-853 0.0.0.0:853 nft-853",
        ]
    );
    let b: Vec<String> = plan.pools[0]
        .backends
        .iter()
        .map(|b| b.name.clone())
        .collect();
    assert_eq!(b, ["192.168.1.1:53", "192.168.1.2:53"]);
    assert_eq!(plan.pools.len(), 3);
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.loc.line == 4 && w.message.starts_with("iifname ens18")));
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.loc.line == 14 && w.message.contains("snat ip to 192.168.1.5")));
}

#[test]
fn weights_addresses_defines_and_errors() {
    let plan = plan_of(
        "define VIP = 10.0.0.5\ntable ip t {\n chain c {\n  type nat hook prerouting priority dstnat; policy accept;\n  ip daddr $VIP meta l4proto udp th dport domain dnat to numgen inc mod 3 map { 0 : 10.0.0.1, 1 : 10.0.0.1, 2 : 10.0.0.2:5353 }\n }\n chain f {\n  type filter hook input priority 0;\n }\n}\n",
    )
    .unwrap();
    assert_eq!(plan.listeners[0].listen.to_string(), "10.0.0.5:53");
    let p = &plan.pools[0];
    assert_eq!(p.policy, Policy::Wrr);
    assert_eq!(
        (p.backends[0].weight, p.backends[1].address.to_string()),
        (2, "10.0.0.2:5353".into())
    );
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.loc.line == 8 && w.message.starts_with("chain f (filter input)")));
    let e = |t: &str| plan_of(t).unwrap_err().to_string();
    assert_eq!(
        e("table ip t {\n chain c {\n  type nat hook prerouting priority 0;\n  udp dport 53 dnat to jhash ip saddr mod 2 map { 0 : 10.0.0.1 }\n }\n}\n"),
        "nftables.conf:4: dnat to jhash: expected an address"
    );
    assert_eq!(
        e("table ip t {\n chain c {\n"),
        "nftables.conf:2: unbalanced braces: this `{` is never closed"
    );
    assert_eq!(
        e("table ip t {\n chain c {\n  type nat hook output priority 0;\n  udp dport 53 ct mark 1 dnat to 10.0.0.1\n }\n}\n"),
        "nftables.conf:4: cannot read this rule at `ct`"
    );
}
