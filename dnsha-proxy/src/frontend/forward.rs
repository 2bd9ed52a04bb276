//! The driver of one query for the stream-style frontends (TCP, DoT, DoH,
//! and UDP listeners in front of `tcp`/`dot` backends): a future per query
//! that runs its [`Flight`] over [`Upstreams`], one attempt at a time.

use std::net::SocketAddr;
use std::sync::Arc;

use dnsha_core::config::Protocol;
use dnsha_core::Millis;
use hickory_proto::op::ResponseCode;
use tracing::debug;

use super::ctx::ListenerCtx;
use crate::error::Error;
use crate::pipeline::cache;
use crate::pipeline::{Admitted, Failure, Flight, Next};
use crate::upstream::Upstreams;
use crate::wire::dns::{rcode_of, synth_reply, DropReason, MAX_MESSAGE};

/// Balances one admitted query (`msg`, as the client sent it) through its
/// pool (the listener's, or a rule's): tries backends until one answers or the pool's retries
/// are spent; the pool's cache first answers what it holds. Returns what
/// to send the client (with the client's ID): the
/// answer, the pool's SERVFAIL, or `None` when the pool says `drop`. A
/// client address over the listener's `max_queries_per_client` in flight
/// gets SERVFAIL at once: one address cannot hold every upstream slot.
pub async fn forward(
    ctx: &ListenerCtx,
    upstreams: &Upstreams,
    client: SocketAddr,
    msg: &[u8],
    admitted: Admitted,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    let shared = ctx.shared.load_full();
    let m = &*ctx.metrics;
    let key = match cache::lookup(&shared, m, client, protocol, &admitted, msg, Millis::now()) {
        Ok(answer) => return Some(answer),
        Err(key) => key,
    };
    let per_client = shared.config.max_queries_per_client;
    let Some(_slot) = ctx.client_queries.try_acquire(
        client.ip(),
        shared.config.client_prefix_v6,
        usize::MAX,
        per_client,
    ) else {
        m.dropped(DropReason::ClientLimit);
        return Some(synth_reply(&admitted.info, ResponseCode::ServFail));
    };
    let target = Arc::clone(&admitted.target);
    let mut flight = Flight::new(client, protocol, admitted, Millis::now()).with_cache_key(key);
    let mut next = flight.start(&shared, m, Millis::now());
    // When the current attempt runs out: a resend keeps its deadline.
    let mut deadline = Millis::now();
    loop {
        let attempt = match next {
            Next::Send(a) => {
                deadline = Millis::now().plus(a.timeout_ms);
                a
            }
            Next::Resend(a) => a,
            Next::Reply(reply) => return Some(reply),
            Next::Drop => return None,
        };
        let per_try = deadline.since(Millis::now());
        let r = upstreams
            .query(
                &target.routes,
                &attempt.backend,
                attempt.udp_sockets,
                msg,
                &flight.info().question,
                per_try,
                &m.tcp_fallbacks,
            )
            .await;
        let now = Millis::now();
        next = match r {
            Ok(mut answer) => {
                let rcode = rcode_of(&answer).unwrap_or(ResponseCode::NoError);
                flight.answered(&shared, m, &mut answer, rcode, now);
                return (answer.len() <= MAX_MESSAGE).then_some(answer);
            }
            Err(Error::Upstream {
                kind, retry, blame, ..
            }) => {
                debug!(backend = %attempt.backend.name(), reason = kind.as_str(), blame, "query to backend failed");
                flight.failed(&shared, m, Failure { kind, retry, blame }, now)
            }
            Err(e) => {
                debug!(backend = %attempt.backend.name(), error = %e, "query not sent");
                flight.abandon(&shared, m, now)
            }
        };
    }
}
