//! The DNS-over-UDP frontend.
//!
//! One worker task per SO_REUSEPORT socket. A worker owns everything it
//! touches — its listener socket, one connected upstream socket per backend
//! (a kernel-chosen random port; being connected it only hears from that
//! backend and learns of ICMP refusals) and its [`PendingTable`] — so the data
//! path takes no lock. The loop reads client queries and backend answers,
//! sleeps until the next deadline, and feeds everything through the pure
//! helpers of [`crate::dns`] and [`crate::pending`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::SystemTime;

use dnsha_core::{Backend, BackendId, FailureKind, InFlight, Millis, OnNoBackend, Transition};
use hickory_proto::op::{Query, ResponseCode};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::accesslog::LogRecord;
use crate::ctx::ListenerCtx;
use crate::dns::{self, DropReason, QueryInfo, Verdict};
use crate::metrics::inc;
use crate::pending::{Key, PendingTable};
use crate::sys::{self, PktInfo};

/// Most queries one worker keeps in flight; more are dropped and counted.
pub const MAX_PENDING_PER_WORKER: usize = 32_768;

/// Datagrams read by one recvmmsg.
const BATCH: usize = 32;

/// Batches read from one upstream socket before the next deadline check
/// (a socket buffer of 4 MB holds at most this many answers of ~100 bytes).
const MAX_BATCHES_PER_SOCKET: usize = 2048;

/// Longest sleep of an idle worker (it wakes, finds nothing due and sleeps
/// again); pool timeouts are normally longer, see `Worker::run`.
const IDLE_TICK_MS: u64 = 250;

/// Drop upstream sockets of removed backends this often.
const GC_INTERVAL_MS: u64 = 10_000;

/// Most spare query buffers a worker keeps for reuse.
const SPARE_BUFFERS: usize = 4096;

/// Capacity of a fresh query buffer: a question with an OPT record and a
/// cookie is under 100 bytes, so most queries fit; a larger one grows the
/// buffer, which is kept grown. A full table of 32 768 pending queries then
/// holds about 4 MB of query bytes.
const QUERY_BUFFER: usize = 128;

struct Upstream {
    sock: UdpSocket,
    /// Upstream IDs of queries waiting to leave on this socket at the end of
    /// the round (one sendmmsg for all of them).
    outbox: Vec<u16>,
}

/// Backends a query has tried (inline: no allocation for the usual 1–4).
type Tried = smallvec::SmallVec<[BackendId; 4]>;

struct Pending {
    client: SocketAddr,
    pktinfo: Option<PktInfo>,
    info: QueryInfo,
    /// The query as it leaves for the backend: its ID is the upstream ID of
    /// the current attempt (the client's is in `info`). A reused buffer.
    query: Vec<u8>,
    tried: Tried,
    inflight: InFlight,
    received: Millis,
}

/// Serves one UDP listener socket until `ctx.stop` is cancelled, then drains
/// the queries in flight (each ends within the pool timeout × attempts).
pub async fn serve(
    ctx: Arc<ListenerCtx>,
    socket: UdpSocket,
    pktinfo: bool,
    main: tokio::runtime::Handle,
) {
    let mut w = Worker {
        ctx,
        main,
        socket: Arc::new(socket),
        pktinfo,
        upstreams: HashMap::new(),
        slots: HashMap::new(),
        next_port: 0,
        next_slot: 0,
        pending: PendingTable::new(MAX_PENDING_PER_WORKER),
        rng: StdRng::from_entropy(),
        spare: Vec::new(),
        sender: sys::SendBatch::new(BATCH),
        dirty: Vec::new(),
        dirty_spare: Vec::new(),
        next_gc: Millis::now().plus(GC_INTERVAL_MS),
    };
    w.run().await;
}

struct Worker {
    ctx: Arc<ListenerCtx>,
    /// The daemon's main runtime: stream tasks go there, not on the
    /// worker's own thread.
    main: tokio::runtime::Handle,
    socket: Arc<UdpSocket>,
    pktinfo: bool,
    upstreams: HashMap<u32, Upstream>,
    slots: HashMap<BackendId, Vec<u32>>,
    next_port: usize,
    next_slot: u32,
    pending: PendingTable<Pending>,
    rng: StdRng,
    /// Query buffers of finished queries, reused for new ones.
    spare: Vec<Vec<u8>>,
    /// Reused sendmmsg headers.
    sender: sys::SendBatch,
    /// Upstream slots with queries in their outbox.
    dirty: Vec<u32>,
    dirty_spare: Vec<u32>,
    next_gc: Millis,
}

impl Worker {
    async fn run(&mut self) {
        let mut client_batch = sys::RecvBatch::new(BATCH);
        let mut up_batch = sys::RecvBatch::new(BATCH);
        let mut slots: Vec<u32> = Vec::new();
        let mut replies: Vec<(usize, SocketAddr, Option<PktInfo>)> = Vec::with_capacity(BATCH);
        let mut stopping = false;
        // One timer for the worker's deadlines, moved as rarely as possible:
        // arming a timer earlier than the runtime's next wake-up costs a
        // wake-up of the runtime itself (an eventfd write), which on a busy
        // worker used to happen thousands of times a second.
        let timer = tokio::time::sleep_until(Millis::now().to_instant().into());
        tokio::pin!(timer);
        let mut armed = Millis::now();
        loop {
            // Drain what is ready without going back to the reactor: one
            // wake-up serves batches of datagrams, each read by one recvmmsg.
            let mut rounds = 0;
            loop {
                let mut progressed = false;
                let now = Millis::now();
                slots.clear();
                slots.extend(self.upstreams.keys().copied());
                // Answers first, and all of them, before any deadline is
                // checked: after a stall (the process not scheduled for a
                // while) answers waiting in the socket buffers must not be
                // counted as backend timeouts.
                for &slot in &slots {
                    for _ in 0..MAX_BATCHES_PER_SOCKET {
                        let Some(u) = self.upstreams.get(&slot) else {
                            break;
                        };
                        match recv_ready(&u.sock, &mut up_batch) {
                            Ok(n) => {
                                progressed = true;
                                replies.clear();
                                for i in 0..n {
                                    if let Some(a) = up_batch.datagram_mut(i) {
                                        if let Some((to, info)) = self.on_answer(slot, a) {
                                            replies.push((i, to, info));
                                        }
                                    }
                                }
                                self.send_replies(&up_batch, &replies);
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
                if !stopping {
                    match recv_ready(&self.socket, &mut client_batch) {
                        Ok(n) => {
                            progressed = true;
                            for i in 0..n {
                                let Some(&d) = client_batch.received().get(i) else {
                                    break;
                                };
                                if d.truncated {
                                    self.ctx.metrics.dropped(DropReason::Malformed);
                                    continue;
                                }
                                if let Some(q) = client_batch.datagram_mut(i) {
                                    self.on_client(q, d.src, d.info, now);
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            tracing::debug!(listener = %self.ctx.metrics.name, error = %e, "udp receive error");
                        }
                    }
                }
                self.on_timer(now);
                self.flush_upstream(now);
                rounds += 1;
                if !progressed || rounds >= 16 {
                    break;
                }
            }
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
            let socket = &self.socket;
            let upstreams = &self.upstreams;
            let stop = &self.ctx.stop;
            let upstream_ready = std::future::poll_fn(move |cx| {
                let mut ready = false;
                for u in upstreams.values() {
                    if u.sock.poll_recv_ready(cx).is_ready() {
                        ready = true;
                    }
                }
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            tokio::select! {
                biased;
                () = upstream_ready => {}
                r = socket.readable(), if !stopping => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "udp readiness error");
                    }
                }
                () = &mut timer => {}
                () = stop.cancelled(), if !stopping => stopping = true,
            }
        }
    }

    fn on_client(&mut self, query: &[u8], src: SocketAddr, info: Option<PktInfo>, now: Millis) {
        let shared = self.ctx.shared.load();
        let m = &self.ctx.metrics;
        if !shared.acl.allows(src.ip()) {
            m.dropped(DropReason::Acl);
            return;
        }
        match dns::classify_query(query) {
            Verdict::Drop(reason) => m.dropped(reason),
            Verdict::Reply(bytes, reason) => {
                m.dropped(reason);
                self.try_send_client(&bytes, src, info);
            }
            Verdict::Forward(qi) => {
                inc(&m.queries);
                // Pools with tcp/dot backends: balanced over streams.
                if let Some((up, slots)) = shared.routes.udp_via_stream() {
                    let (ctx, sock) = (&self.ctx, &self.socket);
                    let pktinfo = self.pktinfo;
                    crate::udp_stream::spawn(
                        ctx, sock, pktinfo, up, slots, query, qi, src, info, &self.main,
                    );
                    return;
                }
                let Some(first) = shared.pool.with_snapshot(|s| s.pick(&[], now)) else {
                    drop(shared);
                    self.no_backend_first(qi, src, info, now);
                    return;
                };
                let mut buf = self.spare.pop().unwrap_or_default();
                buf.clear();
                buf.reserve(query.len().max(QUERY_BUFFER));
                buf.extend_from_slice(query);
                let p = Pending {
                    client: src,
                    pktinfo: info,
                    info: qi,
                    query: buf,
                    tried: Tried::new(),
                    inflight: first,
                    received: now,
                };
                drop(shared);
                self.send_upstream(p, now);
            }
        }
    }

    /// Queues `p` for the backend held by `p.inflight`: it enters the pending
    /// table under a fresh random ID and leaves with the other queries of
    /// its upstream socket when the round ends ([`Self::flush_upstream`]).
    fn send_upstream(&mut self, mut p: Pending, now: Millis) {
        loop {
            let backend = Arc::clone(p.inflight.backend());
            p.tried.push(backend.id());
            let (timeout, ports) = self.ctx.shared.load().pool.with_snapshot(|s| {
                let s = s.settings();
                (s.timeout_ms, s.udp_sockets_per_backend)
            });
            let slot = match self.slot_for(&backend, ports) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(backend = %backend.name(), error = %e, "cannot open upstream socket");
                    match self.next_attempt(p, FailureKind::Refused, now) {
                        Some(next) => {
                            p = next;
                            continue;
                        }
                        None => return,
                    }
                }
            };
            let deadline = now.plus(timeout);
            if self.pending.is_full() {
                if let Some((_, old)) = self.pending.evict_oldest() {
                    // The oldest query gives way (a flood of unanswered
                    // queries must not lock out the ones backends answer);
                    // counted.
                    self.ctx.metrics.dropped(DropReason::Overload);
                    self.recycle(old.query);
                }
            }
            let id = match self.pending.insert(slot, p, deadline, &mut self.rng) {
                Ok(id) => id,
                Err(p) => {
                    self.ctx.metrics.dropped(DropReason::Overload);
                    self.recycle(p.query);
                    return;
                }
            };
            if let Some(q) = self.pending.get_mut((slot, id)) {
                dns::rewrite_id(&mut q.query, id);
            }
            if let Some(u) = self.upstreams.get_mut(&slot) {
                if u.outbox.is_empty() {
                    self.dirty.push(slot);
                }
                u.outbox.push(id);
            }
            return;
        }
    }

    /// Sends every queued query: one sendmmsg per upstream socket. A query
    /// the kernel refuses is counted against its backend and tried on the
    /// next one (queued again, sent in the next pass of this loop).
    fn flush_upstream(&mut self, now: Millis) {
        let mut failed: Vec<(Key, FailureKind)> = Vec::new();
        while !self.dirty.is_empty() {
            let mut dirty =
                std::mem::replace(&mut self.dirty, std::mem::take(&mut self.dirty_spare));
            for &slot in &dirty {
                let Some(u) = self.upstreams.get_mut(&slot) else {
                    continue;
                };
                let mut ids = std::mem::take(&mut u.outbox);
                // A query evicted since it was queued is not sent.
                ids.retain(|&id| self.pending.get((slot, id)).is_some());
                if let Some(u) = self.upstreams.get(&slot) {
                    send_queued(
                        &u.sock,
                        &mut self.sender,
                        &self.pending,
                        slot,
                        &ids,
                        &mut failed,
                    );
                }
                ids.clear();
                if let Some(u) = self.upstreams.get_mut(&slot) {
                    if u.outbox.is_empty() {
                        u.outbox = ids;
                    }
                }
            }
            dirty.clear();
            self.dirty_spare = dirty;
            for (key, kind) in failed.drain(..) {
                if kind == FailureKind::Refused {
                    // An ICMP refusal reported on send: the backend's port is
                    // closed, every query pending on the socket is lost.
                    self.retry_slot(key.0, now);
                    continue;
                }
                let Some(p) = self.pending.remove(key) else {
                    continue;
                };
                if let Some(next) = self.next_attempt(p, kind, now) {
                    self.send_upstream(next, now);
                }
            }
        }
    }

    /// Keeps a finished query's buffer for the next query.
    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() <= dns::MAX_MESSAGE {
            self.spare.push(buf);
        }
    }

    /// Records a failed attempt; returns the query ready for its next attempt
    /// (with a new backend picked), or answers/drops it when none is left.
    fn next_attempt(&mut self, mut p: Pending, kind: FailureKind, now: Millis) -> Option<Pending> {
        let shared = self.ctx.shared.load();
        let backend = Arc::clone(p.inflight.backend());
        if kind == FailureKind::Timeout {
            inc(&self.ctx.metrics.timeouts);
        }
        if shared.pool.record_failure(&backend, kind, now) == Some(Transition::Down) {
            tracing::warn!(
                pool = %shared.pool.name(),
                backend = %backend.name(),
                reason = kind.as_str(),
                failures = backend.consecutive_failures(),
                "backend down: consecutive failures"
            );
        }
        let snapshot = shared.pool.snapshot();
        let attempts = p.tried.len();
        if attempts <= snapshot.settings().retries as usize {
            if let Some(next) = snapshot.pick(&p.tried, now) {
                inc(&self.ctx.metrics.retries);
                p.inflight = next;
                return Some(p);
            }
        }
        let on_no_backend = snapshot.settings().on_no_backend;
        drop(shared);
        self.give_up(p, on_no_backend);
        None
    }

    fn give_up(&mut self, p: Pending, on_no_backend: OnNoBackend) {
        let backend = Some(p.inflight.backend().address());
        let bytes = match on_no_backend {
            OnNoBackend::Servfail => {
                inc(&self.ctx.metrics.servfail);
                Some(dns::synth_reply(&p.info, ResponseCode::ServFail))
            }
            OnNoBackend::Drop => {
                self.ctx.metrics.dropped(DropReason::NoBackend);
                None
            }
        };
        self.log(
            &p.info.question,
            p.client,
            backend,
            bytes.as_deref(),
            p.received,
        );
        if let Some(b) = bytes {
            self.try_send_client(&b, p.client, p.pktinfo);
        }
        self.recycle(p.query);
    }

    fn no_backend_first(
        &mut self,
        qi: QueryInfo,
        src: SocketAddr,
        info: Option<PktInfo>,
        now: Millis,
    ) {
        let on_no_backend = self
            .ctx
            .shared
            .load()
            .pool
            .snapshot()
            .settings()
            .on_no_backend;
        let bytes = match on_no_backend {
            OnNoBackend::Servfail => {
                inc(&self.ctx.metrics.servfail);
                Some(dns::synth_reply(&qi, ResponseCode::ServFail))
            }
            OnNoBackend::Drop => {
                self.ctx.metrics.dropped(DropReason::NoBackend);
                None
            }
        };
        self.log(&qi.question, src, None, bytes.as_deref(), now);
        if let Some(b) = bytes {
            self.try_send_client(&b, src, info);
        }
    }

    /// Matches a backend answer; when it belongs to a pending query, rewrites
    /// its ID in place and returns where it must go (the caller sends).
    fn on_answer(&mut self, slot: u32, answer: &mut [u8]) -> Option<(SocketAddr, Option<PktInfo>)> {
        let m = &self.ctx.metrics;
        let Some(ai) = dns::parse_answer(answer) else {
            m.dropped(DropReason::UnmatchedAnswer);
            return None;
        };
        let key: Key = (slot, ai.id);
        match self.pending.get(key) {
            None => {
                m.dropped(DropReason::UnmatchedAnswer);
                return None;
            }
            Some(p) if !dns::answer_matches(&ai, &p.info.question) => {
                m.dropped(DropReason::WrongQuestion);
                return None;
            }
            Some(_) => {}
        }
        let p = self.pending.remove(key)?;
        let backend = p.inflight.backend();
        // A SERVFAIL answer proves the backend alive but counts for passive
        // health checking (dnsha-health).
        let recorded = if ai.rcode == ResponseCode::ServFail {
            self.ctx.shared.load().pool.record_servfail(backend)
        } else {
            backend.record_success()
        };
        if recorded == Some(Transition::Up) {
            tracing::info!(backend = %backend.name(), "backend up: answered a query");
        }
        inc(&m.answers);
        dns::rewrite_id(answer, p.info.id);
        self.log(
            &p.info.question,
            p.client,
            Some(backend.address()),
            Some(answer),
            p.received,
        );
        let to = (p.client, p.pktinfo);
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

    /// Tries every query pending on `slot` on another backend (its backend
    /// refused: ICMP port unreachable).
    fn retry_slot(&mut self, slot: u32, now: Millis) {
        let lost = self.pending.drain_slot(slot);
        for (_, p) in lost {
            if let Some(next) = self.next_attempt(p, FailureKind::Refused, now) {
                self.send_upstream(next, now);
            }
        }
    }

    fn on_timer(&mut self, now: Millis) {
        while let Some((_, p)) = self.pending.pop_expired(now) {
            if let Some(next) = self.next_attempt(p, FailureKind::Timeout, now) {
                self.send_upstream(next, now);
            }
        }
        if now >= self.next_gc {
            self.next_gc = now.plus(GC_INTERVAL_MS);
            self.gc();
        }
    }

    /// Closes upstream sockets of backends that left the pool.
    fn gc(&mut self) {
        let snapshot = self.ctx.shared.load().pool.snapshot();
        let live: Vec<BackendId> = snapshot.backends().iter().map(|b| b.id()).collect();
        let dead: Vec<(BackendId, Vec<u32>)> = self
            .slots
            .iter()
            .filter(|(id, _)| !live.contains(id))
            .map(|(&id, slots)| (id, slots.clone()))
            .collect();
        for (id, slots) in dead {
            // keep sockets that still have queries in flight
            if slots.iter().all(|&s| self.pending.slot_len(s) == 0) {
                self.slots.remove(&id);
                for s in slots {
                    self.upstreams.remove(&s);
                }
            }
        }
    }

    /// The upstream socket for the next query to `backend`: each backend has
    /// `ports` connected sockets (random source ports; the pool's
    /// `udp_sockets_per_backend`), used in turn, so a multi-threaded backend
    /// that spreads by source port gets the load spread too. A reload that
    /// raises `ports` opens the new sockets on next use; one that lowers it
    /// leaves the extra sockets unused (they close with the backend).
    fn slot_for(&mut self, backend: &Arc<Backend>, ports: usize) -> io::Result<u32> {
        let ports = ports.max(1);
        self.next_port = self.next_port.wrapping_add(1);
        let open = self.slots.get(&backend.id()).map_or(0, Vec::len);
        for _ in open..ports {
            let std = crate::socket::connect_udp(backend.address())?;
            let sock = UdpSocket::from_std(std)?;
            let slot = self.next_slot;
            self.next_slot = self.next_slot.wrapping_add(1);
            self.upstreams.insert(
                slot,
                Upstream {
                    sock,
                    outbox: Vec::new(),
                },
            );
            self.slots.entry(backend.id()).or_default().push(slot);
        }
        let slots = self.slots.get(&backend.id()).map_or(&[][..], Vec::as_slice);
        let in_use = slots.get(..ports).unwrap_or(slots);
        match in_use.get(self.next_port % in_use.len().max(1)) {
            Some(&s) => Ok(s),
            None => Err(io::Error::other("no upstream socket")),
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
            socket2::SockRef::from(&self.socket).send_to(bytes, &to.into())
        };
        if let Err(e) = r {
            self.ctx.metrics.dropped(DropReason::Overload);
            tracing::debug!(client = %to, error = %e, "udp send to client failed");
        }
    }

    fn log(
        &self,
        question: &Query,
        client: SocketAddr,
        backend: Option<SocketAddr>,
        sent: Option<&[u8]>,
        received: Millis,
    ) {
        let shared = self.ctx.shared.load();
        let Some(log) = &shared.access_log else {
            return;
        };
        // The time the query came in, worked out only when logging (the
        // data path keeps the monotonic time alone).
        let duration = Millis::now().since(received);
        let now = SystemTime::now();
        log.log(LogRecord {
            time: now.checked_sub(duration).unwrap_or(now),
            client,
            backend,
            protocol: "UDP",
            rcode: dns::rcode_label(sent),
            duration,
            qname: question.name().to_ascii(),
            qtype: question.query_type().to_string(),
        });
    }
}

/// Reads one batch from `sock` when the reactor has seen it readable
/// (WouldBlock when not). A short batch means the socket's queue is empty:
/// the closure then reports WouldBlock to tokio, which clears the socket's
/// readiness (race-free: only the readiness seen before the read), so the
/// worker waits for the reactor's next event instead of spending a recvmmsg
/// that would only return EAGAIN. The datagrams read are returned all the
/// same.
fn recv_ready(sock: &UdpSocket, batch: &mut sys::RecvBatch) -> io::Result<usize> {
    let mut got = 0;
    let r = sock.try_io(Interest::READABLE, || {
        got = batch.recv(sock)?;
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

/// Sends the queued queries `ids` of `slot` on `sock`, one sendmmsg (or one
/// send for a single query); those the kernel refuses go to `failed`.
fn send_queued(
    sock: &UdpSocket,
    sender: &mut sys::SendBatch,
    pending: &PendingTable<Pending>,
    slot: u32,
    ids: &[u16],
    failed: &mut Vec<(Key, FailureKind)>,
) {
    for chunk in ids.chunks(BATCH) {
        let msgs: Msgs<'_> = chunk
            .iter()
            .filter_map(|&id| pending.get((slot, id)).map(|p| (p.query.as_slice(), None)))
            .collect();
        let mut done = 0;
        while done < msgs.len() {
            let rest = msgs.get(done..).unwrap_or_default();
            let r = match rest {
                [(one, _)] => socket2::SockRef::from(sock).send(one).map(|_| 1),
                _ => sender.send(sock, rest),
            };
            let failure = match r {
                Ok(n) if n > 0 => {
                    done += n;
                    continue;
                }
                Ok(_) => FailureKind::Closed,
                Err(e) => failure_kind(&e),
            };
            if let Some(&id) = chunk.get(done) {
                failed.push(((slot, id), failure));
            }
            done += 1;
        }
    }
}

/// Datagrams of one sendmmsg, on the stack.
type Msgs<'a> = smallvec::SmallVec<[(&'a [u8], Option<SocketAddr>); BATCH]>;

/// How passive health counts a socket error on a backend's socket.
pub(crate) fn failure_kind(e: &io::Error) -> FailureKind {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable => FailureKind::Refused,
        _ => FailureKind::Closed,
    }
}
