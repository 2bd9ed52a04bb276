//! Queries from stream frontends (DoH) to `udp` backends over UDP, as
//! dnsdist does: no TCP hop per query, the backend's fast path.
//!
//! [`UdpUpstreams`] keeps, per backend, the pool's `udp_sockets_per_backend`
//! ([`SOCKETS_PER_BACKEND`] by default) connected UDP sockets from
//! kernel-chosen random ports. Each socket has a reader
//! task that receives answers in batches (`recvmmsg`) and hands each to the
//! query waiting for it, matched by upstream ID and question; anything else
//! is dropped and counted in [`UdpUpstreamStats::unmatched`]. Each query gets
//! a fresh random ID unique on its socket. A query that gives up (timeout,
//! or its client went away) removes itself, so the table only holds queries
//! someone still waits for, at most [`MAX_IN_FLIGHT_PER_SOCKET`] per socket.
//!
//! An ICMP port unreachable (ECONNREFUSED on the connected socket) closes
//! the socket (the next query opens one on a new random port), and every
//! query waiting on it fails with [`FailureKind::Refused`] and
//! [`RetryType::Resend`]: it is sent once more to the same backend while
//! that backend is up, and counts against it only if refused again, on the
//! fresh port an off-path forger cannot know. A spoofed ICMP error so costs
//! the backend nothing and the clients one round trip. Sockets are also replaced after [`ROTATE_AFTER`] or
//! [`ROTATE_QUERIES`], so source ports do not stay the same long enough to
//! be found and sprayed. An answer larger
//! than a batch slot is reported as [`UdpReply::TooBig`]; the caller then
//! asks the same backend over TCP, as for an answer with TC set.
//!
//! A socket with nothing in flight for [`IDLE`] is closed and its reader
//! ends; the next query opens a new one.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dnsha_core::FailureKind;
use hickory_proto::op::Query;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::failure_kind;
use crate::error::{Error, Result, RetryType};
use crate::metrics::inc;
use crate::sys::{RecvBatch, SendBatch};
use crate::wire::dns::{
    answer_matches, message_id, parse_answer, rewrite_id, HEADER_LEN, MAX_MESSAGE,
};

/// Connected sockets (source ports) per backend.
pub const SOCKETS_PER_BACKEND: usize = 2;

/// Most queries waiting on one socket; a query finding its socket full
/// fails as a timeout would, without waiting.
pub const MAX_IN_FLIGHT_PER_SOCKET: usize = 16_384;

/// A socket with nothing in flight for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);

/// A socket older than this takes no new query: the next one opens a new
/// socket (a new random source port); the old one ends when its queries
/// are answered.
pub const ROTATE_AFTER: Duration = Duration::from_secs(30);

/// A socket that carried this many queries is replaced likewise.
pub const ROTATE_QUERIES: u64 = 50_000;

/// Datagrams received per `recvmmsg`.
const BATCH: usize = 32;

/// What a backend sent back over UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpReply {
    /// The answer, with the upstream ID still in it (the caller writes the
    /// client's ID back). It may have TC set.
    Answer(Vec<u8>),
    /// The answer was larger than a receive slot and was not kept: ask
    /// again over TCP.
    TooBig,
}

/// Counters of [`UdpUpstreams`], updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct UdpUpstreamStats {
    /// Datagrams from backends that matched no query waiting on their
    /// socket (unknown ID, wrong question, not a response); dropped.
    pub unmatched: AtomicU64,
    /// Sockets opened since start.
    pub sockets_opened: AtomicU64,
    /// Queries that found their socket's table full.
    pub overloaded: AtomicU64,
    /// Sockets closed after an ICMP refusal.
    pub refused: AtomicU64,
}

/// The UDP sockets of every backend, shared by the stream frontends.
#[derive(Debug, Default)]
pub struct UdpUpstreams {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    socks: Mutex<HashMap<(SocketAddr, usize), Arc<Sock>>>,
    next: AtomicUsize,
    stats: Arc<UdpUpstreamStats>,
}

#[derive(Debug)]
struct Sock {
    io: UdpSocket,
    /// The backend (the socket's peer), for `sendmmsg`.
    peer: SocketAddr,
    table: Mutex<Table>,
    /// Queries waiting to be sent by the socket's task.
    out: Mutex<Vec<Vec<u8>>>,
    /// Wakes the socket's task when `out` gets its first query.
    flush: Notify,
    /// When it was opened, and the queries it took: see [`ROTATE_AFTER`].
    opened: Instant,
    used: AtomicU64,
}

#[derive(Debug)]
struct Table {
    waiting: HashMap<u16, Waiter>,
    rng: StdRng,
    /// Set by the reader when it closes the socket for idleness.
    closed: bool,
    last_active: Instant,
}

#[derive(Debug)]
struct Waiter {
    question: Query,
    reply: oneshot::Sender<std::result::Result<UdpReply, Lost>>,
}

/// Why a waiting query got no answer from its socket.
#[derive(Debug, Clone, Copy)]
struct Lost {
    kind: FailureKind,
    retry: RetryType,
    blame: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a query's entry when its future ends, whatever the reason.
struct Slot<'a> {
    sock: &'a Sock,
    id: u16,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        lock(&self.sock.table).waiting.remove(&self.id);
    }
}

impl UdpUpstreams {
    /// No sockets yet; they open on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// No sockets yet, counting into `stats` (shared by the sockets of a
    /// listener's workers).
    pub fn with_stats(stats: Arc<UdpUpstreamStats>) -> Self {
        Self {
            inner: Arc::new(Shared {
                stats,
                ..Shared::default()
            }),
        }
    }

    /// The counters, to share ([`Self::with_stats`]).
    pub fn shared_stats(&self) -> Arc<UdpUpstreamStats> {
        Arc::clone(&self.inner.stats)
    }

    /// The counters.
    pub fn stats(&self) -> &UdpUpstreamStats {
        &self.inner.stats
    }

    /// Sockets open now.
    pub fn sockets(&self) -> usize {
        lock(&self.inner.socks).len()
    }

    /// Sends `query` (a complete DNS message) to `backend` over UDP and
    /// waits up to `timeout` for the answer that matches its ID and
    /// `question`.
    ///
    /// Fails with [`Error::Upstream`] (always [`RetryType::Retry`]) of kind
    /// [`FailureKind::Timeout`] when nothing matching came in time or the
    /// socket's table is full, and [`FailureKind::Refused`] on an ICMP
    /// refusal or a failed send. A message shorter than a header or longer
    /// than 65 535 bytes is an [`Error::Io`].
    pub async fn query(
        &self,
        backend: SocketAddr,
        query: &[u8],
        question: &Query,
        timeout: Duration,
    ) -> Result<UdpReply> {
        self.query_over(backend, SOCKETS_PER_BACKEND, query, question, timeout)
            .await
    }

    /// As [`Self::query`], spreading the queries to `backend` over
    /// `sockets` sockets (the pool's `udp_sockets_per_backend`; at least 1).
    pub async fn query_over(
        &self,
        backend: SocketAddr,
        sockets: usize,
        query: &[u8],
        question: &Query,
        timeout: Duration,
    ) -> Result<UdpReply> {
        let deadline = Instant::now() + timeout;
        let upstream = |kind| Error::Upstream {
            backend,
            kind,
            retry: RetryType::Retry,
            blame: true,
        };
        if query.len() < HEADER_LEN || query.len() > MAX_MESSAGE {
            return Err(Error::Io {
                context: format!("query of {} bytes to {backend}", query.len()),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a DNS message size"),
            });
        }
        let index = self.inner.next.fetch_add(1, Ordering::Relaxed) % sockets.max(1);
        let (sock, id, rx) = loop {
            let sock = self.socket(backend, index).map_err(|e| {
                debug!(%backend, error = %e, "udp upstream socket");
                upstream(FailureKind::Refused)
            })?;
            let mut t = lock(&sock.table);
            if t.closed {
                // The reader closed it just now and removed it from the map.
                continue;
            }
            if t.waiting.len() >= MAX_IN_FLIGHT_PER_SOCKET {
                drop(t);
                // Our own limit, not the backend's fault.
                inc(&self.inner.stats.overloaded);
                return Err(Error::Upstream {
                    backend,
                    kind: FailureKind::Timeout,
                    retry: RetryType::Retry,
                    blame: false,
                });
            }
            let id = loop {
                let id: u16 = t.rng.gen();
                if !t.waiting.contains_key(&id) {
                    break id;
                }
            };
            let (tx, rx) = oneshot::channel();
            t.waiting.insert(
                id,
                Waiter {
                    question: question.clone(),
                    reply: tx,
                },
            );
            t.last_active = Instant::now();
            drop(t);
            sock.used.fetch_add(1, Ordering::Relaxed);
            break (sock, id, rx);
        };
        let _slot = Slot { sock: &sock, id };
        let mut msg = query.to_vec();
        rewrite_id(&mut msg, id);
        // Queued for the socket's task, which sends what the queries of one
        // scheduler round queued with one `sendmmsg`.
        let first = {
            let mut out = lock(&sock.out);
            out.push(msg);
            out.len() == 1
        };
        if first {
            sock.flush.notify_one();
        }
        match timeout_at(deadline, rx).await {
            Err(_) => Err(upstream(FailureKind::Timeout)),
            Ok(Err(_)) => Err(upstream(FailureKind::Closed)),
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(lost))) => Err(Error::Upstream {
                backend,
                kind: lost.kind,
                retry: lost.retry,
                blame: lost.blame,
            }),
        }
    }

    fn socket(&self, backend: SocketAddr, index: usize) -> io::Result<Arc<Sock>> {
        let mut map = lock(&self.inner.socks);
        if let Some(s) = map.get(&(backend, index)) {
            let worn = s.opened.elapsed() >= ROTATE_AFTER
                || s.used.load(Ordering::Relaxed) >= ROTATE_QUERIES;
            if !worn {
                return Ok(Arc::clone(s));
            }
            // Replaced: its task ends once its queries are answered.
            map.remove(&(backend, index));
        }
        let io = UdpSocket::from_std(crate::socket::connect_udp(backend)?)?;
        let sock = Arc::new(Sock {
            io,
            peer: backend,
            out: Mutex::new(Vec::new()),
            flush: Notify::new(),
            opened: Instant::now(),
            used: AtomicU64::new(0),
            table: Mutex::new(Table {
                waiting: HashMap::new(),
                rng: StdRng::from_entropy(),
                closed: false,
                last_active: Instant::now(),
            }),
        });
        map.insert((backend, index), Arc::clone(&sock));
        inc(&self.inner.stats.sockets_opened);
        tokio::spawn(run_socket(
            Arc::clone(&self.inner),
            (backend, index),
            Arc::clone(&sock),
        ));
        Ok(sock)
    }
}

/// Sends `msgs` to the socket's peer with as few `sendmmsg` calls as the
/// kernel allows, waiting for room when the send buffer is full.
async fn send_all(sock: &Sock, sender: &mut SendBatch, msgs: &[Vec<u8>]) -> io::Result<()> {
    let mut rest = msgs;
    while !rest.is_empty() {
        let chunk: smallvec::SmallVec<[(&[u8], Option<SocketAddr>); BATCH]> = rest
            .iter()
            .take(BATCH)
            .map(|m| (m.as_slice(), Some(sock.peer)))
            .collect();
        match sock
            .io
            .try_io(Interest::WRITABLE, || sender.send(&sock.io, &chunk))
        {
            Ok(n) => rest = rest.get(n.max(1)..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.io.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The task of one socket: sends queued queries in batches and hands
/// answers to their queries, until the socket has been idle for [`IDLE`].
async fn run_socket(shared: Arc<Shared>, key: (SocketAddr, usize), sock: Arc<Sock>) {
    let mut batch = RecvBatch::new(BATCH);
    let mut sender = SendBatch::new(BATCH);
    let mut sending = Vec::new();
    loop {
        let idle_at = lock(&sock.table).last_active + IDLE;
        // An ICMP error alone is no read readiness: ask for errors too.
        let ready = sock.io.ready(Interest::READABLE | Interest::ERROR);
        let got = tokio::select! {
            biased;
            () = sock.flush.notified() => {
                std::mem::swap(&mut *lock(&sock.out), &mut sending);
                let sent = send_all(&sock, &mut sender, &sending).await;
                sending.clear();
                if let Err(e) = sent {
                    debug!(backend = %key.0, error = %e, "udp upstream send failed");
                    if lost_socket(&shared, key, &sock, failure_kind(&e)) {
                        return;
                    }
                }
                continue;
            }
            r = timeout_at(idle_at, ready) => r,
        };
        let got = match got {
            Err(_) => {
                let mut map = lock(&shared.socks);
                let mut t = lock(&sock.table);
                if t.waiting.is_empty() && t.last_active + IDLE <= Instant::now() {
                    t.closed = true;
                    if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &sock)) {
                        map.remove(&key);
                    }
                    debug!(backend = %key.0, "idle udp upstream socket closed");
                    return;
                }
                continue;
            }
            Ok(Err(e)) => {
                // The reactor lost the socket: close it; the next query
                // opens a new one.
                debug!(backend = %key.0, error = %e, "udp upstream socket failed");
                let mut map = lock(&shared.socks);
                lock(&sock.table).closed = true;
                if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &sock)) {
                    map.remove(&key);
                }
                drop(map);
                fail_all(&sock, FailureKind::Closed);
                return;
            }
            // try_io clears the readiness it is given on WouldBlock; it
            // takes one interest at a time.
            Ok(Ok(r)) => {
                let interest = if r.is_readable() {
                    Interest::READABLE
                } else {
                    Interest::ERROR
                };
                sock.io.try_io(interest, || batch.recv(&sock.io))
            }
        };
        match got {
            Ok(_) => deliver(&shared.stats, &sock, &batch),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                debug!(backend = %key.0, error = %e, "udp upstream receive failed");
                if lost_socket(&shared, key, &sock, failure_kind(&e)) {
                    return;
                }
            }
        }
    }
}

/// Fails the queries waiting on a socket that reported an error. A refusal
/// (ICMP unreachable, maybe spoofed) closes the socket, and is one event:
/// see the module documentation. Returns whether the socket was closed.
fn lost_socket(
    shared: &Shared,
    key: (SocketAddr, usize),
    sock: &Arc<Sock>,
    kind: FailureKind,
) -> bool {
    if kind != FailureKind::Refused {
        fail_all(sock, kind);
        return false;
    }
    inc(&shared.stats.refused);
    {
        let mut map = lock(&shared.socks);
        lock(&sock.table).closed = true;
        if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, sock)) {
            map.remove(&key);
        }
    }
    fail_all(sock, kind);
    true
}

/// Hands each datagram of `batch` to the query waiting for it.
fn deliver(stats: &UdpUpstreamStats, sock: &Sock, batch: &RecvBatch) {
    let mut t = lock(&sock.table);
    t.last_active = Instant::now();
    for (i, r) in batch.received().iter().enumerate() {
        let Some(data) = batch.datagram(i) else {
            continue;
        };
        let reply = if r.truncated {
            // Too big for the slot: only the ID is usable.
            message_id(data).map(|id| (id, UdpReply::TooBig))
        } else {
            parse_answer(data).and_then(|a| {
                let ok = t
                    .waiting
                    .get(&a.id)
                    .is_some_and(|w| answer_matches(&a, &w.question));
                ok.then(|| (a.id, UdpReply::Answer(data.to_vec())))
            })
        };
        match reply.and_then(|(id, reply)| t.waiting.remove(&id).map(|w| (w, reply))) {
            // The query may have given up just now: nothing to do then.
            Some((w, reply)) => {
                let _ = w.reply.send(Ok(reply));
            }
            None => inc(&stats.unmatched),
        }
    }
}

/// Fails every query waiting on `sock`: after a refusal each is sent once
/// more to the same backend (on a new socket) and counts against it only
/// if refused again; after another error each counts and is retried
/// elsewhere.
fn fail_all(sock: &Sock, kind: FailureKind) {
    let mut t = lock(&sock.table);
    for (_, w) in t.waiting.drain() {
        let lost = if kind == FailureKind::Refused {
            Lost {
                kind,
                retry: RetryType::Resend,
                blame: false,
            }
        } else {
            Lost {
                kind,
                retry: RetryType::Retry,
                blame: true,
            }
        };
        let _ = w.reply.send(Err(lost));
    }
}

#[cfg(test)]
mod tests;
