//! The first step of every query: the listener's ACL, then validation.

use std::net::IpAddr;

use dnsha_core::config::Protocol;

use super::ListenerShared;
use crate::metrics::{inc, ListenerMetrics};
use crate::wire::dns::{classify_query, refused_for, DropReason, QueryInfo, Verdict};

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
/// where the handshake proved its address.
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
