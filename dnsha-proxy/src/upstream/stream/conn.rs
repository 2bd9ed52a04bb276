//! One pooled connection to a backend: a task that owns the socket (TCP,
//! or TLS for DoT), writes the queries handed to it under fresh random IDs,
//! and matches the answers read back by ID and question.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::FailureKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::{
    Reply, Request, TcpUpstreamSettings, TcpUpstreamStats, UpstreamTarget, OUT_HIGH_WATER,
};
use crate::metrics::inc;
use crate::upstream::dial::{connect, Connected};
use crate::wire::dns::{answer_matches, parse_answer};
use crate::wire::frame::FrameDecoder;
use hickory_proto::op::Query;

/// A query written on a connection, waiting for its answer.
struct Pending {
    question: Query,
    reply: oneshot::Sender<Reply>,
}

/// Why a connection task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Idle, or no handle left and nothing in flight.
    Done,
    /// The connection failed: in-flight queries get this kind.
    Failed(FailureKind),
}

pub(super) async fn run_connection(
    target: UpstreamTarget,
    mut rx: mpsc::Receiver<Request>,
    settings: TcpUpstreamSettings,
    stats: Arc<TcpUpstreamStats>,
) {
    let addr = target.addr;
    let connect_failure = match connect(&target, settings.connect_timeout, &stats).await {
        Ok(conn) => {
            debug!(backend = %addr, tls = target.tls.is_some(), "upstream connection open");
            let mut pending = HashMap::new();
            let end = match conn {
                Connected::Tcp(mut stream) => {
                    let ack = quickack_handle(&stream);
                    let (rd, wr) = stream.split();
                    let c = Conn {
                        addr,
                        ack: ack.as_ref(),
                    };
                    drive(rd, wr, c, &mut rx, &mut pending, &settings, &stats).await
                }
                Connected::Tls(stream) => {
                    let ack = quickack_handle(stream.get_ref().0);
                    let (rd, wr) = tokio::io::split(*stream);
                    let c = Conn {
                        addr,
                        ack: ack.as_ref(),
                    };
                    drive(rd, wr, c, &mut rx, &mut pending, &settings, &stats).await
                }
            };
            let kind = match end {
                End::Failed(kind) => kind,
                End::Done => FailureKind::Closed,
            };
            for (_, p) in pending.drain() {
                let _ = p.reply.send(Reply::Failed(kind, true));
            }
            debug!(backend = %addr, end = ?end, "upstream connection closed");
            None
        }
        Err(failure) => Some(failure),
    };
    rx.close();
    while let Ok(req) = rx.try_recv() {
        // Queued during a failed connect: the backend's fault. Queued on a
        // connection that just closed: never sent, try another connection.
        let reply = match connect_failure {
            Some((kind, blame)) => Reply::Failed(kind, blame),
            None => Reply::NotSent(req.frame),
        };
        let _ = req.reply.send(reply);
    }
    stats.connections_open.fetch_sub(1, Ordering::Relaxed);
}

/// What [`write_or_flush`] did.
pub(crate) enum Wrote {
    Bytes(usize),
    Flushed,
}

/// Writes from `buf`, or flushes when it is empty (TLS keeps records
/// buffered until flushed).
pub(crate) async fn write_or_flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &[u8],
) -> io::Result<Wrote> {
    if buf.is_empty() {
        wr.flush().await.map(|()| Wrote::Flushed)
    } else {
        wr.write(buf).await.map(Wrote::Bytes)
    }
}

/// How long an ACK owed on a busy connection waits for a query to carry it
/// (tokio's timers tick in milliseconds: it fires 1 to 2 ms later).
const ACK_DELAY: Duration = Duration::from_millis(1);

/// Queries in flight from which a connection counts as busy for its ACKs.
const BUSY: usize = 8;

/// An ACK owed to the backend, and when to send it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckOwed {
    No,
    /// After one runtime pass.
    ThisPass,
    /// When [`ACK_DELAY`] runs out.
    Delayed,
}

/// A second handle on a connection's socket, to set TCP_QUICKACK when an
/// ACK is owed and no query carries it.
///
/// Backends such as NSD write answers without TCP_NODELAY: with queries
/// pipelined, an answer written while the previous one is unacknowledged
/// waits (Nagle) for our ACK, which Linux delays up to 40 ms on a
/// request/response connection. Acknowledging at once removes the stall
/// (measured: 1.3 ms → 0.13 ms average at 30 000 queries/s over TCP).
///
/// The ACK is owed after a read that leaves answers pending, and a query
/// written on the connection carries it. TCP_QUICKACK, which sends it
/// alone, is set only when no query is written:
/// - with few queries in flight (under [`BUSY`]), by the time the runtime
///   has polled its sockets and run the tasks the answers woke (one
///   [`tokio::task::yield_now`]): the answer still held waits microseconds;
/// - on a busy connection, within [`ACK_DELAY`]: queries keep coming, every
///   ACK rides on one, and the backend's held answers leave together, one
///   segment for many.
///
/// Measured against a bare ACK after every read (about 10 % of the CPU of
/// the TCP path) and against the one-pass rule alone (a reactor turn per
/// read): `bench/RESULTS-ab-tcp-ack-delay.md`.
fn quickack_handle(stream: &TcpStream) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    stream.as_fd().try_clone_to_owned().ok()
}

/// What [`drive`] knows of its connection besides the stream halves.
struct Conn<'a> {
    addr: SocketAddr,
    ack: Option<&'a std::os::fd::OwnedFd>,
}

/// Runs an established connection until it fails or goes idle.
async fn drive<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    conn: Conn<'_>,
    rx: &mut mpsc::Receiver<Request>,
    pending: &mut HashMap<u16, Pending>,
    settings: &TcpUpstreamSettings,
    stats: &TcpUpstreamStats,
) -> End {
    let addr = conn.addr;
    let mut need_flush = false;
    let mut rng = StdRng::from_entropy();
    let mut decoder = FrameDecoder::new();
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0usize;
    let mut handles_gone = false;
    let mut ack_owed = AckOwed::No;
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    let ack_timer = tokio::time::sleep(ACK_DELAY);
    tokio::pin!(ack_timer);
    loop {
        let take = !handles_gone && out.len() - written < OUT_HIGH_WATER;
        tokio::select! {
            r = rd.read_buf(decoder.read_buf()) => match r {
                Ok(0) => return End::Failed(FailureKind::Closed),
                Ok(_) => {
                    while let Some(msg) = decoder.next_message() {
                        deliver(msg, addr, pending, stats);
                    }
                    let now = Instant::now();
                    // More answers to come: our ACK must not wait long (see
                    // `quickack_handle`).
                    if conn.ack.is_some() && !pending.is_empty() {
                        if pending.len() < BUSY {
                            ack_owed = AckOwed::ThisPass;
                        } else if ack_owed == AckOwed::No {
                            ack_owed = AckOwed::Delayed;
                            ack_timer.as_mut().reset(now + ACK_DELAY);
                        }
                    }
                    idle.as_mut().reset(now + settings.idle_timeout);
                }
                Err(e) => {
                    debug!(backend = %addr, error = %e, "upstream tcp read failed");
                    return End::Failed(FailureKind::Closed);
                }
            },
            r = write_or_flush(&mut wr, out.get(written..).unwrap_or_default()),
                if written < out.len() || need_flush => match r {
                Ok(Wrote::Bytes(0)) => return End::Failed(FailureKind::Closed),
                Ok(Wrote::Bytes(n)) => {
                    ack_owed = AckOwed::No;
                    written += n;
                    if written >= out.len() {
                        out.clear();
                        written = 0;
                        need_flush = true;
                    }
                }
                Ok(Wrote::Flushed) => need_flush = false,
                Err(e) => {
                    debug!(backend = %addr, error = %e, "upstream tcp write failed");
                    return End::Failed(FailureKind::Closed);
                }
            },
            req = rx.recv(), if take => match req {
                None => handles_gone = true,
                Some(req) => {
                    enqueue(req, &mut rng, pending, &mut out, settings);
                    // Take every request already waiting, so that they
                    // leave in one write rather than one write each.
                    while out.len() - written < OUT_HIGH_WATER {
                        match rx.try_recv() {
                            Ok(req) => enqueue(req, &mut rng, pending, &mut out, settings),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                handles_gone = true;
                                break;
                            }
                        }
                    }
                    idle.as_mut().reset(Instant::now() + settings.idle_timeout);
                }
            },
            () = tokio::task::yield_now(), if ack_owed == AckOwed::ThisPass => {
                ack_alone(&conn, written >= out.len() && !pending.is_empty());
                ack_owed = AckOwed::No;
            }
            () = &mut ack_timer, if ack_owed == AckOwed::Delayed => {
                ack_alone(&conn, written >= out.len() && !pending.is_empty());
                ack_owed = AckOwed::No;
            }
            () = &mut idle => {
                pending.retain(|_, p| !p.reply.is_closed());
                if pending.is_empty() && written >= out.len() {
                    return End::Done;
                }
                idle.as_mut().reset(Instant::now() + settings.idle_timeout);
            }
        }
        if handles_gone && written >= out.len() {
            pending.retain(|_, p| !p.reply.is_closed());
            if pending.is_empty() {
                return End::Done;
            }
        }
    }
}

/// Sends the ACK owed on the connection at once, unless a query about to
/// be written carries it (`needed` false).
fn ack_alone(conn: &Conn<'_>, needed: bool) {
    if let (true, Some(fd)) = (needed, conn.ack) {
        let _ = socket2::SockRef::from(fd).set_quickack(true);
    }
}

/// Gives `req` a fresh ID on the connection and appends its frame to
/// `out` (unless its caller gave up already).
fn enqueue(
    req: Request,
    rng: &mut StdRng,
    pending: &mut HashMap<u16, Pending>,
    out: &mut Vec<u8>,
    settings: &TcpUpstreamSettings,
) {
    if pending.len() >= settings.max_in_flight_per_connection {
        pending.retain(|_, p| !p.reply.is_closed());
    }
    if req.reply.is_closed() {
        return;
    }
    let Request {
        mut frame,
        question,
        reply,
    } = req;
    let id = fresh_id(rng, pending);
    if let Some(b) = frame.get_mut(2..4) {
        b.copy_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(&frame);
    pending.insert(id, Pending { question, reply });
}

/// A random ID not in use on the connection.
fn fresh_id(rng: &mut StdRng, pending: &HashMap<u16, Pending>) -> u16 {
    let mut id: u16 = rng.gen();
    let mut tries = 0;
    while pending.contains_key(&id) {
        tries += 1;
        id = if tries < 32 {
            rng.gen()
        } else {
            id.wrapping_add(1)
        };
    }
    id
}

/// Hands an answer to the query it belongs to, or drops and counts it.
fn deliver(
    msg: Vec<u8>,
    addr: SocketAddr,
    pending: &mut HashMap<u16, Pending>,
    stats: &TcpUpstreamStats,
) {
    let Some(info) = parse_answer(&msg) else {
        inc(&stats.unmatched);
        debug!(backend = %addr, len = msg.len(), "unparsable upstream tcp answer dropped");
        return;
    };
    match pending.get(&info.id) {
        Some(p) if answer_matches(&info, &p.question) => {
            if let Some(p) = pending.remove(&info.id) {
                // The caller may have timed out; then the answer is late.
                let _ = p.reply.send(Reply::Answer(msg));
            }
        }
        Some(_) => {
            inc(&stats.unmatched);
            debug!(backend = %addr, id = info.id, "upstream tcp answer with wrong question dropped");
        }
        None => {
            inc(&stats.unmatched);
            debug!(backend = %addr, id = info.id, "upstream tcp answer with unknown id dropped");
        }
    }
}
