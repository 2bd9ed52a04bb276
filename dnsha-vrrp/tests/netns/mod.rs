//! The VRRP tests' additions to the shared namespace lab
//! (`test_support::netns`): the `vrrpd` and `vrrp_inject` examples, their
//! status file, and the seed's VIP 192.168.1.5 on a 10.77.0.0/24 bridge.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub(crate) use test_support::netns::{mdi, skew, Lab, Proc, KEEPALIVED};

pub(crate) mod interop;

pub(crate) const VIP: &str = "192.168.1.5";

/// Why the lab cannot run here, if it cannot.
pub(crate) fn skip_reason() -> Option<String> {
    if let Some(why) = test_support::netns::skip_reason(&[]) {
        return Some(why);
    }
    if !vrrpd_path().exists() {
        return Some(format!(
            "{} not built: run `cargo test -p dnsha-vrrp` (it builds the examples)",
            vrrpd_path().display()
        ));
    }
    None
}

/// Skips the test (returns from it) with a printed reason, or fails it
/// when `DNSHA_TEST_REQUIRE_ALL` is set ([`test_support::skip`]).
#[macro_export]
macro_rules! require_lab {
    () => {
        if let Some(why) = netns::skip_reason() {
            test_support::skip(&why);
            return;
        }
    };
}

fn examples_dir() -> PathBuf {
    // target/debug/deps/<test binary> -> target/debug/examples
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("examples"))
        .expect("target dir")
}

pub(crate) fn vrrpd_path() -> PathBuf {
    examples_dir().join("vrrpd")
}

pub(crate) fn inject_path() -> PathBuf {
    examples_dir().join("vrrp_inject")
}

/// What the VRRP tests do with a [`Lab`] beyond the shared helpers.
pub(crate) trait VrrpLab {
    /// Whether `node`'s eth0 holds the VIP.
    fn holds_vip(&self, node: &str) -> bool;
    /// Removes the VIP from `node`'s eth0.
    fn del_vip(&self, node: &str);
    /// Starts `vrrpd` with this TOML in `node`, its status in a file.
    fn vrrpd(&mut self, node: &str, toml: &str) -> usize;
    /// Sends crafted packets from `node` (see `examples/vrrp_inject.rs`).
    fn inject(&self, node: &str, args: &[&str]);
}

impl VrrpLab for Lab {
    fn holds_vip(&self, node: &str) -> bool {
        self.holds(node, VIP)
    }

    fn del_vip(&self, node: &str) {
        self.del_addr(node, &format!("{VIP}/32"));
    }

    fn vrrpd(&mut self, node: &str, toml: &str) -> usize {
        // Restarted daemons get files of their own.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let cfg = self.dir.path().join(format!("{node}-{n}.toml"));
        std::fs::write(&cfg, toml).expect("write config");
        let status = self.dir.path().join(format!("{node}-{n}.json"));
        let cfg_s = cfg.to_string_lossy().into_owned();
        let status_s = status.to_string_lossy().into_owned();
        let i = self.spawn(node, &vrrpd_path(), &[&cfg_s, "--status", &status_s], true);
        self.proc(i).status_file = Some(status);
        i
    }

    fn inject(&self, node: &str, args: &[&str]) {
        let out = self.exec(node, inject_path(), args);
        assert!(
            out.status.success(),
            "vrrp_inject {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A `vrrpd`'s status file (`--status`).
pub(crate) trait StatusFile {
    /// The daemon's status of its first instance.
    fn status(&self) -> serde_json::Value;
    /// Its state.
    fn state(&self) -> String;
}

impl StatusFile for Proc {
    fn status(&self) -> serde_json::Value {
        let path = self.status_file.as_ref().expect("status file");
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(serde_json::Value::Array(mut v)) = serde_json::from_str(&text) {
                    if !v.is_empty() {
                        return v.swap_remove(0);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no status in {}", path.display());
    }

    fn state(&self) -> String {
        self.status()["state"].as_str().unwrap_or("").to_owned()
    }
}

/// A keepalived config for one instance, as the seed's, with PASS auth.
pub(crate) fn keepalived_conf(priority: u8, extra: &str) -> String {
    test_support::netns::keepalived_conf("VI_1", 134, priority, &format!("{VIP}/32"), extra)
}

/// One `[[vrrp]]` section on `eth0` with these `lines` (version, interval,
/// authentication, trackers...).
pub(crate) fn vrrpd_instance(name: &str, vrid: u8, priority: u8, vip: &str, lines: &str) -> String {
    format!(
        "[[vrrp]]
name = \"{name}\"
interface = \"eth0\"
virtual_router_id = {vrid}
priority = {priority}
virtual_ipaddress = [\"{vip}/32\"]
{lines}
"
    )
}

/// Our TOML for one instance with PASS auth.
pub(crate) fn vrrpd_conf(priority: u8, extra: &str) -> String {
    vrrpd_instance(
        "VI_1",
        134,
        priority,
        VIP,
        &format!("advert_int = 1\nauth_pass = \"dnsvip\"\n{extra}"),
    )
}

/// A keepalived VRRPv3 instance at `advert_int` seconds (no
/// authentication: v3 has none).
pub(crate) fn keepalived_v3_conf(priority: u8, advert_int: &str) -> String {
    test_support::netns::keepalived_conf_with(
        "VI_1",
        134,
        priority,
        &format!("{VIP}/32"),
        &format!("version 3\n  advert_int {advert_int}"),
        "",
    )
}

/// Our TOML for one VRRPv3 instance at `advert_int` seconds.
pub(crate) fn vrrpd_v3_conf(priority: u8, advert_int: &str) -> String {
    vrrpd_instance(
        "VI_1",
        134,
        priority,
        VIP,
        &format!("version = 3\nadvert_int = {advert_int}"),
    )
}

/// VRRPv3 Skew_Time of a priority at an interval (RFC 5798:
/// ((256 − priority) × Master_Adver_Interval) / 256).
pub(crate) fn skew_v3(priority: u8, interval: Duration) -> Duration {
    interval * (256 - u32::from(priority)) / 256
}
