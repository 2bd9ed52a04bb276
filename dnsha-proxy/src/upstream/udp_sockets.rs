//! The upstream sockets of one UDP worker: per backend, the pool's
//! `udp_sockets_per_backend` connected UDP sockets (kernel-chosen random
//! source ports; being connected, a socket only hears from its backend and
//! learns of ICMP refusals), used in turn. Queries queued during a round
//! leave in one `sendmmsg` per socket at its end ([`WorkerSockets::flush`]).
//!
//! The worker owns this value and its pending table outright, so the UDP
//! data path takes no lock. Sockets are named by a slot number, which is
//! also the first half of a pending query's [`Key`].

use std::collections::HashMap;
use std::io;
use std::task::Context;

use dnsha_core::{Backend, BackendId, FailureKind};
use tokio::net::UdpSocket;

use super::failure_kind;
use crate::sys::SendBatch;
use crate::wire::pending::{Key, PendingTable};

/// Datagrams sent by one sendmmsg, at most.
pub const BATCH: usize = 32;

/// Datagrams of one sendmmsg, on the stack.
type Msgs<'a> = smallvec::SmallVec<[(&'a [u8], Option<std::net::SocketAddr>); BATCH]>;

#[derive(Debug)]
struct Sock {
    io: UdpSocket,
    /// Upstream IDs of queries waiting to leave on this socket at the end of
    /// the round.
    outbox: Vec<u16>,
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
}

impl WorkerSockets {
    /// No sockets yet; they open on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// The socket for the next query to `backend`: each backend has `ports`
    /// connected sockets, used in turn, so a multi-threaded backend that
    /// spreads by source port gets the load spread too. A reload that raises
    /// `ports` opens the new sockets on next use; one that lowers it leaves
    /// the extra sockets unused (they close with the backend, [`Self::gc`]).
    pub fn slot_for(&mut self, backend: &Backend, ports: usize) -> io::Result<u32> {
        let ports = ports.max(1);
        self.next_port = self.next_port.wrapping_add(1);
        let open = self.by_backend.get(&backend.id()).map_or(0, Vec::len);
        for _ in open..ports {
            let std = crate::socket::connect_udp(backend.address())?;
            let io = UdpSocket::from_std(std)?;
            let slot = self.next_slot;
            self.next_slot = self.next_slot.wrapping_add(1);
            self.socks.insert(
                slot,
                Sock {
                    io,
                    outbox: Vec::new(),
                },
            );
            self.by_backend.entry(backend.id()).or_default().push(slot);
        }
        let slots = self
            .by_backend
            .get(&backend.id())
            .map_or(&[][..], Vec::as_slice);
        let in_use = slots.get(..ports).unwrap_or(slots);
        match in_use.get(self.next_port % in_use.len().max(1)) {
            Some(&s) => Ok(s),
            None => Err(io::Error::other("no upstream socket")),
        }
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
    pub fn socket(&self, slot: u32) -> Option<&UdpSocket> {
        self.socks.get(&slot).map(|s| &s.io)
    }

    /// Registers `cx` for readability of every socket; true when one is
    /// readable now.
    pub fn poll_any_ready(&self, cx: &mut Context<'_>) -> bool {
        let mut ready = false;
        for s in self.socks.values() {
            if s.io.poll_recv_ready(cx).is_ready() {
                ready = true;
            }
        }
        ready
    }

    /// Closes the sockets of backends not in `live`, except those with
    /// queries still in flight (`busy(slot)`).
    pub fn gc(&mut self, live: &[BackendId], busy: impl Fn(u32) -> bool) {
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
    }
}

/// Sends the queued queries `ids` of `slot` on `sock`, one sendmmsg (or one
/// send for a single query); those the kernel refuses go to `failed`.
fn send_queued<T>(
    sock: &UdpSocket,
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
