//! Pick, retry on another backend, record: the loop every query (and every
//! passthrough connection) runs over its pool.

use std::net::SocketAddr;
use std::sync::Arc;

use dnsha_core::{Backend, BackendId, FailureKind, InFlight, Millis, Pool};
use smallvec::SmallVec;

use super::record_failure;
use crate::metrics::{inc, ListenerMetrics};

/// Backends tried so far (inline: no allocation for the usual 1–4).
type Tried = SmallVec<[BackendId; 4]>;

/// One attempt: where to send, and the pool settings the sender needs.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The backend chosen by the pool's policy.
    pub backend: Arc<Backend>,
    /// How long to wait for it (the pool's `timeout_ms`).
    pub timeout_ms: u64,
    /// The pool's `udp_sockets_per_backend`.
    pub udp_sockets: usize,
    /// The pool's `randomize_case` (DNS 0x20 over UDP).
    pub randomize_case: bool,
}

/// The current attempt: its guard counts it as outstanding on its backend
/// (what `lc` balances) until the attempt ends.
#[derive(Debug)]
struct Current {
    flight: InFlight,
    timeout_ms: u64,
    udp_sockets: usize,
    randomize_case: bool,
    /// The pool's `fail_timeout_ms`: the passive health window.
    window_ms: u64,
    /// When it was picked (sent, for the backend's latency).
    started: Millis,
}

/// The backends one query or connection has tried, and the one it holds
/// now.
#[derive(Debug, Default)]
pub struct Attempts {
    tried: Tried,
    current: Option<Current>,
    last: Option<SocketAddr>,
    /// The query's hashed key, for a `chash` pool.
    key: Option<u64>,
}

impl Attempts {
    /// Nothing tried yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Nothing tried yet, for a query whose key `hash` a `chash` pool
    /// places.
    pub fn keyed(hash: Option<u64>) -> Self {
        Self {
            key: hash,
            ..Self::default()
        }
    }

    /// The first attempt, or `None` when the pool has no backend available.
    pub fn first(&mut self, pool: &Pool, now: Millis) -> Option<Attempt> {
        self.pick(pool, now)
    }

    /// Records that the current attempt failed: counted as a timeout when it
    /// is one, and against the backend's passive health when `blame`.
    pub fn failed(
        &mut self,
        pool: &Pool,
        m: &ListenerMetrics,
        kind: FailureKind,
        blame: bool,
        now: Millis,
    ) {
        if kind == FailureKind::Timeout {
            inc(&m.timeouts);
        }
        if let (true, Some(c)) = (blame, &self.current) {
            record_failure(pool, c.flight.backend(), kind, now);
        }
    }

    /// The current attempt once more, to the same backend, if it is still
    /// up.
    pub fn again(&self) -> Option<Attempt> {
        let c = self.current.as_ref()?;
        let backend = c.flight.backend();
        backend.is_up().then(|| Attempt {
            backend: Arc::clone(backend),
            timeout_ms: c.timeout_ms,
            udp_sockets: c.udp_sockets,
            randomize_case: c.randomize_case,
        })
    }

    /// Ends the current attempt and picks the next one on a backend not
    /// tried yet, while the pool's `retries` allow one (counted as a retry);
    /// `None` otherwise.
    pub fn next(&mut self, pool: &Pool, m: &ListenerMetrics, now: Millis) -> Option<Attempt> {
        self.current = None;
        let retries = pool.with_snapshot(|s| s.settings().retries);
        if self.tried.len() > retries as usize {
            return None;
        }
        let next = self.pick(pool, now)?;
        inc(&m.retries);
        Some(next)
    }

    fn pick(&mut self, pool: &Pool, now: Millis) -> Option<Attempt> {
        let (flight, (timeout_ms, udp_sockets, randomize_case, window_ms)) =
            pool.with_snapshot(|s| {
                let st = s.settings();
                s.pick_keyed(&self.tried, now, self.key).map(|f| {
                    let picked = (
                        st.timeout_ms,
                        st.udp_sockets_per_backend,
                        st.randomize_case,
                        st.fail_timeout_ms,
                    );
                    (f, picked)
                })
            })?;
        let backend = Arc::clone(flight.backend());
        self.tried.push(backend.id());
        self.last = Some(backend.address());
        self.current = Some(Current {
            flight,
            timeout_ms,
            udp_sockets,
            randomize_case,
            window_ms,
            started: now,
        });
        Some(Attempt {
            backend,
            timeout_ms,
            udp_sockets,
            randomize_case,
        })
    }

    /// The backend of the current attempt.
    pub fn current(&self) -> Option<&Arc<Backend>> {
        self.current.as_ref().map(|c| c.flight.backend())
    }

    /// Ends the current attempt; its guard is returned for a caller that
    /// keeps the backend busy longer (a passthrough connection).
    pub fn succeeded(&mut self) -> Option<InFlight> {
        self.current.take().map(|c| c.flight)
    }

    /// Ends the current attempt as [`Self::succeeded`] does, with the
    /// passive health window the attempt was picked with and when.
    pub(crate) fn answered(&mut self) -> Option<(InFlight, u64, Millis)> {
        self.current
            .take()
            .map(|c| (c.flight, c.window_ms, c.started))
    }

    /// The address of the last backend tried, for the access log.
    pub fn last_backend(&self) -> Option<SocketAddr> {
        self.last
    }

    /// How many backends were tried.
    pub fn count(&self) -> usize {
        self.tried.len()
    }
}
