//! UDP listeners in front of `transport = "tcp"` or `"dot"` backends.
//!
//! When a pool has such a backend, a UDP worker hands each admitted query
//! to [`spawn`]: one task balances it through the stream pool
//! ([`super::forward`], with the pool's retries and SERVFAIL, TCP or TLS
//! per backend) and sends the answer from the listener's socket. An answer
//! larger than the client's UDP payload size (512 bytes, or its EDNS size)
//! is replaced by an empty one with TC=1, so the client retries over TCP as
//! it would with any server; so is one larger than the listener's
//! `max_udp_size` (1232 by default), whatever size the client claims, so
//! that a small query with a forged source cannot be turned into a large
//! answer. The tasks in flight per listener are bounded
//! by the semaphore of [`crate::upstream::Routes`]; beyond it, queries are
//! dropped and counted as overload.

use std::net::SocketAddr;
use std::sync::Arc;

use dnsha_core::config::Protocol;
use tokio::sync::Semaphore;

use super::ctx::ListenerCtx;
use super::forward::forward;
use crate::metrics::inc;
use crate::pipeline::Admitted;
use crate::sys::{self, PktInfo, UdpReader};
use crate::upstream::stream::TcpUpstreams;
use crate::upstream::Upstreams;
use crate::wire::dns::{truncated, udp_payload_limit, DropReason};

/// Balances `query` over streams in a task and answers `client` from
/// `socket` (with `pkt`'s source address when the socket uses IP_PKTINFO).
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    ctx: &Arc<ListenerCtx>,
    socket: &Arc<UdpReader>,
    pktinfo: bool,
    upstreams: &Arc<TcpUpstreams>,
    slots: &Arc<Semaphore>,
    query: &[u8],
    admitted: Admitted,
    client: SocketAddr,
    pkt: Option<PktInfo>,
    main: &tokio::runtime::Handle,
) {
    let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
        ctx.metrics.dropped(DropReason::Overload);
        return;
    };
    let (ctx2, socket) = (Arc::clone(ctx), Arc::clone(socket));
    let up = Upstreams::stream(Arc::clone(upstreams));
    let query = query.to_vec();
    ctx.tasks.spawn_on(
        async move {
            let _permit = permit;
            let asked = admitted.info.clone();
            let Some(mut answer) =
                forward(&ctx2, &up, client, &query, admitted, Protocol::Udp).await
            else {
                return;
            };
            let limit = udp_payload_limit(&query).min(ctx2.shared.load().config.max_udp_size);
            if answer.len() > limit {
                inc(&ctx2.metrics.udp_truncated);
                answer = truncated(&asked);
            }
            let from = pkt.map(|i| PktInfo { ifindex: 0, ..i });
            // Direct non-blocking send: the socket belongs to the UDP worker's
            // runtime, this task may run on another one.
            let sent = if pktinfo {
                sys::send_with_pktinfo(&*socket, &answer, client, from)
            } else {
                sys::send_to(socket.get_ref(), &answer, client)
            };
            if let Err(e) = sent {
                ctx2.metrics.dropped(DropReason::Overload);
                tracing::debug!(client = %client, error = %e, "udp send to client failed");
            }
        },
        main,
    );
}
