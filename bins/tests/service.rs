//! dnsha as a systemd service: the notify protocol against a real
//! `NOTIFY_SOCKET` (a Unix datagram socket this test binds), and the unit
//! file as `systemd-analyze verify` reads it.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// The messages received within `max`, until one contains `until`.
fn read_until(sock: &UnixDatagram, until: &str, max: Duration) -> Vec<String> {
    let deadline = Instant::now() + max;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let Ok(n) = sock.recv(&mut buf) else { break };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = msg.contains(until);
        out.push(msg);
        if done {
            break;
        }
    }
    out
}

/// CLOCK_MONOTONIC now, in microseconds.
fn monotonic_usec() -> i128 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    i128::from(t.tv_sec()) * 1_000_000 + i128::from(t.tv_nsec()) / 1_000
}

#[test]
fn ready_reloading_watchdog_and_stopping_reach_the_notify_socket() {
    init_tracing();
    let Ok(nsd) = Nsd::try_start(std::net::Ipv4Addr::new(10, 0, 0, 1)) else {
        skip("nsd not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let listen = free_addr();
    let cfg = config(listen, free_addr(), "", &[("nsd", nsd.addr(), 1)]);
    let mut d = Dnsha::try_start_in(
        None,
        bin(),
        &cfg,
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
            ("JOURNAL_STREAM", "8:12345"),
        ],
    )
    .unwrap();
    // READY=1 once the listener answers and the backend was probed.
    let msgs = read_until(&sock, "READY=1", Duration::from_secs(10));
    let ready = msgs.last().cloned().unwrap_or_default();
    assert!(ready.contains("READY=1"), "{msgs:?}\n{}", d.log());
    assert!(ready.contains("STATUS=1/1 pools up"), "{ready}");
    let answer = query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
    assert!(a_record(&answer).is_some());
    // Under systemd the journal stamps each line: no time of our own, no
    // colours.
    let log = d.log();
    let first = log
        .lines()
        .find(|l| l.contains("dnsha running"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        first.starts_with(" INFO") || first.starts_with("INFO"),
        "{first}"
    );
    assert!(!log.contains('\u{1b}'), "{log}");

    // WATCHDOG=1 every half WATCHDOG_USEC (150 ms): about 6 in a second.
    let t0 = Instant::now();
    let mut pings = 0;
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while t0.elapsed() < Duration::from_secs(1) {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                pings += 1;
            }
        }
    }
    assert!((4..=9).contains(&pings), "{pings} watchdog pings in 1 s");

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1.
    let before = monotonic_usec();
    d.signal(Signal::SIGHUP).unwrap();
    let msgs = read_until(&sock, "READY=1", Duration::from_secs(5));
    let after = monotonic_usec();
    let reloading = msgs
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 in {msgs:?}"));
    let usec: i128 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(
        (before..=after).contains(&usec),
        "{before} <= {usec} <= {after}"
    );
    assert!(
        msgs.last().is_some_and(|m| m.contains("READY=1")),
        "{msgs:?}"
    );

    // A reload the daemon refuses still ends in READY=1, and says why.
    d.rewrite_config("[[listener]]\nname = 1\n");
    d.signal(Signal::SIGHUP).unwrap();
    let msgs = read_until(&sock, "READY=1", Duration::from_secs(5));
    let last = msgs.last().cloned().unwrap_or_default();
    assert!(last.contains("STATUS=reload refused:"), "{msgs:?}");
    assert!(query_udp(listen, "www.example.test.", RecordType::A, T).is_ok());

    // SIGTERM: STOPPING=1.
    d.signal(Signal::SIGTERM).unwrap();
    let msgs = read_until(&sock, "STOPPING=1", Duration::from_secs(5));
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        skip("systemd-analyze not installed");
        return;
    }
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/dnsha.service"))
            .unwrap();
    for want in [
        "Type=notify",
        "User=dnsha",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW",
        "ExecStartPre=/usr/bin/dnsha check --config /etc/dnsha/dnsha.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
    ] {
        assert!(unit.contains(want), "missing {want}");
    }
    // `verify` wants the binaries to exist: the one under test stands in
    // for /usr/bin/dnsha.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("dnsha.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/dnsha", bin().to_str().unwrap()),
    )
    .unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_packaged_default_configuration_passes_check_and_listens_on_loopback_only() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/dnsha.toml");
    let out = std::process::Command::new(bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut addrs: Vec<String> = cfg["listener"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["listen"].as_str().unwrap().to_string())
        .collect();
    addrs.push(cfg["admin"]["listen"].as_str().unwrap().to_string());
    for a in addrs {
        let addr: std::net::SocketAddr = a.parse().unwrap();
        assert!(addr.ip().is_loopback(), "{a}");
    }
}

/// What the unit gives the daemon is enough: started as an unprivileged
/// user with only the unit's ambient capabilities (`setpriv`, as systemd's
/// `User=` and `AmbientCapabilities=` do), dnsha binds port 53, holds a VIP
/// with VRRP and answers through it; its effective capabilities are those
/// three and nothing else.
#[test]
fn the_units_user_and_capabilities_run_a_vrrp_balancer_on_port_53() {
    init_tracing();
    if let Some(why) = netns::skip_reason(&["/usr/bin/setpriv"]) {
        skip(&why);
        return;
    }
    let mut lab = netns::Lab::with_subnet("cap", 82, &["lb", "c"]);
    let nsd = Nsd::start_in(
        &lab.ns("lb"),
        "127.0.0.1:5300".parse().unwrap(),
        std::net::Ipv4Addr::new(10, 0, 0, 1),
    );
    let vip = lab.host(100);
    let cfg = vrrp_balancer("", vip, nsd.addr(), false, (51, 100, "0.1"));
    let (_dir, path) = world_readable_config(&cfg);
    let caps = "-all,+net_bind_service,+net_admin,+net_raw";
    let i = lab.spawn(
        "lb",
        Path::new("/usr/bin/setpriv"),
        &[
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            bin().to_str().unwrap(),
            "run",
            "--config",
            path.to_str().unwrap(),
        ],
        false,
    );
    let held = lab.wait(Duration::from_secs(10), |l| l.holds("lb", vip));
    assert!(held.is_some(), "{}", lab.proc_ref(i).log_text());
    let server = std::net::SocketAddr::from((vip, 53));
    let answer = lab.run_in("c", || {
        query_udp(server, "www.example.test.", RecordType::A, T)
    });
    assert!(
        answer.is_ok_and(|m| a_record(&m).is_some()),
        "{}",
        lab.proc_ref(i).log_text()
    );
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", lab.proc_ref(i).pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert!(field("Uid:").starts_with("65534"), "{status}");
    // CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13).
    assert_eq!(field("CapEff:"), "0000000000003400", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000003400", "{status}");
}

/// Every thread of process `pid`: its uids, effective, permitted and
/// ambient capabilities, as `/proc/PID/task/TID/status` shows them.
fn thread_credentials(pid: i32) -> Vec<(i32, String, String, String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: i32 = e.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        out.push((
            tid,
            field("Uid:"),
            field("CapEff:"),
            field("CapPrm:"),
            field("CapAmb:"),
        ));
    }
    out
}

/// Asserts that every thread of `pid` runs as nobody with exactly `caps`.
fn assert_switched(pid: i32, caps: &str, log: &str) {
    let threads = thread_credentials(pid);
    assert!(threads.len() > 2, "{threads:?}");
    for (tid, uid, eff, prm, amb) in &threads {
        assert_eq!(uid, "65534 65534 65534 65534", "thread {tid}\n{log}");
        assert_eq!(eff, caps, "thread {tid} effective\n{log}");
        assert_eq!(prm, caps, "thread {tid} permitted\n{log}");
        assert_eq!(amb, "0000000000000000", "thread {tid} ambient\n{log}");
    }
}

/// `user = "nobody"`: started as root, dnsha binds port 53 and its VRRP
/// sockets, then every thread switches to nobody with only CAP_NET_ADMIN
/// and CAP_NET_RAW; VRRP still adds and removes the VIP (it loses it to a
/// higher priority and takes it back), queries are answered through it,
/// and a reload that would bind port 54 is refused while the old
/// configuration keeps serving.
#[test]
fn started_as_root_with_user_it_switches_every_thread_and_vrrp_still_moves_the_vip() {
    init_tracing();
    if let Some(why) = netns::skip_reason(&[]) {
        skip(&why);
        return;
    }
    let mut lab = netns::Lab::with_subnet("usr", 83, &["lb", "lb2", "c"]);
    let local: std::net::SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let nsd = Nsd::start_in(&lab.ns("lb"), local, std::net::Ipv4Addr::new(10, 0, 0, 1));
    let _nsd2 = Nsd::start_in(&lab.ns("lb2"), local, std::net::Ipv4Addr::new(10, 0, 0, 1));
    let vip = lab.host(100);
    let cfg = vrrp_balancer(
        "user = \"nobody\"",
        vip,
        nsd.addr(),
        false,
        (52, 100, "0.1"),
    );
    let (_dir, path) = world_readable_config(&cfg);
    let i = run_in_lab(&mut lab, "lb", &path);
    let held = lab.wait(Duration::from_secs(10), |l| l.holds("lb", vip));
    assert!(held.is_some(), "{}", lab.proc_ref(i).log_text());
    let log = lab.proc_ref(i).log_text();
    assert!(log.contains("switched user"), "{log}");
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13): no CAP_NET_BIND_SERVICE.
    assert_switched(lab.proc_ref(i).pid(), "0000000000003000", &log);
    let server = std::net::SocketAddr::from((vip, 53));
    let ask = |lab: &netns::Lab| {
        lab.run_in("c", || {
            query_udp(server, "www.example.test.", RecordType::A, T)
        })
        .is_ok_and(|m| a_record(&m).is_some())
    };
    assert!(ask(&lab), "{}", lab.proc_ref(i).log_text());

    // A higher priority takes the VIP: nobody removes it; then gives it
    // back: nobody adds it again.
    let (_dir2, path2) =
        world_readable_config(&vrrp_balancer("", vip, local, false, (52, 200, "0.1")));
    let j = run_in_lab(&mut lab, "lb2", &path2);
    let moved = lab.wait(Duration::from_secs(10), |l| {
        l.holds("lb2", vip) && !l.holds("lb", vip)
    });
    assert!(moved.is_some(), "{}", lab.logs());
    lab.proc(j).term();
    let back = lab.wait(Duration::from_secs(10), |l| l.holds("lb", vip));
    assert!(back.is_some(), "{}", lab.logs());
    assert!(ask(&lab), "{}", lab.proc_ref(i).log_text());

    // A reload that needs a new socket on port 54 is refused.
    let more = format!(
        "{cfg}\n[[listener]]\nname = \"tcp54\"\nprotocol = \"tcp\"\nlisten = \"{vip}:54\"\npool = \"p\"\n"
    );
    std::fs::write(&path, more).unwrap();
    lab.proc_ref(i).signal(Signal::SIGHUP);
    let refused = lab.wait(Duration::from_secs(5), |l| {
        l.proc_ref(i)
            .log_text()
            .contains("listener tcp54 needs a new socket on port 54")
    });
    assert!(refused.is_some(), "{}", lab.proc_ref(i).log_text());
    assert!(ask(&lab), "{}", lab.proc_ref(i).log_text());
    assert_switched(
        lab.proc_ref(i).pid(),
        "0000000000003000",
        &lab.proc_ref(i).log_text(),
    );
}

/// With `keep_capabilities = ["CAP_NET_BIND_SERVICE"]`, a reload adds a
/// listener on port 54 after the switch, and nothing else is kept.
#[test]
fn a_kept_bind_capability_lets_a_reload_add_a_low_port() {
    init_tracing();
    if let Some(why) = netns::skip_reason(&[]) {
        skip(&why);
        return;
    }
    let mut lab = netns::Lab::with_subnet("keep", 84, &["lb"]);
    let nsd = Nsd::start_in(
        &lab.ns("lb"),
        "127.0.0.1:5300".parse().unwrap(),
        std::net::Ipv4Addr::new(10, 0, 0, 1),
    );
    let cfg = format!(
        "user = \"nobody\"\nkeep_capabilities = [\"CAP_NET_BIND_SERVICE\"]\n\
         [[listener]]\nname = \"udp\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\
         [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"nsd\"\naddress = \"{}\"\n",
        nsd.addr()
    );
    let (_dir, path) = world_readable_config(&cfg);
    let i = run_in_lab(&mut lab, "lb", &path);
    let up = lab.wait(Duration::from_secs(10), |l| {
        l.proc_ref(i).log_text().contains("switched user")
    });
    assert!(up.is_some(), "{}", lab.proc_ref(i).log_text());
    assert_switched(
        lab.proc_ref(i).pid(),
        "0000000000000400",
        &lab.proc_ref(i).log_text(),
    );
    let more = format!(
        "{cfg}\n[[listener]]\nname = \"udp54\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:54\"\npool = \"p\"\n"
    );
    std::fs::write(&path, more).unwrap();
    lab.proc_ref(i).signal(Signal::SIGHUP);
    let reloaded = lab.wait(Duration::from_secs(5), |l| {
        l.proc_ref(i).log_text().contains("configuration reloaded")
    });
    assert!(reloaded.is_some(), "{}", lab.proc_ref(i).log_text());
    let answer = lab.run_in("lb", || {
        query_udp(
            "127.0.0.1:54".parse().unwrap(),
            "www.example.test.",
            RecordType::A,
            T,
        )
    });
    assert!(
        answer.is_ok_and(|m| a_record(&m).is_some()),
        "{}",
        lab.proc_ref(i).log_text()
    );
}

/// `log_format = "json"`: every line dnsha writes on stderr is one JSON
/// object with its level and fields; a reload that changes the key says
/// it takes effect at the next restart.
#[test]
fn json_logs_are_one_object_per_line() {
    init_tracing();
    let (listen, admin) = (free_addr(), free_addr());
    let backend = free_addr();
    let body = config(listen, admin, "", &[("a", backend, 1)]);
    let mut d = Dnsha::start(bin(), &format!("log_format = \"json\"\n{body}"));
    d.wait_tcp(listen);
    assert!(
        d.wait_log("dnsha running", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    d.rewrite_config(&body);
    d.signal(Signal::SIGHUP).unwrap();
    assert!(
        d.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    let log = d.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{log}")))
        .collect();
    let message = |e: &serde_json::Value| e["fields"]["message"].as_str().unwrap_or("").to_string();
    let running = events
        .iter()
        .find(|e| message(e) == "dnsha running")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(running["level"], "INFO", "{running}");
    assert!(running["timestamp"].is_string(), "{running}");
    assert!(running["fields"]["summary"].is_string(), "{running}");
    assert!(
        events
            .iter()
            .any(|e| message(e).contains("take effect at the next restart")),
        "{log}"
    );
}
