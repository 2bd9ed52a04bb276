//! `user`, `group` and `keep_capabilities`: started as root, `dnsha run`
//! binds every socket, opens its VRRP and netlink sockets, then switches
//! every thread to the user and keeps only the capabilities its
//! configuration needs: none for a plain balancer, `CAP_NET_ADMIN` and
//! `CAP_NET_RAW` with `[[vrrp]]`, `CAP_NET_ADMIN` with a kernel-forwarding
//! listener, and those named in `keep_capabilities`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dnsha_core::config::{Capability, Config, ConfigError, Forwarding, ListenerConfig};

use crate::error::{Error, Result};
use crate::sys;

/// A user and group the system knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user's name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The group's name.
    pub group: String,
    /// Its gid.
    pub gid: u32,
    /// The user's supplementary groups (with `gid`), as `initgroups`
    /// would set them.
    pub groups: Vec<u32>,
}

/// The account `cfg` names, or `None` without `user`; a user or group the
/// system does not know is an error at its place (so `dnsha check` finds
/// it, not only `dnsha run`).
pub fn resolve(cfg: &Config) -> std::result::Result<Option<Account>, Vec<ConfigError>> {
    use nix::unistd::{Group, User};
    let Some(u) = &cfg.process.user else {
        return Ok(None);
    };
    let mut errors = Vec::new();
    let user = lookup("user", u, User::from_name, &mut errors);
    let group = cfg
        .process
        .group
        .as_ref()
        .and_then(|g| lookup("group", g, Group::from_name, &mut errors));
    let Some(user) = user.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let gid = group.as_ref().map_or(user.gid, |g| g.gid).as_raw();
    let group_name = match &group {
        Some(g) => g.name.clone(),
        None => Group::from_gid(user.gid)
            .ok()
            .flatten()
            .map_or_else(|| user.gid.to_string(), |g| g.name),
    };
    let mut groups: Vec<u32> = std::ffi::CString::new(user.name.clone())
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    groups.truncate(sys::MAX_GROUPS);
    Ok(Some(Account {
        user: user.name,
        uid: user.uid.as_raw(),
        group: group_name,
        gid,
        groups,
    }))
}

/// The account `name` names, looked up with `find`; a name the system
/// does not know is an error at its place.
fn lookup<T>(
    what: &str,
    name: &dnsha_core::config::AccountName,
    find: impl Fn(&str) -> nix::Result<Option<T>>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let why = match find(&name.name) {
        Ok(Some(found)) => return Some(found),
        Ok(None) => format!("{what} {:?} does not exist on this system", name.name),
        Err(e) => format!("cannot look {what} {:?} up: {e}", name.name),
    };
    errors.push(ConfigError::at(name.span.clone(), why));
    None
}

/// The capabilities the configuration needs after the switch.
pub fn needed(cfg: &Config) -> BTreeSet<Capability> {
    let mut caps: BTreeSet<Capability> = cfg.process.keep_capabilities.iter().copied().collect();
    if !cfg.vrrp.is_empty() {
        caps.extend([Capability::NetAdmin, Capability::NetRaw]);
    }
    if cfg
        .listeners
        .iter()
        .any(|l| l.forwarding == Forwarding::Kernel)
    {
        caps.insert(Capability::NetAdmin);
    }
    caps
}

/// The capabilities' names, comma-separated (`none` for none).
pub fn names(caps: &BTreeSet<Capability>) -> String {
    if caps.is_empty() {
        return "none".into();
    }
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

/// What the process switched to: reloads are checked against it.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The account.
    pub account: Account,
    /// The capabilities kept.
    pub caps: BTreeSet<Capability>,
}

/// Switches every thread to `account`, keeping `caps`, and checks in
/// `/proc` that each did. Started as another user than root, only that
/// same user may be named (the capabilities are then lowered to `caps`).
pub fn switch(account: &Account, caps: &BTreeSet<Capability>) -> Result<Dropped> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 && euid != account.uid {
        return Err(Error::NotRoot {
            user: account.user.clone(),
            euid,
        });
    }
    let mask = caps.iter().fold(0u64, |m, c| m | 1 << c.number());
    sys::set_target(&sys::Target {
        uid: account.uid,
        gid: account.gid,
        groups: account.groups.clone(),
        caps: mask,
    });
    sys::install_handler().map_err(|source| Error::Switch {
        step: "installing the signal handler".into(),
        source,
    })?;
    broadcast(account.uid, mask)?;
    Ok(Dropped {
        account: account.clone(),
        caps: caps.clone(),
    })
}

/// Every thread of this process switched: signalled, waited for, then read
/// back in `/proc` (a thread started meanwhile by one not switched yet is
/// caught in the next round).
fn broadcast(uid: u32, mask: u64) -> Result<()> {
    let me = sys::gettid();
    let mut signalled = BTreeSet::new();
    let mut sent = 0;
    for _round in 0..5 {
        for tid in threads()? {
            if tid != me && signalled.insert(tid) {
                match sys::signal_thread(tid) {
                    Ok(true) => sent += 1,
                    Ok(false) => {}
                    Err(source) => {
                        return Err(Error::Switch {
                            step: format!("signalling thread {tid}"),
                            source,
                        })
                    }
                }
            }
        }
        if !signalled.contains(&me) {
            sys::switch_this_thread().map_err(|source| Error::Switch {
                step: "switching the main thread".into(),
                source,
            })?;
            signalled.insert(me);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while sys::done() < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(source) = sys::failure() {
            return Err(Error::Switch {
                step: "switching a thread".into(),
                source,
            });
        }
        let wrong = threads()?
            .into_iter()
            .filter(|tid| !switched(*tid, uid, mask))
            .collect::<Vec<_>>();
        if wrong.is_empty() {
            return Ok(());
        }
        // Threads not switched yet and never signalled are signalled in
        // the next round; one signalled but not switched had no time yet.
        if wrong.iter().all(|t| signalled.contains(t)) && sys::done() >= sent {
            return Err(Error::Credentials { threads: wrong });
        }
    }
    Err(Error::Credentials {
        threads: threads()?
            .into_iter()
            .filter(|tid| !switched(*tid, uid, mask))
            .collect(),
    })
}

/// The ids of this process's threads.
fn threads() -> Result<Vec<i32>> {
    let dir = std::fs::read_dir("/proc/self/task").map_err(|source| Error::Switch {
        step: "listing /proc/self/task".into(),
        source,
    })?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// Whether thread `tid` runs as `uid` (real, effective, saved) with
/// exactly `mask` as effective and permitted capabilities; an exited
/// thread counts as switched.
fn switched(tid: i32, uid: u32, mask: u64) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return true;
    };
    let status = ThreadStatus::parse(&text);
    status.uids.iter().all(|u| *u == uid)
        && status.uids.len() == 4
        && status.cap_eff == Some(mask)
        && status.cap_prm == Some(mask)
}

/// The credentials lines of `/proc/PID/task/TID/status`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ThreadStatus {
    /// Real, effective, saved and filesystem uids.
    pub uids: Vec<u32>,
    /// Effective capabilities.
    pub cap_eff: Option<u64>,
    /// Permitted capabilities.
    pub cap_prm: Option<u64>,
}

impl ThreadStatus {
    /// Reads the `Uid:`, `CapEff:` and `CapPrm:` lines.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("Uid:") {
                s.uids = v
                    .split_whitespace()
                    .filter_map(|u| u.parse().ok())
                    .collect();
            } else if let Some(v) = line.strip_prefix("CapEff:") {
                s.cap_eff = u64::from_str_radix(v.trim(), 16).ok();
            } else if let Some(v) = line.strip_prefix("CapPrm:") {
                s.cap_prm = u64::from_str_radix(v.trim(), 16).ok();
            }
        }
        s
    }
}

/// Why a reload to `new` cannot run with what the process kept, if it
/// cannot: a new socket on a port below 1024 without
/// `CAP_NET_BIND_SERVICE`, or VRRP or the kernel path without the
/// capabilities they need. `rebinds` says whether a new listener needs new
/// sockets.
pub fn refusal(
    dropped: &Dropped,
    old: &[ListenerConfig],
    new: &Config,
    rebinds: impl Fn(&ListenerConfig, &ListenerConfig) -> bool,
) -> Option<String> {
    let has = |c| dropped.caps.contains(&c);
    if !has(Capability::NetBindService) {
        let low = new.listeners.iter().find(|l| {
            l.listen.port() < 1024 && l.listen.port() != 0 && old.iter().all(|o| rebinds(o, l))
        });
        if let Some(l) = low {
            return Some(format!(
                "listener {} needs a new socket on port {}, and dnsha dropped \
                 CAP_NET_BIND_SERVICE when it switched to user {}: add it to keep_capabilities \
                 (then restart), or use a port from 1024",
                l.name,
                l.listen.port(),
                dropped.account.user
            ));
        }
    }
    let missing: BTreeSet<Capability> = needed(new)
        .into_iter()
        .filter(|c| *c != Capability::NetBindService && !has(*c))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "the new configuration needs {} (VRRP or the kernel path), which dnsha dropped when it \
             switched to user {}: restart it to apply",
            names(&missing),
            dropped.account.user
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_file_gives_uids_and_capabilities() {
        let text = "Name:\tdnsha\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
                    CapInh:\t0000000000000000\nCapPrm:\t0000000000003000\nCapEff:\t0000000000003000\n";
        assert_eq!(
            ThreadStatus::parse(text),
            ThreadStatus {
                uids: vec![65534; 4],
                cap_eff: Some(0x3000),
                cap_prm: Some(0x3000),
            }
        );
    }

    fn config(extra: &str) -> Config {
        let src = format!(
            "user = \"nobody\"\n{extra}\n[[listener]]\nname = \"u\"\nprotocol = \"udp\"\n\
             listen = \"127.0.0.1:53\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n\
             [[pool.backend]]\nname = \"b\"\naddress = \"127.0.0.1:5300\"\n"
        );
        match Config::parse(&src) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_plain_balancer_needs_no_capability_and_vrrp_two() {
        assert!(needed(&config("")).is_empty());
        let keep = config("keep_capabilities = [\"CAP_NET_BIND_SERVICE\"]");
        assert_eq!(names(&needed(&keep)), "CAP_NET_BIND_SERVICE");
    }

    #[test]
    fn a_reload_is_refused_for_a_low_port_without_the_capability() {
        let dropped = |caps: &[Capability]| Dropped {
            account: Account {
                user: "nobody".into(),
                uid: 65534,
                group: "nogroup".into(),
                gid: 65534,
                groups: vec![65534],
            },
            caps: caps.iter().copied().collect(),
        };
        let old = config("").listeners;
        let mut new = config("");
        let rebinds = |o: &ListenerConfig, n: &ListenerConfig| o.name != n.name;
        // The same listener: no new socket.
        assert_eq!(refusal(&dropped(&[]), &old, &new, rebinds), None);
        new.listeners[0].name = "v".into();
        let why = refusal(&dropped(&[]), &old, &new, rebinds).unwrap_or_default();
        assert!(
            why.starts_with("listener v needs a new socket on port 53, and dnsha dropped"),
            "{why}"
        );
        assert_eq!(
            refusal(&dropped(&[Capability::NetBindService]), &old, &new, rebinds),
            None
        );
        // A port from 1024 needs nothing.
        new.listeners[0].listen.set_port(5353);
        assert_eq!(refusal(&dropped(&[]), &old, &new, rebinds), None);
    }
}
