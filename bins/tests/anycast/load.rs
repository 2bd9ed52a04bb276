//! A client at a fixed rate over UDP from many source ports, so that a
//! router hashing flows by ports (ECMP, `fib_multipath_hash_policy = 1`)
//! spreads it over every node announcing the address. Each query has its
//! own name (`q<N>.example.test.`, answered by the zone's wildcard) and ID,
//! and the client records when each was sent and whether a good answer came
//! back within [`QUERY_TIMEOUT`], so the queries lost around a fault can be
//! counted and placed in time.

#![allow(unreachable_pub, dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::time::MissedTickBehavior;

use super::common::{build_query, netns, Message, RecordType, ResponseCode};

/// An answer later than this after its query counts as lost (as dnsperf's
/// `-t 1`).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The send times, and the times of the good answers by sequence number.
type Outcome = (Vec<Duration>, HashMap<u64, Duration>);

/// A running client; [`Load::finish`] stops it.
pub struct Load {
    start: Instant,
    rate: u32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Outcome>>,
}

/// What happened to every query of a [`Load`].
#[derive(Debug)]
pub struct Report {
    /// Queries per second.
    pub rate: u32,
    /// When each query was sent, from the start.
    pub sent: Vec<Duration>,
    /// When a good answer came for each, if one came in time.
    pub answered: Vec<Option<Duration>>,
}

/// Query `seq`.
fn query(seq: u64) -> Vec<u8> {
    let mut q = build_query(&format!("q{seq}.example.test."), RecordType::A).expect("query");
    q.set_id(seq as u16);
    q.to_vec().expect("encode")
}

/// The sequence number of a good answer (NOERROR with a record), if it is
/// one of ours.
fn answered_seq(bytes: &[u8]) -> Option<u64> {
    let m = Message::from_vec(bytes).ok()?;
    if m.response_code() != ResponseCode::NoError || m.answers().is_empty() {
        return None;
    }
    let name = m.queries().first()?.name().to_string();
    let seq = name.strip_prefix('q')?.split('.').next()?.parse().ok()?;
    (m.id() == seq as u16).then_some(seq)
}

impl Load {
    /// Starts `rate` queries per second to `server` from node `node` of
    /// `lab`, sent in turn from `ports` sockets (source ports).
    pub fn start(
        lab: &netns::Lab,
        node: &str,
        server: SocketAddr,
        rate: u32,
        ports: usize,
    ) -> Self {
        let ns = lab.ns(node);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let stop_tx = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            netns::run_in(&ns, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("client runtime");
                rt.block_on(run(server, rate, ports.max(1), start, &stop_tx))
            })
        });
        Self {
            start,
            rate,
            stop,
            thread: Some(thread),
        }
    }

    /// When it started: [`Report`] times are from this instant.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Now, on the report's clock.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops sending, waits [`QUERY_TIMEOUT`] for the last answers, and
    /// returns what happened to every query.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, got) = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("load thread");
        let answered = sent
            .iter()
            .enumerate()
            .map(|(seq, at)| {
                got.get(&(seq as u64))
                    .copied()
                    .filter(|t| t.saturating_sub(*at) <= QUERY_TIMEOUT)
            })
            .collect();
        Report {
            rate: self.rate,
            sent,
            answered,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The client: one task receiving on each socket, the sender paced by a
/// 1/`rate` interval that catches up after a late wake-up; after `stop`,
/// [`QUERY_TIMEOUT`] for the last answers. The send times and the times
/// of the good answers, by sequence number.
async fn run(
    server: SocketAddr,
    rate: u32,
    ports: usize,
    start: Instant,
    stop: &AtomicBool,
) -> Outcome {
    let mut socks = Vec::with_capacity(ports);
    for _ in 0..ports {
        let s = UdpSocket::bind("0.0.0.0:0").await.expect("bind client");
        socks.push(Arc::new(s));
    }
    let got = Arc::new(Mutex::new(HashMap::new()));
    let receivers: Vec<_> = socks
        .iter()
        .map(|s| {
            let (s, got) = (Arc::clone(s), Arc::clone(&got));
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                loop {
                    let Ok(n) = s.recv(&mut buf).await else {
                        continue;
                    };
                    if let Some(seq) = answered_seq(&buf[..n]) {
                        got.lock()
                            .expect("answers")
                            .entry(seq)
                            .or_insert_with(|| start.elapsed());
                    }
                }
            })
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sent = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let sock = &socks[(seq % ports as u64) as usize];
        // A send error (no route for a moment) loses the query like a drop.
        let _ = sock.send_to(&query(seq), server).await;
        sent.push(start.elapsed());
        seq += 1;
    }
    tokio::time::sleep(QUERY_TIMEOUT).await;
    for r in receivers {
        r.abort();
    }
    let got = std::mem::take(&mut *got.lock().expect("answers"));
    (sent, got)
}

impl Report {
    /// The send times of the queries that got no good answer in time.
    pub fn lost(&self) -> Vec<Duration> {
        self.sent
            .iter()
            .zip(&self.answered)
            .filter(|(_, a)| a.is_none())
            .map(|(s, _)| *s)
            .collect()
    }

    /// Lost queries sent from `from` on.
    pub fn lost_since(&self, from: Duration) -> usize {
        self.lost().iter().filter(|t| **t >= from).count()
    }

    /// From the first to the last lost query sent from `from` on, or
    /// `None` if none was lost.
    pub fn loss_window(&self, from: Duration) -> Option<(Duration, Duration)> {
        let lost: Vec<Duration> = self.lost().into_iter().filter(|t| *t >= from).collect();
        Some((*lost.first()?, *lost.last()?))
    }

    /// One line: sent, answered, lost.
    pub fn summary(&self) -> String {
        let lost = self.lost().len();
        format!(
            "{} sent, {} answered, {lost} lost",
            self.sent.len(),
            self.sent.len() - lost
        )
    }
}
