//! The DNS-over-UDP frontend: a thin driver of the pipeline.
//!
//! One worker task per SO_REUSEPORT socket. A worker owns everything it
//! touches — its listener socket, its upstream sockets
//! ([`WorkerSockets`]) and its [`PendingTable`] of [`Flight`]s — so the data
//! path takes no lock. The loop reads backend answers and client queries
//! in batches (`recvmmsg`), feeds each event to the query's [`Flight`]
//! (admission, answer, timeout, refusal) and carries out the step it
//! returns: queue the query for a backend under a fresh random ID, answer
//! the client, or drop. Queries of a round leave in one `sendmmsg` per
//! upstream socket; the worker sleeps until the next deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use dnsha_core::config::Protocol;
use dnsha_core::{BackendId, FailureKind, Millis};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::io::Interest;

use super::ctx::ListenerCtx;
use super::udp_steer::WorkerSteer;
use crate::metrics::inc;
use crate::pipeline::cache::{self, Cached};
use crate::pipeline::{admit, Admission, Attempt, Failure, Flight, Next};
use crate::sys::{self, PktInfo, UdpReader};
use crate::upstream::failure_kind;
use crate::upstream::udp_sockets::WorkerSockets;
use crate::wire::dns::{self, DropReason};
use crate::wire::pending::{Key, PendingTable};

/// Most queries one worker keeps in flight; more are dropped and counted.
pub const MAX_PENDING_PER_WORKER: usize = 32_768;

/// Datagrams read by one recvmmsg.
const BATCH: usize = 32;
/// Batches a stopping worker still reads ([`Worker::read_left`]): a full
/// default receive buffer's worth of small queries, so a shutdown under
/// load is not held up by new arrivals.
const LEFT_BATCHES: usize = 64;

/// Batches read from one upstream socket before the next deadline check
/// (a socket buffer of 4 MB holds at most this many answers of ~100 bytes).
const MAX_BATCHES_PER_SOCKET: usize = 2048;

/// Longest sleep of an idle worker (it wakes, finds nothing due and sleeps
/// again); pool timeouts are normally longer, see `Worker::run`.
const IDLE_TICK_MS: u64 = 250;

/// Longest a worker with nothing in flight waits in the kernel for queries
/// before it looks at its timers and whether it must stop.
pub const LISTENER_WAIT: std::time::Duration = std::time::Duration::from_millis(IDLE_TICK_MS);

/// Drop upstream sockets of removed backends this often.
const GC_INTERVAL_MS: u64 = 10_000;

/// Most spare query buffers a worker keeps for reuse.
const SPARE_BUFFERS: usize = 4096;

/// Capacity of a fresh query buffer: a question with an OPT record and a
/// cookie is under 100 bytes, so most queries fit; a larger one grows the
/// buffer, which is kept grown. A full table of 32 768 pending queries then
/// holds about 4 MB of query bytes.
const QUERY_BUFFER: usize = 128;

/// A query in flight to a backend.
struct Pending {
    flight: Flight,
    pktinfo: Option<PktInfo>,
    /// When the current attempt runs out (a resend keeps it).
    deadline: Millis,
    /// The letters of the name whose case went flipped to the backend
    /// (the pool's `randomize_case`).
    case: Option<dns::CaseMask>,
    /// The query as it leaves for the backend: its ID is the upstream ID of
    /// the current attempt (the client's is in the flight). A reused buffer.
    query: Vec<u8>,
}

/// Serves one UDP listener socket until `ctx.stop` is cancelled, then drains
/// the queries in flight (each ends within the pool timeout × attempts).
pub async fn serve(
    ctx: Arc<ListenerCtx>,
    socket: UdpReader,
    pktinfo: bool,
    main: tokio::runtime::Handle,
    steer: WorkerSteer,
) {
    let mut w = Worker {
        ctx,
        steer,
        main,
        socket: Arc::new(socket),
        pktinfo,
        upstreams: WorkerSockets::new(),
        pending: PendingTable::new(MAX_PENDING_PER_WORKER),
        rng: StdRng::from_entropy(),
        spare: Vec::new(),
        sender: sys::SendBatch::new(BATCH),
        up_sender: sys::SendBatch::new(BATCH),
        failed: Vec::new(),
        next_gc: Millis::now().plus(GC_INTERVAL_MS),
    };
    w.run().await;
}

struct Worker {
    ctx: Arc<ListenerCtx>,
    /// The daemon's main runtime: stream tasks go there, not on the
    /// worker's own thread.
    main: tokio::runtime::Handle,
    socket: Arc<UdpReader>,
    pktinfo: bool,
    upstreams: WorkerSockets,
    pending: PendingTable<Pending>,
    rng: StdRng,
    /// Query buffers of finished queries, reused for new ones.
    spare: Vec<Vec<u8>>,
    /// Reused sendmmsg headers for answers.
    sender: sys::SendBatch,
    /// Reused sendmmsg headers for queries.
    up_sender: sys::SendBatch,
    /// Queries the kernel refused to send in the last flush (reused).
    failed: Vec<(Key, FailureKind)>,
    next_gc: Millis,
    /// This worker's part in steering queries to fewer workers.
    steer: WorkerSteer,
}

/// Buffers of the worker loop, allocated once.
struct Batches {
    client: sys::RecvBatch,
    upstream: sys::RecvBatch,
    slots: Vec<u32>,
    replies: Vec<(usize, SocketAddr, Option<PktInfo>)>,
}

impl Worker {
    async fn run(&mut self) {
        let mut b = Batches {
            client: sys::RecvBatch::new(BATCH),
            upstream: sys::RecvBatch::new(BATCH),
            slots: Vec::new(),
            replies: Vec::with_capacity(BATCH),
        };
        let mut stopping = false;
        // One timer for the worker's deadlines, moved as rarely as possible:
        // arming a timer earlier than the runtime's next wake-up costs a
        // wake-up of the runtime itself (an eventfd write), which on a busy
        // worker used to happen thousands of times a second.
        let timer = tokio::time::sleep_until(Millis::now().to_instant().into());
        tokio::pin!(timer);
        let mut armed = Millis::now();
        loop {
            // Nothing in flight (all answered, by backends or the cache):
            // wait for the next queries in the kernel, one system call, as
            // dnsdist's listener threads do; through the reactor it takes
            // two (epoll_wait, then recvmmsg). With queries in flight the
            // worker must also watch its upstream sockets: the reactor. The
            // wait ends after LISTENER_WAIT, for the timers and a stop.
            if !stopping && self.pending.is_empty() && !self.upstreams.has_queued() {
                let r = b.client.recv_wait(self.socket.get_ref());
                let now = Millis::now();
                if let Ok(n) = r {
                    self.steer.on_receive(n, BATCH);
                    self.on_queries(&mut b.client, n, &mut b.replies, now);
                    self.flush_upstream(now);
                    self.on_timer(now);
                }
                self.steer.tick(now, self.socket.get_ref(), false);
                if r.is_ok() {
                    continue;
                }
            }
            // Drain what is ready without going back to the reactor: one
            // wake-up serves batches of datagrams, each read by one recvmmsg.
            for _ in 0..16 {
                if !self.round(&mut b, stopping) {
                    break;
                }
            }
            self.steer
                .tick(Millis::now(), self.socket.get_ref(), stopping);
            if stopping && self.pending.is_empty() {
                break;
            }

            let now = Millis::now();
            // Never further than IDLE_TICK: a new query's deadline (now +
            // its pool timeout) is then rarely earlier than the armed one, so
            // the timer is re-armed only after it fires.
            let deadline = self
                .pending
                .next_deadline()
                .map_or(self.next_gc, |d| d.min(self.next_gc))
                .min(now.plus(IDLE_TICK_MS));
            if timer.is_elapsed() || deadline < armed {
                timer.as_mut().reset(deadline.to_instant().into());
                armed = deadline;
            }
            let upstreams = &self.upstreams;
            let upstream_ready = std::future::poll_fn(move |cx| {
                if upstreams.poll_any_ready(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            tokio::select! {
                biased;
                () = upstream_ready => {}
                r = self.socket.readable(), if !stopping => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "udp readiness error");
                    }
                }
                () = &mut timer => {}
                () = self.ctx.stop.cancelled(), if !stopping => {
                    stopping = true;
                    self.read_left(&mut b);
                }
            }
        }
    }

    /// On a stop, the queries already queued in the socket are read and
    /// served, at most [`LEFT_BATCHES`] batches: a reload took the socket
    /// out of its reuseport group before stopping it
    /// ([`crate::sys::leave_reuseport_group`]), so nothing new arrives and
    /// these would be lost.
    fn read_left(&mut self, b: &mut Batches) {
        let now = Millis::now();
        for _ in 0..LEFT_BATCHES {
            if !self.read_queries(&mut b.client, &mut b.replies, now) {
                break;
            }
        }
        self.flush_upstream(now);
    }

    /// One round: every backend answer ready, one batch of client queries
    /// (unless stopping), the deadlines due, and the queries queued for
    /// backends sent. True when anything was read.
    fn round(&mut self, b: &mut Batches, stopping: bool) -> bool {
        let now = Millis::now();
        // Answers first, and all of them, before any deadline is checked:
        // after a stall (the process not scheduled for a while) answers
        // waiting in the socket buffers must not be counted as backend
        // timeouts.
        let mut progressed = self.read_answers(b, now);
        if !stopping {
            progressed |= self.read_queries(&mut b.client, &mut b.replies, now);
        }
        self.on_timer(now);
        self.flush_upstream(now);
        progressed
    }

    fn read_answers(&mut self, b: &mut Batches, now: Millis) -> bool {
        let mut progressed = false;
        self.upstreams.slots(&mut b.slots);
        for i in 0..b.slots.len() {
            let Some(&slot) = b.slots.get(i) else {
                break;
            };
            for _ in 0..MAX_BATCHES_PER_SOCKET {
                let Some(sock) = self.upstreams.socket(slot) else {
                    break;
                };
                match recv_ready(sock, &mut b.upstream) {
                    Ok(n) => {
                        progressed = true;
                        b.replies.clear();
                        for i in 0..n {
                            // Cut to the receive slot: only the header and
                            // question are usable.
                            let cut = b.upstream.received().get(i).is_some_and(|r| r.truncated);
                            if let Some(a) = b.upstream.datagram_mut(i) {
                                if let Some((to, info)) = self.on_answer(slot, a, cut, now) {
                                    b.replies.push((i, to, info));
                                }
                            }
                        }
                        self.send_replies(&b.upstream, &b.replies);
                        if n < BATCH {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.on_upstream_error(slot, &e, now);
                        break;
                    }
                }
            }
        }
        progressed
    }

    /// Reads a batch of client queries; those the cache answers get their
    /// answer written over them in the batch, sent together at the end
    /// (`hits` is reused).
    fn read_queries(
        &mut self,
        batch: &mut sys::RecvBatch,
        hits: &mut Vec<(usize, SocketAddr, Option<PktInfo>)>,
        now: Millis,
    ) -> bool {
        match recv_ready(&self.socket, batch) {
            Ok(n) => {
                self.steer.on_receive(n, BATCH);
                self.on_queries(batch, n, hits, now);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                tracing::debug!(listener = %self.ctx.metrics.name, error = %e, "udp receive error");
                false
            }
        }
    }

    /// The `n` client queries just read into `batch`; those the cache
    /// answers get their answer written over them in the batch, sent
    /// together at the end (`hits` is reused).
    fn on_queries(
        &mut self,
        batch: &mut sys::RecvBatch,
        n: usize,
        hits: &mut Vec<(usize, SocketAddr, Option<PktInfo>)>,
        now: Millis,
    ) {
        hits.clear();
        for i in 0..n {
            let Some(&d) = batch.received().get(i) else {
                break;
            };
            if d.truncated {
                self.ctx.metrics.dropped(DropReason::Malformed);
                continue;
            }
            if let Some(slot) = batch.slot_mut(i) {
                if let Some(len) = self.on_client(slot, d.len, d.src, d.info, now) {
                    batch.set_len(i, len);
                    hits.push((i, d.src, d.info));
                }
            }
        }
        self.send_replies(batch, hits);
    }

    /// A client's query, the first `len` bytes of its batch `slot`. When
    /// the pool's cache answers it, the answer is written over it in the
    /// slot and its length returned, for the caller to send.
    fn on_client(
        &mut self,
        slot: &mut [u8],
        len: usize,
        src: SocketAddr,
        info: Option<PktInfo>,
        now: Millis,
    ) -> Option<usize> {
        let shared = self.ctx.shared.load();
        let m = &*self.ctx.metrics;
        let query = slot.get(..len)?;
        let admitted = match admit(&shared, m, src.ip(), Protocol::Udp, query) {
            Admission::Forward(a) => a,
            Admission::Reply(bytes, _) => {
                self.try_send_client(&bytes, src, info);
                return None;
            }
            Admission::Drop(_) => return None,
        };
        // Pools with tcp/dot backends: balanced over streams (the cache
        // step is in `forward` there).
        let target = Arc::clone(&admitted.target);
        if let Some((up, slots)) = target.routes.udp_via_stream() {
            let (ctx, sock) = (&self.ctx, &self.socket);
            super::udp_stream::spawn(
                ctx,
                sock,
                self.pktinfo,
                up,
                slots,
                query,
                admitted,
                src,
                info,
                &self.main,
            );
            return None;
        }
        let key = match cache::lookup_in_place(&shared, m, src, &admitted, slot, len, now) {
            Ok(answered) => return Some(answered),
            Err(Cached::Truncated(tc)) => {
                self.try_send_client(&tc, src, info);
                return None;
            }
            Err(Cached::Miss(key)) => key,
        };
        let query = slot.get(..len)?;
        let mut flight = Flight::new(src, Protocol::Udp, admitted, now).with_cache_key(key);
        let next = flight.start(&shared, m, now);
        drop(shared);
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(query.len().max(QUERY_BUFFER));
        buf.extend_from_slice(query);
        let p = Pending {
            flight,
            pktinfo: info,
            deadline: now,
            case: None,
            query: buf,
        };
        self.carry_out(p, next, now);
        None
    }

    /// Carries out the pipeline's step for `p`: queue it for a backend, or
    /// answer the client, or drop it.
    fn carry_out(&mut self, mut p: Pending, mut next: Next, now: Millis) {
        loop {
            // A resend keeps the deadline of the attempt it repeats, and
            // goes out on a socket opened for it.
            let fresh = matches!(next, Next::Send(_));
            match next {
                Next::Reply(bytes) => {
                    self.try_send_client(&bytes, p.flight.client(), p.pktinfo);
                    self.recycle(p.query);
                    return;
                }
                Next::Drop => {
                    self.recycle(p.query);
                    return;
                }
                Next::Send(a) | Next::Resend(a) => {
                    if fresh {
                        p.deadline = now.plus(a.timeout_ms);
                    }
                    match self.enqueue(p, &a, !fresh, now) {
                        None => return,
                        Some(back) => {
                            // No socket to the backend (out of descriptors or
                            // ports here): not the backend's fault; the next
                            // one is tried.
                            p = back;
                            let shared = self.ctx.shared.load();
                            let failure = Failure {
                                blame: false,
                                ..Failure::retry(FailureKind::Refused)
                            };
                            next = p.flight.failed(&shared, &self.ctx.metrics, failure, now);
                        }
                    }
                }
            }
        }
    }

    /// Enters `p` in the pending table under a fresh random ID on an
    /// upstream socket of the attempt's backend and queues it to leave with
    /// the other queries of that socket when the round ends
    /// ([`Self::flush_upstream`]); a `resend` goes on a socket opened for
    /// it. Gives `p` back when no socket could be opened.
    fn enqueue(&mut self, p: Pending, a: &Attempt, resend: bool, now: Millis) -> Option<Pending> {
        let slot = if resend {
            self.upstreams
                .fresh_slot_for(&a.backend, a.udp_sockets, now)
        } else {
            self.upstreams.slot_for(&a.backend, a.udp_sockets, now)
        };
        let slot = match slot {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(backend = %a.backend.name(), error = %e, "cannot open upstream socket");
                return Some(p);
            }
        };
        if self.pending.is_full() {
            if let Some((_, old)) = self.pending.evict_oldest() {
                // The oldest query gives way (a flood of unanswered queries
                // must not lock out the ones backends answer); counted.
                self.ctx.metrics.dropped(DropReason::Overload);
                self.recycle(old.query);
            }
        }
        let deadline = p.deadline;
        match self.pending.insert(slot, p, deadline, &mut self.rng) {
            Ok(id) => {
                if let Some(q) = self.pending.get_mut((slot, id)) {
                    dns::rewrite_id(&mut q.query, id);
                    if a.randomize_case && q.case.is_none() {
                        q.case = dns::randomize_case(&mut q.query, &mut self.rng);
                    }
                }
                self.upstreams.queue(slot, id);
            }
            Err(p) => {
                self.ctx.metrics.dropped(DropReason::Overload);
                self.recycle(p.query);
            }
        }
        None
    }

    /// Sends every queued query: one sendmmsg per upstream socket. A query
    /// the kernel refuses is counted against its backend and tried on the
    /// next one (queued again, sent in the next pass of this loop).
    fn flush_upstream(&mut self, now: Millis) {
        let mut failed = std::mem::take(&mut self.failed);
        while self.upstreams.has_queued() {
            self.upstreams.flush(
                &mut self.up_sender,
                &self.pending,
                |p: &Pending| &p.query,
                &mut failed,
            );
            for (key, kind) in failed.drain(..) {
                if kind == FailureKind::Refused {
                    // An ICMP refusal reported on send: the backend's port is
                    // closed, every query pending on the socket is lost.
                    self.retry_slot(key.0, now);
                } else if let Some(p) = self.pending.remove(key) {
                    self.on_failure(p, Failure::retry(kind), now);
                }
            }
        }
        self.failed = failed;
    }

    /// Keeps a finished query's buffer for the next query.
    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() <= dns::MAX_MESSAGE {
            self.spare.push(buf);
        }
    }

    /// Feeds a failed attempt to the query's flight and carries out its
    /// next step.
    fn on_failure(&mut self, mut p: Pending, failure: Failure, now: Millis) {
        let shared = self.ctx.shared.load();
        let next = p.flight.failed(&shared, &self.ctx.metrics, failure, now);
        drop(shared);
        self.carry_out(p, next, now);
    }

    /// Matches a backend answer; when it belongs to a pending query, the
    /// query's flight takes it (the client's ID is written back in place)
    /// and the caller sends it to the returned address. An answer `cut` to
    /// the receive buffer, or larger than the listener's `max_udp_size`, is
    /// never relayed: the client gets an empty answer with TC=1 instead.
    fn on_answer(
        &mut self,
        slot: u32,
        answer: &mut [u8],
        cut: bool,
        now: Millis,
    ) -> Option<(SocketAddr, Option<PktInfo>)> {
        let m = &*self.ctx.metrics;
        let Some(ai) = dns::parse_answer(answer) else {
            m.dropped(DropReason::UnmatchedAnswer);
            return None;
        };
        let key: Key = (slot, ai.id);
        let checked = self.pending.get(key).map(|p| {
            p.flight.check_answer(&ai).and_then(|()| match p.case {
                // 0x20: the name must come back in the case it was sent.
                Some(_) if !dns::same_name_case(&p.query, answer) => Err(DropReason::WrongQuestion),
                _ => Ok(()),
            })
        });
        match checked {
            None => {
                m.dropped(DropReason::UnmatchedAnswer);
                return None;
            }
            Some(Err(reason)) => {
                m.dropped(reason);
                return None;
            }
            Some(Ok(())) => {}
        }
        let mut p = self.pending.remove(key)?;
        if let Some(mask) = &p.case {
            dns::restore_case(answer, mask);
        }
        let shared = self.ctx.shared.load();
        p.flight.answered(&shared, m, answer, ai.rcode, now);
        let cap = shared.config.max_udp_size;
        drop(shared);
        let to = (p.flight.client(), p.pktinfo);
        if cut || answer.len() > cap {
            // Larger than this listener sends over UDP, whatever size the
            // client claims: no amplification, the client asks over TCP.
            inc(&m.udp_truncated);
            self.try_send_client(&dns::truncated(p.flight.info()), to.0, to.1);
            self.recycle(p.query);
            return None;
        }
        self.recycle(p.query);
        Some(to)
    }

    fn on_upstream_error(&mut self, slot: u32, e: &io::Error, now: Millis) {
        let kind = failure_kind(e);
        if kind != FailureKind::Refused {
            tracing::debug!(error = %e, "upstream receive error");
            return;
        }
        // ICMP port unreachable: every query pending on this socket is lost.
        self.retry_slot(slot, now);
    }

    /// The socket `slot` reported a refusal (ICMP port unreachable, which an
    /// outsider can spoof). The socket is closed (its source port with it);
    /// each of its queries is sent once more to the same backend on a new
    /// socket while that backend is up, and counts against the backend only
    /// if that resend is refused too.
    fn retry_slot(&mut self, slot: u32, now: Millis) {
        self.upstreams.close(slot);
        for (_, p) in self.pending.drain_slot(slot) {
            self.on_failure(p, Failure::refused_socket(), now);
        }
    }

    fn on_timer(&mut self, now: Millis) {
        while let Some((_, p)) = self.pending.pop_expired(now) {
            self.on_failure(p, Failure::retry(FailureKind::Timeout), now);
        }
        let pending = &self.pending;
        self.upstreams
            .close_retired(|slot| pending.slot_len(slot) > 0);
        if now >= self.next_gc {
            self.next_gc = now.plus(GC_INTERVAL_MS);
            // The backends of the listener's pool and of the pools its
            // rules route to.
            let shared = self.ctx.shared.load();
            let mut live: Vec<BackendId> = Vec::new();
            for pool in std::iter::once(&shared.target).chain(shared.rules.targets()) {
                pool.pool
                    .with_snapshot(|s| live.extend(s.backends().iter().map(|b| b.id())));
            }
            let pending = &self.pending;
            self.upstreams.gc(&live, |slot| pending.slot_len(slot) > 0);
        }
    }

    /// Sends the answers of a batch: one sendmmsg when the listener has a
    /// fixed address, one sendmsg each (with its source address) otherwise.
    fn send_replies(
        &mut self,
        batch: &sys::RecvBatch,
        replies: &[(usize, SocketAddr, Option<PktInfo>)],
    ) {
        if replies.is_empty() {
            return;
        }
        // One answer (the usual case below saturation) or a wildcard
        // listener (each answer leaves from its own source address): one
        // sendmsg each, which also spares building batch headers.
        if self.pktinfo || replies.len() == 1 {
            for &(i, to, info) in replies {
                if let Some(bytes) = batch.datagram(i) {
                    self.try_send_client(bytes, to, info);
                }
            }
            return;
        }
        let msgs: Msgs<'_> = replies
            .iter()
            .filter_map(|&(i, to, _)| batch.datagram(i).map(|b| (b, Some(to))))
            .collect();
        match self.sender.send(&*self.socket, &msgs) {
            Ok(sent) if sent == msgs.len() => {}
            Ok(sent) => {
                // The socket buffer filled up: send the rest one by one.
                for &(bytes, to) in msgs.get(sent..).unwrap_or_default() {
                    if let Some(to) = to {
                        self.try_send_client(bytes, to, None);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp sendmmsg failed");
                for &(bytes, to) in &msgs {
                    if let Some(to) = to {
                        self.try_send_client(bytes, to, None);
                    }
                }
            }
        }
    }

    /// Sends without waiting. The syscall is made directly on the
    /// non-blocking socket: the worker never waits for writability, so it
    /// does not go through the reactor's readiness (which a socket created in
    /// this turn would not have yet). A full socket buffer drops the
    /// datagram, as the kernel would, and it is counted.
    fn try_send_client(&self, bytes: &[u8], to: SocketAddr, info: Option<PktInfo>) {
        let from = info.map(|i| PktInfo { ifindex: 0, ..i });
        let r = if self.pktinfo {
            sys::send_with_pktinfo(&self.socket, bytes, to, from)
        } else {
            sys::send_to(self.socket.get_ref(), bytes, to)
        };
        if let Err(e) = r {
            self.ctx.metrics.dropped(DropReason::Overload);
            tracing::debug!(client = %to, error = %e, "udp send to client failed");
        }
    }
}

/// Datagrams of one sendmmsg, on the stack.
type Msgs<'a> = smallvec::SmallVec<[(&'a [u8], Option<SocketAddr>); BATCH]>;

/// Reads one batch from `sock` when the reactor has seen it readable
/// (WouldBlock when not). A short batch means the socket's queue is empty:
/// the closure then reports WouldBlock to tokio, which clears the socket's
/// readiness (race-free: only the readiness seen before the read), so the
/// worker waits for the reactor's next event instead of spending a recvmmsg
/// that would only return EAGAIN. The datagrams read are returned all the
/// same.
fn recv_ready(sock: &UdpReader, batch: &mut sys::RecvBatch) -> io::Result<usize> {
    let mut got = 0;
    let r = sock.try_io(Interest::READABLE, |s| {
        got = batch.recv(s)?;
        if got < BATCH {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}
