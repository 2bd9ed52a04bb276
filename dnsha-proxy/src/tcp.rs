//! The DNS-over-TCP frontend (RFC 7766): length-prefixed queries, each
//! balanced on its own, answered out of order.
//!
//! One task per client connection reads messages, starts one future per
//! query in a [`JoinSet`] and is the only writer: answers go out in
//! completion order. At most [`MAX_IN_FLIGHT_PER_CLIENT`] queries are in
//! flight per connection; at that limit the task stops reading, so a client
//! pipelining thousands of queries costs bounded memory. Queries reach the
//! backends through the shared [`TcpUpstreams`].
//!
//! Timeouts: a message must be complete within `read_timeout_ms` of its first
//! byte, and a connection with nothing in flight and nothing arriving closes
//! after `idle_timeout_ms`. A length prefix of 0 ends the connection once the
//! queries in flight are answered. Connection limits ([`ConnLimiter`]) are
//! shared with the passthrough frontend.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use dnsha_core::{BackendId, Millis, OnNoBackend, Transition};
use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::accesslog::LogRecord;
use crate::ctx::ListenerCtx;
use crate::dns::{
    classify_query, refused_for, rewrite_id, synth_reply, DropReason, QueryInfo, Verdict,
    MAX_MESSAGE,
};
use crate::error::{Error, RetryType};
use crate::metrics::{inc, ListenerMetrics};
use crate::upstream_tcp::TcpUpstreams;

/// Most queries in flight on one client connection; at the limit the
/// connection stops reading until an answer is written.
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = 256;

/// Room made at the end of a [`FrameDecoder`] before a socket read.
const READ_RESERVE: usize = 4 * 1024;

/// Consumed bytes at the front of a [`FrameDecoder`] above which the buffer
/// is compacted.
const COMPACT_AT: usize = 16 * 1024;

/// Answers batched into one write, at most (more when one answer is larger).
const WRITE_BATCH: usize = 64 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A far-away instant for a disarmed timer.
const FAR: Duration = Duration::from_secs(86_400);

/// Sans-IO reassembly of length-prefixed DNS messages (RFC 1035 §4.2.2).
///
/// ```
/// use dnsha_proxy::tcp::FrameDecoder;
///
/// let mut d = FrameDecoder::new();
/// d.push(&[0, 3, b'a']);
/// assert_eq!(d.next_message(), None);
/// assert!(d.partial());
/// d.push(&[b'b', b'c', 0]);
/// assert_eq!(d.next_message(), Some(b"abc".to_vec()));
/// assert!(d.partial());
/// d.push(&[0]);
/// assert_eq!(d.next_message(), Some(Vec::new())); // a zero length prefix
/// assert!(!d.partial());
/// ```
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Reads once from `rd` straight into the buffer (cancel safe, as
    /// `read_buf`). Returns the bytes read; 0 means end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<usize> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < READ_RESERVE / 8 {
            self.buf.reserve(READ_RESERVE);
        }
        rd.read_buf(&mut self.buf).await
    }

    fn compact(&mut self) {
        if self.pos > 0 && (self.pos >= self.buf.len() || self.pos >= COMPACT_AT) {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.pos = 0;
        }
    }

    /// The next complete message (without its length prefix), if buffered. A
    /// zero length prefix yields an empty message.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.get(self.pos..)?;
        let [hi, lo, body @ ..] = rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let msg = body.get(..len)?.to_vec();
        self.pos += 2 + len;
        Some(msg)
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when bytes are buffered but do not yet form a complete message.
    pub fn partial(&self) -> bool {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest {
            [] => false,
            [_] => true,
            [hi, lo, body @ ..] => body.len() < usize::from(u16::from_be_bytes([*hi, *lo])),
        }
    }
}

/// Appends `msg` with its length prefix to `out`; messages over 65 535 bytes
/// cannot be framed and are skipped (returns false).
pub fn push_frame(out: &mut Vec<u8>, msg: &[u8]) -> bool {
    let Ok(len) = u16::try_from(msg.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    true
}

/// Counts client connections, in total and per client address, against a
/// listener's limits. Shared by the TCP and passthrough frontends.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; releases its place in the [`ConnLimiter`] (and
/// the listener's `connections` gauge) when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
    metrics: Option<Arc<ListenerMetrics>>,
}

impl ConnLimiter {
    /// A limiter with no connection counted.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for a connection from `ip`, or `None` when that would
    /// exceed `max_total` connections or `max_per_client` from one address.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_client: usize,
    ) -> Option<ConnSlot> {
        let ip = ip.to_canonical();
        let mut st = self.state();
        let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
        if st.total >= max_total || from_ip >= max_per_client {
            return None;
        }
        st.total += 1;
        st.per_ip.insert(ip, from_ip + 1);
        Some(ConnSlot {
            limiter: Arc::clone(self),
            ip,
            metrics: None,
        })
    }

    /// Connections counted now.
    pub fn total(&self) -> usize {
        self.state().total
    }

    /// Connections counted now from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.state()
            .per_ip
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut st = self.limiter.state();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Applies the listener's connection limits to a new client connection and
/// counts it: `connections` and `connections_total` when admitted,
/// `connections_refused` when not (the caller then closes it).
pub fn admit(ctx: &ListenerCtx, limiter: &Arc<ConnLimiter>, peer: SocketAddr) -> Option<ConnSlot> {
    let (max_total, per_client) = {
        let shared = ctx.shared.load();
        (
            shared.config.max_connections,
            shared.config.max_connections_per_client,
        )
    };
    let m = &ctx.metrics;
    match limiter.try_acquire(peer.ip(), max_total, per_client) {
        Some(mut slot) => {
            inc(&m.connections);
            inc(&m.connections_total);
            slot.metrics = Some(Arc::clone(m));
            Some(slot)
        }
        None => {
            inc(&m.connections_refused);
            debug!(listener = %m.name, client = %peer, "connection over the limits refused");
            None
        }
    }
}

/// Accepts client connections until `ctx.stop` is cancelled, one task per
/// connection tracked by `ctx.tasks`. Open connections then stop reading,
/// answer what is in flight and close.
pub async fn serve(ctx: Arc<ListenerCtx>, listener: TcpListener, upstreams: Arc<TcpUpstreams>) {
    let limiter = Arc::new(ConnLimiter::new());
    debug!(listener = %ctx.metrics.name, address = %ctx.metrics.address, "dns tcp listener started");
    loop {
        let accepted = tokio::select! {
            () = ctx.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(v) => v,
            Err(e) => {
                warn!(listener = %ctx.metrics.name, error = %e, "accept failed");
                tokio::select! {
                    () = ctx.stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Some(slot) = admit(&ctx, &limiter, peer) else {
            drop(stream);
            continue;
        };
        let ctx2 = Arc::clone(&ctx);
        let up = Arc::clone(&upstreams);
        ctx.tasks.spawn(async move {
            connection(ctx2, stream, peer, up).await;
            drop(slot);
        });
    }
    info!(listener = %ctx.metrics.name, "dns tcp listener stopped accepting");
}

/// Why a client connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The client closed, sent a zero length, or the listener stopped; all
    /// queries were answered.
    Done,
    ReadTimeout,
    IdleTimeout,
    WriteTimeout,
    Error,
}

async fn connection(
    ctx: Arc<ListenerCtx>,
    mut stream: TcpStream,
    peer: SocketAddr,
    upstreams: Arc<TcpUpstreams>,
) {
    let _ = stream.set_nodelay(true);
    let (read_timeout, idle_timeout) = {
        let s = ctx.shared.load();
        (
            Duration::from_millis(s.config.read_timeout_ms),
            Duration::from_millis(s.config.idle_timeout_ms),
        )
    };
    let (mut rd, mut wr) = stream.split();
    let mut decoder = FrameDecoder::new();
    let mut queries: JoinSet<Option<Vec<u8>>> = JoinSet::new();
    let mut out: Vec<u8> = Vec::new();
    let mut reading = true;
    let mut last_activity = Instant::now();
    let mut msg_started: Option<Instant> = None;
    let far = Instant::now() + FAR;
    let timer = tokio::time::sleep_until(far);
    tokio::pin!(timer);
    let close = loop {
        // Start every complete message, within the in-flight limit.
        while reading && queries.len() < MAX_IN_FLIGHT_PER_CLIENT {
            match decoder.next_message() {
                None => break,
                Some(msg) if msg.is_empty() => {
                    ctx.metrics.dropped(DropReason::Short);
                    debug!(client = %peer, "zero length prefix, closing");
                    reading = false;
                }
                Some(msg) => dispatch(&ctx, &upstreams, peer, msg, &mut queries, &mut out),
            }
        }
        if !out.is_empty() {
            if !write_out(&mut wr, &out, idle_timeout).await {
                break Close::WriteTimeout;
            }
            out.clear();
            last_activity = Instant::now();
        }
        if !reading && queries.is_empty() {
            break Close::Done;
        }
        let can_read = reading && queries.len() < MAX_IN_FLIGHT_PER_CLIENT;
        // The read timeout runs from a message's first byte while we read.
        msg_started = if can_read && decoder.partial() {
            msg_started.or_else(|| Some(Instant::now()))
        } else {
            None
        };
        let deadline = match msg_started {
            Some(t) => Some((t + read_timeout, Close::ReadTimeout)),
            None if can_read && queries.is_empty() => {
                Some((last_activity + idle_timeout, Close::IdleTimeout))
            }
            None => None,
        };
        let (at, why) = deadline.unwrap_or((far, Close::Done));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        tokio::select! {
            r = decoder.fill(&mut rd), if can_read => match r {
                Ok(0) => {
                    if decoder.buffered() > 0 {
                        debug!(client = %peer, bytes = decoder.buffered(), "eof inside a message");
                    }
                    reading = false;
                }
                Ok(_) => last_activity = Instant::now(),
                Err(e) => {
                    debug!(client = %peer, error = %e, "client read failed");
                    break Close::Error;
                }
            },
            Some(done) = queries.join_next(), if !queries.is_empty() => {
                collect(done, &mut out);
                while out.len() < WRITE_BATCH {
                    let Some(done) = queries.try_join_next() else { break };
                    collect(done, &mut out);
                }
            },
            () = ctx.stop.cancelled(), if reading => reading = false,
            () = &mut timer, if deadline.is_some() => break why,
        }
    };
    match close {
        Close::Done => {
            let _ = timeout(idle_timeout, wr.shutdown()).await;
        }
        other => debug!(client = %peer, reason = ?other, "client connection closed"),
    }
}

/// Adds a finished query's answer to the output.
fn collect(done: Result<Option<Vec<u8>>, tokio::task::JoinError>, out: &mut Vec<u8>) {
    match done {
        Ok(Some(answer)) => {
            push_frame(out, &answer);
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "query task failed"),
    }
}

/// Writes `out` within `limit`; false when the client does not take it.
async fn write_out<W: AsyncWrite + Unpin>(wr: &mut W, out: &[u8], limit: Duration) -> bool {
    matches!(timeout(limit, wr.write_all(out)).await, Ok(Ok(())))
}

/// Handles one complete client message: an immediate reply goes to `out`, a
/// query to forward becomes a future in `queries`.
fn dispatch(
    ctx: &Arc<ListenerCtx>,
    upstreams: &Arc<TcpUpstreams>,
    peer: SocketAddr,
    msg: Vec<u8>,
    queries: &mut JoinSet<Option<Vec<u8>>>,
    out: &mut Vec<u8>,
) {
    let m = &ctx.metrics;
    if !ctx.shared.load().acl.allows(peer.ip()) {
        m.dropped(DropReason::Acl);
        if let Some(reply) = refused_for(&msg) {
            inc(&m.refused);
            push_frame(out, &reply);
        }
        return;
    }
    match classify_query(&msg) {
        Verdict::Reply(reply, reason) => {
            m.dropped(reason);
            push_frame(out, &reply);
        }
        Verdict::Drop(reason) => m.dropped(reason),
        Verdict::Forward(info) => {
            inc(&m.queries);
            let ctx = Arc::clone(ctx);
            let up = Arc::clone(upstreams);
            queries.spawn(async move { forward(&ctx, &up, peer, &msg, &info).await });
        }
    }
}

/// Balances one query: tries backends until one answers or the pool's retries
/// are spent. Returns what to write to the client (with the client's ID).
async fn forward(
    ctx: &ListenerCtx,
    upstreams: &TcpUpstreams,
    peer: SocketAddr,
    msg: &[u8],
    info: &QueryInfo,
) -> Option<Vec<u8>> {
    let started = Instant::now();
    let time = SystemTime::now();
    let shared = ctx.shared.load_full();
    let pool = &shared.pool;
    let set = pool.snapshot();
    let settings = set.settings().clone();
    let per_try = Duration::from_millis(settings.timeout_ms);
    let m = &ctx.metrics;
    let mut tried: Vec<BackendId> = Vec::new();
    let mut last_backend = None;
    let mut answer = None;
    while tried.len() <= settings.retries as usize {
        let Some(flight) = set.pick(&tried, Millis::now()) else {
            break;
        };
        let backend = Arc::clone(flight.backend());
        if !tried.is_empty() {
            inc(&m.retries);
        }
        tried.push(backend.id());
        last_backend = Some(backend.address());
        match upstreams
            .query(backend.address(), msg, &info.question, per_try)
            .await
        {
            Ok(mut a) => {
                if backend.record_success() == Some(Transition::Up) {
                    info!(pool = %pool.name(), backend = %backend.name(), "backend up (answered)");
                }
                rewrite_id(&mut a, info.id);
                inc(&m.answers);
                answer = Some(a);
                break;
            }
            Err(Error::Upstream { kind, retry, .. }) => {
                if kind == dnsha_core::FailureKind::Timeout {
                    inc(&m.timeouts);
                }
                if pool.record_failure(&backend, kind, Millis::now()) == Some(Transition::Down) {
                    warn!(
                        pool = %pool.name(),
                        backend = %backend.name(),
                        reason = kind.as_str(),
                        "backend down (passive)"
                    );
                }
                debug!(backend = %backend.name(), reason = kind.as_str(), "tcp query failed");
                if retry == RetryType::NoRetry {
                    break;
                }
            }
            Err(e) => {
                debug!(backend = %backend.name(), error = %e, "tcp query not sent");
                break;
            }
        }
    }
    let reply = answer.or_else(|| match settings.on_no_backend {
        OnNoBackend::Servfail => {
            inc(&m.servfail);
            Some(synth_reply(info, ResponseCode::ServFail))
        }
        OnNoBackend::Drop => {
            m.dropped(DropReason::NoBackend);
            None
        }
    });
    if let Some(log) = &shared.access_log {
        log.log(LogRecord {
            time,
            client: peer,
            backend: last_backend,
            protocol: "TCP",
            rcode: crate::dns::rcode_label(reply.as_deref()),
            duration: started.elapsed(),
            qname: info.question.name().to_ascii(),
            qtype: info.question.query_type().to_string(),
        });
    }
    reply.filter(|r| r.len() <= MAX_MESSAGE)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fake backends, contexts and clients for the TCP tests.

    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use dnsha_core::config::Config;
    use dnsha_core::{Backend, Pool};
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use crate::acl::Acl;
    use crate::ctx::{ListenerCtx, ListenerShared};
    use crate::metrics::ListenerMetrics;

    /// How a fake backend answers.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Behavior {
        /// Answers every query at once.
        Normal,
        /// Delays the answer to its very first query.
        DelayFirst(Duration),
        /// Delays every answer.
        DelayAll(Duration),
        /// Reads this many queries on a connection, then closes it unanswered.
        CloseAfter(usize),
        /// Never answers.
        Silent,
        /// Sends an answer with a wrong ID and one with a wrong question
        /// before each real answer.
        BogusFirst,
        /// Writes answers one byte per write.
        Dribble,
    }

    /// A DNS-over-TCP server answering `A 10.0.0.<tag>` for every query.
    pub(crate) struct FakeBackend {
        pub(crate) addr: SocketAddr,
        stats: Arc<Stats>,
        task: tokio::task::JoinHandle<()>,
    }

    #[derive(Default)]
    struct Stats {
        queries: AtomicUsize,
        connections: AtomicUsize,
        open: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        first_done: AtomicBool,
    }

    impl Drop for FakeBackend {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeBackend {
        pub(crate) async fn start(tag: u8, behavior: Behavior) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stats = Arc::new(Stats::default());
            let st = Arc::clone(&stats);
            let task = tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = listener.accept().await else {
                        return;
                    };
                    st.connections.fetch_add(1, Ordering::SeqCst);
                    st.open.fetch_add(1, Ordering::SeqCst);
                    let st = Arc::clone(&st);
                    tokio::spawn(async move {
                        serve_conn(s, tag, behavior, &st).await;
                        st.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
            Self { addr, stats, task }
        }

        pub(crate) fn queries(&self) -> usize {
            self.stats.queries.load(Ordering::SeqCst)
        }

        pub(crate) fn connections(&self) -> usize {
            self.stats.connections.load(Ordering::SeqCst)
        }

        pub(crate) fn open_connections(&self) -> usize {
            self.stats.open.load(Ordering::SeqCst)
        }

        pub(crate) fn max_in_flight(&self) -> usize {
            self.stats.max_in_flight.load(Ordering::SeqCst)
        }
    }

    async fn serve_conn(s: TcpStream, tag: u8, behavior: Behavior, st: &Arc<Stats>) {
        let _ = s.set_nodelay(true);
        let (mut rd, mut wr) = s.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if let Behavior::Dribble = behavior {
                    for b in frame {
                        if wr.write_all(&[b]).await.is_err() {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                } else if wr.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        let mut seen = 0;
        while let Ok(len) = rd.read_u16().await {
            let mut buf = vec![0; usize::from(len)];
            if rd.read_exact(&mut buf).await.is_err() {
                break;
            }
            seen += 1;
            st.queries.fetch_add(1, Ordering::SeqCst);
            let delay = match behavior {
                Behavior::CloseAfter(n) if seen >= n => break,
                Behavior::Silent | Behavior::CloseAfter(_) => continue,
                Behavior::DelayFirst(d) if !st.first_done.swap(true, Ordering::SeqCst) => d,
                Behavior::DelayAll(d) => d,
                _ => Duration::ZERO,
            };
            let Ok(q) = Message::from_vec(&buf) else {
                continue;
            };
            let mut frames = Vec::new();
            if let Behavior::BogusFirst = behavior {
                let mut wrong_id = answer(&q, tag);
                wrong_id.set_id(q.id().wrapping_add(1));
                frames.push(wrong_id);
                let mut wrong_q = answer(&q, tag);
                wrong_q.take_queries();
                wrong_q.add_query(Query::query(
                    Name::from_ascii("other.test.").unwrap(),
                    RecordType::A,
                ));
                frames.push(wrong_q);
            }
            frames.push(answer(&q, tag));
            let tx = tx.clone();
            let st = Arc::clone(st);
            let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            st.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                st.in_flight.fetch_sub(1, Ordering::SeqCst);
                for m in frames {
                    let _ = tx.send(frame(&m.to_vec().unwrap())).await;
                }
            });
        }
        drop(tx);
        if matches!(behavior, Behavior::CloseAfter(_)) {
            writer.abort();
        } else {
            let _ = writer.await;
        }
    }

    fn answer(q: &Message, tag: u8) -> Message {
        let mut m = Message::new();
        m.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_recursion_desired(q.recursion_desired())
            .set_recursion_available(true);
        for query in q.queries() {
            m.add_query(query.clone());
            m.add_answer(Record::from_rdata(
                query.name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(10, 0, 0, tag))),
            ));
        }
        m
    }

    /// `msg` with its length prefix.
    pub(crate) fn frame(msg: &[u8]) -> Vec<u8> {
        let mut f = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
        f.extend_from_slice(msg);
        f
    }

    /// A query for `name` IN A with `id`, and its question.
    pub(crate) fn query_msg(id: u16, name: &str) -> (Vec<u8>, Query) {
        let q = Query::query(Name::from_ascii(name).unwrap(), RecordType::A);
        let mut m = Message::new();
        m.set_id(id)
            .set_recursion_desired(true)
            .add_query(q.clone());
        (m.to_vec().unwrap(), q)
    }

    /// The tag of the fake backend that made this answer.
    pub(crate) fn answer_tag(bytes: &[u8]) -> Option<u8> {
        let m = Message::from_vec(bytes).ok()?;
        m.answers().iter().find_map(|r| match r.data() {
            RData::A(a) => Some(a.0.octets()[3]),
            _ => None,
        })
    }

    /// An address where nothing listens (connections are refused).
    pub(crate) async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    /// A listener context for `backends`, with `listener_extra` and
    /// `pool_extra` TOML lines added to the listener and pool tables.
    pub(crate) fn ctx(
        protocol: &str,
        listener_extra: &str,
        pool_extra: &str,
        backends: &[SocketAddr],
    ) -> Arc<ListenerCtx> {
        let mut toml = format!(
            "[[listener]]\nname = \"t\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n{listener_extra}\n\n[[pool]]\nname = \"p\"\n{pool_extra}\n"
        );
        for (i, b) in backends.iter().enumerate() {
            toml.push_str(&format!(
                "\n[[pool.backend]]\nname = \"b{i}\"\naddress = \"{b}\"\n"
            ));
        }
        let cfg = Config::parse(&toml).unwrap();
        let lc = cfg.listeners[0].clone();
        let pc = cfg.pools[0].clone();
        let pool = Pool::new(
            pc.name.clone(),
            pc.policy,
            pc.settings.clone(),
            pc.backends
                .iter()
                .map(|b| Arc::new(Backend::new(b.name.clone(), b.address, b.weight)))
                .collect(),
        );
        let metrics = Arc::new(ListenerMetrics::new(
            lc.name.clone(),
            lc.protocol,
            lc.listen,
        ));
        Arc::new(ListenerCtx::new(
            ListenerShared {
                acl: Acl::new(lc.allow.clone()),
                config: lc,
                pool: Arc::new(pool),
                access_log: None,
            },
            metrics,
        ))
    }

    /// Reads one length-prefixed message, or `None` on EOF or error.
    pub(crate) async fn read_msg(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
        let len = s.read_u16().await.ok()?;
        let mut buf = vec![0; usize::from(len)];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::testing::*;
    use super::*;
    use crate::metrics::get;
    use crate::upstream_tcp::TcpUpstreamSettings;
    use hickory_proto::op::Message;

    struct Front {
        ctx: Arc<ListenerCtx>,
        addr: SocketAddr,
        upstreams: Arc<TcpUpstreams>,
    }

    async fn front(listener_extra: &str, pool_extra: &str, backends: &[SocketAddr]) -> Front {
        let ctx = ctx("tcp", listener_extra, pool_extra, backends);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstreams = Arc::new(TcpUpstreams::new(TcpUpstreamSettings::default()));
        ctx.tasks
            .spawn(serve(Arc::clone(&ctx), listener, Arc::clone(&upstreams)));
        Front {
            ctx,
            addr,
            upstreams,
        }
    }

    async fn send(s: &mut TcpStream, id: u16, name: &str) {
        s.write_all(&frame(&query_msg(id, name).0)).await.unwrap();
    }

    async fn recv(s: &mut TcpStream) -> Message {
        let bytes = timeout(Duration::from_secs(5), read_msg(s))
            .await
            .expect("answer in time")
            .expect("an answer");
        Message::from_vec(&bytes).unwrap()
    }

    fn tag(m: &Message) -> Option<u8> {
        answer_tag(&m.to_vec().unwrap())
    }

    /// Reads until EOF; returns how long it took.
    async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("connection still open after {limit:?}"),
            }
        }
    }

    #[test]
    fn frame_decoder_handles_one_byte_pieces() {
        let (q, _) = query_msg(9, "a.test.");
        let mut bytes = frame(&q);
        bytes.extend(frame(&q));
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(m) = d.next_message() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![q.clone(), q]);
        assert!(!d.partial());
        assert_eq!(d.buffered(), 0);
        d.push(&[0xff, 0xff, 1]);
        assert!(d.partial());
        assert_eq!(d.next_message(), None);
    }

    #[test]
    fn frame_decoder_compacts() {
        let mut d = FrameDecoder::new();
        for _ in 0..10_000 {
            d.push(&[0, 3, 1, 2, 3]);
            assert_eq!(d.next_message(), Some(vec![1, 2, 3]));
        }
        assert!(d.buf.len() <= COMPACT_AT + 5);
    }

    #[test]
    fn limiter_counts_per_client_and_total() {
        let l = Arc::new(ConnLimiter::new());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.try_acquire(a, 3, 2).unwrap();
        let _s2 = l.try_acquire(mapped, 3, 2).unwrap();
        assert!(l.try_acquire(a, 3, 2).is_none());
        let _s3 = l.try_acquire(b, 3, 2).unwrap();
        assert!(l.try_acquire(b, 3, 2).is_none(), "total limit");
        drop(s1);
        assert_eq!(l.from_ip(a), 1);
        assert!(l.try_acquire(a, 3, 2).is_some());
        assert_eq!(l.total(), 2);
    }

    #[tokio::test]
    async fn round_robin_alternates() {
        let b1 = FakeBackend::start(1, Behavior::Normal).await;
        let b2 = FakeBackend::start(2, Behavior::Normal).await;
        let f = front("", "", &[b1.addr, b2.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        let mut tags = Vec::new();
        for i in 0..4 {
            send(&mut c, 100 + i, "rr.test.").await;
            let m = recv(&mut c).await;
            assert_eq!(m.id(), 100 + i);
            tags.push(tag(&m).unwrap());
        }
        assert_eq!(tags, [1, 2, 1, 2]);
        assert_eq!(get(&f.ctx.metrics.queries), 4);
        assert_eq!(get(&f.ctx.metrics.answers), 4);
        assert_eq!(get(&f.ctx.metrics.connections), 1);
        assert_eq!(get(&f.ctx.metrics.connections_total), 1);
    }

    #[tokio::test]
    async fn answers_leave_out_of_order() {
        let b = FakeBackend::start(1, Behavior::DelayFirst(Duration::from_millis(300))).await;
        let f = front("", "", &[b.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        send(&mut c, 1, "slow.test.").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&mut c, 2, "fast.test.").await;
        assert_eq!(recv(&mut c).await.id(), 2);
        assert_eq!(recv(&mut c).await.id(), 1);
    }

    #[tokio::test]
    async fn backend_closing_with_queries_in_flight_retries_elsewhere() {
        let bad = FakeBackend::start(1, Behavior::CloseAfter(1)).await;
        let good = FakeBackend::start(2, Behavior::Normal).await;
        let f = front(
            "",
            "timeout_ms = 5000\nmax_fails = 0",
            &[bad.addr, good.addr],
        )
        .await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        let start = Instant::now();
        for i in 0..10 {
            send(&mut c, i, "close.test.").await;
        }
        let mut ids = Vec::new();
        for _ in 0..10 {
            let m = recv(&mut c).await;
            assert_eq!(tag(&m), Some(2), "answered by the good backend");
            ids.push(m.id());
        }
        ids.sort_unstable();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no query waited for the timeout"
        );
        assert!(bad.queries() > 0);
        assert!(get(&f.ctx.metrics.retries) > 0);
        assert_eq!(get(&f.ctx.metrics.servfail), 0);
    }

    #[tokio::test]
    async fn refused_backend_is_retried_invisibly() {
        let dead = closed_port().await;
        let good = FakeBackend::start(2, Behavior::Normal).await;
        let f = front("", "max_fails = 0", &[dead, good.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        for i in 0..6 {
            send(&mut c, i, "refused.test.").await;
            let m = recv(&mut c).await;
            assert_eq!(m.id(), i);
            assert_eq!(tag(&m), Some(2));
        }
        let failures = f.ctx.shared.load().pool.snapshot().backends()[0].failures();
        assert!(failures >= 1);
        assert_eq!(get(&f.ctx.metrics.retries), failures);
        assert_eq!(get(&f.ctx.metrics.servfail), 0);
    }

    #[tokio::test]
    async fn all_backends_down_gives_servfail_or_nothing() {
        let d1 = closed_port().await;
        let d2 = closed_port().await;
        let f = front("", "", &[d1, d2]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        send(&mut c, 77, "down.test.").await;
        let m = recv(&mut c).await;
        assert_eq!(m.id(), 77);
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        assert_eq!(get(&f.ctx.metrics.servfail), 1);
        assert_eq!(get(&f.ctx.metrics.retries), 1);

        let f = front("", "on_no_backend = \"drop\"", &[d1, d2]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        send(&mut c, 78, "down.test.").await;
        send(&mut c, 79, "down.test.").await;
        let r = timeout(Duration::from_millis(500), read_msg(&mut c)).await;
        assert!(r.is_err(), "nothing is written");
        assert_eq!(f.ctx.metrics.drops(DropReason::NoBackend), 2);
        assert_eq!(get(&f.ctx.metrics.servfail), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_pipelined_queries_are_all_answered() {
        const N: u16 = 10_000;
        let b1 = FakeBackend::start(1, Behavior::Normal).await;
        let b2 = FakeBackend::start(2, Behavior::Normal).await;
        let f = front("", "", &[b1.addr, b2.addr]).await;
        let c = TcpStream::connect(f.addr).await.unwrap();
        let (mut rd, mut wr) = c.into_split();
        let writer = tokio::spawn(async move {
            let mut all = Vec::new();
            for i in 0..N {
                all.extend(frame(&query_msg(i, "pipe.test.").0));
            }
            wr.write_all(&all).await.unwrap();
            wr
        });
        let mut seen = vec![false; usize::from(N)];
        for _ in 0..N {
            let bytes = timeout(Duration::from_secs(20), read_msg(&mut rd))
                .await
                .expect("answers keep coming")
                .expect("an answer");
            let m = Message::from_vec(&bytes).unwrap();
            assert_eq!(m.response_code(), ResponseCode::NoError);
            let slot = &mut seen[usize::from(m.id())];
            assert!(!*slot, "answered once");
            *slot = true;
        }
        assert!(seen.iter().all(|s| *s));
        let _wr = writer.await.unwrap();
        assert_eq!(get(&f.ctx.metrics.answers), u64::from(N));
        assert!(b1.max_in_flight() + b2.max_in_flight() <= MAX_IN_FLIGHT_PER_CLIENT);
        assert!(
            f.upstreams
                .stats()
                .connections_opened
                .load(Ordering::Relaxed)
                <= 16
        );
    }

    #[tokio::test]
    async fn half_closed_client_still_gets_its_answers() {
        let b = FakeBackend::start(1, Behavior::DelayAll(Duration::from_millis(50))).await;
        let f = front("", "", &[b.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        for i in 0..3 {
            send(&mut c, i, "half.test.").await;
        }
        c.shutdown().await.unwrap();
        let mut ids: Vec<u16> = Vec::new();
        for _ in 0..3 {
            ids.push(recv(&mut c).await.id());
        }
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2]);
        closed_within(&mut c, Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn zero_length_prefix_closes() {
        let b = FakeBackend::start(1, Behavior::Normal).await;
        let f = front("", "", &[b.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        c.write_all(&[0, 0]).await.unwrap();
        closed_within(&mut c, Duration::from_secs(1)).await;
        assert_eq!(f.ctx.metrics.drops(DropReason::Short), 1);
    }

    #[tokio::test]
    async fn stalled_message_closes_at_read_timeout() {
        let b = FakeBackend::start(1, Behavior::Normal).await;
        let f = front(
            "read_timeout_ms = 300\nidle_timeout_ms = 5000",
            "",
            &[b.addr],
        )
        .await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        c.write_all(&[0xff, 0xff]).await.unwrap();
        let took = closed_within(&mut c, Duration::from_secs(3)).await;
        assert!(took >= Duration::from_millis(250), "{took:?}");

        // One byte every 100 ms is no better.
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        let (q, _) = query_msg(1, "slow.test.");
        let bytes = frame(&q);
        let start = Instant::now();
        let mut closed = false;
        for b in bytes {
            if c.write_all(&[b]).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if start.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        if !closed {
            closed_within(&mut c, Duration::from_secs(2)).await;
        }
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn one_byte_reads_and_writes_on_both_sides() {
        let b = FakeBackend::start(3, Behavior::Dribble).await;
        let f = front("", "", &[b.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        for i in 0..3 {
            for byte in frame(&query_msg(i, "dribble.test.").0) {
                c.write_all(&[byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for i in 0..3 {
            let m = recv(&mut c).await;
            assert_eq!(m.id(), i);
            assert_eq!(tag(&m), Some(3));
        }
    }

    #[tokio::test]
    async fn idle_connection_closes() {
        let b = FakeBackend::start(1, Behavior::Normal).await;
        let f = front("idle_timeout_ms = 200", "", &[b.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        send(&mut c, 1, "idle.test.").await;
        recv(&mut c).await;
        let took = closed_within(&mut c, Duration::from_secs(2)).await;
        assert!(took >= Duration::from_millis(150), "{took:?}");
    }

    #[tokio::test]
    async fn per_client_limit_refuses_exactly_the_extra_one() {
        let b = FakeBackend::start(1, Behavior::Normal).await;
        let f = front("max_connections_per_client = 2", "", &[b.addr]).await;
        let mut c1 = TcpStream::connect(f.addr).await.unwrap();
        let mut c2 = TcpStream::connect(f.addr).await.unwrap();
        send(&mut c1, 1, "a.test.").await;
        send(&mut c2, 2, "a.test.").await;
        assert_eq!(recv(&mut c1).await.id(), 1);
        assert_eq!(recv(&mut c2).await.id(), 2);
        let mut c3 = TcpStream::connect(f.addr).await.unwrap();
        closed_within(&mut c3, Duration::from_secs(1)).await;
        assert_eq!(get(&f.ctx.metrics.connections_refused), 1);
        assert_eq!(get(&f.ctx.metrics.connections), 2);
        drop(c1);
        for _ in 0..100 {
            if get(&f.ctx.metrics.connections) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut c4 = TcpStream::connect(f.addr).await.unwrap();
        send(&mut c4, 4, "a.test.").await;
        assert_eq!(recv(&mut c4).await.id(), 4);
        assert_eq!(get(&f.ctx.metrics.connections_refused), 1);
        assert_eq!(get(&f.ctx.metrics.connections_total), 3);
    }

    #[tokio::test]
    async fn acl_refusal_answers_refused() {
        let b = FakeBackend::start(1, Behavior::Normal).await;
        let f = front("allow = [\"10.0.0.0/8\"]", "", &[b.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        for i in 0..2 {
            send(&mut c, 40 + i, "acl.test.").await;
            let m = recv(&mut c).await;
            assert_eq!(m.id(), 40 + i);
            assert_eq!(m.response_code(), ResponseCode::Refused);
        }
        assert_eq!(get(&f.ctx.metrics.refused), 2);
        assert_eq!(f.ctx.metrics.drops(DropReason::Acl), 2);
        assert_eq!(b.queries(), 0);
    }

    #[tokio::test]
    async fn malformed_gets_formerr_and_backend_is_not_asked() {
        let b = FakeBackend::start(1, Behavior::Normal).await;
        let f = front("", "", &[b.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        let (mut q, _) = query_msg(5, "a.test.");
        q.extend_from_slice(b"junk");
        c.write_all(&frame(&q)).await.unwrap();
        let m = recv(&mut c).await;
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        assert_eq!(f.ctx.metrics.drops(DropReason::Malformed), 1);
        assert_eq!(b.queries(), 0);
    }

    #[tokio::test]
    async fn stop_finishes_queries_in_flight_then_closes() {
        let b = FakeBackend::start(1, Behavior::DelayAll(Duration::from_millis(200))).await;
        let f = front("", "", &[b.addr]).await;
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        send(&mut c, 9, "stop.test.").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        f.ctx.stop.cancel();
        f.ctx.tasks.close();
        assert_eq!(recv(&mut c).await.id(), 9);
        closed_within(&mut c, Duration::from_secs(1)).await;
        timeout(Duration::from_secs(1), f.ctx.tasks.wait())
            .await
            .expect("all tasks end");
        assert!(TcpStream::connect(f.addr).await.is_err());
    }
}
