//! Reused, pipelined DNS-over-TCP connections to backends (RFC 7766 §6.2.1).
//!
//! [`TcpUpstreams`] is shared by every TCP listener. Per backend it keeps up
//! to `max_connections_per_backend` connections; each carries up to
//! `max_in_flight_per_connection` queries at once, answered in any order.
//! Both limits come from the query's pool ([`StreamLimits`]), or from the
//! [`TcpUpstreamSettings`] for a target without its own.
//!
//! A connection is one task that owns its socket. Queries reach it over a
//! bounded channel together with a oneshot for the answer; the task gives
//! each query a fresh random ID unique on the connection, and matches answers
//! by ID and question. Answers that match nothing are dropped and counted in
//! [`TcpUpstreamStats::unmatched`]. When the connection dies, every query in
//! flight on it fails at once with [`FailureKind::Closed`]; queries that were
//! queued but never written are handed back and go out on another
//! connection. Idle connections close after `idle_timeout`; a dead one is
//! replaced on next use.
//!
//! Memory is bounded: a per-backend semaphore caps the queries in flight to
//! `max_connections_per_backend × max_in_flight_per_connection`; a query that
//! finds everything busy waits for a slot until its own timeout.
//!
//! The same pool speaks DNS over TLS (RFC 7858) to backends with
//! `transport = "dot"`: an [`UpstreamTarget`] names the address and, for
//! TLS, the rustls client configuration and server name. Connections are
//! pooled per target; the TLS handshake is part of establishing a connection
//! (a failed one counts as a refusal, so the query is retried elsewhere) and
//! sessions are resumed when the backend allows it.
//!
//! Queries to `transport = "doh"` and `"doq"` backends (the target's
//! [`TlsWire`]) go through the same entry point, [`TcpUpstreams::query_target`],
//! to the multiplexed connections of [`super::doh`] and [`super::doq`]: one
//! connection per backend, a stream per query, counted in the same
//! [`TcpUpstreamStats`].

mod conn;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dnsha_core::FailureKind;
use hickory_proto::op::Query;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::doh::{DohQuery, DohUpstreams};
use super::doq::{DoqQuery, DoqUpstreams};
pub(crate) use super::target::ConnKey;
pub use super::target::{StreamLimits, TcpUpstreamStats, TlsWire, UpstreamTarget, UpstreamTls};
use crate::error::{Error, Result, RetryType};
use crate::metrics::inc;
use crate::wire::dns::HEADER_LEN;
use crate::wire::frame::framed;

/// Largest accepted `max_in_flight_per_connection`: keeps random IDs easy to
/// find among the 65 536 possible.
const MAX_IN_FLIGHT_LIMIT: usize = dnsha_core::PoolSettings::MAX_IN_FLIGHT_PER_CONNECTION;

/// Bytes queued for writing on one connection above which the task stops
/// taking new queries until the socket drains.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// How often a query may be handed back (connection closing) before it fails.
const MAX_HANDOVERS: usize = 4;

/// Settings of [`TcpUpstreams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpUpstreamSettings {
    /// Most connections kept open to one backend.
    pub max_connections_per_backend: usize,
    /// Most queries in flight on one connection.
    pub max_in_flight_per_connection: usize,
    /// A connection with nothing in flight closes after this long.
    pub idle_timeout: Duration,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
}

impl Default for TcpUpstreamSettings {
    fn default() -> Self {
        Self {
            max_connections_per_backend: 8,
            max_in_flight_per_connection: 100,
            idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A pool of pipelined TCP connections to backends, shared by all TCP
/// listeners as `Arc<TcpUpstreams>`. Needs a Tokio runtime.
#[derive(Debug)]
pub struct TcpUpstreams {
    settings: TcpUpstreamSettings,
    backends: Mutex<HashMap<ConnKey, Arc<BackendConns>>>,
    stats: Arc<TcpUpstreamStats>,
    /// HTTP/2 connections to DoH backends.
    doh: DohUpstreams,
    /// QUIC connections to DoQ backends.
    doq: DoqUpstreams,
}

/// The connections to one backend.
#[derive(Debug)]
struct BackendConns {
    permits: Semaphore,
    conns: Mutex<Vec<Arc<ConnHandle>>>,
}

/// The caller's side of one connection task.
#[derive(Debug)]
struct ConnHandle {
    tx: mpsc::Sender<Request>,
    /// Queries assigned to this connection and not finished yet.
    load: AtomicUsize,
}

/// A query handed to a connection task.
#[derive(Debug)]
struct Request {
    /// Length prefix and message; the task writes the upstream ID into it.
    frame: Vec<u8>,
    question: Query,
    reply: oneshot::Sender<Reply>,
}

/// What a connection task says about one query.
#[derive(Debug)]
enum Reply {
    /// The backend's answer (upstream ID still in it).
    Answer(Vec<u8>),
    /// The query was sent and the connection failed, or no connection
    /// could be made (and whether that is the backend's fault).
    Failed(FailureKind, bool),
    /// The connection closed before the query was written; the frame is
    /// handed back to go out on another connection.
    NotSent(Vec<u8>),
}

/// Holds one unit of a connection's load until dropped.
struct LoadGuard(Arc<ConnHandle>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.load.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TcpUpstreams {
    /// An empty pool; connections open on first use. Limits of 0 are raised
    /// to 1.
    pub fn new(settings: TcpUpstreamSettings) -> Self {
        let settings = TcpUpstreamSettings {
            max_connections_per_backend: settings.max_connections_per_backend.max(1),
            max_in_flight_per_connection: settings
                .max_in_flight_per_connection
                .clamp(1, MAX_IN_FLIGHT_LIMIT),
            ..settings
        };
        Self {
            settings,
            backends: Mutex::new(HashMap::new()),
            stats: Arc::new(TcpUpstreamStats::default()),
            doh: DohUpstreams::default(),
            doq: DoqUpstreams::default(),
        }
    }

    /// As [`Self::new`], counting into `stats` (shared by the pools of a
    /// listener's workers).
    pub fn with_stats(settings: TcpUpstreamSettings, stats: Arc<TcpUpstreamStats>) -> Self {
        Self {
            stats,
            ..Self::new(settings)
        }
    }

    /// The counters, to share with another pool ([`Self::with_stats`]).
    pub fn shared_stats(&self) -> Arc<TcpUpstreamStats> {
        Arc::clone(&self.stats)
    }

    /// The settings in use (after clamping).
    pub fn settings(&self) -> &TcpUpstreamSettings {
        &self.settings
    }

    /// The counters.
    pub fn stats(&self) -> &TcpUpstreamStats {
        &self.stats
    }

    /// Answers dropped because they matched no query in flight.
    pub fn unmatched(&self) -> u64 {
        self.stats.unmatched.load(Ordering::Relaxed)
    }

    /// Sends `query` (a complete DNS message, without length prefix) to
    /// `backend` and returns its answer, with the upstream ID still in it:
    /// the caller writes the client's ID back.
    ///
    /// Fails with [`Error::Upstream`] (always [`RetryType::Retry`]) of kind
    /// [`FailureKind::Timeout`] when no matching answer came within
    /// `timeout` (waiting for a free slot included), [`FailureKind::Refused`]
    /// when the connection could not be established, and
    /// [`FailureKind::Closed`] when it closed with the query in flight.
    /// A message shorter than a header or longer than 65 535 bytes is an
    /// [`Error::Io`].
    pub async fn query(
        &self,
        backend: SocketAddr,
        query: &[u8],
        question: &Query,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        self.query_target(&UpstreamTarget::tcp(backend), query, question, timeout)
            .await
    }

    /// As [`Self::query`], to `target` over TCP, DoT, DoH or DoQ. A failed
    /// TLS handshake is a [`FailureKind::Refused`].
    pub async fn query_target(
        &self,
        target: &UpstreamTarget,
        query: &[u8],
        question: &Query,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        if let Some(tls) = &target.tls {
            match &tls.wire {
                TlsWire::Dot => {}
                TlsWire::Doh { path, authority } => {
                    self.check_size(target, query)?;
                    let q = DohQuery {
                        target,
                        tls,
                        path,
                        authority,
                        limits: self.limits(target),
                        connect_timeout: self.settings.connect_timeout,
                        stats: &self.stats,
                    };
                    return self.doh.query(q, query, question, timeout).await;
                }
                TlsWire::Doq { config } => {
                    self.check_size(target, query)?;
                    let name = tls.server_name.to_str();
                    let q = DoqQuery {
                        target,
                        config,
                        server_name: &name,
                        limits: self.limits(target),
                        connect_timeout: self.settings.connect_timeout,
                        stats: &self.stats,
                    };
                    return self.doq.query(q, query, question, timeout).await;
                }
            }
        }
        let backend = target.addr;
        let deadline = Instant::now() + timeout;
        let upstream = |kind| Error::Upstream {
            backend,
            kind,
            retry: RetryType::Retry,
            blame: true,
        };
        let mut frame = match framed(query) {
            Some(f) if query.len() >= HEADER_LEN => f,
            _ => {
                return Err(Error::Io {
                    context: format!("query of {} bytes to {backend}", query.len()),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not a DNS message size"),
                })
            }
        };
        let limits = self.limits(target);
        let conns = self.backend(target.key(limits), limits);
        // The semaphore is never closed; a closed one would mean "no slot".
        let Ok(Ok(_permit)) = timeout_at(deadline, conns.permits.acquire()).await else {
            // Every slot to this backend busy until the deadline: our own
            // limit, not the backend's fault.
            inc(&self.stats.overloaded);
            return Err(Error::Upstream {
                backend,
                kind: FailureKind::Timeout,
                retry: RetryType::Retry,
                blame: false,
            });
        };
        for _ in 0..MAX_HANDOVERS {
            let load = self.connection(target, &conns, limits);
            let (tx, rx) = oneshot::channel();
            let req = Request {
                frame,
                question: question.clone(),
                reply: tx,
            };
            match timeout_at(deadline, load.0.tx.send(req)).await {
                Err(_) => return Err(upstream(FailureKind::Timeout)),
                Ok(Err(mpsc::error::SendError(req))) => {
                    // The connection is gone: try another one.
                    frame = req.frame;
                    continue;
                }
                Ok(Ok(())) => {}
            }
            match timeout_at(deadline, rx).await {
                Err(_) => return Err(upstream(FailureKind::Timeout)),
                Ok(Err(_)) => return Err(upstream(FailureKind::Closed)),
                Ok(Ok(Reply::Answer(a))) => return Ok(a),
                Ok(Ok(Reply::Failed(kind, blame))) => {
                    return Err(Error::Upstream {
                        backend,
                        kind,
                        retry: RetryType::Retry,
                        blame,
                    })
                }
                Ok(Ok(Reply::NotSent(f))) => frame = f,
            }
        }
        Err(upstream(FailureKind::Closed))
    }

    /// An [`Error::Io`] for a message shorter than a header or longer than
    /// 65 535 bytes.
    fn check_size(&self, target: &UpstreamTarget, query: &[u8]) -> Result<()> {
        if (HEADER_LEN..=usize::from(u16::MAX)).contains(&query.len()) {
            return Ok(());
        }
        Err(Error::Io {
            context: format!("query of {} bytes to {}", query.len(), target.addr),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a DNS message size"),
        })
    }

    /// The limits `target` gets: its own or the settings', clamped as in
    /// [`Self::new`].
    fn limits(&self, target: &UpstreamTarget) -> StreamLimits {
        let s = &self.settings;
        let l = target.limits.unwrap_or(StreamLimits {
            max_connections: s.max_connections_per_backend,
            max_in_flight: s.max_in_flight_per_connection,
        });
        StreamLimits {
            max_connections: l.max_connections.max(1),
            max_in_flight: l.max_in_flight.clamp(1, MAX_IN_FLIGHT_LIMIT),
        }
    }

    fn backend(&self, addr: ConnKey, limits: StreamLimits) -> Arc<BackendConns> {
        let mut map = lock(&self.backends);
        // Forget backends with no connection left (removed on reload).
        if map.len() > 64 {
            map.retain(|_, b| {
                Arc::strong_count(b) > 1 || lock(&b.conns).iter().any(|c| !c.tx.is_closed())
            });
        }
        Arc::clone(map.entry(addr).or_insert_with(|| {
            Arc::new(BackendConns {
                permits: Semaphore::new(
                    limits
                        .max_connections
                        .saturating_mul(limits.max_in_flight)
                        .min(Semaphore::MAX_PERMITS),
                ),
                conns: Mutex::new(Vec::new()),
            })
        }))
    }

    /// Chooses the connection for one query and takes a unit of its load:
    /// the least loaded live connection, unless all are full
    /// (`max_in_flight_per_connection`) and another may still be opened.
    ///
    /// Queries share connections rather than each taking an idle one: they
    /// leave many to a write and their answers come back many to a
    /// segment. One connection per query in flight (the earlier rule) cost
    /// about 25 % more CPU per query over TCP than filling one first;
    /// filling to a quarter, 15 %. A backend that serves each connection
    /// from one thread gets more connections with a lower
    /// `max_in_flight_per_connection`.
    fn connection(
        &self,
        addr: &UpstreamTarget,
        conns: &BackendConns,
        limits: StreamLimits,
    ) -> LoadGuard {
        let max_conns = limits.max_connections;
        let max_load = limits.max_in_flight;
        let mut list = lock(&conns.conns);
        list.retain(|c| !c.tx.is_closed());
        let least = list
            .iter()
            .min_by_key(|c| c.load.load(Ordering::Relaxed))
            .cloned();
        let chosen = match least {
            Some(c) if c.load.load(Ordering::Relaxed) < max_load => Some(c),
            // All full: another connection, or (unreachable with the
            // semaphore) the least loaded one.
            Some(_) if list.len() < max_conns => None,
            other => other,
        };
        let conn = chosen.unwrap_or_else(|| {
            let conn = self.spawn(addr, limits.max_in_flight);
            list.push(Arc::clone(&conn));
            conn
        });
        conn.load.fetch_add(1, Ordering::Relaxed);
        LoadGuard(conn)
    }

    fn spawn(&self, addr: &UpstreamTarget, max_in_flight: usize) -> Arc<ConnHandle> {
        let (tx, rx) = mpsc::channel(max_in_flight);
        inc(&self.stats.connections_opened);
        inc(&self.stats.connections_open);
        tokio::spawn(conn::run_connection(
            addr.clone(),
            rx,
            TcpUpstreamSettings {
                max_in_flight_per_connection: max_in_flight,
                ..self.settings.clone()
            },
            Arc::clone(&self.stats),
        ));
        Arc::new(ConnHandle {
            tx,
            load: AtomicUsize::new(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{answer_tag, closed_port, query_msg, Behavior, FakeBackend};
    use crate::wire::dns::MAX_MESSAGE;
    use std::time::Duration;

    fn settings(max_conns: usize, max_in_flight: usize) -> TcpUpstreamSettings {
        TcpUpstreamSettings {
            max_connections_per_backend: max_conns,
            max_in_flight_per_connection: max_in_flight,
            idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
        }
    }

    async fn ask(
        up: &TcpUpstreams,
        addr: SocketAddr,
        id: u16,
        name: &str,
        t: Duration,
    ) -> Result<Vec<u8>> {
        let (bytes, q) = query_msg(id, name);
        up.query(addr, &bytes, &q, t).await
    }

    /// Asks `n` queries at once (names `{prefix}q{i}.test.`) and checks
    /// that each gets the answer of the backend tagged `tag`.
    async fn ask_at_once(up: &Arc<TcpUpstreams>, addr: SocketAddr, n: u16, prefix: &str, tag: u8) {
        let mut tasks = Vec::new();
        for i in 0..n {
            let up = Arc::clone(up);
            let name = format!("{prefix}q{i}.test.");
            tasks.push(tokio::spawn(async move {
                ask(&up, addr, i, &name, Duration::from_secs(5)).await
            }));
        }
        for t in tasks {
            assert_eq!(answer_tag(&t.await.unwrap().unwrap()), Some(tag));
        }
    }

    fn kind(r: Result<Vec<u8>>) -> FailureKind {
        match r {
            Err(Error::Upstream { kind, retry, .. }) => {
                assert_eq!(retry, RetryType::Retry);
                kind
            }
            other => panic!("expected an upstream error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn answers_out_of_order_on_one_connection() {
        let be = FakeBackend::start(1, Behavior::DelayFirst(Duration::from_millis(300))).await;
        let up = Arc::new(TcpUpstreams::new(settings(1, 10)));
        let t = Duration::from_secs(3);
        let (u1, u2) = (Arc::clone(&up), Arc::clone(&up));
        let addr = be.addr;
        let slow = tokio::spawn(async move {
            let r = ask(&u1, addr, 1, "slow.test.", t).await;
            (r, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fast = tokio::spawn(async move {
            let r = ask(&u2, addr, 2, "fast.test.", t).await;
            (r, Instant::now())
        });
        let (fast, fast_at) = fast.await.unwrap();
        let (slow, slow_at) = slow.await.unwrap();
        assert!(fast_at + Duration::from_millis(100) < slow_at);
        assert_eq!(answer_tag(&fast.unwrap()), Some(1));
        assert_eq!(answer_tag(&slow.unwrap()), Some(1));
        assert_eq!(up.stats().connections_opened.load(Ordering::Relaxed), 1);
        assert_eq!(be.connections(), 1);
    }

    #[tokio::test]
    async fn waiting_for_a_free_slot_is_local_overload_not_the_backends_fault() {
        // One connection carrying one query at a time, to a backend that
        // takes 300 ms: the second query waits for the slot past its own
        // timeout.
        let be = FakeBackend::start(1, Behavior::DelayAll(Duration::from_millis(300))).await;
        let up = Arc::new(TcpUpstreams::new(settings(1, 1)));
        let addr = be.addr;
        let u1 = Arc::clone(&up);
        let first =
            tokio::spawn(async move { ask(&u1, addr, 1, "a.test.", Duration::from_secs(2)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = ask(&up, addr, 2, "b.test.", Duration::from_millis(100)).await;
        match second {
            Err(Error::Upstream {
                kind: FailureKind::Timeout,
                retry: RetryType::Retry,
                blame: false,
                ..
            }) => {}
            other => panic!("expected local overload, got {other:?}"),
        }
        assert_eq!(up.stats().overloaded.load(Ordering::Relaxed), 1);
        assert!(first.await.unwrap().is_ok());
        // A backend that is slower than the timeout is to blame.
        let slow = ask(&up, addr, 3, "c.test.", Duration::from_millis(100)).await;
        assert!(matches!(
            slow,
            Err(Error::Upstream {
                kind: FailureKind::Timeout,
                blame: true,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn unmatched_answers_are_dropped_and_counted() {
        let be = FakeBackend::start(2, Behavior::BogusFirst).await;
        let up = TcpUpstreams::new(settings(1, 10));
        let r = ask(&up, be.addr, 7, "a.test.", Duration::from_secs(2)).await;
        assert_eq!(answer_tag(&r.unwrap()), Some(2));
        assert_eq!(up.unmatched(), 2);
    }

    #[tokio::test]
    async fn closed_with_queries_in_flight_fails_at_once() {
        let be = FakeBackend::start(3, Behavior::CloseAfter(2)).await;
        let up = Arc::new(TcpUpstreams::new(settings(1, 10)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..2u16 {
            let up = Arc::clone(&up);
            let addr = be.addr;
            tasks.push(tokio::spawn(async move {
                ask(&up, addr, i, "x.test.", Duration::from_secs(5)).await
            }));
        }
        for t in tasks {
            assert_eq!(kind(t.await.unwrap()), FailureKind::Closed);
        }
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn refused_connect_is_refused() {
        let addr = closed_port().await;
        let up = TcpUpstreams::new(settings(2, 10));
        let r = ask(&up, addr, 1, "a.test.", Duration::from_secs(2)).await;
        assert_eq!(kind(r), FailureKind::Refused);
        assert_eq!(up.stats().connections_open.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn silent_backend_times_out() {
        let be = FakeBackend::start(4, Behavior::Silent).await;
        let up = TcpUpstreams::new(settings(1, 10));
        let start = Instant::now();
        let r = ask(&up, be.addr, 1, "a.test.", Duration::from_millis(200)).await;
        assert_eq!(kind(r), FailureKind::Timeout);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn idle_connection_closes_and_is_replaced() {
        let be = FakeBackend::start(5, Behavior::Normal).await;
        let up = TcpUpstreams::new(TcpUpstreamSettings {
            idle_timeout: Duration::from_millis(100),
            ..settings(1, 10)
        });
        let t = Duration::from_secs(2);
        assert!(ask(&up, be.addr, 1, "a.test.", t).await.is_ok());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(up.stats().connections_open.load(Ordering::Relaxed), 0);
        assert_eq!(be.open_connections(), 0);
        assert!(ask(&up, be.addr, 2, "b.test.", t).await.is_ok());
        assert_eq!(up.stats().connections_opened.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn busy_connections_queue_within_the_limits() {
        let be = FakeBackend::start(6, Behavior::DelayAll(Duration::from_millis(20))).await;
        let up = Arc::new(TcpUpstreams::new(settings(2, 3)));
        ask_at_once(&up, be.addr, 200, "", 6).await;
        assert!(up.stats().connections_opened.load(Ordering::Relaxed) <= 2);
        assert!(be.max_in_flight() <= 6, "{}", be.max_in_flight());
    }

    #[tokio::test]
    async fn queries_fill_a_connection_before_another_opens() {
        // 4 connections of 10 queries allowed. Ten queries at once ride on
        // one connection; twenty-five need three.
        let be = FakeBackend::start(8, Behavior::DelayAll(Duration::from_millis(50))).await;
        let up = Arc::new(TcpUpstreams::new(settings(4, 10)));
        ask_at_once(&up, be.addr, 10, "", 8).await;
        assert_eq!(up.stats().connections_opened.load(Ordering::Relaxed), 1);
        ask_at_once(&up, be.addr, 25, "", 8).await;
        assert_eq!(up.stats().connections_opened.load(Ordering::Relaxed), 3);
        assert_eq!(be.connections(), 3);
    }

    #[tokio::test]
    async fn an_answer_held_by_the_backends_nagle_is_not_held_by_our_delayed_ack() {
        // Pairs of queries on one connection to a backend that leaves Nagle
        // on and answers the second of each pair 2 ms after the first: that
        // answer leaves only once ours ACKs the first. A delayed ACK (40 ms
        // on Linux once the connection is past its first segments) would
        // make each pair take 40 ms or more.
        let be = FakeBackend::start(9, Behavior::NagleStaggered(Duration::from_millis(2))).await;
        let up = Arc::new(TcpUpstreams::new(settings(1, 10)));
        let t = Duration::from_secs(2);
        let start = Instant::now();
        let rounds = 60u16;
        for i in 0..rounds {
            let (u1, addr) = (Arc::clone(&up), be.addr);
            let first = tokio::spawn(async move { ask(&u1, addr, i, "a.test.", t).await });
            let second = ask(&up, be.addr, i, "b.test.", t).await;
            assert_eq!(answer_tag(&second.unwrap()), Some(9));
            assert_eq!(answer_tag(&first.await.unwrap().unwrap()), Some(9));
        }
        let per_pair = start.elapsed() / u32::from(rounds);
        assert!(
            per_pair < Duration::from_millis(15),
            "{per_pair:?} per pair"
        );
        assert_eq!(be.connections(), 1);
    }

    #[tokio::test]
    async fn on_a_busy_connection_a_held_answer_waits_for_the_ack_delay_not_40_ms() {
        // Twenty queries at once (a busy connection: the ACK may wait for a
        // query to carry it) and then none: the backend's answers held by
        // its Nagle leave when the ACK delay runs out.
        let be = FakeBackend::start(10, Behavior::NagleStaggered(Duration::from_millis(2))).await;
        let up = Arc::new(TcpUpstreams::new(settings(1, 100)));
        let rounds = 10u32;
        let start = Instant::now();
        for r in 0..rounds {
            ask_at_once(&up, be.addr, 20, &format!("r{r}"), 10).await;
        }
        let per_round = start.elapsed() / rounds;
        assert!(
            per_round < Duration::from_millis(25),
            "{per_round:?} per round"
        );
        assert_eq!(be.connections(), 1);
    }

    #[tokio::test]
    async fn bad_sizes_are_not_sent() {
        let up = TcpUpstreams::new(settings(1, 1));
        let q = query_msg(1, "a.test.").1;
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let r = up.query(addr, &[0; 5], &q, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(Error::Io { .. })));
        let big = vec![0; MAX_MESSAGE + 1];
        let r = up.query(addr, &big, &q, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(Error::Io { .. })));
        assert_eq!(up.stats().connections_opened.load(Ordering::Relaxed), 0);
    }
}
