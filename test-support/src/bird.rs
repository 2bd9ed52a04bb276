//! BIRD 2 in the nodes of a [`Lab`], for routed topologies: the
//! configuration of a node that announces anycast prefixes over BGP (with
//! BFD) and of a Linux router that installs them as one ECMP route, the
//! daemon run in the foreground in a node, and `birdc` queries: protocol
//! states, the next hops BIRD and the kernel have for a prefix.
//!
//! ```no_run
//! use std::time::Duration;
//! use test_support::bird::{self, Bfd, Bird, Speaker};
//! use test_support::netns::{self, Lab};
//!
//! if let Some(why) = netns::skip_reason(&[bird::BIRD, bird::BIRDC]) {
//!     test_support::skip(&why);
//!     return;
//! }
//! let mut lab = Lab::with_subnet("bgp", 92, &["r", "n1"]);
//! let router = Speaker::new(lab.node_addr("r"), 65000);
//! let node = Speaker::new(lab.node_addr("n1"), 65053);
//! let prefixes = ["192.0.2.53/32"];
//! let r = Bird::start(&mut lab, "r", &bird::router_conf(router, &[("n1", node)], "eth0", &prefixes, Bfd::default()));
//! let n1 = Bird::start(&mut lab, "n1", &bird::node_conf(node, router, "lo", "eth0", &prefixes, Bfd::default()));
//! assert!(r.wait_established(&["n1"], Duration::from_secs(10)).is_some());
//! lab.ip("n1", &["addr", "add", "192.0.2.53/32", "dev", "lo"]);
//! let via = lab.wait(Duration::from_secs(5), |l| bird::kernel_next_hops(l, "r", "192.0.2.53/32").len() == 1);
//! assert!(via.is_some());
//! # drop(n1);
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::Lab;

/// Where Debian's `bird2` package installs the daemon.
pub const BIRD: &str = "/usr/sbin/bird";

/// Where Debian's `bird2` package installs the client.
pub const BIRDC: &str = "/usr/sbin/birdc";

/// How long [`Bird::start`] waits for the control socket to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// BGP timers of both sides, for tests: a hold time of 3 s (the smallest
/// BGP allows) as the fallback to BFD, the first connection after 1 s and
/// retries every second, a failed session restarted after 1–5 s, and no
/// graceful restart (a dead peer's routes go at once).
const BGP_TIMERS: &str = "  hold time 3;
  keepalive time 1;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  graceful restart off;
";

/// The BFD timing of a session: a control packet every `interval` each
/// way, and the session down after `multiplier` of them missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bfd {
    /// BIRD's `interval` (both `min rx interval` and `min tx interval`).
    pub interval: Duration,
    /// BIRD's `multiplier`.
    pub multiplier: u32,
}

impl Bfd {
    /// How long a dead peer goes unnoticed at most: interval × multiplier.
    pub fn detection(&self) -> Duration {
        self.interval * self.multiplier
    }
}

impl Default for Bfd {
    /// 100 ms × 5: a dead peer is detected within 0.5 s.
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            multiplier: 5,
        }
    }
}

/// One end of a BGP session: its address and AS number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaker {
    /// The address it speaks BGP from (also its router ID).
    pub addr: Ipv4Addr,
    /// Its AS number.
    pub asn: u32,
}

impl Speaker {
    /// A speaker at `addr` in AS `asn`.
    pub fn new(addr: Ipv4Addr, asn: u32) -> Self {
        Self { addr, asn }
    }
}

/// The IPv4 and the IPv6 prefixes of `prefixes`, each as a BIRD prefix
/// set (`[ 192.0.2.53/32 ]`), or `None` when there is none of a family.
fn prefix_sets(prefixes: &[&str]) -> (Option<String>, Option<String>) {
    let set = |v6: bool| {
        let of: Vec<&str> = prefixes
            .iter()
            .copied()
            .filter(|p| p.contains(':') == v6)
            .collect();
        (!of.is_empty()).then(|| format!("[ {} ]", of.join(", ")))
    };
    (set(false), set(true))
}

/// `protocol bfd` on `interface` with `bfd`'s timing.
fn bfd_section(interface: &str, bfd: Bfd) -> String {
    format!(
        "protocol bfd {{\n  interface \"{interface}\" {{\n    interval {} ms;\n    multiplier {};\n  }};\n}}\n",
        bfd.interval.as_millis(),
        bfd.multiplier
    )
}

/// The configuration of a node that announces `prefixes` (`IP/len`, IPv4
/// or IPv6) while they are addresses of `anycast_if`, as dnsha's
/// `[[anycast]]` puts them there: `protocol direct` on that interface
/// only, filtered to `prefixes`, and one eBGP session from `node` to
/// `router` (with BFD of `bfd`'s timing on `link_if`) that imports nothing
/// and exports those prefixes only. Logs to stderr.
pub fn node_conf(
    node: Speaker,
    router: Speaker,
    anycast_if: &str,
    link_if: &str,
    prefixes: &[&str],
    bfd: Bfd,
) -> String {
    let (v4, v6) = prefix_sets(prefixes);
    let mut s = format!("log stderr all;\nrouter id {};\n\n", node.addr);
    let mut direct = String::new();
    let mut channels = String::new();
    for (family, set) in [("4", &v4), ("6", &v6)] {
        let Some(set) = set else { continue };
        let _ = write!(
            s,
            "filter anycast{family} {{\n  if net ~ {set} then accept;\n  reject;\n}}\n"
        );
        let _ = writeln!(
            direct,
            "  ipv{family} {{ import filter anycast{family}; }};"
        );
        let _ = writeln!(
            channels,
            "  ipv{family} {{ import none; export filter anycast{family}; }};"
        );
    }
    let _ = write!(
        s,
        "\nprotocol device {{\n}}\n\n\
         protocol direct anycast {{\n  interface \"{anycast_if}\";\n{direct}}}\n\n\
         {}\n\
         protocol bgp upstream {{\n  local {} as {};\n  neighbor {} as {};\n  bfd on;\n\
         {BGP_TIMERS}{channels}}}\n",
        bfd_section(link_if, bfd),
        node.addr,
        node.asn,
        router.addr,
        router.asn,
    );
    s
}

/// The configuration of a router that peers with each of `nodes` (a
/// protocol named after each, for [`Bird::wait_established`]), with BFD of
/// `bfd`'s timing on `link_if`, accepts `prefixes` only from them, and
/// installs them in the kernel as one route with every node's path as a
/// next hop (`merge paths on`: ECMP). Logs to stderr.
pub fn router_conf(
    router: Speaker,
    nodes: &[(&str, Speaker)],
    link_if: &str,
    prefixes: &[&str],
    bfd: Bfd,
) -> String {
    let (v4, v6) = prefix_sets(prefixes);
    let mut s = format!(
        "log stderr all;\nrouter id {};\n\nprotocol device {{\n}}\n\n",
        router.addr
    );
    let mut channels = String::new();
    for (family, set) in [("4", &v4), ("6", &v6)] {
        let Some(set) = set else { continue };
        let _ = write!(
            s,
            "protocol kernel kernel{family} {{\n  ipv{family} {{ import none; export where source = RTS_BGP; }};\n  merge paths on;\n}}\n\n"
        );
        let _ = writeln!(
            channels,
            "  ipv{family} {{ import where net ~ {set}; export none; }};"
        );
    }
    s.push_str(&bfd_section(link_if, bfd));
    let _ = write!(
        s,
        "\ntemplate bgp node {{\n  local {} as {};\n  bfd on;\n{BGP_TIMERS}{channels}}}\n",
        router.addr, router.asn
    );
    for (name, node) in nodes {
        let _ = writeln!(
            s,
            "\nprotocol bgp {name} from node {{\n  neighbor {} as {};\n}}",
            node.addr, node.asn
        );
    }
    s
}

/// A row of `birdc show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// The protocol's name (`upstream`, `n1`, `bfd1`).
    pub name: String,
    /// Its kind (`BGP`, `BFD`, `Direct`).
    pub proto: String,
    /// `up`, `start`, `down`…
    pub state: String,
    /// The rest: `Established`, `Active`, `Idle  Error: BFD session down`.
    pub info: String,
}

/// The rows of `birdc show protocols` output.
pub fn parse_protocols(text: &str) -> Vec<Protocol> {
    text.lines()
        .skip_while(|l| !l.starts_with("Name "))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, proto, _table, state, _since) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            Some(Protocol {
                name: name.to_owned(),
                proto: proto.to_owned(),
                state: state.to_owned(),
                info: f.collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// Every address that follows a `via` in `text`: the next hops of a
/// `birdc show route` or an `ip route show` answer, in order.
pub fn parse_next_hops(text: &str) -> Vec<IpAddr> {
    let mut hops = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "via" {
            if let Some(addr) = words.next().and_then(|a| a.parse().ok()) {
                hops.push(addr);
            }
        }
    }
    hops
}

/// The next hops of the kernel's route for exactly `prefix` in `node`
/// (`ip route show exact`): one per node a router spreads flows over, none
/// when there is no such route.
pub fn kernel_next_hops(lab: &Lab, node: &str, prefix: &str) -> Vec<IpAddr> {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    let out = lab.exec(node, "ip", &[family, "route", "show", "exact", prefix]);
    let mut hops = parse_next_hops(&String::from_utf8_lossy(&out.stdout));
    hops.sort();
    hops
}

/// A BIRD daemon running in the foreground in a node of a [`Lab`]
/// (`bird -f -c CONF -s SOCKET`, logging to its lab log); the lab kills it
/// when dropped, or earlier through [`Bird::proc`].
#[derive(Debug)]
pub struct Bird {
    node: String,
    socket: PathBuf,
    proc: usize,
}

impl Bird {
    /// Writes `conf` to the lab's directory, checks it (`bird -p`), starts
    /// BIRD with it in `node` and waits until its control socket answers.
    /// Panics with BIRD's words when one of these fails.
    pub fn start(lab: &mut Lab, node: &str, conf: &str) -> Self {
        let conf_path = lab.dir.path().join(format!("{node}-bird.conf"));
        let socket = lab.dir.path().join(format!("{node}-bird.ctl"));
        std::fs::write(&conf_path, conf).expect("write BIRD configuration");
        let conf_arg = conf_path.to_str().expect("utf-8 path");
        let parsed = Command::new(BIRD)
            .args(["-p", "-c", conf_arg])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BIRD}: {e}"));
        assert!(
            parsed.status.success(),
            "BIRD rejects the configuration of {node}: {}\n{conf}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        let sock_arg = socket.to_str().expect("utf-8 path");
        let proc = lab.spawn(
            node,
            Path::new(BIRD),
            &["-f", "-c", conf_arg, "-s", sock_arg],
            false,
        );
        let bird = Self {
            node: node.to_owned(),
            socket,
            proc,
        };
        let up = poll(READY_TIMEOUT, || {
            bird.birdc(&["show", "status"])
                .contains("Daemon is up and running")
        });
        assert!(
            up.is_some(),
            "BIRD did not start in {node}:\n{}",
            lab.proc_ref(proc).log_text()
        );
        bird
    }

    /// The node it runs in.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Its control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its index among the lab's processes ([`Lab::proc`]): its log, a
    /// signal.
    pub fn proc(&self) -> usize {
        self.proc
    }

    /// `birdc -s SOCKET ARGS`: what it printed (empty when it could not
    /// connect).
    pub fn birdc(&self, args: &[&str]) -> String {
        Command::new(BIRDC)
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Its protocols (`show protocols`).
    pub fn protocols(&self) -> Vec<Protocol> {
        parse_protocols(&self.birdc(&["show", "protocols"]))
    }

    /// The names of its BGP protocols whose session is established.
    pub fn established(&self) -> Vec<String> {
        self.protocols()
            .into_iter()
            .filter(|p| p.proto == "BGP" && p.state == "up" && p.info.starts_with("Established"))
            .map(|p| p.name)
            .collect()
    }

    /// Waits up to `max` until the BGP sessions of every protocol in
    /// `names` are established; how long it took.
    pub fn wait_established(&self, names: &[&str], max: Duration) -> Option<Duration> {
        poll(max, || {
            let up = self.established();
            names.iter().all(|n| up.iter().any(|u| u == n))
        })
    }

    /// The next hops of BIRD's routes for `prefix` (`show route PREFIX`),
    /// best first: what the router may merge into its ECMP route.
    pub fn next_hops(&self, prefix: &str) -> Vec<IpAddr> {
        parse_next_hops(&self.birdc(&["show", "route", prefix]))
    }
}

/// Polls `pred` every 10 ms for up to `max`; how long it took to hold.
fn poll(max: Duration, mut pred: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if pred() {
            return Some(start.elapsed());
        }
        if start.elapsed() > max {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_parsed_with_their_info() {
        let text = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     11:34:01.316  
bfd1       BFD        ---        up     11:34:01.316  
n1         BGP        ---        up     11:34:02.211  Established   
n2         BGP        ---        start  11:34:16.862  Idle          Error: BFD session down
";
        let p = parse_protocols(text);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].name, "device1");
        assert_eq!(p[0].info, "");
        assert_eq!(
            (p[2].name.as_str(), p[2].proto.as_str(), p[2].info.as_str()),
            ("n1", "BGP", "Established")
        );
        assert_eq!(p[3].state, "start");
        assert_eq!(p[3].info, "Idle Error: BFD session down");
    }

    #[test]
    fn next_hops_of_bird_and_of_the_kernel() {
        let bird = "BIRD 2.0.12 ready.
Table master4:
192.0.2.53/32        unicast [n1 11:34:05.340] * (100) [AS65053i]
\tvia 10.201.0.2 on eth0
                     unicast [n3 11:34:05.344] (100) [AS65053i]
\tvia 10.201.0.4 on eth0
";
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_next_hops(bird),
            vec![ip("10.201.0.2"), ip("10.201.0.4")]
        );
        let ecmp = "192.0.2.53 proto bird metric 32 
\tnexthop via 10.201.0.2 dev eth0 weight 1 
\tnexthop via 10.201.0.3 dev eth0 weight 1 
";
        assert_eq!(
            parse_next_hops(ecmp),
            vec![ip("10.201.0.2"), ip("10.201.0.3")]
        );
        let one = "192.0.2.53 via 10.201.0.3 dev eth0 proto bird metric 32 \n";
        assert_eq!(parse_next_hops(one), vec![ip("10.201.0.3")]);
        assert!(parse_next_hops("").is_empty());
    }

    #[test]
    fn configurations_are_accepted_by_bird() {
        let router = Speaker::new(Ipv4Addr::new(10, 9, 0, 1), 65000);
        let node = Speaker::new(Ipv4Addr::new(10, 9, 0, 2), 65053);
        let prefixes = ["192.0.2.53/32", "2001:db8::53/128"];
        let confs = [
            node_conf(node, router, "lo", "eth0", &prefixes, Bfd::default()),
            router_conf(router, &[("n1", node)], "eth0", &prefixes, Bfd::default()),
            node_conf(node, router, "lo", "eth0", &prefixes[..1], Bfd::default()),
        ];
        assert!(confs[0].contains("interval 100 ms;") && confs[0].contains("multiplier 5;"));
        assert!(confs[1].contains("merge paths on;"));
        assert!(!confs[2].contains("ipv6"));
        if !Path::new(BIRD).exists() {
            crate::skip(&format!("{BIRD} not installed"));
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, conf) in confs.iter().enumerate() {
            let path = dir.path().join(format!("{i}.conf"));
            std::fs::write(&path, conf).expect("write");
            let out = Command::new(BIRD)
                .arg("-p")
                .arg("-c")
                .arg(&path)
                .output()
                .expect("bird -p");
            assert!(
                out.status.success(),
                "{}\n{conf}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
