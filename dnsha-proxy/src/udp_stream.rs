//! UDP listeners in front of `transport = "tcp"` or `"dot"` backends.
//!
//! When a pool has such a backend, a UDP worker hands each valid query to
//! [`spawn`]: one task balances it through the stream pool
//! ([`crate::tcp::forward`], with the pool's retries and SERVFAIL, TCP or
//! TLS per backend) and sends the answer from the listener's socket. An
//! answer larger than the client's UDP payload size (512 bytes, or its EDNS
//! size) is replaced by an empty one with TC=1, so the client retries over
//! TCP as it would with any server. The tasks in flight per listener are
//! bounded by the semaphore of [`crate::routes::Routes`]; beyond it, queries
//! are dropped and counted as overload.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::ctx::ListenerCtx;
use crate::dns::{synth_reply, DropReason, QueryInfo};
use crate::sys::{self, PktInfo};
use crate::upstream_tcp::TcpUpstreams;

/// The UDP payload a client accepts: its EDNS size (at least 512), or 512.
pub fn udp_payload_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|m| m.extensions().as_ref().map(|e| e.max_payload()))
        .map_or(512, |n| usize::from(n.max(512)))
}

/// An empty answer with TC=1 for a query whose answer does not fit.
pub fn truncated(info: &QueryInfo) -> Vec<u8> {
    let mut reply = synth_reply(info, ResponseCode::NoError);
    if let Some(flags) = reply.get_mut(2) {
        *flags |= 0x02;
    }
    reply
}

/// Balances `query` over streams in a task and answers `client` from
/// `socket` (with `pkt`'s source address when the socket uses IP_PKTINFO).
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    ctx: &Arc<ListenerCtx>,
    socket: &Arc<UdpSocket>,
    pktinfo: bool,
    upstreams: &Arc<TcpUpstreams>,
    slots: &Arc<Semaphore>,
    query: &[u8],
    info: QueryInfo,
    client: SocketAddr,
    pkt: Option<PktInfo>,
    main: &tokio::runtime::Handle,
) {
    let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
        ctx.metrics.dropped(DropReason::Overload);
        return;
    };
    let (ctx2, socket, up) = (Arc::clone(ctx), Arc::clone(socket), Arc::clone(upstreams));
    let query = query.to_vec();
    ctx.tasks.spawn_on(
        async move {
            let _permit = permit;
            let Some(mut answer) =
                crate::tcp::forward(&ctx2, &up, None, client, &query, &info, "UDP").await
            else {
                return;
            };
            if answer.len() > udp_payload_limit(&query) {
                answer = truncated(&info);
            }
            let from = pkt.map(|i| PktInfo { ifindex: 0, ..i });
            // Direct non-blocking send: the socket belongs to the UDP worker's
            // runtime, this task may run on another one.
            let sent = if pktinfo {
                sys::send_with_pktinfo(&*socket, &answer, client, from)
            } else {
                socket2::SockRef::from(&*socket).send_to(&answer, &client.into())
            };
            if let Err(e) = sent {
                ctx2.metrics.dropped(DropReason::Overload);
                tracing::debug!(client = %client, error = %e, "udp send to client failed");
            }
        },
        main,
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dns::{classify_query, Verdict};
    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7)
            .set_recursion_desired(true)
            .add_query(Query::query(
                Name::from_ascii("big.example.test.").unwrap(),
                RecordType::TXT,
            ));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn limit_follows_edns() {
        assert_eq!(udp_payload_limit(&query(None)), 512);
        assert_eq!(udp_payload_limit(&query(Some(1232))), 1232);
        assert_eq!(udp_payload_limit(&query(Some(100))), 512);
        assert_eq!(udp_payload_limit(&[1, 2, 3]), 512);
    }

    #[test]
    fn truncated_answer_has_tc_and_the_question() {
        let q = query(None);
        let Verdict::Forward(info) = classify_query(&q) else {
            panic!("valid query");
        };
        let m = Message::from_vec(&truncated(&info)).unwrap();
        assert!(m.truncated());
        assert_eq!(m.id(), 7);
        assert_eq!(m.queries(), &[info.question]);
        assert!(m.answers().is_empty());
    }
}
