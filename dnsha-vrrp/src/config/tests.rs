use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    vrrp: Vec<InstanceConfig>,
}

fn parse(s: &str) -> Vec<InstanceConfig> {
    toml::from_str::<File>(s).unwrap().vrrp
}

const MINIMAL: &str = r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 134
priority = 100
virtual_ipaddress = ["192.168.1.5"]
"#;

#[test]
fn defaults_are_keepalived_defaults() {
    let v = parse(MINIMAL);
    assert!(validate_all(&v).is_empty());
    let rc = v[0].router_config(Ipv4Addr::new(10, 0, 0, 1)).unwrap();
    assert_eq!(rc.advert_int_cs, 100);
    assert_eq!(rc.auth, Auth::None);
    assert!(rc.preempt);
    assert_eq!(rc.preempt_delay, Duration::ZERO);
    assert_eq!(rc.garp, GarpConfig::default());
    assert_eq!(rc.primary_ip, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        rc.vips,
        [Vip {
            addr: Ipv4Addr::new(192, 168, 1, 5).into(),
            prefix_len: 32
        }]
    );
    // The own interface is always tracked, as FAULT.
    assert_eq!(
        rc.trackers,
        [TrackerSpec {
            name: "interface:eth0".into(),
            weight: 0
        }]
    );
}

#[test]
fn full_instance() {
    let v = parse(
        r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 134
priority = 100
advert_int = 2
auth_pass = "dnsvip"
virtual_ipaddress = ["192.168.1.5/24", "192.168.1.6"]
nopreempt = true
preempt_delay = 10
unicast_src_ip = "10.0.0.1"
unicast_peer = ["10.0.0.2", "10.0.0.3"]
garp_master_delay = 0
garp_master_repeat = 3
garp_master_refresh = 60
track_interface = ["eth1", { name = "eth2", weight = -30 }]
track_script = [{ name = "chk", command = "true", interval = 2, weight = -20, rise = 2, fall = 3 }]
track_pools = ["coredns", { name = "backup", weight = -10 }]
notify = "/etc/dnsha/notify.sh"
"#,
    );
    assert_eq!(validate_all(&v), []);
    let rc = v[0].router_config(Ipv4Addr::new(10, 9, 9, 9)).unwrap();
    assert_eq!(rc.advert_int_cs, 200);
    assert_eq!(rc.auth, Auth::password("dnsvip"));
    assert!(!rc.preempt);
    assert_eq!(rc.preempt_delay, Duration::from_secs(10));
    assert_eq!(rc.primary_ip, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(rc.vips[0].prefix_len, 24);
    assert_eq!(rc.garp.delay, Duration::ZERO);
    assert_eq!(rc.garp.repeat, 3);
    assert_eq!(rc.garp.refresh, Some(Duration::from_secs(60)));
    // Unset, the lower-priority bursts follow the garp_master_* settings.
    assert_eq!(rc.garp.lower_prio_delay, Duration::ZERO);
    assert_eq!(rc.garp.lower_prio_repeat, 3);
    let names: Vec<(&str, i32)> = rc
        .trackers
        .iter()
        .map(|t| (t.name.as_str(), t.weight))
        .collect();
    assert_eq!(
        names,
        [
            ("interface:eth0", 0),
            ("interface:eth1", 0),
            ("interface:eth2", -30),
            ("script:chk", -20),
            ("pool:coredns", 0),
            ("pool:backup", -10),
        ]
    );
    assert_eq!(v[0].unicast_peers().len(), 2);
    assert_eq!(v[0].track_script[0].timeout(), Duration::from_secs(2));
}

/// keepalived's `garp_lower_prio_delay` and `garp_lower_prio_repeat`,
/// with the ranges of their `garp_master_*` counterparts.
#[test]
fn garp_lower_prio_keys() {
    let v = parse(&format!(
        "{MINIMAL}garp_lower_prio_delay = 2.5\ngarp_lower_prio_repeat = 0\n"
    ));
    assert_eq!(validate_all(&v), []);
    let rc = v[0].router_config(Ipv4Addr::new(10, 0, 0, 1)).unwrap();
    assert_eq!(rc.garp.lower_prio_delay, Duration::from_millis(2500));
    assert_eq!(rc.garp.lower_prio_repeat, 0);
    assert_eq!(rc.garp.repeat, 5);
    let v = parse(&format!(
        "{MINIMAL}garp_lower_prio_delay = 3601\ngarp_lower_prio_repeat = 101\n"
    ));
    let locations: Vec<String> = validate_all(&v).iter().map(ConfigError::location).collect();
    assert_eq!(
        locations,
        [
            "vrrp[0].garp_lower_prio_delay",
            "vrrp[0].garp_lower_prio_repeat"
        ]
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let e = toml::from_str::<File>(&format!("{MINIMAL}bogus = 1\n")).unwrap_err();
    assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    let e = toml::from_str::<File>(&format!(
        "{MINIMAL}track_script = [{{ command = \"true\", weigth = 2 }}]\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("weigth"), "{e}");
}

#[test]
fn every_error_is_reported_with_its_location() {
    let v = parse(
        r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 0
priority = 256
advert_int = 0.5
auth_pass = "123456789"
virtual_ipaddress = ["192.168.1.5/33", "not-an-ip", "224.0.0.18", "::1"]
preempt = true
nopreempt = true
preempt_delay = -1
unicast_src_ip = "x"
unicast_peer = ["10.0.0.2", "y"]
track_script = [{ command = "", interval = 0, weight = 300, rise = 0, fall = 0 }]
track_pools = [{ name = "", weight = -254 }]

[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 1
priority = 0
virtual_ipaddress = []

[[vrrp]]
name = "VI_3"
interface = "eth0"
virtual_router_id = 1
priority = 100
virtual_ipaddress = ["10.0.0.1", "10.0.0.1"]
"#,
    );
    let errors = validate_all(&v);
    let locations: Vec<String> = errors.iter().map(ConfigError::location).collect();
    let locs: Vec<&str> = locations.iter().map(String::as_str).collect();
    for expected in [
        "vrrp[0].virtual_router_id",
        "vrrp[0].priority",
        "vrrp[0].advert_int",
        "vrrp[0].auth_pass",
        "vrrp[0].virtual_ipaddress[0]",
        "vrrp[0].virtual_ipaddress[1]",
        "vrrp[0].virtual_ipaddress[2]",
        "vrrp[0].virtual_ipaddress[3]",
        "vrrp[0].nopreempt",
        "vrrp[0].preempt_delay",
        "vrrp[0].unicast_src_ip",
        "vrrp[0].unicast_peer[1]",
        "vrrp[0].track_script[0].command",
        "vrrp[0].track_script[0].interval",
        "vrrp[0].track_script[0].weight",
        "vrrp[0].track_script[0].rise",
        "vrrp[0].track_script[0].fall",
        "vrrp[0].track_pools[0].name",
        "vrrp[0].track_pools[0].weight",
        "vrrp[1].priority",
        "vrrp[1].virtual_ipaddress",
        "vrrp[1].name",
        "vrrp[2].virtual_router_id",
        "vrrp[2].virtual_ipaddress[1]",
    ] {
        assert!(
            locs.contains(&expected),
            "missing {expected} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 24, "{errors:#?}");
    assert!(errors.iter().any(|e| e.message.contains("sub-second")));
    assert!(v[0].router_config(Ipv4Addr::LOCALHOST).is_err());
}

#[test]
fn same_vrid_on_other_interface_is_fine() {
    let mut v = parse(MINIMAL);
    let mut other = v[0].clone();
    other.name = "VI_2".into();
    other.interface = "eth1".into();
    v.push(other);
    assert!(validate_all(&v).is_empty());
    v[1].interface = "eth0".into();
    let errors = validate_all(&v);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .contains("VRID 134 on eth0 already used"),
        "{}",
        errors[0]
    );
}

#[test]
fn parse_vip_forms() {
    assert_eq!(parse_vip("10.1.2.3").unwrap().prefix_len, 32);
    assert_eq!(parse_vip("10.1.2.3/8").unwrap().prefix_len, 8);
    assert!(parse_vip("10.1.2.3/").is_err());
    assert!(parse_vip("10.1.2/24").is_err());
    assert!(parse_vip("0.0.0.0").is_err());
    assert!(parse_vip("127.0.0.1").is_err());
}

#[test]
fn integer_and_float_seconds() {
    let v = parse(&MINIMAL.replace("priority = 100", "priority = 100\nadvert_int = 3.0"));
    assert!(validate_all(&v).is_empty());
    assert_eq!(
        v[0].router_config(Ipv4Addr::LOCALHOST)
            .unwrap()
            .advert_int_cs,
        300
    );
}

#[test]
fn version_3_takes_centisecond_intervals_and_no_password() {
    let v3 = |extra: &str| {
        parse(&MINIMAL.replace(
            "priority = 100",
            &format!("priority = 100\nversion = 3\n{extra}"),
        ))
    };
    let v = v3("advert_int = 0.1");
    assert!(validate_all(&v).is_empty(), "{:?}", validate_all(&v));
    let rc = v[0].router_config(Ipv4Addr::LOCALHOST).unwrap();
    assert_eq!((rc.version, rc.advert_int_cs), (Version::V3, 10));
    let v = v3("advert_int = 40.95");
    assert_eq!(
        v[0].router_config(Ipv4Addr::LOCALHOST)
            .unwrap()
            .advert_int_cs,
        4095
    );
    // Default interval: 1 s.
    let v = v3("");
    assert_eq!(
        v[0].router_config(Ipv4Addr::LOCALHOST)
            .unwrap()
            .advert_int_cs,
        100
    );
    let messages = |v: &[InstanceConfig]| -> Vec<String> {
        validate_all(v).iter().map(ToString::to_string).collect()
    };
    for (extra, want) in [
        (
            "advert_int = 0.005",
            "vrrp[0].advert_int: 0.005 is not in 0.01..40.95",
        ),
        (
            "advert_int = 41",
            "vrrp[0].advert_int: 41 is not in 0.01..40.95",
        ),
        (
            "auth_pass = \"dnsvip\"",
            "vrrp[0].auth_pass: VRRPv3 has no authentication",
        ),
    ] {
        let m = messages(&v3(extra));
        assert!(m.iter().any(|m| m.starts_with(want)), "{extra}: {m:?}");
    }
    let m = messages(&parse(
        &MINIMAL.replace("priority = 100", "priority = 100\nversion = 4"),
    ));
    assert!(m[0].contains("4 is not a VRRP version (2 or 3)"), "{m:?}");
    let m = messages(&parse(
        &MINIMAL.replace("priority = 100", "priority = 100\nadvert_int = 0.5"),
    ));
    assert!(m[0].contains("set version = 3"), "{m:?}");
}

#[test]
fn a_sync_group_needs_two_members_and_adds_its_tracker() {
    let one = parse(&MINIMAL.replace("priority = 100", "priority = 100\nsync_group = \"g\""));
    let m: Vec<String> = validate_all(&one).iter().map(ToString::to_string).collect();
    assert_eq!(
        m,
        ["vrrp[0].sync_group: sync group \"g\" has no other member"]
    );
    let second = MINIMAL
        .replace("VI_1", "VI_2")
        .replace("134", "135")
        .replace("priority = 100", "priority = 100\nsync_group = \"g\"");
    let two = parse(&format!(
        "{}{second}",
        MINIMAL.replace("priority = 100", "priority = 100\nsync_group = \"g\"")
    ));
    assert!(validate_all(&two).is_empty(), "{:?}", validate_all(&two));
    let rc = two[0].router_config(Ipv4Addr::LOCALHOST).unwrap();
    assert!(rc
        .trackers
        .iter()
        .any(|t| t.name == crate::sync::fault_tracker("g") && t.weight == 0));
}

#[test]
fn ipv6_addresses_need_version_3_and_one_family() {
    let with = |lines: &str| {
        let v = parse(&MINIMAL.replace("virtual_ipaddress = [\"192.168.1.5\"]", lines));
        validate_all(&v)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        with("version = 3\nvirtual_ipaddress = [\"2001:db8::5/64\", \"fe80::5\"]"),
        Vec::<String>::new()
    );
    let m = with("virtual_ipaddress = [\"2001:db8::5\"]");
    assert!(
        m.iter().any(|m| m.contains("IPv6 addresses need VRRPv3")),
        "{m:?}"
    );
    let m = with("version = 3\nvirtual_ipaddress = [\"2001:db8::5\", \"192.168.1.5\"]");
    assert!(m.iter().any(|m| m.contains("other family")), "{m:?}");
    let m = with("version = 3\nvirtual_ipaddress = [\"2001:db8::5/129\", \"ff02::1\"]");
    assert_eq!(m.len(), 2, "{m:?}");
    let m =
        with("version = 3\nvirtual_ipaddress = [\"2001:db8::5\"]\nunicast_peer = [\"10.0.0.2\"]");
    assert!(m.iter().any(|m| m.contains("IPv4 instances only")), "{m:?}");
    let v = parse(&MINIMAL.replace(
        "virtual_ipaddress = [\"192.168.1.5\"]",
        "version = 3\nvirtual_ipaddress = [\"2001:db8::5\"]",
    ));
    assert_eq!(v[0].vips()[0].prefix_len, 128);
}
