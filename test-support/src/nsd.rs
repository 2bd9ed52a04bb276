//! A real NSD, run as a child process, serving a small test zone.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::client::{a_record, query_udp};
use crate::netns;
use crate::ports::free_addr;
use crate::process::signal_tree;

/// Where Debian's `nsd` package installs the daemon.
const NSD: &str = "/usr/sbin/nsd";

/// The zone every [`Nsd`] serves.
pub const ZONE: &str = "example.test.";

/// How many TXT records `big.example.test.` has (100 characters each), so
/// that its answer is well over 512 bytes and is truncated over plain UDP.
pub const BIG_TXT_RECORDS: usize = 20;

/// How long [`Nsd::start`] waits for NSD to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Nsd::stop`] waits after SIGTERM before it uses SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A real NSD serving `example.test.` on a loopback port, run in the
/// foreground (`nsd -d`) in its own temporary directory.
///
/// The zone holds:
/// - `example.test.` SOA and NS (`ns1.example.test.`, A 127.0.0.1);
/// - `www.example.test.` A *answer_ip* and a wildcard `*.example.test.` A
///   *answer_ip*, so a test sees which backend answered;
/// - `whoami.example.test.` TXT `"nsd-<answer_ip>"`;
/// - `short.example.test.` A *answer_ip* with a TTL of 2 s, and an SOA
///   MINIMUM of 2 s (NODATA answers, `www.example.test. AAAA`, live 2 s),
///   for cache expiry tests;
/// - `big.example.test.` with [`BIG_TXT_RECORDS`] TXT records of 100
///   characters, for truncation tests.
///
/// [`Nsd::start_in`] runs it in a network namespace (see
/// [`netns`](crate::netns)), where it may use port 53 of the namespace's
/// own address.
///
/// Dropping it kills NSD and the processes it forked (SIGKILL). NSD stays in
/// the test's process group, so an interrupted `cargo test` stops it too.
#[derive(Debug)]
pub struct Nsd {
    dir: TempDir,
    addr: SocketAddr,
    answer: Ipv4Addr,
    netns: Option<String>,
    child: Option<Child>,
}

impl Nsd {
    /// Starts NSD on a free port of 127.0.0.1, answering `answer` for
    /// `www.example.test.`, and waits until it answers. Panics on failure.
    pub fn start(answer: Ipv4Addr) -> Self {
        Self::try_start(answer).unwrap_or_else(|e| panic!("cannot start NSD: {e}"))
    }

    /// Like [`Nsd::start`], returning the error instead of panicking.
    pub fn try_start(answer: Ipv4Addr) -> io::Result<Self> {
        Self::try_start_on(free_addr(), answer)
    }

    /// Starts NSD on `addr` (an IPv4 address this machine has), answering
    /// `answer`, and waits until it answers.
    pub fn try_start_on(addr: SocketAddr, answer: Ipv4Addr) -> io::Result<Self> {
        Self::try_start_in(None, addr, answer)
    }

    /// Starts NSD in network namespace `netns` (with `ip netns exec`) on
    /// `addr`, an address of that namespace, answering `answer`, and waits
    /// until it answers there. Panics on failure.
    pub fn start_in(netns: &str, addr: SocketAddr, answer: Ipv4Addr) -> Self {
        Self::try_start_in(Some(netns), addr, answer)
            .unwrap_or_else(|e| panic!("cannot start NSD in {netns}: {e}"))
    }

    /// Like [`Nsd::start_in`] (or [`Nsd::try_start_on`] when `netns` is
    /// `None`), returning the error instead of panicking.
    pub fn try_start_in(
        netns: Option<&str>,
        addr: SocketAddr,
        answer: Ipv4Addr,
    ) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("dnsha-nsd-").tempdir()?;
        let zones = dir.path().join("zones");
        fs::create_dir(&zones)?;
        fs::write(zones.join("example.test.zone"), zone_file(answer))?;
        fs::write(dir.path().join("nsd.conf"), config(dir.path(), addr))?;
        let mut nsd = Self {
            dir,
            addr,
            answer,
            netns: netns.map(str::to_owned),
            child: None,
        };
        nsd.spawn()?;
        Ok(nsd)
    }

    /// The address NSD serves on, for UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it answers for `www.example.test.`.
    pub fn answer_ip(&self) -> Ipv4Addr {
        self.answer
    }

    /// Its temporary directory (configuration, zone, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process ID of the main NSD process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the NSD process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` to NSD and the processes it forked: for instance
    /// [`Signal::SIGSTOP`] makes it a backend that never answers, and
    /// [`Signal::SIGCONT`] brings it back.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        let Some(pid) = self.pid() else {
            return Err(io::Error::other("NSD is not running"));
        };
        signal_tree(pid, signal).map_err(io::Error::from)
    }

    /// Stops NSD: SIGTERM, then waits for it to exit (SIGKILL after 5 s).
    /// Queries to its port are then refused. Does nothing if it is stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // NSD's main process stops its children on SIGTERM. SIGCONT in case
        // a test paused them.
        let _ = signal_tree(child.id(), Signal::SIGCONT);
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(10));
        }
        if matches!(child.try_wait(), Ok(None)) {
            tracing::warn!(addr = %self.addr, "nsd ignored SIGTERM, killing it");
            kill_tree(&mut child);
        }
        tracing::debug!(addr = %self.addr, "nsd stopped");
    }

    /// Stops NSD if it runs, then starts it again on the same address and
    /// waits until it answers. Panics on failure.
    pub fn restart(&mut self) {
        self.try_restart()
            .unwrap_or_else(|e| panic!("cannot restart NSD: {e}"));
    }

    /// Like [`Nsd::restart`], returning the error instead of panicking.
    pub fn try_restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// NSD's log so far (its log file, then anything it wrote to stderr).
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(self.dir.path().join("nsd.log")).unwrap_or_default();
        log.push_str(&fs::read_to_string(self.output_path()).unwrap_or_default());
        log
    }

    fn output_path(&self) -> PathBuf {
        self.dir.path().join("nsd.out")
    }

    /// Runs NSD and waits until it answers for `www.example.test.`.
    fn spawn(&mut self) -> io::Result<()> {
        let output = File::options()
            .create(true)
            .append(true)
            .open(self.output_path())?;
        let child = netns::command(self.netns.as_deref(), NSD)
            .arg("-d")
            .arg("-c")
            .arg(self.dir.path().join("nsd.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {NSD}: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running() {
                let status = self.child.take().and_then(|mut c| c.wait().ok());
                return Err(io::Error::other(format!(
                    "NSD on {} exited ({status:?}); log:\n{}",
                    self.addr,
                    self.log()
                )));
            }
            let addr = self.addr;
            let probe = netns::maybe_in(self.netns.as_deref(), || {
                query_udp(
                    addr,
                    "www.example.test.",
                    RecordType::A,
                    Duration::from_millis(200),
                )
            });
            let last_error = match probe {
                Ok(answer) if a_record(&answer) == Some(self.answer) => break,
                Ok(answer) => format!("unexpected answer {answer:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.stop();
                return Err(io::Error::other(format!(
                    "NSD on {} did not answer within {READY_TIMEOUT:?} ({last_error}); log:\n{}",
                    self.addr,
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracing::debug!(addr = %self.addr, answer = %self.answer, "nsd ready");
        Ok(())
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
        if thread::panicking() {
            eprintln!("--- NSD {} log ---\n{}", self.addr, self.log());
        }
    }
}

/// SIGKILLs NSD and the processes it forked, then reaps it. The children
/// are signalled while the main process is not yet reaped, so their PIDs
/// cannot have been reused.
fn kill_tree(child: &mut Child) {
    let _ = signal_tree(child.id(), Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// The nsd.conf for a server rooted in `dir` listening on `addr`. Keys as in
/// nsd.conf(5) of NSD 4.6.
fn config(dir: &Path, addr: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"server:
    ip-address: {ip}@{port}
    port: {port}
    do-ip4: {v4}
    do-ip6: {v6}
    username: ""
    chroot: ""
    zonesdir: "{dir}/zones"
    database: ""
    zonelistfile: "{dir}/zone.list"
    xfrdfile: "{dir}/xfrd.state"
    pidfile: "{dir}/nsd.pid"
    logfile: "{dir}/nsd.log"
    server-count: 1
    rrl-ratelimit: 0
    ipv4-edns-size: 4096
    verbosity: 1
    hide-version: yes

remote-control:
    control-enable: no

zone:
    name: "example.test"
    zonefile: "example.test.zone"
"#,
        ip = addr.ip(),
        port = addr.port(),
        v4 = if addr.is_ipv4() { "yes" } else { "no" },
        v6 = if addr.is_ipv6() { "yes" } else { "no" },
    )
}

/// The `example.test.` zone answering `answer`.
fn zone_file(answer: Ipv4Addr) -> String {
    let mut zone = format!(
        "$ORIGIN example.test.
$TTL 300
@       IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 2
@       IN NS  ns1.example.test.
ns1     IN A   127.0.0.1
www     IN A   {answer}
*       IN A   {answer}
whoami  IN TXT \"nsd-{answer}\"
short 2 IN A   {answer}
"
    );
    for i in 0..BIG_TXT_RECORDS {
        let prefix = format!("big-{i:02}-");
        let filler = "x".repeat(100 - prefix.len());
        let _ = writeln!(zone, "big     IN TXT \"{prefix}{filler}\"");
    }
    zone
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use hickory_proto::op::ResponseCode;

    use super::*;
    use crate::client::{dig, query_tcp, send_udp, txt_strings};

    const TIMEOUT: Duration = Duration::from_secs(3);

    #[test]
    fn zone_file_is_accepted_by_nsd_checkzone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone");
        fs::write(&path, zone_file(Ipv4Addr::new(10, 0, 0, 1))).unwrap();
        let status = Command::new("/usr/sbin/nsd-checkzone")
            .arg("example.test")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn answers_over_udp_and_tcp() {
        crate::init_tracing();
        let a = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
        let b = Nsd::start(Ipv4Addr::new(10, 0, 0, 2));
        assert_ne!(a.addr(), b.addr());

        let answer = query_udp(a.addr(), "www.example.test.", RecordType::A, TIMEOUT).unwrap();
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.authoritative());
        assert_eq!(a_record(&answer), Some(Ipv4Addr::new(10, 0, 0, 1)));

        let answer = query_tcp(b.addr(), "www.example.test.", RecordType::A, TIMEOUT).unwrap();
        assert_eq!(a_record(&answer), Some(Ipv4Addr::new(10, 0, 0, 2)));

        // Wildcard.
        let answer = query_udp(b.addr(), "anything.example.test", RecordType::A, TIMEOUT).unwrap();
        assert_eq!(a_record(&answer), Some(Ipv4Addr::new(10, 0, 0, 2)));

        let answer = query_udp(a.addr(), "whoami.example.test.", RecordType::TXT, TIMEOUT).unwrap();
        assert_eq!(txt_strings(&answer), ["nsd-10.0.0.1"]);

        let answer = query_udp(a.addr(), "example.test.", RecordType::SOA, TIMEOUT).unwrap();
        assert_eq!(answer.answers().len(), 1);

        // Outside the zone.
        let answer = query_udp(a.addr(), "example.org.", RecordType::A, TIMEOUT).unwrap();
        assert_eq!(answer.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn big_answer_is_truncated_over_udp_and_whole_over_tcp() {
        let nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
        let udp = query_udp(nsd.addr(), "big.example.test.", RecordType::TXT, TIMEOUT).unwrap();
        assert!(udp.truncated());
        assert!(udp.answers().len() < BIG_TXT_RECORDS);

        let tcp = query_tcp(nsd.addr(), "big.example.test.", RecordType::TXT, TIMEOUT).unwrap();
        assert!(!tcp.truncated());
        let txt = txt_strings(&tcp);
        assert_eq!(txt.len(), BIG_TXT_RECORDS);
        assert!(txt.iter().all(|s| s.len() == 100));
        assert!(tcp.to_vec().unwrap().len() > 512);

        // With EDNS 4096 (NSD is configured with ipv4-edns-size: 4096) it fits.
        let mut query = crate::build_query("big.example.test.", RecordType::TXT).unwrap();
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(4096);
        query.set_edns(edns);
        let answer = send_udp(nsd.addr(), &query, TIMEOUT).unwrap();
        assert!(!answer.truncated());
        assert_eq!(txt_strings(&answer).len(), BIG_TXT_RECORDS);
        assert!(answer.extensions().is_some());
    }

    #[test]
    fn stop_restart_and_pause() {
        let mut nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 3));
        let addr = nsd.addr();
        assert!(nsd.is_running());
        nsd.stop();
        assert!(!nsd.is_running());
        let err = query_udp(addr, "www.example.test.", RecordType::A, TIMEOUT).unwrap_err();
        assert!(err.contains("refused"), "{err}");
        assert!(query_tcp(addr, "www.example.test.", RecordType::A, TIMEOUT).is_err());

        nsd.restart();
        assert_eq!(nsd.addr(), addr);
        let answer = query_udp(addr, "www.example.test.", RecordType::A, TIMEOUT).unwrap();
        assert_eq!(a_record(&answer), Some(Ipv4Addr::new(10, 0, 0, 3)));

        nsd.signal(Signal::SIGSTOP).unwrap();
        let short = Duration::from_millis(300);
        let err = query_udp(addr, "www.example.test.", RecordType::A, short).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        nsd.signal(Signal::SIGCONT).unwrap();
        assert!(query_udp(addr, "www.example.test.", RecordType::A, TIMEOUT).is_ok());
        assert!(nsd.log().contains("nsd started"), "{}", nsd.log());
    }

    #[test]
    fn dig_reaches_nsd() {
        let nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 4));
        let port = nsd.addr().port().to_string();
        let out = dig(&[
            "@127.0.0.1",
            "-p",
            &port,
            "+short",
            "+tries=1",
            "+time=2",
            "www.example.test",
            "A",
        ]);
        assert_eq!(out.trim(), "10.0.0.4");
    }
}
