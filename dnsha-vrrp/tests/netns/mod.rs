//! A small lab of network namespaces on one bridge, for the VRRP tests.
//!
//! Every node is a namespace with `eth0` (10.77.0.N/24) plugged into a
//! bridge that lives in its own namespace, so nothing touches the host's
//! namespace. [`Lab`]'s `Drop` kills the processes it started and deletes
//! the namespaces, whether the test passed or not.
#![allow(dead_code)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const VIP: &str = "192.168.1.5";

/// Why the lab cannot run here, if it cannot.
pub(crate) fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: network namespaces need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) not installed".into());
    }
    if !vrrpd_path().exists() {
        return Some(format!(
            "{} not built: run `cargo test -p dnsha-vrrp` (it builds the examples)",
            vrrpd_path().display()
        ));
    }
    None
}

/// Skips the test (returns from it) with a printed reason.
#[macro_export]
macro_rules! require_lab {
    () => {
        if let Some(why) = netns::skip_reason() {
            println!("SKIPPED: {why}");
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

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process started in a namespace.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) status_file: Option<PathBuf>,
    /// keepalived's VRRP child writes its pid here.
    pub(crate) child_pid_file: Option<PathBuf>,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(pid) = self
            .child_pid_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit.
    pub(crate) fn term(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill9();
    }

    pub(crate) fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin piped");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// The daemon's status of its first instance.
    pub(crate) fn status(&self) -> serde_json::Value {
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

    pub(crate) fn state(&self) -> String {
        self.status()["state"].as_str().unwrap_or("").to_owned()
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Namespaces on a bridge.
pub(crate) struct Lab {
    prefix: String,
    nodes: Vec<String>,
    pub(crate) dir: tempfile::TempDir,
    procs: Vec<Proc>,
}

impl Lab {
    /// Namespaces `<tag>` + node names; node `i` gets 10.77.0.(i+1)/24.
    pub(crate) fn new(tag: &str, nodes: &[&str]) -> Self {
        let prefix = format!("dv{}{}", std::process::id() % 100_000, tag);
        let mut lab = Self {
            prefix,
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            procs: Vec::new(),
        };
        let br = lab.ns("br");
        ip(&["netns", "add", &br]);
        lab.nodes.push("br".into());
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (i, node) in nodes.iter().enumerate() {
            let ns = lab.ns(node);
            ip(&["netns", "add", &ns]);
            lab.nodes.push((*node).to_owned());
            let port = format!("p{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.addr(i)),
                "dev",
                "eth0",
            ]);
        }
        lab
    }

    pub(crate) fn ns(&self, node: &str) -> String {
        format!("{}{}", self.prefix, node)
    }

    pub(crate) fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1).expect("few nodes"))
    }

    /// Whether `node`'s eth0 holds the VIP.
    pub(crate) fn holds_vip(&self, node: &str) -> bool {
        self.holds(node, VIP)
    }

    /// Whether `node`'s eth0 holds `addr`.
    pub(crate) fn holds(&self, node: &str, addr: &str) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.ns(node),
                "-br",
                "-4",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {addr}/"))
    }

    pub(crate) fn set_link(&self, node: &str, up: bool) {
        ip(&[
            "-n",
            &self.ns(node),
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
    }

    pub(crate) fn del_vip(&self, node: &str) {
        let _ = Command::new("ip")
            .args([
                "-n",
                &self.ns(node),
                "addr",
                "del",
                &format!("{VIP}/32"),
                "dev",
                "eth0",
            ])
            .output();
    }

    /// Runs `program args` in `node`'s namespace, logging to a file.
    pub(crate) fn spawn(
        &mut self,
        node: &str,
        program: &Path,
        args: &[&str],
        stdin: bool,
    ) -> usize {
        let log = self
            .dir
            .path()
            .join(format!("{node}-{}.log", self.procs.len()));
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node)])
            .arg(program)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,dnsha_vrrp=debug")
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().expect("spawn");
        let stdin = child.stdin.take();
        self.procs.push(Proc {
            child,
            stdin,
            status_file: None,
            child_pid_file: None,
            log,
        });
        self.procs.len() - 1
    }

    /// Starts `vrrpd` with this TOML in `node`.
    pub(crate) fn vrrpd(&mut self, node: &str, toml: &str) -> usize {
        let cfg = self
            .dir
            .path()
            .join(format!("{node}-{}.toml", self.procs.len()));
        std::fs::write(&cfg, toml).expect("write config");
        let status = self
            .dir
            .path()
            .join(format!("{node}-{}.json", self.procs.len()));
        let cfg_s = cfg.to_string_lossy().into_owned();
        let status_s = status.to_string_lossy().into_owned();
        let i = self.spawn(node, &vrrpd_path(), &[&cfg_s, "--status", &status_s], true);
        self.procs[i].status_file = Some(status);
        i
    }

    /// Starts keepalived 2.x with this config in `node`, in the foreground.
    pub(crate) fn keepalived(&mut self, node: &str, conf: &str) -> usize {
        let n = self.procs.len();
        let cfg = self.dir.path().join(format!("{node}-{n}.conf"));
        std::fs::write(&cfg, conf).expect("write config");
        let p = |s: &str| {
            self.dir
                .path()
                .join(format!("{node}-{n}.{s}"))
                .to_string_lossy()
                .into_owned()
        };
        let (pid, vpid) = (p("pid"), p("vrrp.pid"));
        let cfg_s = cfg.to_string_lossy().into_owned();
        let i = self.spawn(
            node,
            Path::new(KEEPALIVED),
            &[
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--vrrp",
                "--no-syslog",
                "-f",
                &cfg_s,
                "-p",
                &pid,
                "-r",
                &vpid,
            ],
            false,
        );
        self.procs[i].child_pid_file = Some(PathBuf::from(vpid));
        i
    }

    pub(crate) fn proc_ref(&self, i: usize) -> &Proc {
        &self.procs[i]
    }

    pub(crate) fn proc(&mut self, i: usize) -> &mut Proc {
        &mut self.procs[i]
    }

    /// Polls `pred` every 10 ms; the time it took, or None after `max`.
    pub(crate) fn wait(
        &self,
        max: Duration,
        mut pred: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < max {
            if pred(self) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Sends crafted packets from `node` (see `examples/vrrp_inject.rs`).
    pub(crate) fn inject(&self, node: &str, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .arg(inject_path())
            .args(args)
            .output()
            .expect("run vrrp_inject");
        assert!(
            out.status.success(),
            "vrrp_inject {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Dumps every log (for failure messages).
    pub(crate) fn logs(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            s.push_str(&format!("==== {}\n{}\n", p.log.display(), p.log_text()));
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill9();
        }
        for node in &self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(node)])
                .output();
        }
    }
}

pub(crate) const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// A keepalived config for one instance, as the seed's, with PASS auth.
pub(crate) fn keepalived_conf(priority: u8, extra: &str) -> String {
    format!(
        "global_defs {{
  router_id ka_test
  vrrp_skip_check_adv_addr
  vrrp_garp_interval 0
  vrrp_gna_interval 0
  script_user root
  enable_script_security
}}
vrrp_instance VI_1 {{
  state BACKUP
  interface eth0
  virtual_router_id 134
  priority {priority}
  advert_int 1
  authentication {{
    auth_type PASS
    auth_pass dnsvip
  }}
  virtual_ipaddress {{
    {VIP}/32
  }}
  {extra}
}}
"
    )
}

/// Our TOML for one instance with PASS auth.
pub(crate) fn vrrpd_conf(priority: u8, extra: &str) -> String {
    format!(
        "[[vrrp]]
name = \"VI_1\"
interface = \"eth0\"
virtual_router_id = 134
priority = {priority}
advert_int = 1
auth_pass = \"dnsvip\"
virtual_ipaddress = [\"{VIP}/32\"]
{extra}
"
    )
}

/// Skew_Time of a priority, in seconds.
pub(crate) fn skew(priority: u8) -> Duration {
    Duration::from_secs_f64(f64::from(256 - u32::from(priority)) / 256.0)
}

/// Master_Down_Interval for advert_int 1.
pub(crate) fn mdi(priority: u8) -> Duration {
    Duration::from_secs(3) + skew(priority)
}
