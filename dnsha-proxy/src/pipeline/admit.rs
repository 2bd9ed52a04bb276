//! The first step of every query: the listener's ACL, validation, then the
//! rules (where the query goes, or what is answered at once).

use std::net::IpAddr;
use std::sync::Arc;

use dnsha_core::dynblock::{BlockAction, EventKind};
use dnsha_core::rules::Action;

use dnsha_core::config::{AnyOverUdp, LimitAction, Protocol};
use dnsha_core::Millis;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::rules::query_view;
use super::{ListenerShared, Target};
use crate::metrics::{inc, ListenerMetrics};
use crate::wire::dns::{
    classify_query, fixed_answer, refused_for, synth_reply, truncated, DropReason, QueryInfo,
    Verdict,
};

/// A valid query to forward, and where.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The query.
    pub info: QueryInfo,
    /// The pool it goes to: the listener's, or a rule's.
    pub target: Arc<Target>,
    /// Whether the pool's cache may answer it and store its answer (a
    /// `no_cache` rule says no).
    pub cache: bool,
}

/// The same query to the same pool (the very same [`Target`]).
impl PartialEq for Admitted {
    fn eq(&self, other: &Self) -> bool {
        self.info == other.info
            && Arc::ptr_eq(&self.target, &other.target)
            && self.cache == other.cache
    }
}

/// What becomes of a client message.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// A valid query: forward it.
    Forward(Admitted),
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
        Verdict::Forward(info) => {
            inc(&m.queries);
            if let Some(d) = &shared.dynblocks {
                if let Some(action) = d.check(client) {
                    let denied = deny(m, action.into(), DropReason::DynBlock, protocol, &info);
                    if let Some(denied) = denied {
                        return denied;
                    }
                }
                let qtype = u16::from(info.question.query_type());
                d.record(client, EventKind::Query { qtype }, Millis::now());
            }
            if let Some(over) = over_limit(shared, m, client, protocol, &info) {
                return over;
            }
            if protocol == Protocol::Udp && any_answered(shared, &info) {
                m.dropped(DropReason::AnyOverUdp);
                let reply = match shared.config.any_over_udp {
                    AnyOverUdp::Refuse => synth_reply(&info, ResponseCode::Refused),
                    _ => truncated(&info),
                };
                return Admission::Reply(reply, DropReason::AnyOverUdp);
            }
            route(shared, m, client, protocol, msg, info)
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

/// What a limit or a block does to a query (`[[limit]]`'s and
/// `[[dynamic_block]]`'s `action`, the same three words).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deny {
    Drop,
    Truncate,
    Refuse,
}

impl From<BlockAction> for Deny {
    fn from(a: BlockAction) -> Self {
        match a {
            BlockAction::Drop => Self::Drop,
            BlockAction::Truncate => Self::Truncate,
            BlockAction::Refuse => Self::Refuse,
        }
    }
}

impl From<LimitAction> for Deny {
    fn from(a: LimitAction) -> Self {
        match a {
            LimitAction::Drop => Self::Drop,
            LimitAction::Truncate => Self::Truncate,
            LimitAction::Refuse => Self::Refuse,
        }
    }
}

/// What a denied query gets, counted under `reason` (`None`: truncation
/// lets a query over a stream on, its client's address being proven).
fn deny(
    m: &ListenerMetrics,
    action: Deny,
    reason: DropReason,
    protocol: Protocol,
    info: &QueryInfo,
) -> Option<Admission> {
    if action == Deny::Truncate && protocol.is_stream() {
        return None;
    }
    m.dropped(reason);
    Some(match action {
        Deny::Drop => Admission::Drop(reason),
        Deny::Truncate => Admission::Reply(truncated(info), reason),
        Deny::Refuse => {
            inc(&m.refused);
            Admission::Reply(synth_reply(info, ResponseCode::Refused), reason)
        }
    })
}

/// The limits step: what becomes of a query over one of the listener's
/// `[[limit]]`s; `None` when within all of them. Over a stream, where the
/// client's address is proven, `truncate` lets the query on.
fn over_limit(
    shared: &ListenerShared,
    m: &ListenerMetrics,
    client: IpAddr,
    protocol: Protocol,
    info: &QueryInfo,
) -> Option<Admission> {
    if shared.limits.is_empty() {
        return None;
    }
    let now = Millis::now();
    let over = shared.limits.iter().find(|l| !l.allow(client, now))?;
    deny(
        m,
        over.config().action.into(),
        DropReason::RateLimit,
        protocol,
        info,
    )
}

/// The rules step: where a valid query goes, or what is answered at once.
fn route(
    shared: &ListenerShared,
    m: &ListenerMetrics,
    client: IpAddr,
    protocol: Protocol,
    msg: &[u8],
    info: QueryInfo,
) -> Admission {
    let forward = |info, target: &Arc<Target>, cache| {
        Admission::Forward(Admitted {
            info,
            target: Arc::clone(target),
            cache,
        })
    };
    if shared.rules.is_empty() {
        return forward(info, &shared.target, true);
    }
    let ruling = shared
        .rules
        .decide(&query_view(msg, &info, client, &shared.config.name));
    let d = &ruling.decision;
    if d.log {
        tracing::info!(
            target: "dnsha::rules",
            listener = %shared.config.name,
            client = %client,
            qname = %info.question.name(),
            qtype = %info.question.query_type(),
            "query matched a log rule"
        );
    }
    let refused = |bytes| {
        m.dropped(DropReason::Rule);
        Admission::Reply(bytes, DropReason::Rule)
    };
    match d.action {
        None => forward(info, &shared.target, !d.no_cache),
        Some(Action::Pool(_)) => {
            let target = ruling.target.unwrap_or(&shared.target);
            forward(info, target, !d.no_cache)
        }
        Some(Action::Refuse) => {
            inc(&m.refused);
            refused(synth_reply(&info, ResponseCode::Refused))
        }
        Some(Action::Nxdomain) => refused(synth_reply(&info, ResponseCode::NXDomain)),
        Some(Action::Drop) => {
            m.dropped(DropReason::Rule);
            Admission::Drop(DropReason::Rule)
        }
        // Over a stream the client has shown its address: nothing to prove.
        Some(Action::Truncate) if protocol.is_stream() => {
            forward(info, &shared.target, !d.no_cache)
        }
        Some(Action::Truncate) => refused(truncated(&info)),
        Some(Action::Answer { records, ttl }) => {
            inc(&m.answers);
            Admission::Reply(fixed_answer(&info, records, *ttl), DropReason::Rule)
        }
        // Non-terminal actions never end the evaluation.
        Some(Action::NoCache | Action::Log) => forward(info, &shared.target, !d.no_cache),
    }
}

/// Whether `info` is an ANY query the listener answers itself.
fn any_answered(shared: &ListenerShared, info: &QueryInfo) -> bool {
    info.question.query_type() == RecordType::ANY && shared.config.any_over_udp != AnyOverUdp::Allow
}
