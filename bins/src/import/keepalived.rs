//! keepalived.conf: `vrrp_instance` into `[[vrrp]]`, `vrrp_script` into
//! `track_script` (or `track_pools` when the script checks the nginx or
//! HAProxy that dnsha replaces), `vrrp_sync_group` into `sync_group`; the
//! LVS half (`virtual_server`) is in [`super::lvs`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::plan::{int, s, seconds, set, Keys, Origin, Plan, Vrrp};
use super::syntax::{Loc, Stmt};
use super::values::{arg_num, ip, num, secs};
use crate::error::Result;

/// Reads the statements of a keepalived.conf (includes already spliced
/// in) into `plan`.
pub(crate) fn import(stmts: &[Stmt], plan: &mut Plan) -> Result<()> {
    let mut k = Keepalived::default();
    for st in stmts {
        match st.name() {
            "global_defs" => k.global_defs(st, plan)?,
            "vrrp_script" => k.script(st, plan)?,
            "vrrp_sync_group" => k.sync_group(st, plan)?,
            _ => {}
        }
    }
    for st in stmts {
        match st.name() {
            "global_defs" | "vrrp_script" | "vrrp_sync_group" => {}
            "vrrp_instance" => {
                let v = k.instance(st, plan)?;
                plan.add_vrrp(v)?;
            }
            "virtual_server" => super::lvs::virtual_server(st, plan)?,
            "virtual_server_group"
            | "static_ipaddress"
            | "static_routes"
            | "static_rules"
            | "vrrp_track_process"
            | "vrrp_track_file"
            | "track_file"
            | "garp_group"
            | "linkbeat_use_polling"
            | "net_namespace"
            | "bfd_instance" => {
                plan.warn(
                    &st.loc,
                    format!("{}: no equivalent in dnsha; not imported", st.name()),
                );
            }
            other => plan.warn(&st.loc, format!("unknown keyword `{other}`: not imported")),
        }
    }
    let tracked: Vec<&str> = stmts
        .iter()
        .filter(|s| s.name() == "vrrp_instance")
        .flat_map(|s| s.children())
        .filter(|c| c.name() == "track_script")
        .flat_map(|c| c.children())
        .map(Stmt::name)
        .collect();
    for (name, script) in &k.scripts {
        if !tracked.contains(&name.as_str()) {
            plan.warn(
                &script.loc,
                format!("vrrp_script {name} is tracked by no instance; not imported"),
            );
        }
    }
    Ok(())
}

/// A `vrrp_script`.
#[derive(Debug, Clone)]
struct Script {
    loc: Loc,
    command: String,
    interval: Option<f64>,
    timeout: Option<f64>,
    weight: i32,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Default)]
struct Keepalived {
    /// `global_defs { vrrp_version }`.
    version: Option<i64>,
    scripts: BTreeMap<String, Script>,
    /// Instance name → its sync group.
    groups: BTreeMap<String, String>,
}

/// What a `global_defs` keyword becomes: a warning saying why it has no
/// equivalent.
fn global_message(name: &str) -> String {
    match name {
        "notification_email" | "notification_email_from" | "smtp_server"
        | "smtp_connect_timeout" | "smtp_alert" | "smtp_helo_name" => format!(
            "{name}: dnsha sends no mail; not imported (alert on the dnsha_vrrp_* metrics, see \
             examples/prometheus/alerts.yml, or run a program with `notify`)"
        ),
        "router_id" => "router_id: dnsha has no router id (logs and metrics name the host); not imported".into(),
        "vrrp_skip_check_adv_addr" | "vrrp_check_unicast_src" => format!(
            "{name}: dnsha accepts an advert by its VRID, priority, interval and password \
             (and, in unicast mode, its source among unicast_peer); not imported"
        ),
        "vrrp_strict" => "vrrp_strict: no equivalent (dnsha keeps the VIPs reachable); not imported".into(),
        "vrrp_garp_interval" | "vrrp_gna_interval" => format!(
            "{name}: no equivalent (the gratuitous ARP bursts are set per instance with \
             garp_master_repeat and garp_master_delay); not imported"
        ),
        "enable_script_security" | "script_user" => format!(
            "{name}: dnsha runs notify and track scripts as the user it runs as (see `user`); not imported"
        ),
        _ => format!("{name}: no equivalent in dnsha; not imported"),
    }
}

impl Keepalived {
    fn global_defs(&mut self, st: &Stmt, plan: &mut Plan) -> Result<()> {
        for c in st.children() {
            if c.name() == "vrrp_version" {
                self.version = Some(arg_num(c, 0)?);
            } else {
                plan.warn(&c.loc, global_message(c.name()));
            }
        }
        Ok(())
    }

    fn script(&mut self, st: &Stmt, plan: &mut Plan) -> Result<()> {
        let name = st.arg(0, "script name")?.to_string();
        let mut script = Script {
            loc: st.loc.clone(),
            command: String::new(),
            interval: None,
            timeout: None,
            weight: 0,
            rise: None,
            fall: None,
        };
        for c in st.children() {
            match c.name() {
                "script" => script.command = c.args().join(" "),
                "interval" => {
                    script.interval = Some(secs(&c.loc, "interval", c.arg(0, "seconds")?)?)
                }
                "timeout" => script.timeout = Some(secs(&c.loc, "timeout", c.arg(0, "seconds")?)?),
                "weight" => {
                    script.weight = arg_num(c, 0)?;
                    if c.args().get(1).is_some_and(|a| a == "reverse") {
                        plan.warn(
                            &c.loc,
                            "weight ... reverse: no equivalent; the weight is imported as written",
                        );
                    }
                }
                "rise" => script.rise = Some(arg_num(c, 0)?),
                "fall" => script.fall = Some(arg_num(c, 0)?),
                "user" | "init_fail" => plan.warn(
                    &c.loc,
                    format!(
                        "vrrp_script {name}: {}: no equivalent in dnsha; not imported",
                        c.name()
                    ),
                ),
                other => {
                    return Err(c
                        .loc
                        .error(format!("unknown keyword `{other}` in vrrp_script {name}")))
                }
            }
        }
        if script.command.is_empty() {
            return Err(st.loc.error(format!("vrrp_script {name} has no script")));
        }
        self.scripts.insert(name, script);
        Ok(())
    }

    fn sync_group(&mut self, st: &Stmt, plan: &mut Plan) -> Result<()> {
        let name = st.arg(0, "group name")?.to_string();
        for c in st.children() {
            if c.name() == "group" {
                let members = c.children().iter().flat_map(|m| m.words.iter());
                for m in members.chain(c.args()) {
                    self.groups.insert(m.clone(), name.clone());
                }
            } else {
                plan.warn(
                    &c.loc,
                    format!("vrrp_sync_group {name}: {}: no equivalent in dnsha (notify is set per instance); not imported", c.name()),
                );
            }
        }
        Ok(())
    }

    fn instance(&self, st: &Stmt, plan: &mut Plan) -> Result<Vrrp> {
        let name = st.arg(0, "instance name")?.to_string();
        let mut inst = Instance::default();
        for c in st.children() {
            self.instance_key(&name, c, &mut inst, plan)?;
        }
        inst.build(st, name, self, plan)
    }

    fn instance_key(
        &self,
        name: &str,
        c: &Stmt,
        inst: &mut Instance,
        plan: &mut Plan,
    ) -> Result<()> {
        match c.name() {
            "state" => inst.notes.push(format!(
                "state {}: not needed, every dnsha node starts as backup and the highest priority wins",
                c.args().join(" ")
            )),
            "interface" => inst.interface = Some(c.arg(0, "interface")?.to_string()),
            "virtual_router_id" => inst.vrid = Some(arg_num(c, 0)?),
            "priority" => inst.priority = Some(arg_num(c, 0)?),
            "advert_int" => inst.advert_int = Some(secs(&c.loc, "advert_int", c.arg(0, "seconds")?)?),
            "version" => inst.version = Some(arg_num(c, 0)?),
            "authentication" => authentication(c, inst, plan)?,
            "virtual_ipaddress" => vips(c, inst, plan)?,
            "track_script" => self.track_scripts(c, inst, plan)?,
            "track_interface" => {
                for t in c.children() {
                    let ifname = t.name().to_string();
                    let entry = match t.args() {
                        [] => s(ifname),
                        [w, n] if w == "weight" => {
                            let mut tab = toml::Table::new();
                            tab.insert("name".into(), s(ifname));
                            tab.insert("weight".into(), int(num::<i32>(&t.loc, "weight", n)?));
                            toml::Value::Table(tab)
                        }
                        _ => return Err(t.loc.error(format!("track_interface: cannot read `{}`", t.text()))),
                    };
                    inst.track_interface.push(entry);
                }
            }
            "notify" => {
                let program = c.args().join(" ");
                if c.args().len() == 1 {
                    inst.notify = Some(program);
                } else {
                    plan.warn(
                        &c.loc,
                        format!("notify `{program}`: dnsha runs a program without arguments (as PROGRAM INSTANCE NAME STATE PRIORITY); not imported: wrap it in a script"),
                    );
                }
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop"
            | "notify_master_rx_lower_pri" | "notify_deleted" => plan.warn(
                &c.loc,
                format!(
                    "{}: dnsha runs one `notify` program with the state as its third argument; \
                     not imported (call it from a notify script)",
                    c.name()
                ),
            ),
            "unicast_src_ip" => {
                inst.unicast_src_ip = Some(ip(&c.loc, "unicast_src_ip", c.arg(0, "address")?)?);
            }
            "mcast_src_ip" => {
                inst.unicast_src_ip = Some(ip(&c.loc, "mcast_src_ip", c.arg(0, "address")?)?);
                inst.notes.push("mcast_src_ip: written as unicast_src_ip, the adverts' source address".into());
            }
            "unicast_peer" => {
                for p in c.children() {
                    inst.unicast_peer.push(ip(&p.loc, "unicast_peer", p.name())?);
                    if !p.args().is_empty() {
                        plan.warn(&p.loc, format!("unicast_peer {}: options not imported", p.text()));
                    }
                }
            }
            "nopreempt" => inst.nopreempt = true,
            "preempt_delay" => inst.preempt_delay = Some(secs(&c.loc, "preempt_delay", c.arg(0, "seconds")?)?),
            "garp_master_delay" | "garp_master_refresh" | "garp_lower_prio_delay" => {
                let key = garp_key(c.name());
                set(&mut inst.garp, key, seconds(secs(&c.loc, c.name(), c.arg(0, "seconds")?)?));
            }
            "garp_master_repeat" | "garp_lower_prio_repeat" => {
                let key = garp_key(c.name());
                set(&mut inst.garp, key, int(arg_num::<u32>(c, 0)?));
            }
            "smtp_alert" | "dont_track_primary" | "use_vmac" | "vmac_xmit_base" | "native_ipv6"
            | "accept" | "no_accept" | "strict_mode" | "skip_check_adv_addr" | "debug"
            | "lvs_sync_daemon_interface" | "virtual_routes" | "virtual_rules"
            | "garp_master_refresh_repeat" | "track_file" | "track_process" | "track_bfd"
            | "notify_priority_changes" | "check_unicast_src" | "unicast_ttl"
            | "kernel_rt_priority" | "virtual_ipaddress_excluded" | "promote_secondaries"
            | "linkbeat_use_polling" | "unicast_fault_no_peer" | "old_unicast_checksum" => plan.warn(
                &c.loc,
                format!("vrrp_instance {name}: {}: no equivalent in dnsha; not imported", c.name()),
            ),
            other => {
                return Err(c
                    .loc
                    .error(format!("unknown keyword `{other}` in vrrp_instance {name}")))
            }
        }
        Ok(())
    }

    fn track_scripts(&self, c: &Stmt, inst: &mut Instance, plan: &mut Plan) -> Result<()> {
        for t in c.children() {
            let sname = t.name();
            let weight_override = match t.args() {
                [] => None,
                [w, n] if w == "weight" => Some(num::<i32>(&t.loc, "weight", n)?),
                _ => {
                    return Err(t
                        .loc
                        .error(format!("track_script: cannot read `{}`", t.text())))
                }
            };
            let Some(script) = self.scripts.get(sname) else {
                plan.warn(
                    &t.loc,
                    format!(
                        "track_script {sname}: no vrrp_script {sname} is defined; not imported"
                    ),
                );
                continue;
            };
            let weight = weight_override.unwrap_or(script.weight);
            if let Some(proxy) = checks_proxy(sname, &script.command) {
                if inst.track_proxy.is_some() {
                    plan.warn(
                        &t.loc,
                        format!("track_script {sname}: a second check of {proxy}; tracked once"),
                    );
                    continue;
                }
                inst.notes.push(format!(
                    "track_script {sname} checked {proxy}, which dnsha replaces: dnsha tracks its \
                     own pools instead (track_pools), and its VRRP stops with the balancer"
                ));
                inst.track_proxy = Some((weight, t.loc.clone()));
                continue;
            }
            let mut tab = toml::Table::new();
            tab.insert("name".into(), s(sname));
            tab.insert("command".into(), s(script.command.clone()));
            if let Some(v) = script.interval {
                tab.insert("interval".into(), seconds(v));
            }
            if let Some(v) = script.timeout {
                tab.insert("timeout".into(), seconds(v));
            }
            if weight != 0 {
                tab.insert("weight".into(), int(weight));
            }
            if let Some(v) = script.rise {
                tab.insert("rise".into(), int(v));
            }
            if let Some(v) = script.fall {
                tab.insert("fall".into(), int(v));
            }
            inst.track_script.push(toml::Value::Table(tab));
        }
        Ok(())
    }
}

/// The proxy a script checks, when it names nginx or HAProxy.
fn checks_proxy(name: &str, command: &str) -> Option<&'static str> {
    let text = format!("{name} {command}").to_ascii_lowercase();
    if text.contains("nginx") {
        Some("nginx")
    } else if text.contains("haproxy") {
        Some("HAProxy")
    } else {
        None
    }
}

fn garp_key(name: &str) -> &'static str {
    match name {
        "garp_master_delay" => "garp_master_delay",
        "garp_master_refresh" => "garp_master_refresh",
        "garp_lower_prio_delay" => "garp_lower_prio_delay",
        "garp_master_repeat" => "garp_master_repeat",
        _ => "garp_lower_prio_repeat",
    }
}

fn authentication(c: &Stmt, inst: &mut Instance, plan: &mut Plan) -> Result<()> {
    let mut kind = None;
    for a in c.children() {
        match a.name() {
            "auth_type" => kind = Some(a.arg(0, "type")?.to_ascii_uppercase()),
            "auth_pass" => inst.auth_pass = Some((a.args().join(" "), a.loc.clone())),
            other => {
                return Err(a
                    .loc
                    .error(format!("unknown keyword `{other}` in authentication")))
            }
        }
    }
    match kind.as_deref() {
        Some("PASS") | None => {}
        Some(other) => {
            plan.warn(&c.loc, format!("auth_type {other}: dnsha has only PASS authentication; the instance is imported without any"));
            inst.auth_pass = None;
        }
    }
    Ok(())
}

fn vips(c: &Stmt, inst: &mut Instance, plan: &mut Plan) -> Result<()> {
    for v in c.children() {
        let mut words = v.words.iter();
        let Some(first) = words.next() else { continue };
        inst.vips.push(vip(&v.loc, first)?);
        let mut rest: Vec<&String> = words.collect();
        // `{ 192.168.1.5 192.168.1.6 }` on one line.
        while let Some(next) = rest.first().filter(|w| {
            w.split('/')
                .next()
                .is_some_and(|a| a.parse::<IpAddr>().is_ok())
        }) {
            inst.vips.push(vip(&v.loc, next)?);
            rest.remove(0);
        }
        match rest.as_slice() {
            [] => {}
            [dev, d] if *dev == "dev" && inst.interface.as_deref() == Some(d.as_str()) => {}
            _ => plan.warn(
                &v.loc,
                format!(
                    "virtual_ipaddress {}: options not imported (dnsha adds the address to the instance's interface)",
                    v.text()
                ),
            ),
        }
    }
    Ok(())
}

/// `IP` or `IP/len`, written with its prefix length.
fn vip(loc: &Loc, text: &str) -> Result<(IpAddr, u8)> {
    let (a, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr = ip(loc, "virtual_ipaddress", a)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(loc.error(format!(
                    "virtual_ipaddress: `{text}` has a bad prefix length"
                )))
            }
        },
        None => max,
    };
    Ok((addr, len))
}

#[derive(Debug, Default)]
struct Instance {
    interface: Option<String>,
    vrid: Option<i64>,
    priority: Option<i64>,
    version: Option<i64>,
    advert_int: Option<f64>,
    auth_pass: Option<(String, Loc)>,
    vips: Vec<(IpAddr, u8)>,
    nopreempt: bool,
    preempt_delay: Option<f64>,
    unicast_src_ip: Option<IpAddr>,
    unicast_peer: Vec<IpAddr>,
    garp: Keys,
    track_interface: Vec<toml::Value>,
    track_script: Vec<toml::Value>,
    track_proxy: Option<(i32, Loc)>,
    notify: Option<String>,
    notes: Vec<String>,
}

impl Instance {
    fn build(self, st: &Stmt, name: String, k: &Keepalived, plan: &mut Plan) -> Result<Vrrp> {
        let missing = |what: &str| st.loc.error(format!("vrrp_instance {name} has no {what}"));
        let interface = self.interface.clone().ok_or_else(|| missing("interface"))?;
        let vrid = self.vrid.ok_or_else(|| missing("virtual_router_id"))?;
        if self.vips.is_empty() {
            return Err(missing("virtual_ipaddress"));
        }
        let v6 = self.vips.iter().filter(|(a, _)| a.is_ipv6()).count();
        if v6 != 0 && v6 != self.vips.len() {
            return Err(st.loc.error(format!(
                "vrrp_instance {name} mixes IPv4 and IPv6 addresses: dnsha takes one family per \
                 instance (make two instances in one vrrp_sync_group)"
            )));
        }
        let mut notes = self.notes;
        let mut keys: Keys = vec![
            ("interface", s(interface)),
            ("virtual_router_id", int(vrid)),
        ];
        let priority = self.priority.unwrap_or_else(|| {
            notes.push("priority: not written, keepalived's default 100".into());
            100
        });
        keys.push(("priority", int(priority)));
        let version = match (self.version.or(k.version), v6 > 0) {
            (None, true) => {
                notes.push("version 3: keepalived advertises IPv6 addresses with VRRPv3".into());
                Some(3)
            }
            (v, _) => v,
        };
        if let Some(v) = version {
            keys.push(("version", int(v)));
        }
        if let Some(a) = self.advert_int {
            keys.push(("advert_int", seconds(a)));
        }
        if let Some((pass, loc)) = self.auth_pass {
            if version == Some(3) {
                plan.warn(&loc, "auth_pass: VRRPv3 has no authentication (keepalived ignores it too); not imported");
            } else {
                keys.push(("auth_pass", s(truncate_pass(&pass, &loc, plan))));
            }
        }
        let vips = self
            .vips
            .iter()
            .map(|(a, l)| s(format!("{a}/{l}")))
            .collect();
        keys.push(("virtual_ipaddress", toml::Value::Array(vips)));
        if self.nopreempt {
            keys.push(("nopreempt", toml::Value::Boolean(true)));
        }
        if let Some(d) = self.preempt_delay {
            keys.push(("preempt_delay", seconds(d)));
        }
        if let Some(a) = self.unicast_src_ip {
            keys.push(("unicast_src_ip", s(a.to_string())));
        }
        if !self.unicast_peer.is_empty() {
            let peers = self.unicast_peer.iter().map(|a| s(a.to_string())).collect();
            keys.push(("unicast_peer", toml::Value::Array(peers)));
        }
        keys.extend(self.garp);
        if !self.track_interface.is_empty() {
            keys.push(("track_interface", toml::Value::Array(self.track_interface)));
        }
        if !self.track_script.is_empty() {
            keys.push(("track_script", toml::Value::Array(self.track_script)));
        }
        if let Some(n) = self.notify {
            keys.push(("notify", s(n)));
        }
        if let Some(g) = k.groups.get(&name) {
            keys.push(("sync_group", s(g.clone())));
        }
        Ok(Vrrp {
            origin: Origin::new(&st.loc, format!("vrrp_instance {name}")),
            name,
            keys,
            track_proxy: self.track_proxy,
            notes,
        })
    }
}

/// keepalived uses the first 8 bytes of a longer password: so does the
/// import, with a warning.
fn truncate_pass(pass: &str, loc: &Loc, plan: &mut Plan) -> String {
    if pass.len() <= 8 {
        return pass.to_string();
    }
    let mut end = 8;
    while !pass.is_char_boundary(end) {
        end -= 1;
    }
    plan.warn(
        loc,
        "auth_pass: longer than 8 bytes; keepalived sends its first 8, and so will dnsha",
    );
    pass[..end].to_string()
}

#[cfg(test)]
#[path = "keepalived_tests.rs"]
mod tests;
