//! A small lab of network namespaces on one bridge, for tests that need
//! several hosts: VRRP peers, balancers, backends and clients.
//!
//! Every node is a namespace with `eth0` (`10.S.0.N/24`, `S` chosen per
//! lab) plugged into a bridge that lives in its own namespace, so nothing
//! touches the host's namespace and labs of tests running in parallel are
//! separate layer-2 segments. [`Lab`]'s `Drop` kills the processes it
//! started and deletes the namespaces, whether the test passed or not;
//! namespaces left behind by a test process that was killed outright are
//! swept by the next [`Lab::new`].
//!
//! Processes are started in a node with `ip netns exec` ([`command`],
//! [`Lab::spawn`], and the `start_in` constructors of [`Nsd`](crate::Nsd)
//! and [`Dnsha`](crate::Dnsha)); sockets are opened in a node from a thread
//! that entered its namespace ([`run_in`]), so the test itself can be a
//! client there.
//!
//! ```no_run
//! use std::time::Duration;
//! use test_support::netns::{self, Lab};
//!
//! if let Some(why) = netns::skip_reason(&[netns::KEEPALIVED]) {
//!     test_support::skip(&why);
//!     return;
//! }
//! let mut lab = Lab::with_subnet("ka", 91, &["a", "b"]);
//! let vip = lab.host(100);
//! let conf = netns::keepalived_conf("VI_1", 51, 150, &format!("{vip}/32"), "");
//! lab.keepalived("a", &conf);
//! assert!(lab.wait(Duration::from_secs(5), |l| l.holds("a", vip)).is_some());
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Where Debian's `keepalived` package installs the daemon.
pub const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// Where Debian's `tcpdump` package installs it.
pub const TCPDUMP: &str = "/usr/bin/tcpdump";

/// Where `ip netns` keeps the namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// Every namespace a lab creates is named `lab-<pid>-<tag>-<node>`.
const PREFIX: &str = "lab-";

/// Why a lab cannot run here, if it cannot: not root, no `ip`, or one of
/// `programs` (absolute paths) missing. Pass the reason to
/// [`skip`](crate::skip), which fails the test instead when CI requires
/// every test to run.
pub fn skip_reason(programs: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: network namespaces need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) not installed".into());
    }
    programs
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} not installed"))
}

/// A command that runs `program` in namespace `netns` (`ip netns exec`,
/// which execs it: the child's PID is the program's), or in the current
/// one when `netns` is `None`.
pub fn command(netns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Runs `f` on a thread that has entered namespace `netns`: sockets `f`
/// opens live in that namespace (and stay there when moved to another
/// thread). Panics if the namespace cannot be entered; a panic in `f` is
/// passed on.
pub fn run_in<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let worker = s.spawn(|| {
            let path = Path::new(NETNS_DIR).join(netns);
            let file =
                File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("cannot enter namespace {netns}: {e}"));
            f()
        });
        match worker.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `f` in `netns` ([`run_in`]), or right here when `netns` is `None`.
pub fn maybe_in<T: Send>(netns: Option<&str>, f: impl FnOnce() -> T + Send) -> T {
    match netns {
        Some(ns) => run_in(ns, f),
        None => f(),
    }
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

/// A process a [`Lab`] started in one of its nodes.
#[derive(Debug)]
pub struct Proc {
    /// The process (`ip netns exec` execs the program, so this is it).
    pub child: Child,
    /// Its stdin, when [`Lab::spawn`] was asked for a pipe.
    pub stdin: Option<ChildStdin>,
    /// A file the process writes its status to, if the test set one.
    pub status_file: Option<PathBuf>,
    /// A file holding the PID of a child process that must be killed with
    /// it (keepalived's VRRP process writes its PID there).
    pub child_pid_file: Option<PathBuf>,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Its process ID.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    /// Sends `sig` to it (not to its children).
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid()), sig);
    }

    /// SIGKILLs it (and the child named by `child_pid_file`, first) and
    /// reaps it. Does nothing if it has exited.
    pub fn kill9(&mut self) {
        if let Some(pid) = self
            .child_pid_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 10 s for it to exit (SIGKILL after).
    pub fn term(&mut self) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.kill9();
    }

    /// Writes `line` and a newline to its stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin piped");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Everything it wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Namespaces on a bridge. See the [module docs](self).
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    subnet: u8,
    /// Host nodes, in order; node `i` has address `.i+1`.
    hosts: Vec<String>,
    /// Every namespace made, the bridge's included.
    namespaces: Vec<String>,
    /// Files of the lab: configurations, logs.
    pub dir: TempDir,
    procs: Vec<Proc>,
}

impl Lab {
    /// [`Lab::with_subnet`] on 10.77.0.0/24.
    pub fn new(tag: &str, nodes: &[&str]) -> Self {
        Self::with_subnet(tag, 77, nodes)
    }

    /// A bridge and one namespace per node; node `i` gets
    /// `10.<subnet>.0.<i+1>/24` on `eth0`, up, and `lo` up. `tag` makes the
    /// namespace names unique among the labs of one test process.
    pub fn with_subnet(tag: &str, subnet: u8, nodes: &[&str]) -> Self {
        assert!(nodes.len() < 99, "addresses .100 and up are for VIPs");
        sweep_stale();
        let mut lab = Self {
            prefix: format!("{PREFIX}{}-{tag}-", std::process::id()),
            subnet,
            hosts: nodes.iter().map(|n| (*n).to_owned()).collect(),
            namespaces: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("dnsha-lab-")
                .tempdir()
                .expect("tempdir"),
            procs: Vec::new(),
        };
        let br = lab.ns("br");
        ip(&["netns", "add", &br]);
        lab.namespaces.push(br.clone());
        // Snooping off: VRRP and neighbour discovery use multicast, and a
        // bridge that learns group members from MLD/IGMP reports (with no
        // querier on the link) must not decide who hears an advert.
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (i, node) in nodes.iter().enumerate() {
            let ns = lab.ns(node);
            ip(&["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            let cidr = format!("{}/24", lab.addr(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        }
        lab
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: &str) -> String {
        format!("{}{}", self.prefix, node)
    }

    /// The address of the `i`-th node.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.host(u8::try_from(i + 1).expect("few nodes"))
    }

    /// The address of `node`.
    pub fn node_addr(&self, node: &str) -> Ipv4Addr {
        let i = self
            .hosts
            .iter()
            .position(|h| h == node)
            .unwrap_or_else(|| panic!("no node {node}"));
        self.addr(i)
    }

    /// `10.<subnet>.0.<n>`: for VIPs, use `n` of 100 and up.
    pub fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, n)
    }

    /// Whether `node`'s `eth0` holds `addr`.
    pub fn holds(&self, node: &str, addr: impl ToString) -> bool {
        // `-br` lists every address of eth0, IPv4 and IPv6, after its state.
        let out = Command::new("ip")
            .args(["-n", &self.ns(node), "-br", "addr", "show", "dev"])
            .arg("eth0")
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {}/", addr.to_string()))
    }

    /// Sets `node`'s `eth0` up or down.
    pub fn set_link(&self, node: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns(node), "link", "set", "eth0", state]);
    }

    /// Removes `cidr` (`IP/prefix`) from `node`'s `eth0`, if it is there.
    pub fn del_addr(&self, node: &str, cidr: &str) {
        let _ = Command::new("ip")
            .args(["-n", &self.ns(node), "addr", "del", cidr, "dev", "eth0"])
            .output();
    }

    /// Adds a node on no bridge: a namespace with `lo` up and nothing else,
    /// for a host reached through another node (a client behind a router),
    /// to be linked with [`Lab::veth`]. The lab deletes it when dropped.
    pub fn add_node(&mut self, node: &str) {
        let ns = self.ns(node);
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
    }

    /// A point-to-point link between two nodes: a veth pair with interface
    /// `a.1` in node `a.0`, holding address `a.2` (`IP/prefix`), and the
    /// same for `b`; both ends up.
    pub fn veth(&self, a: (&str, &str, &str), b: (&str, &str, &str)) {
        let (ns_a, ns_b) = (self.ns(a.0), self.ns(b.0));
        ip(&[
            "link", "add", a.1, "netns", &ns_a, "type", "veth", "peer", "name", b.1, "netns", &ns_b,
        ]);
        for (ns, ifname, cidr) in [(&ns_a, a.1, a.2), (&ns_b, b.1, b.2)] {
            ip(&["-n", ns, "addr", "add", cidr, "dev", ifname]);
            ip(&["-n", ns, "link", "set", ifname, "up"]);
        }
    }

    /// Runs `ip ARGS` in `node` (`ip -n NAMESPACE ARGS`: routes, addresses,
    /// links) and panics with its error if it fails.
    pub fn ip(&self, node: &str, args: &[&str]) {
        let ns = self.ns(node);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Sets the kernel parameter `key` (`net.ipv4.ip_forward`, say: the
    /// `net.*` keys are per namespace) to `value` in `node`.
    pub fn sysctl(&self, node: &str, key: &str, value: &str) {
        let out = self.exec(node, "sysctl", &["-qw", &format!("{key}={value}")]);
        assert!(
            out.status.success(),
            "sysctl {key}={value} in {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command running `program` in `node` ([`command`]).
    pub fn command(&self, node: &str, program: impl AsRef<OsStr>) -> Command {
        command(Some(&self.ns(node)), program)
    }

    /// Runs `program args` in `node` to completion.
    pub fn exec(&self, node: &str, program: impl AsRef<OsStr>, args: &[&str]) -> Output {
        let program = program.as_ref();
        self.command(node, program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program:?} in {node}: {e}"))
    }

    /// Runs `f` in `node`'s namespace ([`run_in`]).
    pub fn run_in<T: Send>(&self, node: &str, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.ns(node), f)
    }

    /// Starts `program args` in `node`, logging to a file of the lab, with
    /// `NO_COLOR=1` and `RUST_LOG=info,dnsha_vrrp=debug`; returns its index
    /// for [`Lab::proc`]. The lab kills it when dropped.
    pub fn spawn(&mut self, node: &str, program: &Path, args: &[&str], stdin: bool) -> usize {
        let log = self
            .dir
            .path()
            .join(format!("{node}-{}.log", self.procs.len()));
        let logf = File::create(&log).expect("log file");
        let mut child = self
            .command(node, program)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,dnsha_vrrp=debug")
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
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

    /// Starts keepalived 2.x with this configuration in `node`, in the
    /// foreground, VRRP only, logging to the console.
    pub fn keepalived(&mut self, node: &str, conf: &str) -> usize {
        let n = self.procs.len();
        let file = |ext: &str| self.dir.path().join(format!("{node}-{n}.{ext}"));
        let (cfg, pid, vpid) = (file("conf"), file("pid"), file("vrrp.pid"));
        std::fs::write(&cfg, conf).expect("write keepalived config");
        let s = |p: &Path| p.to_string_lossy().into_owned();
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
                &s(&cfg),
                "-p",
                &s(&pid),
                "-r",
                &s(&vpid),
            ],
            false,
        );
        self.procs[i].child_pid_file = Some(vpid);
        i
    }

    /// The MAC address of `node`'s `eth0`, as tcpdump prints it
    /// (`aa:bb:cc:dd:ee:ff`).
    pub fn mac(&self, node: &str) -> String {
        let out = self.exec(node, "ip", &["-o", "link", "show", "dev", "eth0"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace();
        fields
            .find(|f| *f == "link/ether")
            .and_then(|_| fields.next())
            .unwrap_or_else(|| panic!("no MAC address for {node}'s eth0: {text}"))
            .to_owned()
    }

    /// Starts [`TCPDUMP`] on the lab's bridge, where every frame of every
    /// node passes, with `filter` (a pcap filter such as `arp`): link-level
    /// headers (`-e`), epoch timestamps (`-tt`), line-buffered. Returns once
    /// it listens, with its index for [`Lab::proc_ref`]; read its output
    /// with [`Proc::log_text`] and [`gratuitous_arps`].
    pub fn capture(&mut self, filter: &str) -> usize {
        let i = self.spawn(
            "br",
            Path::new(TCPDUMP),
            &["-i", "br0", "-n", "-e", "-l", "-tt", filter],
            false,
        );
        let listening = self.wait(Duration::from_secs(5), |l| {
            l.procs[i].log_text().contains("listening on")
        });
        assert!(
            listening.is_some(),
            "tcpdump did not start: {}",
            self.procs[i].log_text()
        );
        i
    }

    /// A process started by [`Lab::spawn`].
    pub fn proc_ref(&self, i: usize) -> &Proc {
        &self.procs[i]
    }

    /// A process started by [`Lab::spawn`], mutably.
    pub fn proc(&mut self, i: usize) -> &mut Proc {
        &mut self.procs[i]
    }

    /// Polls `pred` every 10 ms; the time it took to hold, or `None` after
    /// `max`.
    pub fn wait(&self, max: Duration, mut pred: impl FnMut(&Self) -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < max {
            if pred(self) {
                return Some(start.elapsed());
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Every log of the processes it started, for failure messages.
    pub fn logs(&self) -> String {
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
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The gratuitous ARPs for `addr` sent from `mac` in the output of a
/// [`Lab::capture`]: broadcast ARP requests whose sender and target are
/// both `addr`. Their times, in seconds since the Unix epoch.
pub fn gratuitous_arps(capture: &str, addr: Ipv4Addr, mac: &str) -> Vec<f64> {
    let (who_has, tell) = (format!("who-has {addr} "), format!("tell {addr},"));
    let from = format!(" {mac} > ff:ff:ff:ff:ff:ff,");
    capture
        .lines()
        .filter(|l| l.contains(&from) && l.contains(&who_has) && l.contains(&tell))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Now, in seconds since the Unix epoch (the clock of tcpdump's `-tt`).
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Deletes the namespaces of labs whose test process is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// A keepalived configuration with one VRRP instance on `eth0`, starting as
/// BACKUP, `advert_int 1`, `auth_type PASS` with password `dnsvip`, one
/// virtual address `vip` (`IP/prefix`), and `extra` lines in the instance.
pub fn keepalived_conf(name: &str, vrid: u8, priority: u8, vip: &str, extra: &str) -> String {
    keepalived_conf_with(
        name,
        vrid,
        priority,
        vip,
        "advert_int 1\n  authentication {\n    auth_type PASS\n    auth_pass dnsvip\n  }",
        extra,
    )
}

/// A keepalived instance as [`keepalived_conf`], with `timing` in place of
/// its interval and authentication lines (`version 3` and `advert_int 0.1`,
/// say).
pub fn keepalived_conf_with(
    name: &str,
    vrid: u8,
    priority: u8,
    vip: &str,
    timing: &str,
    extra: &str,
) -> String {
    format!(
        "global_defs {{
  router_id ka_test
  vrrp_skip_check_adv_addr
  vrrp_garp_interval 0
  vrrp_gna_interval 0
  script_user root
  enable_script_security
}}
vrrp_instance {name} {{
  state BACKUP
  interface eth0
  virtual_router_id {vrid}
  priority {priority}
  {timing}
  virtual_ipaddress {{
    {vip}
  }}
  {extra}
}}
"
    )
}

/// Skew_Time of a priority (RFC 3768: (256 − priority) / 256 s).
pub fn skew(priority: u8) -> Duration {
    Duration::from_secs_f64(f64::from(256 - u32::from(priority)) / 256.0)
}

/// Master_Down_Interval of a backup with this priority, for `advert_int 1`.
pub fn mdi(priority: u8) -> Duration {
    Duration::from_secs(3) + skew(priority)
}
