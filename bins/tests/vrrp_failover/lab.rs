//! The failover tests' topology on top of `test_support::netns`: balancer
//! configurations, starting `dnsha run` in a node, reading its admin
//! endpoint from inside the node, and a watcher that samples who holds the
//! VIP every ~20 ms.

#![allow(unreachable_pub, dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::common::netns::{self, Lab};
use super::common::{a_record, bin, http_get, query_tcp, query_udp, Dnsha, Nsd, RecordType};

/// Where Debian's `nsd` package installs the daemon.
pub const NSD: &str = "/usr/sbin/nsd";

/// The admin endpoint of every balancer, on the loopback of its namespace.
pub const ADMIN: &str = "127.0.0.1:8088";

/// Whether the test must be skipped (and says why, or fails when
/// `DNSHA_TEST_REQUIRE_ALL` is set): not root, `ip`, NSD or one of
/// `programs` missing.
pub fn skip(programs: &[&str]) -> bool {
    let mut all = vec![NSD];
    all.extend_from_slice(programs);
    match netns::skip_reason(&all) {
        Some(why) => {
            test_support::skip(&why);
            true
        }
        None => false,
    }
}

/// One `[[vrrp]]` section on `eth0`, `advert_int 1`, PASS `dnsvip`, VIP
/// `vip/32`, with `extra` lines (trackers).
pub fn vrrp_section(
    name: &str,
    vrid: u8,
    priority: u8,
    vip: impl Into<IpAddr>,
    extra: &str,
) -> String {
    let vip: IpAddr = vip.into();
    let prefix = if vip.is_ipv4() { 32 } else { 64 };
    format!(
        r#"
[[vrrp]]
name = "{name}"
interface = "eth0"
virtual_router_id = {vrid}
priority = {priority}
advert_int = 1
auth_pass = "dnsvip"
virtual_ipaddress = ["{vip}/{prefix}"]
{extra}
"#
    )
}

/// A balancer: UDP and TCP listeners on `vip:53` (bound before the VIP is
/// held), pool `p` of `backends` on port 53 with DNS health checks every
/// 200 ms (down after 3 failures or one refusal, up after 2 successes), the
/// admin endpoint on [`ADMIN`], and the `vrrp` sections.
///
/// Passive marking is off (`max_fails = 0`): on a starved 2-core machine a
/// balancer that is not scheduled for longer than the pool timeout counts
/// its own delay as backend timeouts, marks every backend down, and its
/// tracked pool then puts VRRP in FAULT, which is not what these tests
/// are about. The health checker, which reads a late answer before its
/// timeout fires, decides alone.
pub fn balancer_conf(vip: impl Into<IpAddr>, backends: &[Ipv4Addr], vrrp: &str) -> String {
    let listen = SocketAddr::new(vip.into(), 53);
    let mut s = format!(
        r#"
[admin]
listen = "{ADMIN}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{listen}"
pool = "p"

[[listener]]
name = "tcp"
protocol = "tcp"
listen = "{listen}"
pool = "p"

[[pool]]
name = "p"
timeout_ms = 1000
retries = 1
max_fails = 0

[pool.health]
check = "dns"
query_name = "www.example.test"
query_type = "A"
interval_ms = 200
timeout_ms = 200
rise = 2
fall = 3
"#
    );
    for (i, b) in backends.iter().enumerate() {
        s.push_str(&format!(
            "\n[[pool.backend]]\nname = \"nsd{}\"\naddress = \"{b}:53\"\n",
            i + 1
        ));
    }
    s.push_str(vrrp);
    s
}

/// NSD on port 53 of `node`, answering the node's own address.
pub fn nsd(lab: &Lab, node: &str) -> Nsd {
    let ip = lab.node_addr(node);
    Nsd::start_in(&lab.ns(node), SocketAddr::from((ip, 53)), ip)
}

/// `dnsha run` in `node` (the real binary), once it logged that it runs.
pub fn start_balancer(lab: &Lab, node: &str, conf: &str) -> Dnsha {
    let d = Dnsha::try_start_in(
        Some(&lab.ns(node)),
        bin(),
        conf,
        &[],
        &[("RUST_LOG", "info,dnsha_vrrp=debug"), ("NO_COLOR", "1")],
    )
    .unwrap_or_else(|e| panic!("cannot start dnsha in {node}: {e}"));
    assert!(
        d.wait_log("dnsha running", Duration::from_secs(10)),
        "dnsha in {node} did not start:\n{}",
        d.log()
    );
    d
}

fn admin() -> SocketAddr {
    ADMIN.parse().expect("admin address")
}

/// `/status` of the balancer in `node`.
pub fn status(lab: &Lab, node: &str) -> serde_json::Value {
    let body = lab.run_in(node, || http_get(admin(), "/status"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `/metrics` of the balancer in `node`.
pub fn metrics(lab: &Lab, node: &str) -> String {
    lab.run_in(node, || http_get(admin(), "/metrics"))
}

/// The `/status` entry of VRRP instance `name` in `node`.
pub fn instance(lab: &Lab, node: &str, name: &str) -> serde_json::Value {
    let st = status(lab, node);
    st["vrrp"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no VRRP instance {name} in /status of {node}: {st}"))
}

/// Waits up to `max` until instance `name` in `node` is in `state`; its
/// last `/status` entry either way.
pub fn wait_state(
    lab: &Lab,
    node: &str,
    name: &str,
    state: &str,
    max: Duration,
) -> Result<serde_json::Value, serde_json::Value> {
    let start = Instant::now();
    loop {
        let i = instance(lab, node, name);
        if i["state"] == state {
            return Ok(i);
        }
        if start.elapsed() > max {
            return Err(i);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The VRRP table of `dnsha status --admin ADMIN`, run in `node`: one row
/// per instance (instance, interface, VRID, state, priority, effective,
/// master, VIPs), and the whole output.
pub fn status_table(lab: &Lab, node: &str) -> (Vec<Vec<String>>, String) {
    let out = lab.exec(node, bin(), &["status", "--admin", ADMIN]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dnsha status in {node}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = text
        .lines()
        .skip_while(|l| !l.starts_with("VRRP instance"))
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    (rows, text)
}

/// The row of instance `name` in `dnsha status` run in `node`, checked
/// against `state` and `priority`/`effective`.
pub fn expect_row(lab: &Lab, node: &str, name: &str, state: &str, prio: u8, effective: u8) {
    let (rows, text) = status_table(lab, node);
    let row = rows
        .iter()
        .find(|r| r.first().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no {name} row in `dnsha status` of {node}:\n{text}"));
    assert_eq!(row[1], "eth0", "{text}");
    assert_eq!(row[3], state, "{node}:\n{text}");
    assert_eq!(row[4], prio.to_string(), "{node}:\n{text}");
    assert_eq!(row[5], effective.to_string(), "{node}:\n{text}");
}

/// An A query for `www.example.test.` to `vip:53` from `node`, over UDP (or
/// TCP): the address answered (which backend answered), or the error.
pub fn ask(lab: &Lab, node: &str, vip: IpAddr, tcp: bool) -> Result<Ipv4Addr, String> {
    let server = SocketAddr::new(vip, 53);
    let timeout = Duration::from_millis(700);
    let answer = lab.run_in(node, || {
        if tcp {
            query_tcp(server, "www.example.test.", RecordType::A, timeout)
        } else {
            query_udp(server, "www.example.test.", RecordType::A, timeout)
        }
    })?;
    a_record(&answer).ok_or_else(|| format!("no A record in {answer:?}"))
}

/// Asks until an answer comes (at most `max`) over UDP, then once over
/// TCP; the address of the UDP answer.
pub fn ask_until(lab: &Lab, node: &str, vip: impl Into<IpAddr>, max: Duration) -> Ipv4Addr {
    let vip: IpAddr = vip.into();
    let start = Instant::now();
    let udp = loop {
        match ask(lab, node, vip, false) {
            Ok(a) => break a,
            Err(e) if start.elapsed() > max => panic!("no UDP answer from {vip}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    if let Err(e) = ask(lab, node, vip, true) {
        panic!("{vip} answers over UDP, not over TCP: {e}");
    }
    udp
}

/// One sample: when, and whether each watched node holds the VIP.
type Sample = (Instant, Vec<bool>);

/// Samples, every ~20 ms, which of `nodes` hold the VIP: the address is on
/// `eth0` and `eth0` is up (a dead node whose link is down keeps a stale
/// address that nobody can reach; it does not count).
pub struct VipWatch {
    nodes: Vec<String>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

/// Whether `ns`'s `eth0` is up and holds `vip`.
fn holds_up(ns: &str, vip: &str) -> bool {
    let Ok(out) = Command::new("ip")
        .args(["-n", ns, "-br", "addr", "show", "dev", "eth0"])
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let _name = fields.next();
    let up = fields.next().is_some_and(|state| state != "DOWN");
    up && fields.any(|f| f.split('/').next() == Some(vip))
}

impl VipWatch {
    /// Starts sampling `nodes` of `lab` for `vip`.
    pub fn start(lab: &Lab, nodes: &[&str], vip: impl Into<IpAddr>) -> Self {
        let vip: IpAddr = vip.into();
        let namespaces: Vec<String> = nodes.iter().map(|n| lab.ns(n)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        let vip = vip.to_string();
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let held: Vec<bool> = namespaces.iter().map(|ns| holds_up(ns, &vip)).collect();
                s.lock().expect("samples").push((Instant::now(), held));
                thread::sleep(Duration::from_millis(20).saturating_sub(t0.elapsed()));
            }
        });
        Self {
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Waits up to `max` for a sample taken from now on where `pred` holds
    /// of the holders (in the order of the nodes); that sample's time.
    pub fn wait(&self, max: Duration, pred: impl Fn(&[bool]) -> bool) -> Option<Instant> {
        let since = Instant::now();
        let mut seen = self.samples.lock().expect("samples").len();
        while since.elapsed() < max {
            thread::sleep(Duration::from_millis(5));
            let samples = self.samples.lock().expect("samples");
            for (t, held) in &samples[seen..] {
                if *t >= since && pred(held) {
                    return Some(*t);
                }
            }
            seen = samples.len();
        }
        None
    }

    /// Whether `pred` held of every sample taken in the next `d`.
    pub fn always(&self, d: Duration, pred: impl Fn(&[bool]) -> bool) -> bool {
        let since = Instant::now();
        thread::sleep(d);
        let samples = self.samples.lock().expect("samples");
        samples
            .iter()
            .filter(|(t, _)| *t >= since)
            .all(|(_, held)| pred(held))
    }

    /// The longest time two or more nodes held the VIP at once (from the
    /// first such sample to the next sample with at most one holder).
    pub fn max_overlap(&self) -> Duration {
        let samples = self.samples.lock().expect("samples");
        let mut longest = Duration::ZERO;
        let mut since: Option<Instant> = None;
        for (t, held) in samples.iter() {
            let both = held.iter().filter(|h| **h).count() > 1;
            match (both, since) {
                (true, None) => since = Some(*t),
                (false, Some(s)) => {
                    longest = longest.max(*t - s);
                    since = None;
                }
                _ => {}
            }
        }
        if let (Some(s), Some((t, _))) = (since, samples.last()) {
            longest = longest.max(*t - s);
        }
        longest
    }

    /// The changes of holders over time, for failure messages and output.
    pub fn timeline(&self) -> String {
        let samples = self.samples.lock().expect("samples");
        let Some((t0, _)) = samples.first() else {
            return String::new();
        };
        let mut out = String::new();
        let mut last: Option<&Vec<bool>> = None;
        for (t, held) in samples.iter() {
            if last != Some(held) {
                let who: Vec<&str> = self
                    .nodes
                    .iter()
                    .zip(held)
                    .filter(|(_, h)| **h)
                    .map(|(n, _)| n.as_str())
                    .collect();
                out.push_str(&format!("  {:>7.3}s {who:?}\n", (*t - *t0).as_secs_f64()));
                last = Some(held);
            }
        }
        out
    }
}

impl Drop for VipWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the nftables `script` (`nft -f -`) in `node`'s namespace.
pub fn nft(lab: &Lab, node: &str, script: &str) {
    let mut child = lab
        .command(node, "/usr/sbin/nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    let mut stdin = child.stdin.take().expect("nft stdin");
    std::io::Write::write_all(&mut stdin, script.as_bytes()).expect("write nft script");
    drop(stdin);
    let status = child.wait().expect("nft");
    assert!(status.success(), "nft failed on {node}: {script}");
}

/// The gratuitous ARPs for `vip` from `node`'s MAC that the bridge
/// capture `capture` ([`Lab::capture`]) saw from `since` (seconds since the
/// epoch, [`netns::epoch_now`]) on, in seconds after `since`: waits up to
/// `max` for `n` of them, and returns what it saw either way.
pub fn wait_garps(
    lab: &Lab,
    capture: usize,
    node: &str,
    vip: Ipv4Addr,
    since: f64,
    n: usize,
    max: Duration,
) -> Vec<f64> {
    let mac = lab.mac(node);
    let seen = || -> Vec<f64> {
        netns::gratuitous_arps(&lab.proc_ref(capture).log_text(), vip, &mac)
            .into_iter()
            .filter(|t| *t >= since)
            .map(|t| t - since)
            .collect()
    };
    lab.wait(max, |_| seen().len() >= n);
    seen()
}
