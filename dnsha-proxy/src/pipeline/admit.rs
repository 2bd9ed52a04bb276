//! The first step of every query: the listener's ACL, then validation.

use std::net::IpAddr;

use dnsha_core::config::{AnyOverUdp, Protocol};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::ListenerShared;
use crate::metrics::{inc, ListenerMetrics};
use crate::wire::dns::{
    classify_query, refused_for, synth_reply, truncated, DropReason, QueryInfo, Verdict,
};

/// What becomes of a client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A valid query: forward it.
    Forward(QueryInfo),
    /// Answer the client with these bytes at once (FORMERR, NOTIMP, or
    /// REFUSED for a client outside the ACL over a stream), counted under
    /// the reason.
    Reply(Vec<u8>, DropReason),
    /// Send nothing; counted under the reason.
    Drop(DropReason),
}

/// Decides what becomes of `msg` from `client` on a listener speaking
/// `protocol`, and counts it (`queries` for a query to forward, the drop
/// reason otherwise, `refused` for an ACL refusal).
///
/// A client outside the ACL is dropped silently over UDP (its source may
/// be spoofed: no answer to reflect) and answered REFUSED over streams,
/// where the handshake proved its address. A query of type ANY over UDP is
/// answered at once as the listener's `any_over_udp` says (RFC 8482).
pub fn admit(
    shared: &ListenerShared,
    m: &ListenerMetrics,
    client: IpAddr,
    protocol: Protocol,
    msg: &[u8],
) -> Admission {
    if !shared.acl.allows(client) {
        m.dropped(DropReason::Acl);
        if protocol.is_stream() {
            if let Some(reply) = refused_for(msg) {
                inc(&m.refused);
                return Admission::Reply(reply, DropReason::Acl);
            }
        }
        return Admission::Drop(DropReason::Acl);
    }
    match classify_query(msg) {
        Verdict::Forward(info) if protocol == Protocol::Udp && any_answered(shared, &info) => {
            m.dropped(DropReason::AnyOverUdp);
            let reply = match shared.config.any_over_udp {
                AnyOverUdp::Refuse => synth_reply(&info, ResponseCode::Refused),
                _ => truncated(&info),
            };
            Admission::Reply(reply, DropReason::AnyOverUdp)
        }
        Verdict::Forward(info) => {
            inc(&m.queries);
            Admission::Forward(info)
        }
        Verdict::Reply(bytes, reason) => {
            m.dropped(reason);
            Admission::Reply(bytes, reason)
        }
        Verdict::Drop(reason) => {
            m.dropped(reason);
            Admission::Drop(reason)
        }
    }
}

/// Whether `info` is an ANY query the listener answers itself.
fn any_answered(shared: &ListenerShared, info: &QueryInfo) -> bool {
    info.question.query_type() == RecordType::ANY && shared.config.any_over_udp != AnyOverUdp::Allow
}
