//! Passive health from traffic, recorded in one place with one wording for
//! every path: an answer, a SERVFAIL, a failed attempt, a connection made.

use dnsha_core::{Backend, FailureKind, Millis, Pool, Transition};
use hickory_proto::op::ResponseCode;
use tracing::{info, warn};

/// Records a backend's answer: a SERVFAIL proves it alive but counts
/// against it (the pool's passive observer decides), anything else is a
/// success.
///
/// `window_ms` is the pool's `fail_timeout_ms` as the query's attempt read
/// it (no second look at the pool on the data path).
pub fn record_answer(
    pool: &Pool,
    backend: &Backend,
    rcode: ResponseCode,
    now: Millis,
    window_ms: u64,
) {
    let t = if rcode == ResponseCode::ServFail {
        pool.record_servfail(backend, now)
    } else {
        backend.record_success(now, window_ms)
    };
    if t == Some(Transition::Up) {
        info!(pool = %pool.name(), backend = %backend.name(), reason = "answered", "backend up");
    }
}

/// Records that a connection to the backend was made (TCP passthrough).
pub fn record_connected(pool: &Pool, backend: &Backend, now: Millis) {
    if pool.record_success(backend, now) == Some(Transition::Up) {
        info!(pool = %pool.name(), backend = %backend.name(), reason = "connected", "backend up");
    }
}

/// Records a failed attempt on the backend; after the pool's `max_fails`
/// in a row, when failures are also its `fail_percent` share of recent
/// outcomes, it is marked down.
pub fn record_failure(pool: &Pool, backend: &Backend, kind: FailureKind, now: Millis) {
    if pool.record_failure(backend, kind, now) == Some(Transition::Down) {
        warn!(
            pool = %pool.name(),
            backend = %backend.name(),
            reason = kind.as_str(),
            failures = backend.consecutive_failures(),
            "backend down: consecutive failures"
        );
    }
}
