//! Failover as a client sees it: a fixed-rate client, over UDP or TCP, that
//! records, per query, when it was sent and whether a good answer came back
//! within the timeout, so the queries lost around each injected fault can be
//! counted; and `dnsperf` (`-Q 1000 -q 10000 -t 1`) as a cross-check.

#![allow(unreachable_pub, dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::{build_query, netns::Lab, Message, RecordType, ResponseCode};

/// An answer later than this after its query counts as lost (dnsperf -t 1).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// One answer: the query's sequence number, when it came (from the start),
/// and whether it was NOERROR with an answer record.
type Got = (u64, Duration, bool);

/// Sends one query every `period` (catching up after a late wake-up, so the
/// rate holds on average) and matches the answers by sequence number (the
/// first label of the name, `q<N>.example.test.`, answered by the zone's
/// wildcard).
pub struct RateClient {
    start: Instant,
    period: Duration,
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<Vec<Duration>>>,
    receiver: Option<JoinHandle<Vec<Got>>>,
}

/// Query `seq`, its ID set to the sequence number's low bits.
fn query(seq: u64) -> Vec<u8> {
    let mut q = build_query(&format!("q{seq}.example.test."), RecordType::A).expect("query");
    q.set_id(seq as u16);
    q.to_vec().expect("encode")
}

/// The sequence number and quality of an answer, if it is one of ours.
fn parse_answer(bytes: &[u8], at: Duration) -> Option<Got> {
    let m = Message::from_vec(bytes).ok()?;
    let name = m.queries().first()?.name().to_string();
    let seq = name
        .strip_prefix('q')?
        .split('.')
        .next()?
        .parse::<u64>()
        .ok()?;
    let ok = m.response_code() == ResponseCode::NoError && !m.answers().is_empty();
    Some((seq, at, ok))
}

impl RateClient {
    /// Starts sending over UDP to `server` from `node` of `lab`, from one
    /// connected socket.
    pub fn start(lab: &Lab, node: &str, server: SocketAddr, period: Duration) -> Self {
        let socket = lab.run_in(node, || {
            let any = if server.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let s = UdpSocket::bind(any).expect("bind client socket");
            s.connect(server).expect("connect client socket");
            s
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let rx = socket.try_clone().expect("clone socket");
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let stop_tx = Arc::clone(&stop);
        let sender = thread::spawn(move || {
            let mut sent = Vec::new();
            let mut seq: u32 = 0;
            while !stop_tx.load(Ordering::Relaxed) {
                let due = start + period * seq;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                // Refusals (ICMP port unreachable) come back as send errors on
                // a connected socket: the query is lost all the same.
                let _ = socket.send(&query(u64::from(seq)));
                sent.push(start.elapsed());
                seq += 1;
            }
            sent
        });
        let stop_rx = Arc::clone(&stop);
        let receiver = thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 1500];
            let mut stopping: Option<Instant> = None;
            loop {
                if stopping.is_none() && stop_rx.load(Ordering::Relaxed) {
                    stopping = Some(Instant::now());
                }
                // Answers to the last queries may come up to the timeout later.
                if stopping.is_some_and(|t| t.elapsed() > QUERY_TIMEOUT) {
                    return got;
                }
                let Ok(n) = rx.recv(&mut buf) else { continue };
                got.extend(parse_answer(&buf[..n], start.elapsed()));
            }
        });
        Self {
            start,
            period,
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
        }
    }

    /// Starts sending over TCP to `server` from `node` of `lab`, as a stub
    /// resolver does: each query on a connection of its own (connect, send,
    /// read the answer, close with a reset so no TIME_WAIT piles up), the
    /// whole exchange bounded by [`QUERY_TIMEOUT`]. A connection caught by
    /// a failover is lost with its query; the next query connects to
    /// whoever holds the VIP then.
    pub fn start_tcp(lab: &Lab, node: &str, server: SocketAddr, period: Duration) -> Self {
        let netns = lab.ns(node);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let stop_tx = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::channel();
        // The runtime runs on a thread inside the namespace, so every socket
        // it opens is the client node's.
        let sender = thread::spawn(move || {
            test_support::netns::run_in(&netns, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("client runtime");
                let (sent, got) = rt.block_on(tcp_client(server, start, period, &stop_tx));
                let _ = tx.send(got);
                sent
            })
        });
        let receiver = thread::spawn(move || rx.recv().unwrap_or_default());
        Self {
            start,
            period,
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
        }
    }

    /// When it started: event times are given relative to this.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Stops sending, waits [`QUERY_TIMEOUT`] for the last answers, and
    /// returns what happened to every query.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .sender
            .take()
            .map(|h| h.join().expect("sender"))
            .unwrap_or_default();
        let got = self
            .receiver
            .take()
            .map(|h| h.join().expect("receiver"))
            .unwrap_or_default();
        let mut outcome = vec![Outcome::Lost; sent.len()];
        for (seq, at, ok) in got {
            let Some(&sent_at) = usize::try_from(seq).ok().and_then(|i| sent.get(i)) else {
                continue;
            };
            outcome[seq as usize] = if !ok {
                Outcome::Error
            } else if at.saturating_sub(sent_at) <= QUERY_TIMEOUT {
                Outcome::Answered
            } else {
                Outcome::Lost
            };
        }
        Report {
            sent,
            outcome,
            period: self.period,
        }
    }
}

/// The TCP client's loop: one task per query, until `stop`; then every
/// task's end (each bounded by [`QUERY_TIMEOUT`]). The send times and the
/// answers.
async fn tcp_client(
    server: SocketAddr,
    start: Instant,
    period: Duration,
    stop: &AtomicBool,
) -> (Vec<Duration>, Vec<Got>) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = Vec::new();
    let mut got = Vec::new();
    let mut seq: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until((start + period * seq).into()).await;
        sent.push(start.elapsed());
        tasks.spawn(async move {
            let exchange = tcp_exchange(server, u64::from(seq));
            let answer = tokio::time::timeout(QUERY_TIMEOUT, exchange).await;
            answer
                .ok()?
                .ok()
                .and_then(|b| parse_answer(&b, start.elapsed()))
        });
        seq += 1;
        // Collect finished tasks as we go, so the set stays small.
        while let Some(done) = tasks.try_join_next() {
            got.extend(done.ok().flatten());
        }
    }
    while let Some(done) = tasks.join_next().await {
        got.extend(done.ok().flatten());
    }
    (sent, got)
}

/// Query `seq` over a new TCP connection to `server`; the answer's bytes.
async fn tcp_exchange(server: SocketAddr, seq: u64) -> std::io::Result<Vec<u8>> {
    let socket = if server.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    // Closing sends a reset: 1000 connections a second would otherwise fill
    // the client's port range with TIME_WAIT.
    socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO))?;
    let mut stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let q = query(seq);
    let mut framed = Vec::with_capacity(q.len() + 2);
    framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
    framed.extend_from_slice(&q);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut answer = vec![0; usize::from(len)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

impl Drop for RateClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What became of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A good answer within [`QUERY_TIMEOUT`].
    Answered,
    /// An answer that was not NOERROR with an A record (SERVFAIL while the
    /// pool is down, say).
    Error,
    /// No answer in time.
    Lost,
}

/// Every query of a [`RateClient`] run.
#[derive(Debug)]
pub struct Report {
    /// Send time of query `i`, from the start.
    sent: Vec<Duration>,
    /// What became of query `i`.
    outcome: Vec<Outcome>,
    period: Duration,
}

/// The queries sent in one time window of a run.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Queries sent in the window.
    pub sent: usize,
    /// Of those, not given a good answer within [`QUERY_TIMEOUT`] (errors
    /// included).
    pub lost: usize,
    /// Of the lost, those answered with an error.
    pub errors: usize,
    /// The longest run of consecutive lost queries, as time: from the first
    /// lost query's send time to the next answered one's.
    pub blackout: Duration,
    /// From the window's start (the fault) to the send time of the first
    /// answered query after that longest run: the failover time as the
    /// client sees it (zero when nothing was lost).
    pub recovered_after: Duration,
}

impl Report {
    /// Queries sent.
    pub fn sent(&self) -> usize {
        self.sent.len()
    }

    /// Queries not given a good answer in time.
    pub fn lost(&self) -> usize {
        self.outcome
            .iter()
            .filter(|o| **o != Outcome::Answered)
            .count()
    }

    /// Queries answered with an error.
    pub fn errors(&self) -> usize {
        self.outcome
            .iter()
            .filter(|o| **o == Outcome::Error)
            .count()
    }

    /// The queries sent from `from` (inclusive) to `to` (exclusive), times
    /// relative to [`RateClient::started`].
    pub fn window(&self, from: Duration, to: Duration) -> Window {
        let answered = |i: usize| self.outcome[i] == Outcome::Answered;
        let idx: Vec<usize> = (0..self.sent.len())
            .filter(|&i| self.sent[i] >= from && self.sent[i] < to)
            .collect();
        let lost = idx.iter().filter(|&&i| !answered(i)).count();
        let errors = idx
            .iter()
            .filter(|&&i| self.outcome[i] == Outcome::Error)
            .count();
        let (mut best, mut best_start, mut best_end) = (0, 0, 0);
        let mut run_start = None;
        for &i in &idx {
            if answered(i) {
                if let Some(s) = run_start.take() {
                    if i - s > best {
                        (best, best_start, best_end) = (i - s, s, i);
                    }
                }
            } else if run_start.is_none() {
                run_start = Some(i);
            }
        }
        if let Some(s) = run_start {
            // Still lost at the end of the window: runs to the next answer.
            let end = (s..self.sent.len())
                .find(|&i| answered(i))
                .unwrap_or(self.sent.len());
            if end - s > best {
                (best, best_start, best_end) = (end - s, s, end);
            }
        }
        let time = |i: usize| {
            self.sent
                .get(i)
                .copied()
                .unwrap_or_else(|| self.sent.last().copied().unwrap_or_default() + self.period)
        };
        let (blackout, recovered_after) = if best == 0 {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (
                time(best_end).saturating_sub(time(best_start)),
                time(best_end).saturating_sub(from),
            )
        };
        Window {
            sent: idx.len(),
            lost,
            errors,
            blackout,
            recovered_after,
        }
    }
}

/// `dnsperf -s SERVER -Q RATE -q 10000 -t 1 -l SECONDS` from `node`, started
/// now and read by [`Dnsperf::finish`].
pub struct Dnsperf {
    child: Option<Child>,
    _data: tempfile::NamedTempFile,
}

/// What dnsperf reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsperfResult {
    /// `Queries sent`.
    pub sent: u64,
    /// `Queries lost` (no answer within the 1 s timeout).
    pub lost: u64,
}

pub const DNSPERF: &str = "/usr/bin/dnsperf";

impl Dnsperf {
    /// Starts it, or returns `None` when dnsperf is not installed.
    pub fn start(lab: &Lab, node: &str, server: SocketAddr, rate: u32, secs: u32) -> Option<Self> {
        if !std::path::Path::new(DNSPERF).exists() {
            return None;
        }
        let data = tempfile::NamedTempFile::new().expect("dnsperf data");
        std::fs::write(data.path(), "www.example.test A\nfoo.example.test A\n").expect("data");
        let child = lab
            .command(node, DNSPERF)
            .args([
                "-s",
                &server.ip().to_string(),
                "-p",
                &server.port().to_string(),
            ])
            .args(["-Q", &rate.to_string(), "-q", "10000", "-t", "1"])
            .args(["-l", &secs.to_string(), "-d"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dnsperf");
        Some(Self {
            child: Some(child),
            _data: data,
        })
    }

    /// Waits for it to end and reads its summary.
    pub fn finish(mut self) -> DnsperfResult {
        let child = self.child.take().expect("dnsperf child");
        let out = child.wait_with_output().expect("dnsperf output");
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "no `{key}` in dnsperf output:\n{text}\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })
        };
        DnsperfResult {
            sent: field("Queries sent:"),
            lost: field("Queries lost:"),
        }
    }
}

impl Drop for Dnsperf {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
