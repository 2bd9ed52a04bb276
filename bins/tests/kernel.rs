//! Listeners with `forwarding = "kernel"` in network namespaces, with NSD
//! backends: the kernel forwards each new flow (UDP and TCP, from other
//! hosts and from the balancer itself) to a healthy backend by weight; a
//! backend killed or blackholed leaves the map within the health bound, and
//! a client reusing one source port loses no more than that; a recovered
//! backend comes back; a reload changes the backends at once; no backend
//! healthy leaves the packets to the userspace listener (SERVFAIL); the
//! table is gone after SIGTERM, and one table remains after `kill -9` and a
//! restart; without CAP_NET_ADMIN or with forwarding off, `run` says so.
//!
//! Root only: skipped otherwise, failed instead when
//! `DNSHA_TEST_REQUIRE_ALL` is set.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::netns::{self, Lab};
use common::*;
use hickory_proto::op::ResponseCode;
use nix::sys::signal::Signal;

const NFT: &str = "/usr/sbin/nft";
const ADMIN: &str = "127.0.0.1:8088";
const ANSWER: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];

/// The lab: `lb` runs dnsha on its own address, `c` is a client, `ns1`
/// and `ns2` run NSD (answering 10.0.0.1 and 10.0.0.2).
struct KLab {
    lab: Lab,
    nsd: Vec<Nsd>,
    listen: SocketAddr,
}

fn klab(tag: &str) -> Option<KLab> {
    if let Some(why) = netns::skip_reason(&[NFT]) {
        skip(&why);
        return None;
    }
    let lab = Lab::with_subnet(tag, 78, &["lb", "c", "ns1", "ns2"]);
    forwarder(&lab, "lb");
    let nsd = nsd_pair(&lab);
    let listen = SocketAddr::from((lab.node_addr("lb"), 53));
    Some(KLab { lab, nsd, listen })
}

/// A balancer node: forwards IPv4, sends no ICMP redirects (clients and
/// backends share its link).
fn forwarder(lab: &Lab, node: &str) {
    for key in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.eth0.send_redirects=0",
    ] {
        let out = lab.exec(node, "sysctl", &["-qw", key]);
        assert!(out.status.success(), "{out:?}");
    }
}

/// NSD on nodes `ns1` and `ns2` (port 53), answering [`ANSWER`].
fn nsd_pair(lab: &Lab) -> Vec<Nsd> {
    ["ns1", "ns2"]
        .iter()
        .zip(ANSWER)
        .map(|(node, answer)| {
            Nsd::start_in(
                &lab.ns(node),
                SocketAddr::from((lab.node_addr(node), 53)),
                answer,
            )
        })
        .collect()
}

fn config(k: &KLab, weights: [u32; 2], backends: usize) -> String {
    let mut out = format!(
        r#"
[admin]
listen = "{ADMIN}"

[[listener]]
name = "udp-k"
protocol = "udp"
listen = "{l}"
pool = "nsd"
forwarding = "kernel"
allow = ["0.0.0.0/0"]

[[listener]]
name = "tcp-k"
protocol = "tcp"
listen = "{l}"
pool = "nsd"
forwarding = "kernel"
allow = ["0.0.0.0/0"]

[[pool]]
name = "nsd"
[pool.health]
interval_ms = 200
timeout_ms = 300
fall = 2
rise = 2
"#,
        l = k.listen
    );
    for (i, w) in weights.iter().enumerate().take(backends) {
        out += &format!(
            "[[pool.backend]]\nname = \"ns{}\"\naddress = \"{}\"\nweight = {w}\n",
            i + 1,
            k.nsd[i].addr()
        );
    }
    out
}

fn admin() -> SocketAddr {
    ADMIN.parse().unwrap()
}

/// `/status` read from inside `lb`.
fn kstatus(k: &KLab) -> serde_json::Value {
    k.lab.run_in("lb", || status(admin()))
}

/// Slots per backend of listener `name`, from `/status`.
fn slots(k: &KLab, name: &str) -> Vec<u64> {
    let s = kstatus(k);
    s["kernel"]["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .map(|l| {
            l["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["slots"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// Which backend answered: 0, 1, or `None` (no answer, or no A record).
fn who(m: &Message) -> Option<usize> {
    a_record(m).and_then(|a| ANSWER.iter().position(|x| *x == a))
}

/// `n` UDP queries, each from a new socket (a new flow), from `node`:
/// answers per backend, and how many went unanswered.
fn udp_spread(k: &KLab, node: &str, n: usize) -> ([usize; 2], usize) {
    let listen = k.listen;
    k.lab.run_in(node, move || {
        let mut per = [0usize; 2];
        let mut lost = 0;
        for _ in 0..n {
            match query_udp(listen, "www.example.test.", RecordType::A, T)
                .ok()
                .as_ref()
                .and_then(who)
            {
                Some(b) => per[b] += 1,
                None => lost += 1,
            }
        }
        (per, lost)
    })
}

/// The same over TCP, a connection per query.
fn tcp_spread(k: &KLab, n: usize) -> [usize; 2] {
    let listen = k.listen;
    k.lab.run_in("c", move || {
        let mut per = [0usize; 2];
        for _ in 0..n {
            let m = query_tcp(listen, "www.example.test.", RecordType::A, T).unwrap();
            per[who(&m).unwrap()] += 1;
        }
        per
    })
}

fn start(k: &KLab, cfg: &str) -> Dnsha {
    let d = Dnsha::start_in(&k.lab.ns("lb"), bin(), cfg);
    let ok = k.lab.wait(Duration::from_secs(10), |_| {
        k.lab.run_in("lb", || {
            TcpStream::connect_timeout(&admin(), Duration::from_millis(200)).is_ok()
        }) && kstatus(k)["kernel"]["listeners"][0]["forwarding"] == true
    });
    assert!(ok.is_some(), "kernel forwarding not up\n{}", d.log());
    d
}

fn nft_tables(k: &KLab) -> usize {
    let out = k.lab.exec("lb", NFT, &["list", "tables"]);
    String::from_utf8_lossy(&out.stdout)
        .matches("inet dnsha")
        .count()
}

/// After the spread: the userspace listeners saw none of it, the kernel
/// counted it, and `/status`, `dnsha status` and `/metrics` say so.
fn counted_by_the_kernel(k: &KLab) {
    let s = kstatus(k);
    let udp_queries: u64 = s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["queries"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(udp_queries, 0, "{s}");
    // Counters are read each second.
    let counted = k.lab.wait(Duration::from_secs(3), |_| {
        let ns1 = &kstatus(k)["kernel"]["listeners"][0]["backends"][0];
        ns1["query_packets"].as_u64() >= Some(320) && ns1["answer_packets"].as_u64() >= Some(320)
    });
    assert!(counted.is_some(), "{}", kstatus(k)["kernel"]);
    let out = k
        .lab
        .exec("lb", bin().to_str().unwrap(), &["status", "--admin", ADMIN]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("udp-k") && l.contains("ns1"))
        .unwrap_or_else(|| panic!("no kernel row in dnsha status:\n{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols[..7],
        [
            "udp-k",
            "udp",
            &k.listen.to_string(),
            "ns1",
            &k.nsd[0].addr().to_string(),
            "3",
            "3"
        ]
    );
    assert!(cols[7].parse::<u64>().unwrap() >= 320, "{row}");
    let metrics = k.lab.run_in("lb", || http_get(admin(), "/metrics"));
    assert!(
        metrics.contains("dnsha_kernel_query_packets_total{listener=\"udp-k\",backend=\"ns1\"}"),
        "{metrics}"
    );
}

#[test]
fn kernel_listeners_spread_by_weight_and_follow_health() {
    init_tracing();
    let Some(mut k) = klab("kw") else { return };
    let d = start(&k, &config(&k, [3, 1], 2));
    assert_eq!(slots(&k, "udp-k"), [3, 1]);
    // New flows by weight, from a client host and from the balancer itself.
    let (per, lost) = udp_spread(&k, "c", 400);
    println!("UDP from a client: {per:?}, lost {lost}");
    assert_eq!(lost, 0);
    near(per, [300, 100], "numgen spreads new flows 3:1");
    let (per, lost) = udp_spread(&k, "lb", 40);
    assert_eq!(lost, 0);
    near(per, [30, 10], "the host's own queries (output hook)");
    let per = tcp_spread(&k, 40);
    near(per, [30, 10], "TCP, a connection per query");
    counted_by_the_kernel(&k);

    // One client socket (one source port, as dnsperf uses) whose flow sits
    // on ns2; ns2 dies. Its queries are lost until the health bound, then
    // reach ns1 on the same source port: the conntrack entry went.
    let listen = k.listen;
    let sock = k.lab.run_in("c", move || socket_on_ns2(listen));
    k.nsd[1].stop();
    let t0 = Instant::now();
    let (lost, lost_after, resumed) = steady(&sock, Duration::from_secs(4));
    println!("ns2 killed: {lost} queries lost, answers from ns1 again after {resumed:?}");
    let resumed = resumed.expect("the flow never reached ns1");
    assert_eq!(lost_after, 0, "queries lost after the flow moved to ns1");
    assert!(
        resumed < Duration::from_millis(1500),
        "{resumed:?}\n{}",
        d.log()
    );
    assert!(t0.elapsed() >= resumed);
    assert_eq!(slots(&k, "udp-k"), [1, 0]);
    assert!(kstatus(&k)["kernel"]["conntrack_deleted"].as_u64().unwrap() >= 1);
    let (per, lost) = udp_spread(&k, "c", 20);
    assert_eq!((per, lost), ([20, 0], 0));
    // ns2 back: after `rise`, it has its slot again.
    k.nsd[1].restart();
    let back = k
        .lab
        .wait(Duration::from_secs(5), |_| slots(&k, "udp-k") == [3, 1]);
    assert!(back.is_some(), "ns2 not back: {:?}", slots(&k, "udp-k"));
    let (per, _) = udp_spread(&k, "c", 40);
    near(per, [30, 10], "ns2 back");

    // `dnsha backend drain`: ns2 leaves the map (as `ipvsadm -e -w 0`),
    // `enable` gives its slot back.
    let backend = |verb: &str| {
        let out = k.lab.exec(
            "lb",
            bin(),
            &["backend", verb, "--admin", ADMIN, "nsd", "ns2"],
        );
        assert!(out.status.success(), "{out:?}");
    };
    backend("drain");
    let drained = k
        .lab
        .wait(Duration::from_secs(2), |_| slots(&k, "udp-k") == [1, 0]);
    assert!(drained.is_some(), "{:?}", slots(&k, "udp-k"));
    let (per, lost) = udp_spread(&k, "c", 20);
    assert_eq!((per, lost), ([20, 0], 0));
    backend("enable");
    let enabled = k
        .lab
        .wait(Duration::from_secs(2), |_| slots(&k, "udp-k") == [3, 1]);
    assert!(enabled.is_some(), "{:?}", slots(&k, "udp-k"));

    // ns1 blackholed (its packets dropped, no ICMP): out of the map too.
    let out = k.lab.exec(
        "ns1",
        NFT,
        &["add table ip bh; add chain ip bh in { type filter hook input priority 0; }; add rule ip bh in udp dport 53 drop; add rule ip bh in tcp dport 53 drop"],
    );
    assert!(out.status.success(), "{out:?}");
    let gone = k
        .lab
        .wait(Duration::from_secs(3), |_| slots(&k, "udp-k") == [0, 1]);
    assert!(gone.is_some(), "{:?}", slots(&k, "udp-k"));
    let (per, lost) = udp_spread(&k, "c", 20);
    assert_eq!((per, lost), ([0, 20], 0));
    assert_eq!(tcp_spread(&k, 5), [0, 5]);

    // Nothing healthy: the rules go, the userspace listener answers
    // SERVFAIL (the pool's on_no_backend) rather than silence.
    k.nsd[1].stop();
    let none = k.lab.wait(Duration::from_secs(3), |_| {
        kstatus(&k)["kernel"]["listeners"][0]["forwarding"] == false
    });
    assert!(none.is_some(), "{}", kstatus(&k));
    let rcode = k.lab.run_in("c", move || {
        query_udp(listen, "www.example.test.", RecordType::A, T).map(|m| m.response_code())
    });
    assert_eq!(rcode, Ok(ResponseCode::ServFail));
    drop(d);
}

/// `got` within 3 % (at least 3) of `want`. Each new source port is a new
/// flow, spread exactly by `numgen`; but the kernel picks client ports at
/// random, and a port used again while its conntrack entry lives (30 s)
/// keeps its first backend.
fn near(got: [usize; 2], want: [usize; 2], what: &str) {
    let slack = (want[0] + want[1]).div_ceil(33).max(3);
    assert!(
        got[0].abs_diff(want[0]) <= slack
            && got.iter().sum::<usize>() == want.iter().sum::<usize>(),
        "{what}: {got:?}, want {want:?} ± {slack}"
    );
}

/// Sends one query on `s` (connected) and says which backend answered.
fn ask(s: &UdpSocket, id: u16) -> Option<usize> {
    let mut q = build_query("www.example.test.", RecordType::A).unwrap();
    q.set_id(id);
    s.send(&q.to_vec().unwrap()).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let n = s.recv(&mut buf).ok()?;
        let m = Message::from_vec(&buf[..n]).ok()?;
        if m.id() == id {
            return who(&m);
        }
    }
}

/// Queries on `s` every 20 ms for `span`: how many went unanswered
/// before the first answer from ns1 and after it, and when it came.
fn steady(s: &UdpSocket, span: Duration) -> (usize, usize, Option<Duration>) {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let t0 = Instant::now();
    let (mut lost, mut lost_after, mut resumed) = (0, 0, None);
    let mut id = 100u16;
    while t0.elapsed() < span {
        id = id.wrapping_add(1);
        match ask(s, id) {
            Some(0) => {
                resumed.get_or_insert_with(|| t0.elapsed());
            }
            Some(_) => {}
            None if resumed.is_some() => lost_after += 1,
            None => lost += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (lost, lost_after, resumed)
}

#[test]
fn a_reload_changes_weights_and_backends_at_once() {
    init_tracing();
    let Some(k) = klab("kr") else { return };
    let d = start(&k, &config(&k, [3, 1], 2));
    d.rewrite_config(&config(&k, [1, 1], 2));
    d.signal(Signal::SIGHUP).unwrap();
    let even = k
        .lab
        .wait(Duration::from_secs(5), |_| slots(&k, "udp-k") == [1, 1]);
    assert!(even.is_some(), "{:?}\n{}", slots(&k, "udp-k"), d.log());
    let (per, lost) = udp_spread(&k, "c", 40);
    assert_eq!(lost, 0);
    near(per, [20, 20], "weights 1:1 after the reload");
    assert_eq!(nft_tables(&k), 1);
    // ns2 removed from the pool: its flows go with it.
    d.rewrite_config(&config(&k, [1, 1], 1));
    d.signal(Signal::SIGHUP).unwrap();
    let one = k
        .lab
        .wait(Duration::from_secs(5), |_| slots(&k, "udp-k") == [1]);
    assert!(one.is_some(), "{:?}\n{}", slots(&k, "udp-k"), d.log());
    let (per, lost) = udp_spread(&k, "c", 20);
    assert_eq!((per, lost), ([20, 0], 0));
    // The kernel listeners removed: the table goes, userspace serves.
    let plain = config(&k, [1, 1], 2).replace("forwarding = \"kernel\"\n", "");
    d.rewrite_config(&plain);
    d.signal(Signal::SIGHUP).unwrap();
    let gone = k.lab.wait(Duration::from_secs(5), |_| nft_tables(&k) == 0);
    assert!(gone.is_some(), "{}", d.log());
    let (per, lost) = udp_spread(&k, "c", 10);
    assert_eq!(per.iter().sum::<usize>() + lost, 10);
    assert_eq!(lost, 0);
    assert!(kstatus(&k).get("kernel").is_none());
}

#[test]
fn the_table_goes_at_sigterm_and_one_remains_after_kill9_and_a_restart() {
    init_tracing();
    let Some(k) = klab("kt") else { return };
    let cfg = config(&k, [1, 1], 2);
    let mut d = start(&k, &cfg);
    assert_eq!(nft_tables(&k), 1);
    d.kill();
    // Left behind by the crash, still forwarding.
    assert_eq!(nft_tables(&k), 1);
    let (_, lost) = udp_spread(&k, "c", 10);
    assert_eq!(lost, 0);
    let mut d = start(&k, &cfg);
    assert_eq!(nft_tables(&k), 1, "replaced, not duplicated");
    let (per, lost) = udp_spread(&k, "c", 20);
    assert_eq!(lost, 0);
    near(per, [10, 10], "after the restart");
    // A second dnsha with kernel listeners in the same namespace does not
    // take the live one's table.
    let other = cfg
        .replace(&k.listen.to_string(), &format!("{}:5353", k.listen.ip()))
        .replace(ADMIN, "127.0.0.1:8089");
    let mut second = Dnsha::start_in(&k.lab.ns("lb"), bin(), &other);
    let status = second.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| !s.success()), "{}", second.log());
    assert!(
        second.log().contains("kept by another running dnsha (pid"),
        "{}",
        second.log()
    );
    assert_eq!(nft_tables(&k), 1);
    let (_, lost) = udp_spread(&k, "c", 5);
    assert_eq!(lost, 0);
    // `nft flush ruleset` (the nftables service's restart does it): the
    // table is back within the second, forwarding again.
    assert!(k
        .lab
        .exec("lb", NFT, &["flush", "ruleset"])
        .status
        .success());
    assert_eq!(nft_tables(&k), 0);
    let back = k.lab.wait(Duration::from_secs(3), |_| nft_tables(&k) == 1);
    assert!(back.is_some(), "{}", d.log());
    // The warning is written just after the table is back.
    assert!(
        d.wait_log("installed again", Duration::from_secs(2)),
        "{}",
        d.log()
    );
    let (per, lost) = udp_spread(&k, "c", 20);
    assert_eq!(lost, 0);
    near(per, [10, 10], "after the flush");
    d.signal(Signal::SIGTERM).unwrap();
    assert!(
        d.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        d.log()
    );
    assert_eq!(nft_tables(&k), 0, "{}", d.log());
}

/// A restart (SIGUSR2 under a service manager) leaves the table: the
/// kernel forwards while no dnsha runs, and the next one replaces it.
#[test]
fn a_restart_leaves_the_table_forwarding_for_the_next_process() {
    init_tracing();
    let Some(k) = klab("kr") else { return };
    let cfg = config(&k, [1, 1], 2);
    let dir = tempfile::tempdir().unwrap();
    let store = fdstore::FdStore::new(dir.path());
    let notify = store.path().to_str().unwrap().to_string();
    let mut d = Dnsha::try_start_in(
        Some(&k.lab.ns("lb")),
        bin(),
        &cfg,
        &[],
        &[("NOTIFY_SOCKET", &notify)],
    )
    .unwrap();
    assert!(
        store.wait_count("READY=1", 1, Duration::from_secs(10)),
        "{}",
        d.log()
    );
    let up = k.lab.wait(Duration::from_secs(10), |_| {
        kstatus(&k)["kernel"]["listeners"][0]["forwarding"] == true
    });
    assert!(up.is_some(), "{}", d.log());
    d.signal(Signal::SIGUSR2).unwrap();
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", d.log());
    assert!(d.log().contains("left for the next process"), "{}", d.log());
    // No dnsha runs: the kernel still forwards, by weight.
    assert_eq!(nft_tables(&k), 1, "{}", d.log());
    let (per, lost) = udp_spread(&k, "c", 20);
    assert_eq!(lost, 0);
    near(per, [10, 10], "between the processes");
    let _next = start(&k, &cfg);
    assert_eq!(nft_tables(&k), 1, "replaced, not duplicated");
    let (_, lost) = udp_spread(&k, "c", 10);
    assert_eq!(lost, 0);
}

#[test]
fn run_names_the_missing_capability_and_the_forwarding_sysctl() {
    init_tracing();
    let Some(k) = klab("kc") else { return };
    // As `nobody` (no CAP_NET_ADMIN), on ports that need no privilege.
    let cfg = config(&k, [1, 1], 2)
        .replace(&k.listen.to_string(), &format!("{}:5353", k.listen.ip()))
        .replace(&format!("[admin]\nlisten = \"{ADMIN}\"\n"), "");
    let (_dir, path) = world_readable_config(&cfg);
    let check = k.lab.exec(
        "lb",
        bin().to_str().unwrap(),
        &["check", "--config", path.to_str().unwrap()],
    );
    assert!(check.status.success(), "check passes: {check:?}");
    let out = k.lab.exec(
        "lb",
        "setpriv",
        &[
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            bin().to_str().unwrap(),
            "run",
            "--config",
            path.to_str().unwrap(),
        ],
    );
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("CAP_NET_ADMIN"), "{text}");
    // As root, with forwarding off.
    let off = k
        .lab
        .exec("lb", "sysctl", &["-qw", "net.ipv4.ip_forward=0"]);
    assert!(off.status.success());
    let out = k.lab.exec(
        "lb",
        bin().to_str().unwrap(),
        &["run", "--config", path.to_str().unwrap()],
    );
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("net.ipv4.ip_forward is 0"), "{text}");
}

#[test]
fn a_loopback_listener_forwards_to_backends_on_the_host() {
    init_tracing();
    if let Some(why) = netns::skip_reason(&[NFT]) {
        skip(&why);
        return;
    }
    // The bench's layout: everything on one host's loopback, where the
    // host's own queries are DNATed in `output` and nothing is masqueraded.
    let lab = Lab::with_subnet("kl", 79, &["box"]);
    let ns = lab.ns("box");
    let nsd: Vec<Nsd> = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)]
        .iter()
        .zip(ANSWER)
        .map(|(ip, answer)| Nsd::start_in(&ns, SocketAddr::from((*ip, 5300)), answer))
        .collect();
    let listen: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let cfg = format!(
        r#"
[[listener]]
name = "udp-k"
protocol = "udp"
listen = "{listen}"
pool = "nsd"
forwarding = "kernel"

[[listener]]
name = "tcp-k"
protocol = "tcp"
listen = "{listen}"
pool = "nsd"
forwarding = "kernel"

[[pool]]
name = "nsd"
[[pool.backend]]
name = "ns1"
address = "{}"
[[pool.backend]]
name = "ns2"
address = "{}"
"#,
        nsd[0].addr(),
        nsd[1].addr()
    );
    let d = Dnsha::start_in(&ns, bin(), &cfg);
    let installed = lab.wait(Duration::from_secs(10), |l| {
        let out = l.exec("box", NFT, &["list", "tables"]);
        String::from_utf8_lossy(&out.stdout).contains("inet dnsha")
    });
    assert!(installed.is_some(), "{}", d.log());
    let (udp, tcp) = lab.run_in("box", move || {
        let mut udp = [0usize; 2];
        let mut tcp = [0usize; 2];
        for _ in 0..20 {
            let m = query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
            udp[who(&m).unwrap()] += 1;
            let m = query_tcp(listen, "www.example.test.", RecordType::A, T).unwrap();
            tcp[who(&m).unwrap()] += 1;
        }
        (udp, tcp)
    });
    near(udp, [10, 10], "UDP on loopback");
    near(tcp, [10, 10], "TCP on loopback");
    drop(d);
}

/// What one client saw over a run: per query, when it was sent (from the
/// start) and whether an answer came within 2 s.
struct Seen {
    queries: Vec<(Duration, bool)>,
}

impl Seen {
    fn lost(&self) -> usize {
        self.queries.iter().filter(|(_, ok)| !ok).count()
    }

    /// When the last lost query was sent (from the start), if any.
    fn last_loss(&self) -> Option<Duration> {
        self.queries
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(t, _)| *t)
            .max()
    }
}

/// A client at 50 queries/s for `span` on `listen`: on `port` (one
/// source port: one UDP flow, as dnsperf's), or on a new socket per query
/// (each a new flow) without. `fault` runs once, 1 s in.
fn client(listen: SocketAddr, span: Duration, port: Option<UdpSocket>, fault: &dyn Fn()) -> Seen {
    let start = Instant::now();
    let one_port = port.is_some();
    let shared = port.unwrap_or_else(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    shared.set_nonblocking(true).unwrap();
    let mut pending: Vec<(Option<UdpSocket>, u16, Duration)> = Vec::new();
    let mut done: Vec<(Duration, bool)> = Vec::new();
    let mut next_send = Duration::ZERO;
    let mut faulted = false;
    let mut id = 0u16;
    let mut buf = [0u8; 1500];
    while start.elapsed() < span || !pending.is_empty() {
        let now = start.elapsed();
        if !faulted && now >= Duration::from_secs(1) {
            fault();
            faulted = true;
        }
        if now >= next_send && now < span {
            id = id.wrapping_add(1);
            let mut q = build_query("www.example.test.", RecordType::A).unwrap();
            q.set_id(id);
            let bytes = q.to_vec().unwrap();
            let own = (!one_port).then(|| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            });
            let _ = own.as_ref().unwrap_or(&shared).send_to(&bytes, listen);
            pending.push((own, id, now));
            next_send += Duration::from_millis(20);
        }
        // Answers: on the shared socket, matched by ID; on each query's own.
        while let Ok(n) = shared.recv(&mut buf) {
            if let Ok(m) = Message::from_vec(&buf[..n]) {
                if let Some(i) = pending.iter().position(|p| p.0.is_none() && p.1 == m.id()) {
                    let (_, _, t) = pending.remove(i);
                    done.push((t, a_record(&m).is_some()));
                }
            }
        }
        pending.retain(|(own, qid, t)| {
            if let Some(s) = own {
                if let Ok(n) = s.recv(&mut buf) {
                    let ok = Message::from_vec(&buf[..n])
                        .is_ok_and(|m| m.id() == *qid && a_record(&m).is_some());
                    done.push((*t, ok));
                    return false;
                }
            }
            if now.saturating_sub(*t) > Duration::from_secs(2) {
                done.push((*t, false));
                return false;
            }
            true
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    done.sort_by_key(|(t, _)| *t);
    Seen { queries: done }
}

/// A socket whose next query goes to ns2 (its flow sits there, or, for the
/// userspace path, the rotation says so).
fn socket_on_ns2(listen: SocketAddr) -> UdpSocket {
    for _ in 0..50 {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if ask(&s, 1) == Some(1) {
            return s;
        }
    }
    panic!("no flow reached ns2");
}

/// The seed tutorial's nftables recipe on `lb`: `numgen inc mod 2` DNAT to
/// the two backends, source NAT back through the balancer; no health.
fn seed_nftables(k: &KLab) {
    let text = format!(
        "table inet dnsnat {{
    chain dnsdnat {{
        type nat hook prerouting priority filter; policy accept;
        iifname \"eth0\" udp dport 53 dnat ip to numgen inc mod 2 map {{ 0 : {a}, 1 : {b} }}
    }}
    chain dnssnat {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"eth0\" ip daddr {{ {a}, {b} }} snat ip to {vip}
    }}
}}
",
        a = k.nsd[0].addr().ip(),
        b = k.nsd[1].addr().ip(),
        vip = k.listen.ip()
    );
    let path = k.lab.dir.path().join("seed.nft");
    std::fs::write(&path, text).unwrap();
    let out = k.lab.exec("lb", NFT, &["-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

fn blackhole(k: &KLab, node: &str, on: bool) {
    let cmd = if on {
        "add table ip bh; add chain ip bh in { type filter hook input priority 0; }; add rule ip bh in udp dport 53 drop"
    } else {
        "delete table ip bh"
    };
    let out = k.lab.exec(node, NFT, &[cmd]);
    assert!(out.status.success(), "{out:?}");
}

/// A UDP flow pinned to ns2 when ns2 is blackholed (packets dropped, no
/// ICMP), for three ways of balancing on the same lab: dnsha's kernel
/// path, dnsha's userspace path, and the seed's static nftables recipe.
/// A client on one source port (its flow on ns2) and a client with a new
/// flow per query, 50 queries/s each for 4 s, the fault 1 s in; a query
/// unanswered within 2 s is lost.
#[test]
fn a_blackholed_backend_costs_the_kernel_path_the_health_bound_and_the_seed_recipe_every_query() {
    init_tracing();
    let Some(k) = klab("kb") else { return };
    let span = Duration::from_secs(4);
    let listen = k.listen;
    let mut rows = Vec::new();
    for way in ["kernel", "userspace", "seed nftables"] {
        let d = match way {
            "kernel" => Some(start(&k, &config(&k, [1, 1], 2))),
            "userspace" => {
                let cfg = config(&k, [1, 1], 2).replace("forwarding = \"kernel\"\n", "");
                let d = Dnsha::start_in(&k.lab.ns("lb"), bin(), &cfg);
                let up = k
                    .lab
                    .wait(Duration::from_secs(10), |_| udp_spread(&k, "c", 1).1 == 0);
                assert!(up.is_some(), "{}", d.log());
                Some(d)
            }
            _ => {
                seed_nftables(&k);
                None
            }
        };
        let port = k.lab.run_in("c", || socket_on_ns2(listen));
        let (one, fresh) = std::thread::scope(|s| {
            let lab = &k;
            let one = s.spawn(move || {
                lab.lab.run_in("c", || {
                    client(listen, span, Some(port), &|| blackhole(lab, "ns2", true))
                })
            });
            let fresh = s.spawn(move || lab.lab.run_in("c", || client(listen, span, None, &|| {})));
            (one.join().unwrap(), fresh.join().unwrap())
        });
        blackhole(&k, "ns2", false);
        match d {
            Some(mut d) => {
                d.signal(Signal::SIGTERM).unwrap();
                assert!(d.wait_exit(Duration::from_secs(10)).is_some());
            }
            None => {
                let out = k.lab.exec("lb", NFT, &["delete table inet dnsnat"]);
                assert!(out.status.success(), "{out:?}");
            }
        }
        // ns2 must be healthy again before the next way starts.
        let back = k.lab.wait(Duration::from_secs(5), |_| {
            k.lab
                .run_in("c", || {
                    query_udp(k.nsd[1].addr(), "www.example.test.", RecordType::A, T)
                })
                .is_ok()
        });
        assert!(back.is_some());
        rows.push((way, one, fresh));
    }
    println!("| path | one-port client: lost of {n} | last lost at | new flow per query: lost of {n} | last lost at |", n = rows[0].1.queries.len());
    println!("|---|---:|---:|---:|---:|");
    for (way, one, fresh) in &rows {
        println!(
            "| {way} | {} | {:?} | {} | {:?} |",
            one.lost(),
            one.last_loss(),
            fresh.lost(),
            fresh.last_loss()
        );
    }
    let fault = Duration::from_secs(1);
    // The kernel path: losses while the health checks notice (every 200 ms,
    // fall 2, plus the tracker), none after.
    let (_, one, fresh) = &rows[0];
    assert!(one.lost() > 0, "the fault did not reach the pinned flow");
    for seen in [one, fresh] {
        let last = seen.last_loss().unwrap_or(fault);
        assert!(last < fault + Duration::from_millis(1500), "{last:?}");
    }
    // The userspace path retries the lost query on ns1: nothing lost.
    let (_, one, fresh) = &rows[1];
    assert_eq!((one.lost(), fresh.lost()), (0, 0));
    // The seed's recipe: the pinned flow loses every query after the
    // fault, new flows every other one, to the end.
    let (_, one, fresh) = &rows[2];
    let after = one
        .queries
        .iter()
        .filter(|(t, _)| *t > fault + Duration::from_millis(20))
        .count();
    assert!(one.lost() >= after, "{} of {after}", one.lost());
    assert!(fresh
        .last_loss()
        .is_some_and(|t| t > span - Duration::from_millis(300)));
    assert!(fresh.lost() * 3 >= after, "{} of {after}", fresh.lost());
}

/// VRRP unchanged: two balancers hold a VIP between them, each with kernel
/// listeners on it; only the master's table sees the queries (the backup
/// does not hold the address), and when the master stops (SIGTERM:
/// priority 0, its table removed) the new master's kernel path forwards
/// the client's next flows.
#[test]
fn only_the_vrrp_master_forwards_and_the_backup_takes_over() {
    init_tracing();
    if let Some(why) = netns::skip_reason(&[NFT]) {
        skip(&why);
        return;
    }
    let lab = Lab::with_subnet("kv", 80, &["lb1", "lb2", "c", "ns1", "ns2"]);
    forwarder(&lab, "lb1");
    forwarder(&lab, "lb2");
    let nsd = nsd_pair(&lab);
    let vip = lab.host(100);
    let listen = SocketAddr::from((vip, 53));
    let conf = |priority: u8| {
        format!(
            r#"
[admin]
listen = "{ADMIN}"

[[listener]]
name = "udp-k"
protocol = "udp"
listen = "{listen}"
pool = "nsd"
forwarding = "kernel"
allow = ["0.0.0.0/0"]

[[pool]]
name = "nsd"
[pool.health]
interval_ms = 200
[[pool.backend]]
name = "ns1"
address = "{}"
[[pool.backend]]
name = "ns2"
address = "{}"

[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
priority = {priority}
version = 3
advert_int = 0.1
virtual_ipaddress = ["{vip}/32"]
"#,
            nsd[0].addr(),
            nsd[1].addr()
        )
    };
    let mut lb1 = Dnsha::start_in(&lab.ns("lb1"), bin(), &conf(150));
    let _lb2 = Dnsha::start_in(&lab.ns("lb2"), bin(), &conf(100));
    let held = lab.wait(Duration::from_secs(10), |l| l.holds("lb1", vip));
    assert!(held.is_some(), "{}", lb1.log());
    let packets = |node: &str| -> u64 {
        let s = lab.run_in(node, || status(admin()));
        s["kernel"]["listeners"][0]["backends"]
            .as_array()
            .map(|b| b.iter().filter_map(|x| x["query_packets"].as_u64()).sum())
            .unwrap_or(0)
    };
    let seen = lab.run_in("c", || client(listen, Duration::from_secs(1), None, &|| {}));
    assert_eq!(seen.lost(), 0);
    let counted = lab.wait(Duration::from_secs(3), |_| packets("lb1") >= 50);
    assert!(counted.is_some(), "lb1 counted {}", packets("lb1"));
    assert_eq!(packets("lb2"), 0, "the backup forwards nothing");
    // The master stops; the backup's kernel path takes the next flows.
    let span = Duration::from_secs(3);
    let seen = std::thread::scope(|s| {
        let c = s.spawn(|| {
            lab.run_in("c", || {
                client(listen, span, None, &|| {
                    let _ = lb1.signal(Signal::SIGTERM);
                })
            })
        });
        c.join().unwrap()
    });
    println!(
        "master SIGTERM: {} of {} queries lost, the last sent {:?} in (the stop at 1 s)",
        seen.lost(),
        seen.queries.len(),
        seen.last_loss()
    );
    assert!(lab.holds("lb2", vip));
    assert!(seen.lost() <= 15, "{}", seen.lost());
    assert!(
        packets("lb2") > 0
            || lab
                .wait(Duration::from_secs(2), |_| packets("lb2") > 0)
                .is_some()
    );
    assert!(lb1.wait_exit(Duration::from_secs(10)).is_some());
    let out = lab.exec("lb1", NFT, &["list", "tables"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("inet dnsha"));
}

/// An IPv6 listener: `dnat ip6` to IPv6 backends, masqueraded, by weight,
/// and a backend that dies leaves the map.
#[test]
fn an_ipv6_kernel_listener_forwards_by_weight_and_follows_health() {
    init_tracing();
    if let Some(why) = netns::skip_reason(&[NFT]) {
        skip(&why);
        return;
    }
    let nodes = ["lb", "c", "ns1", "ns2"];
    let lab = Lab::with_subnet("k6", 81, &nodes);
    let v6 = |i: usize| -> std::net::Ipv6Addr { format!("fd81::{}", i + 1).parse().unwrap() };
    for (i, node) in nodes.iter().enumerate() {
        for key in ["all", "default", "eth0"] {
            lab.exec(
                node,
                "sysctl",
                &["-qw", &format!("net.ipv6.conf.{key}.accept_dad=0")],
            );
        }
        let cidr = format!("{}/64", v6(i));
        let out = lab.exec(
            node,
            "ip",
            &["-6", "addr", "add", &cidr, "dev", "eth0", "nodad"],
        );
        assert!(out.status.success(), "{out:?}");
    }
    assert!(lab
        .exec("lb", "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])
        .status
        .success());
    let mut nsd: Vec<Nsd> = [2, 3]
        .iter()
        .zip(ANSWER)
        .map(|(i, answer)| {
            Nsd::start_in(&lab.ns(nodes[*i]), SocketAddr::from((v6(*i), 53)), answer)
        })
        .collect();
    let listen = SocketAddr::from((v6(0), 53));
    let cfg = format!(
        r#"
[admin]
listen = "{ADMIN}"

[[listener]]
name = "udp6-k"
protocol = "udp"
listen = "{listen}"
pool = "nsd"
forwarding = "kernel"
allow = ["::/0"]

[[pool]]
name = "nsd"
[pool.health]
interval_ms = 200
timeout_ms = 300
[[pool.backend]]
name = "ns1"
address = "{}"
weight = 3
[[pool.backend]]
name = "ns2"
address = "{}"
weight = 1
"#,
        nsd[0].addr(),
        nsd[1].addr()
    );
    let d = Dnsha::start_in(&lab.ns("lb"), bin(), &cfg);
    let slots6 = || -> Vec<u64> {
        let s = lab.run_in("lb", || status(admin()));
        s["kernel"]["listeners"][0]["backends"]
            .as_array()
            .map(|b| b.iter().map(|x| x["slots"].as_u64().unwrap_or(0)).collect())
            .unwrap_or_default()
    };
    let up = lab.wait(Duration::from_secs(10), |l| {
        l.run_in("lb", || {
            TcpStream::connect_timeout(&admin(), Duration::from_millis(200)).is_ok()
        }) && slots6() == [3, 1]
    });
    assert!(up.is_some(), "{}", d.log());
    let spread = || {
        lab.run_in("c", move || {
            let mut per = [0usize; 2];
            for _ in 0..40 {
                let m = query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
                per[who(&m).unwrap()] += 1;
            }
            per
        })
    };
    near(spread(), [30, 10], "IPv6 by weight");
    nsd[1].stop();
    let gone = lab.wait(Duration::from_secs(3), |_| slots6() == [1, 0]);
    assert!(gone.is_some(), "{:?}", slots6());
    assert_eq!(spread(), [40, 0]);
    drop(d);
}
