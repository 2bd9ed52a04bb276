//! Tests of the keepalived reader (VRRP half).

use super::super::syntax::{parse, Ends, Source, KEEPALIVED};
use super::*;

fn import_text(text: &str) -> Result<Plan> {
    let stmts = parse(
        &Source::new("keepalived.conf", text),
        KEEPALIVED,
        Ends::Newline,
    )?;
    let mut plan = Plan::default();
    import(&stmts, &mut plan)?;
    Ok(plan)
}

fn key<'a>(v: &'a Vrrp, k: &str) -> Option<&'a toml::Value> {
    v.keys.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
}

#[test]
fn the_seed_nginx_master_becomes_an_instance_tracking_the_proxy() {
    let plan = import_text(include_str!(
        "../../tests/data/import/seed-nginx-keepalived-master.conf"
    ))
    .unwrap();
    let v = &plan.vrrp[0];
    assert_eq!(v.name, "VI_1");
    assert_eq!(v.origin.loc.line, 22);
    assert_eq!(key(v, "interface").unwrap().as_str(), Some("ens18"));
    assert_eq!(key(v, "virtual_router_id").unwrap().as_integer(), Some(134));
    assert_eq!(key(v, "priority").unwrap().as_integer(), Some(100));
    assert_eq!(key(v, "advert_int").unwrap().as_integer(), Some(1));
    assert_eq!(key(v, "auth_pass").unwrap().as_str(), Some("dnsvip"));
    assert_eq!(
        key(v, "virtual_ipaddress").unwrap().to_string(),
        "[\"192.168.1.5/32\"]"
    );
    assert_eq!(
        v.track_proxy.as_ref().map(|(w, l)| (*w, l.line)),
        Some((-20, 37))
    );
    assert!(key(v, "track_script").is_none());
    let lines: Vec<String> = plan.warnings.iter().map(|w| format!("{}", w.loc)).collect();
    assert!(
        lines.contains(&"keepalived.conf:2".to_string()),
        "{lines:?}"
    );
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.message.starts_with("notification_email:")));
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.message.starts_with("router_id:")));
}

#[test]
fn other_scripts_stay_scripts_and_every_key_is_read() {
    let plan = import_text(
        "global_defs {\n vrrp_version 3\n}\nvrrp_script chk_dns {\n script \"/usr/bin/dig @127.0.0.1 x\"\n interval 0.5\n timeout 2\n weight 10\n rise 2\n fall 3\n}\n\
         vrrp_sync_group G {\n group {\n  V6\n }\n}\n\
         vrrp_instance V6 {\n interface eth0\n virtual_router_id 7\n priority 150\n advert_int 0.1\n nopreempt\n preempt_delay 5\n\
         virtual_ipaddress {\n  2001:db8::5/64 dev eth0\n }\n track_interface {\n  eth1 weight -10\n  eth2\n }\n track_script {\n  chk_dns weight 20\n }\n\
         notify /usr/local/bin/n.sh\n notify_master \"/x.sh master\"\n garp_master_refresh 60\n}\n",
    )
    .unwrap();
    let v = &plan.vrrp[0];
    assert_eq!(key(v, "version").unwrap().as_integer(), Some(3));
    assert_eq!(key(v, "advert_int").unwrap().as_float(), Some(0.1));
    assert_eq!(
        key(v, "virtual_ipaddress").unwrap().to_string(),
        "[\"2001:db8::5/64\"]"
    );
    assert_eq!(key(v, "nopreempt").unwrap().as_bool(), Some(true));
    assert_eq!(
        key(v, "track_interface").unwrap().to_string(),
        "[{ name = \"eth1\", weight = -10 }, \"eth2\"]"
    );
    let script = key(v, "track_script").unwrap().to_string();
    assert!(
        script.contains("command = \"/usr/bin/dig @127.0.0.1 x\""),
        "{script}"
    );
    assert!(script.contains("weight = 20"), "{script}");
    assert!(script.contains("interval = 0.5"), "{script}");
    assert_eq!(
        key(v, "notify").unwrap().as_str(),
        Some("/usr/local/bin/n.sh")
    );
    assert_eq!(key(v, "sync_group").unwrap().as_str(), Some("G"));
    assert_eq!(
        key(v, "garp_master_refresh").unwrap().as_integer(),
        Some(60)
    );
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.message.starts_with("notify_master:") && w.loc.line == 35));
}

#[test]
fn bad_instances_are_located_errors() {
    let e = |t: &str| import_text(t).unwrap_err().to_string();
    assert_eq!(
        e("vrrp_instance A {\n interface e\n virtual_router_id 1\n priorty 100\n}\n"),
        "keepalived.conf:4: unknown keyword `priorty` in vrrp_instance A"
    );
    assert_eq!(
        e("vrrp_instance A {\n interface e\n virtual_router_id x\n}\n"),
        "keepalived.conf:3: virtual_router_id: `x` is not a valid number here"
    );
    assert_eq!(
        e("vrrp_instance A {\n interface e\n virtual_router_id 1\n}\n"),
        "keepalived.conf:1: vrrp_instance A has no virtual_ipaddress"
    );
    assert_eq!(
        e("vrrp_instance A {\n interface e\n virtual_router_id 1\n virtual_ipaddress {\n  10.0.0.1/33\n }\n}\n"),
        "keepalived.conf:5: virtual_ipaddress: `10.0.0.1/33` has a bad prefix length"
    );
}

#[test]
fn long_passwords_are_cut_as_keepalived_cuts_them() {
    let plan = import_text(
        "vrrp_instance A {\n interface e\n virtual_router_id 1\n authentication {\n  auth_type PASS\n  auth_pass 0123456789\n }\n virtual_ipaddress {\n  10.0.0.1\n }\n}\n",
    )
    .unwrap();
    assert_eq!(
        key(&plan.vrrp[0], "auth_pass").unwrap().as_str(),
        Some("01234567")
    );
    assert_eq!(plan.warnings[0].loc.line, 6);
}
