//! The connections of the multiplexed transports, DoH over HTTP/2 and DoQ:
//! one connection per backend (per pool limits and TLS settings, as the
//! stream pool keys them), carrying every query to it at once as its own
//! stream.
//!
//! A [`Slot`] holds the connection or the attempt to make it. The first
//! query that finds none starts the attempt in a task of its own (so it
//! goes on when that query gives up); every query that comes meanwhile
//! awaits the same attempt. A failed attempt, or a connection found dead,
//! is replaced by a new attempt on the next query. A per-backend semaphore
//! bounds the queries in flight as for TCP: `max_connections_per_backend ×
//! max_in_flight_per_connection`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use dnsha_core::FailureKind;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;

use super::target::{ConnKey, StreamLimits};

/// Why a connection could not be made, and whether it is the backend's
/// fault.
pub(crate) type ConnectFailure = (FailureKind, bool);

/// An attempt to connect, shared by the queries awaiting it.
pub(crate) type Connecting<C> = Shared<BoxFuture<'static, Result<C, ConnectFailure>>>;

/// The connection to one backend, or the attempt to make it.
pub(crate) struct Slot<C: Clone> {
    /// Bounds the queries in flight to the backend.
    pub(crate) permits: Semaphore,
    state: Mutex<Option<Connecting<C>>>,
}

impl<C: Clone> std::fmt::Debug for Slot<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl<C: Clone + Send + Sync + 'static> Slot<C> {
    fn new(limits: StreamLimits) -> Self {
        Self {
            permits: Semaphore::new(
                limits
                    .max_connections
                    .saturating_mul(limits.max_in_flight)
                    .min(Semaphore::MAX_PERMITS),
            ),
            state: Mutex::new(None),
        }
    }

    /// The connection, or the attempt under way; a new attempt running
    /// `connect` in a task when there is neither, the last attempt failed,
    /// or `alive` says the connection is gone. Needs a Tokio runtime.
    pub(crate) fn get<F>(
        &self,
        alive: impl Fn(&C) -> bool,
        connect: impl FnOnce() -> F,
    ) -> Connecting<C>
    where
        F: Future<Output = Result<C, ConnectFailure>> + Send + 'static,
    {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = state.as_ref() {
            match current.peek() {
                None => return current.clone(),
                Some(Ok(c)) if alive(c) => return current.clone(),
                Some(_) => {}
            }
        }
        let task = tokio::spawn(connect());
        // A task that panicked or was cancelled made no connection; not
        // the backend's fault.
        let attempt = async move { task.await.unwrap_or(Err((FailureKind::Closed, false))) }
            .boxed()
            .shared();
        *state = Some(attempt.clone());
        attempt
    }

    /// Forgets the connection when it is still the one in the slot (it
    /// failed a query in a way that says it is unusable), so the next
    /// query makes a new one.
    pub(crate) fn forget(&self, same: impl Fn(&C) -> bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Some(Ok(c))) = state.as_ref().map(Shared::peek) {
            if same(c) {
                *state = None;
            }
        }
    }
}

/// The slots of every backend one pool of upstreams talks to.
pub(crate) struct Slots<C: Clone> {
    map: Mutex<HashMap<ConnKey, Arc<Slot<C>>>>,
}

impl<C: Clone> std::fmt::Debug for Slots<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.map.lock().map_or(0, |m| m.len());
        f.debug_struct("Slots").field("backends", &n).finish()
    }
}

impl<C: Clone> Default for Slots<C> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Clone + Send + Sync + 'static> Slots<C> {
    /// Calls `f` on every connection made and still held.
    pub(crate) fn for_each(&self, f: impl Fn(&C)) {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in map.values() {
            let state = slot.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(Some(Ok(c))) = state.as_ref().map(Shared::peek) {
                f(c);
            }
        }
    }

    /// The slot of `key`, made with `limits` on first use.
    pub(crate) fn slot(&self, key: ConnKey, limits: StreamLimits) -> Arc<Slot<C>> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget backends no query is using (removed on reload); a live one
        // reconnects on its next query.
        if map.len() > 64 {
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(
            map.entry(key)
                .or_insert_with(|| Arc::new(Slot::new(limits))),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn limits() -> StreamLimits {
        StreamLimits {
            max_connections: 2,
            max_in_flight: 3,
        }
    }

    #[tokio::test]
    async fn one_attempt_is_shared_and_a_failed_or_dead_one_replaced() {
        let slot: Slot<Arc<AtomicUsize>> = Slot::new(limits());
        assert_eq!(slot.permits.available_permits(), 6);
        let attempts = Arc::new(AtomicUsize::new(0));
        let connect = |ok: bool| {
            let attempts = Arc::clone(&attempts);
            move || async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                if ok {
                    Ok(Arc::new(AtomicUsize::new(1)))
                } else {
                    Err((FailureKind::Refused, true))
                }
            }
        };
        let alive = |c: &Arc<AtomicUsize>| c.load(Ordering::SeqCst) == 1;
        // Three queries at once: one attempt.
        let (a, b, c) = (
            slot.get(alive, connect(false)),
            slot.get(alive, connect(false)),
            slot.get(alive, connect(false)),
        );
        for r in [a.await, b.await, c.await] {
            assert_eq!(r.unwrap_err(), (FailureKind::Refused, true));
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        // After a failure, a new attempt.
        let conn = slot.get(alive, connect(true)).await.unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        // A live connection is reused.
        let again = slot.get(alive, connect(true)).await.unwrap();
        assert!(Arc::ptr_eq(&conn, &again));
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        // A dead one is replaced.
        conn.store(0, Ordering::SeqCst);
        let fresh = slot.get(alive, connect(true)).await.unwrap();
        assert!(!Arc::ptr_eq(&conn, &fresh));
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        // A forgotten one too, but only the one named.
        slot.forget(|c| Arc::ptr_eq(c, &conn));
        let same = slot.get(alive, connect(true)).await.unwrap();
        assert!(Arc::ptr_eq(&same, &fresh));
        slot.forget(|c| Arc::ptr_eq(c, &fresh));
        let newer = slot.get(alive, connect(true)).await.unwrap();
        assert!(!Arc::ptr_eq(&newer, &fresh));
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_attempt_goes_on_when_its_query_gives_up() {
        let slot: Slot<u8> = Slot::new(limits());
        let attempts = Arc::new(AtomicUsize::new(0));
        let a2 = Arc::clone(&attempts);
        let first = slot.get(
            |_| true,
            move || async move {
                a2.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(7)
            },
        );
        // The query that started it times out first.
        assert!(tokio::time::timeout(Duration::from_millis(5), first)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = slot.get(|_| true, || async { Ok(8) }).await;
        assert_eq!(got, Ok(7));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
