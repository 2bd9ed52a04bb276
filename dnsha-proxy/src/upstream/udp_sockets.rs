//! The upstream sockets of one UDP worker: per backend, the pool's
//! `udp_sockets_per_backend` connected UDP sockets (kernel-chosen random
//! source ports; being connected, a socket only hears from its backend and
//! learns of ICMP refusals), used in turn. Queries queued during a round
//! leave in one `sendmmsg` per socket at its end ([`WorkerSockets::flush`]).
//!
//! The worker owns this value and its pending table outright, so the UDP
//! data path takes no lock. Sockets are named by a slot number, which is
//! also the first half of a pending query's [`Key`].
//!
//! Source ports do not stay the same long enough to be found and sprayed
//! with spoofed ICMP errors: a socket older than [`ROTATE_AFTER_MS`] or that
//! carried [`ROTATE_QUERIES`] queries takes no new query (a new socket on a
//! new random port does), and is closed once its queries are answered; a
//! socket that reported a refusal is closed at once ([`WorkerSockets::close`]).

use std::collections::HashMap;
use std::io;
use std::task::Context;

use crate::sys::UdpReader;
use dnsha_core::{Backend, BackendId, FailureKind, Millis};

use super::failure_kind;
use crate::sys::SendBatch;
use crate::wire::pending::{Key, PendingTable};

/// Datagrams sent by one sendmmsg, at most.
pub const BATCH: usize = 32;

/// A socket older than this takes no new query.
pub const ROTATE_AFTER_MS: u64 = 30_000;

/// A socket that carried this many queries takes no new query.
pub const ROTATE_QUERIES: u64 = 50_000;

/// Datagrams of one sendmmsg, on the stack.
type Msgs<'a> = smallvec::SmallVec<[(&'a [u8], Option<std::net::SocketAddr>); BATCH]>;

#[derive(Debug)]
struct Sock {
    io: UdpReader,
    /// Upstream IDs of queries waiting to leave on this socket at the end of
    /// the round.
    outbox: Vec<u16>,
    opened: Millis,
    used: u64,
}

/// A UDP worker's connected sockets to its backends.
#[derive(Debug, Default)]
pub struct WorkerSockets {
    socks: HashMap<u32, Sock>,
    by_backend: HashMap<BackendId, Vec<u32>>,
    next_port: usize,
    next_slot: u32,
    /// Slots with queries in their outbox.
    dirty: Vec<u32>,
    dirty_spare: Vec<u32>,
    /// Rotated sockets that still have queries in flight.
    retiring: Vec<u32>,
}

impl WorkerSockets {
    /// No sockets yet; they open on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// The socket for the next query to `backend` at `now`: each backend
    /// has `ports` connected sockets, used in turn, so a multi-threaded
    /// backend that spreads by source port gets the load spread too. A
    /// reload that raises `ports` opens the new sockets on next use; one that
    /// lowers it leaves the extra sockets unused (they close with the
    /// backend, [`Self::gc`]). A worn socket is rotated out first.
    pub fn slot_for(&mut self, backend: &Backend, ports: usize, now: Millis) -> io::Result<u32> {
        self.slot(backend, ports, now, false)
    }

    /// A socket just opened for `backend` (a new random port), taking the
    /// place of the next one in turn: for a query sent again after its
    /// socket was refused, which must not land on another socket the same
    /// forged errors may have reached.
    pub fn fresh_slot_for(
        &mut self,
        backend: &Backend,
        ports: usize,
        now: Millis,
    ) -> io::Result<u32> {
        self.slot(backend, ports, now, true)
    }

    fn slot(
        &mut self,
        backend: &Backend,
        ports: usize,
        now: Millis,
        fresh: bool,
    ) -> io::Result<u32> {
        let ports = ports.max(1);
        self.next_port = self.next_port.wrapping_add(1);
        let id = backend.id();
        let list = self.by_backend.entry(id).or_default();
        let idx = self.next_port % ports;
        if let Some(&slot) = list.get(idx) {
            match self.socks.get_mut(&slot) {
                Some(s)
                    if !fresh
                        && now.0.saturating_sub(s.opened.0) < ROTATE_AFTER_MS
                        && s.used < ROTATE_QUERIES =>
                {
                    // The usual case: one lookup.
                    s.used += 1;
                    return Ok(slot);
                }
                _ => {
                    list.remove(idx);
                    self.retiring.push(slot);
                }
            }
        }
        while list.len() < ports {
            let std = crate::socket::connect_udp(backend.address())?;
            let io = crate::sys::udp_reader(std)?;
            let slot = self.next_slot;
            self.next_slot = self.next_slot.wrapping_add(1);
            self.socks.insert(
                slot,
                Sock {
                    io,
                    outbox: Vec::new(),
                    opened: now,
                    used: 0,
                },
            );
            // A new socket goes where the worn one was, so the turn order
            // stays the same.
            list.insert(idx.min(list.len()), slot);
        }
        let slot = list
            .get(idx)
            .copied()
            .ok_or_else(|| io::Error::other("no upstream socket"))?;
        if let Some(s) = self.socks.get_mut(&slot) {
            s.used += 1;
        }
        Ok(slot)
    }

    /// Closes `slot` at once (it reported a refusal): the next query to its
    /// backend opens a new socket on a new random port. Its queries must
    /// have been taken out of the pending table.
    pub fn close(&mut self, slot: u32) {
        self.socks.remove(&slot);
        for list in self.by_backend.values_mut() {
            list.retain(|&s| s != slot);
        }
        self.retiring.retain(|&s| s != slot);
    }

    /// Queues the query `id` to leave on `slot` at the next flush.
    pub fn queue(&mut self, slot: u32, id: u16) {
        if let Some(s) = self.socks.get_mut(&slot) {
            if s.outbox.is_empty() {
                self.dirty.push(slot);
            }
            s.outbox.push(id);
        }
    }

    /// Whether queries wait to be sent.
    pub fn has_queued(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Sends every queued query still in `pending` (`bytes` gives its wire
    /// form): one sendmmsg per socket, through `sender`'s reused headers
    /// (kept by the caller: they are not `Sync`, and this value is polled
    /// for readiness across awaits). Those the kernel refuses go to
    /// `failed` with the failure passive health counts.
    pub fn flush<T>(
        &mut self,
        sender: &mut SendBatch,
        pending: &PendingTable<T>,
        bytes: impl Fn(&T) -> &[u8],
        failed: &mut Vec<(Key, FailureKind)>,
    ) {
        let mut dirty = std::mem::replace(&mut self.dirty, std::mem::take(&mut self.dirty_spare));
        for &slot in &dirty {
            let Some(s) = self.socks.get_mut(&slot) else {
                continue;
            };
            let mut ids = std::mem::take(&mut s.outbox);
            // A query evicted since it was queued is not sent.
            ids.retain(|&id| pending.get((slot, id)).is_some());
            send_queued(&s.io, sender, pending, &bytes, slot, &ids, failed);
            ids.clear();
            if s.outbox.is_empty() {
                s.outbox = ids;
            }
        }
        dirty.clear();
        self.dirty_spare = dirty;
    }

    /// The slots open now, into `out` (cleared first).
    pub fn slots(&self, out: &mut Vec<u32>) {
        out.clear();
        out.extend(self.socks.keys().copied());
    }

    /// The socket of `slot`.
    pub fn socket(&self, slot: u32) -> Option<&UdpReader> {
        self.socks.get(&slot).map(|s| &s.io)
    }

    /// Registers `cx` for readability of every socket; true when one is
    /// readable now.
    pub fn poll_any_ready(&self, cx: &mut Context<'_>) -> bool {
        let mut ready = false;
        for s in self.socks.values() {
            if s.io.poll_read_ready(cx).is_ready() {
                ready = true;
            }
        }
        ready
    }

    /// Closes the sockets of backends not in `live` and rotated sockets,
    /// except those with queries still in flight (`busy(slot)`).
    pub fn gc(&mut self, live: &[BackendId], busy: impl Fn(u32) -> bool + Copy) {
        let dead: Vec<(BackendId, Vec<u32>)> = self
            .by_backend
            .iter()
            .filter(|(id, _)| !live.contains(id))
            .map(|(&id, slots)| (id, slots.clone()))
            .collect();
        for (id, slots) in dead {
            if slots.iter().all(|&s| !busy(s)) {
                self.by_backend.remove(&id);
                for s in slots {
                    self.socks.remove(&s);
                }
            }
        }
        self.close_retired(busy);
    }

    /// Closes the rotated sockets that have no query in flight any more
    /// (`busy(slot)` false). Cheap when none is waiting: the worker calls
    /// it every round.
    pub fn close_retired(&mut self, busy: impl Fn(u32) -> bool) {
        if self.retiring.is_empty() {
            return;
        }
        let socks = &mut self.socks;
        self.retiring.retain(|&s| {
            let keep = busy(s);
            if !keep {
                socks.remove(&s);
            }
            keep
        });
    }

    /// Sockets open now (rotated ones still draining included).
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// True when no socket is open.
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }
}

/// Sends the queued queries `ids` of `slot` on `sock`, one sendmmsg (or one
/// send for a single query); those the kernel refuses go to `failed`.
fn send_queued<T>(
    sock: &UdpReader,
    sender: &mut SendBatch,
    pending: &PendingTable<T>,
    bytes: &impl Fn(&T) -> &[u8],
    slot: u32,
    ids: &[u16],
    failed: &mut Vec<(Key, FailureKind)>,
) {
    for chunk in ids.chunks(BATCH) {
        let msgs: Msgs<'_> = chunk
            .iter()
            .filter_map(|&id| pending.get((slot, id)).map(|p| (bytes(p), None)))
            .collect();
        let mut done = 0;
        while done < msgs.len() {
            let rest = msgs.get(done..).unwrap_or_default();
            let r = match rest {
                [(one, _)] => socket2::SockRef::from(sock.get_ref()).send(one).map(|_| 1),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn backend() -> Backend {
        Backend::new("b", "127.0.0.1:9".parse().unwrap(), 1)
    }

    #[tokio::test]
    async fn sockets_rotate_by_age_and_use_and_close_after_a_refusal() {
        let b = backend();
        let mut w = WorkerSockets::new();
        let t0 = Millis(1_000);
        let first = w.slot_for(&b, 1, t0).unwrap();
        assert_eq!(w.slot_for(&b, 1, t0).unwrap(), first);
        let port =
            |w: &WorkerSockets, s| w.socket(s).unwrap().get_ref().local_addr().unwrap().port();
        let p1 = port(&w, first);
        // Old enough: a new socket takes the next query; the old one drains.
        let second = w.slot_for(&b, 1, t0.plus(ROTATE_AFTER_MS)).unwrap();
        assert_ne!(second, first);
        assert_ne!(port(&w, second), p1);
        assert_eq!(w.len(), 2);
        w.gc(&[b.id()], |s| s == first);
        assert_eq!(w.len(), 2, "kept while it has queries in flight");
        w.gc(&[b.id()], |_| false);
        assert_eq!(w.len(), 1);
        // Worn by use.
        let mut last = second;
        for _ in 1..ROTATE_QUERIES {
            last = w.slot_for(&b, 1, t0.plus(ROTATE_AFTER_MS)).unwrap();
        }
        assert_eq!(last, second);
        let third = w.slot_for(&b, 1, t0.plus(ROTATE_AFTER_MS)).unwrap();
        assert_ne!(third, second);
        // A refusal closes at once.
        w.gc(&[b.id()], |_| false);
        w.close(third);
        assert!(w.is_empty());
        let fourth = w.slot_for(&b, 1, t0.plus(ROTATE_AFTER_MS)).unwrap();
        assert_ne!(fourth, third);
    }
}
