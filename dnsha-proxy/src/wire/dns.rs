//! Sans-IO DNS wire handling: query validation, ID rewrite, answer matching
//! and the small answers the balancer makes itself (SERVFAIL, REFUSED, ...).
//!
//! Everything here is pure and runs on byte slices; the frontends forward the
//! client's own bytes with only the ID changed, never a re-encoding.

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

pub use dnsha_core::rules::{Edns, FixedRecord};

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;

/// Largest DNS message (TCP length prefix limit).
pub const MAX_MESSAGE: usize = 65_535;

/// Why a datagram or message was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a DNS header.
    Short,
    /// QR=1: a response sent to the listener.
    Response,
    /// TC=1 in a query.
    Truncated,
    /// The message does not parse (bad names, pointer loops, counts beyond the
    /// packet, trailing data). Answered FORMERR when the header is readable.
    Malformed,
    /// The client is not in the listener's `allow` list.
    Acl,
    /// No backend could answer and the pool says `drop`.
    NoBackend,
    /// A backend answer that matches no pending query.
    UnmatchedAnswer,
    /// A backend answer whose question differs from the query's.
    WrongQuestion,
    /// A backend answer from an unexpected address.
    WrongSource,
    /// Too many queries in flight on this worker.
    Overload,
    /// A query of type ANY over UDP, answered at once with TC=1 or REFUSED
    /// (the listener's `any_over_udp`, RFC 8482).
    AnyOverUdp,
    /// Over the listener's `max_queries_per_client` in flight from one
    /// client address: answered SERVFAIL at once.
    ClientLimit,
    /// A `[[rule]]` refused, answered NXDOMAIN, truncated or dropped it.
    Rule,
    /// Over a `[[limit]]`: dropped, truncated or refused as it says.
    RateLimit,
    /// From a prefix a `[[dynamic_block]]` blocked.
    DynBlock,
}

impl DropReason {
    /// Every reason, for metrics.
    pub const ALL: [Self; 15] = [
        Self::Short,
        Self::Response,
        Self::Truncated,
        Self::Malformed,
        Self::Acl,
        Self::NoBackend,
        Self::UnmatchedAnswer,
        Self::WrongQuestion,
        Self::WrongSource,
        Self::Overload,
        Self::AnyOverUdp,
        Self::ClientLimit,
        Self::Rule,
        Self::RateLimit,
        Self::DynBlock,
    ];

    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Response => "response",
            Self::Truncated => "truncated",
            Self::Malformed => "malformed",
            Self::Acl => "acl",
            Self::NoBackend => "no_backend",
            Self::UnmatchedAnswer => "unmatched_answer",
            Self::WrongQuestion => "wrong_question",
            Self::WrongSource => "wrong_source",
            Self::Overload => "overload",
            Self::AnyOverUdp => "any_over_udp",
            Self::ClientLimit => "client_limit",
            Self::Rule => "rule",
            Self::RateLimit => "rate_limit",
            Self::DynBlock => "dynamic_block",
        }
    }

    /// Index into [`Self::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

/// A valid query, ready to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryInfo {
    /// The client's query ID.
    pub id: u16,
    /// The single question.
    pub question: Query,
    /// Recursion desired flag (copied into answers the balancer makes).
    pub recursion_desired: bool,
    /// The query's EDNS record, if it has one (for the rules).
    pub edns: Option<Edns>,
}

/// What to do with a message received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it (with the ID rewritten) to a backend.
    Forward(QueryInfo),
    /// Answer the client with these bytes (FORMERR, NOTIMP), counted under the reason.
    Reply(Vec<u8>, DropReason),
    /// Drop it silently and count it.
    Drop(DropReason),
}

/// Smallest possible resource record: root name, type, class, TTL, RDLENGTH.
const MIN_RR: usize = 11;
/// Most bytes of 0xC0 or more (each could start a compression pointer)
/// the records of a query may hold: this bounds the pointer chains the
/// parser follows (see [`classify_query`]).
pub const MAX_POINTER_BYTES: usize = 64;

/// Smallest possible question: root name, type, class.
const MIN_QUESTION: usize = 5;

/// Validates a client message: a standard query (QR=0, opcode QUERY, TC=0)
/// with exactly one question and a body that parses completely, without
/// trailing bytes. Record counts larger than the packet could hold are
/// rejected before any allocation.
pub fn classify_query(buf: &[u8]) -> Verdict {
    if buf.len() < HEADER_LEN {
        return Verdict::Drop(DropReason::Short);
    }
    let mut dec = BinDecoder::new(buf);
    let Ok(header) = Header::read(&mut dec) else {
        return Verdict::Drop(DropReason::Short);
    };
    if header.message_type() == MessageType::Response {
        return Verdict::Drop(DropReason::Response);
    }
    if header.truncated() {
        return Verdict::Drop(DropReason::Truncated);
    }
    if header.op_code() != OpCode::Query {
        return Verdict::Reply(
            header_only_reply(&header, ResponseCode::NotImp),
            DropReason::Malformed,
        );
    }
    let body = buf.len() - HEADER_LEN;
    let records = usize::from(header.answer_count())
        + usize::from(header.name_server_count())
        + usize::from(header.additional_count());
    if header.query_count() != 1 || body < MIN_QUESTION + records * MIN_RR {
        return Verdict::Reply(
            header_only_reply(&header, ResponseCode::FormErr),
            DropReason::Malformed,
        );
    }
    let Some(qname_len) = question_name_len(buf) else {
        return Verdict::Reply(
            header_only_reply(&header, ResponseCode::FormErr),
            DropReason::Malformed,
        );
    };
    let after_question = HEADER_LEN + qname_len + 4;
    // The common cases — the question alone, or the question and an OPT
    // record without options — need nothing beyond the header and question:
    // read just those (no allocation), check that nothing follows.
    let bare = match buf.get(after_question..) {
        Some([]) => records == 0,
        Some(rest) => {
            header.answer_count() == 0
                && header.name_server_count() == 0
                && header.additional_count() == 1
                && is_bare_opt(rest)
        }
        None => false,
    };
    if bare {
        // The OPT record's TTL field holds the flags; DO is its top bit.
        let edns = buf.get(after_question..).and_then(|rest| {
            (!rest.is_empty()).then(|| Edns {
                dnssec_ok: rest.get(7).is_some_and(|f| f & 0x80 != 0),
            })
        });
        return match Query::read(&mut dec) {
            Ok(question) => Verdict::Forward(QueryInfo {
                id: header.id(),
                question,
                recursion_desired: header.recursion_desired(),
                edns,
            }),
            Err(_) => Verdict::Reply(
                header_only_reply(&header, ResponseCode::FormErr),
                DropReason::Malformed,
            ),
        };
    }
    // Records after the question may hold compression pointers; only when a
    // pointer-like byte is there is the costlier ID-independence check run.
    // hickory follows a pointer by recursion, one frame per hop: a chain of
    // thousands of pointers, each to the one before, would overflow the
    // stack. A pointer needs a byte of 0xC0 or more, so a query with at
    // most MAX_POINTER_BYTES of them cannot hold a longer chain; one with
    // more (no real query has: cookies, ECS, padding and TSIG hold a few)
    // is refused before it is parsed.
    let pointer_bytes = buf
        .get(after_question..)
        .map_or(0, |rest| rest.iter().filter(|&&b| b >= 0xC0).count());
    if pointer_bytes > MAX_POINTER_BYTES {
        return Verdict::Reply(
            header_only_reply(&header, ResponseCode::FormErr),
            DropReason::Malformed,
        );
    }
    let may_point = records > 0 && pointer_bytes > 0;
    let mut dec = BinDecoder::new(buf);
    match Message::read(&mut dec) {
        Ok(msg) if dec.is_empty() && (!may_point || same_without_id(buf, &msg)) => {
            match msg.queries().first() {
                Some(q) => Verdict::Forward(QueryInfo {
                    id: header.id(),
                    question: q.clone(),
                    recursion_desired: header.recursion_desired(),
                    edns: msg.extensions().as_ref().map(|e| Edns {
                        dnssec_ok: e.flags().dnssec_ok,
                    }),
                }),
                None => Verdict::Reply(
                    header_only_reply(&header, ResponseCode::FormErr),
                    DropReason::Malformed,
                ),
            }
        }
        _ => Verdict::Reply(
            header_only_reply(&header, ResponseCode::FormErr),
            DropReason::Malformed,
        ),
    }
}

/// True when `rest` is exactly one OPT record (EDNS) with no options: root
/// owner name, type 41, any payload size / extended flags, RDLENGTH 0.
fn is_bare_opt(rest: &[u8]) -> bool {
    matches!(rest, [0, 0, 41, _, _, _, _, _, _, 0, 0])
}

/// The question's name of a validated query, in wire format as received.
pub fn question_name(buf: &[u8]) -> Option<&[u8]> {
    let len = question_name_len(buf)?;
    buf.get(HEADER_LEN..HEADER_LEN + len)
}

/// Wire length of the question name at offset 12, which must be written out
/// in full: labels of 1 to 63 bytes, at most 255 bytes in all, no
/// compression pointer (the question is the first name of a message, so any
/// pointer in it points into the header or into itself).
fn question_name_len(buf: &[u8]) -> Option<usize> {
    let mut i = HEADER_LEN;
    loop {
        let len = usize::from(*buf.get(i)?);
        if len == 0 {
            let total = i + 1 - HEADER_LEN;
            return (total <= 255).then_some(total);
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
        if i - HEADER_LEN > 255 {
            return None;
        }
    }
}

/// Which letters of a query's name [`randomize_case`] flipped: one bit per
/// byte of the name (at most 255).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaseMask([u8; 32]);

impl CaseMask {
    fn set(&mut self, i: usize) {
        if let Some(b) = self.0.get_mut(i / 8) {
            *b |= 1 << (i % 8);
        }
    }

    fn get(&self, i: usize) -> bool {
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}

/// DNS 0x20 (draft-vixie-dnsext-dns0x20): flips the case of each letter of
/// the question name in `query` at random, so an off-path forger must guess
/// the case of every letter besides the ID. Returns which bytes were
/// flipped, or `None` for a message whose name cannot be read without a
/// parse (not one the frontends forward).
pub fn randomize_case(query: &mut [u8], rng: &mut impl rand::RngCore) -> Option<CaseMask> {
    let len = question_name_len(query)?;
    let mut mask = CaseMask::default();
    let mut bits = rng.next_u64();
    let mut used = 0;
    let mut i = HEADER_LEN;
    while i < HEADER_LEN + len {
        let label = usize::from(*query.get(i)?);
        for j in i + 1..=i + label {
            let b = query.get_mut(j)?;
            if b.is_ascii_alphabetic() {
                if used == 64 {
                    bits = rng.next_u64();
                    used = 0;
                }
                if bits & 1 == 1 {
                    *b ^= 0x20;
                    mask.set(j - HEADER_LEN);
                }
                bits >>= 1;
                used += 1;
            }
        }
        i += 1 + label;
    }
    Some(mask)
}

/// Whether `answer` echoes the question name of `query` byte for byte (case
/// included), as a backend answering a 0x20 query must.
pub fn same_name_case(query: &[u8], answer: &[u8]) -> bool {
    let Some(len) = question_name_len(query) else {
        return false;
    };
    let range = HEADER_LEN..HEADER_LEN + len;
    query.get(range.clone()).is_some() && query.get(range.clone()) == answer.get(range)
}

/// Flips back in `answer`'s question name the letters `mask` says were
/// flipped: the client gets its own spelling.
pub fn restore_case(answer: &mut [u8], mask: &CaseMask) {
    for i in 0..255 {
        if mask.get(i) {
            if let Some(b) = answer.get_mut(HEADER_LEN + i) {
                *b ^= 0x20;
            }
        }
    }
}

/// True when the message decodes to the same records with another ID: a
/// compression pointer into the ID field would make the forwarded message
/// (whose ID is rewritten) mean something else.
fn same_without_id(buf: &[u8], msg: &Message) -> bool {
    let mut flipped = buf.to_vec();
    if let Some(id) = flipped.get_mut(..2) {
        id[0] ^= 0xff;
        id[1] ^= 0xff;
    }
    let Ok(other) = Message::from_vec(&flipped) else {
        return false;
    };
    other.answers() == msg.answers()
        && other.name_servers() == msg.name_servers()
        && other.additionals() == msg.additionals()
        && other.extensions() == msg.extensions()
}

/// The ID of a message (first two bytes), if it has a header.
pub fn message_id(buf: &[u8]) -> Option<u16> {
    match buf {
        [a, b, ..] if buf.len() >= HEADER_LEN => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Whether a message has the TC (truncated) bit set; `false` without a
/// header.
pub fn is_truncated(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// Writes `id` into the message's ID field (no-op on a buffer shorter than a header).
pub fn rewrite_id(buf: &mut [u8], id: u16) {
    if buf.len() >= HEADER_LEN {
        buf[..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// The parts of a backend answer the balancer checks before relaying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerInfo {
    /// Upstream ID.
    pub id: u16,
    /// Response code (without EDNS extension).
    pub rcode: ResponseCode,
    /// Truncated flag.
    pub truncated: bool,
    /// The question, if the answer has exactly one.
    pub question: Option<Query>,
}

/// Reads the header and question of a backend answer; `None` unless it is a
/// response (QR=1) with a readable header. Only the header and question are
/// parsed: the rest is relayed untouched.
pub fn parse_answer(buf: &[u8]) -> Option<AnswerInfo> {
    let mut dec = BinDecoder::new(buf);
    let header = Header::read(&mut dec).ok()?;
    if header.message_type() != MessageType::Response {
        return None;
    }
    let question = if header.query_count() == 1 {
        Query::read(&mut dec).ok()
    } else {
        None
    };
    Some(AnswerInfo {
        id: header.id(),
        rcode: header.response_code(),
        truncated: header.truncated(),
        question,
    })
}

/// True when an answer belongs to the query: it echoes the same question
/// (names compare case-insensitively). An answer without the question, even
/// a truncated one, is matched by nothing: the 16-bit ID alone is what an
/// off-path forger has to guess, the question adds the name.
pub fn answer_matches(answer: &AnswerInfo, question: &Query) -> bool {
    answer.question.as_ref() == Some(question)
}

/// The response code of a relayed answer as the access log shows it.
pub fn rcode_of(buf: &[u8]) -> Option<ResponseCode> {
    let mut dec = BinDecoder::new(buf);
    Header::read(&mut dec).ok().map(|h| h.response_code())
}

/// The mnemonic of a response code as dig prints it (`NOERROR`, `SERVFAIL`, ...).
pub fn rcode_name(rcode: ResponseCode) -> std::borrow::Cow<'static, str> {
    let name = match u16::from(rcode) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        n => return format!("RCODE{n}").into(),
    };
    name.into()
}

/// What the access log shows for the message sent to a client: the rcode
/// mnemonic, or `-` when nothing was sent.
pub fn rcode_label(sent: Option<&[u8]>) -> String {
    sent.and_then(rcode_of)
        .map_or_else(|| "-".to_string(), |r| rcode_name(r).into_owned())
}

fn header_only_reply(query: &Header, rcode: ResponseCode) -> Vec<u8> {
    let mut h = Header::response_from_request(query);
    h.set_response_code(rcode)
        .set_query_count(0)
        .set_answer_count(0)
        .set_name_server_count(0)
        .set_additional_count(0);
    let mut out = Vec::with_capacity(HEADER_LEN);
    let mut enc = hickory_proto::serialize::binary::BinEncoder::new(&mut out);
    if hickory_proto::serialize::binary::BinEncodable::emit(&h, &mut enc).is_err() {
        return Vec::new();
    }
    out
}

/// An answer made by the balancer for a valid query (SERVFAIL when no backend
/// answered, REFUSED for a client outside the ACL over TCP).
pub fn synth_reply(query: &QueryInfo, rcode: ResponseCode) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(query.id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(query.recursion_desired)
        .set_recursion_available(true)
        .set_response_code(rcode)
        .add_query(query.question.clone());
    m.to_vec().unwrap_or_default()
}

/// A fixed answer of a rule: the `records` of the question's type (all of
/// them for ANY) with `ttl`, authoritative; NOERROR without records for
/// other types.
pub fn fixed_answer(query: &QueryInfo, records: &[FixedRecord], ttl: u32) -> Vec<u8> {
    use hickory_proto::rr::rdata::{A, AAAA, TXT};
    use hickory_proto::rr::{RData, Record, RecordType};
    let qtype = query.question.query_type();
    let name = query.question.name().clone();
    let mut m = Message::new();
    m.set_id(query.id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired)
        .set_recursion_available(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(query.question.clone());
    for r in records {
        let (rtype, data) = match r {
            FixedRecord::A(a) => (RecordType::A, RData::A(A(*a))),
            FixedRecord::Aaaa(a) => (RecordType::AAAA, RData::AAAA(AAAA(*a))),
            FixedRecord::Txt(t) => (RecordType::TXT, RData::TXT(TXT::new(vec![t.clone()]))),
        };
        if qtype == rtype || qtype == RecordType::ANY {
            m.add_answer(Record::from_rdata(name.clone(), ttl, data));
        }
    }
    m.to_vec().unwrap_or_default()
}

/// The UDP payload a client accepts: its EDNS size (at least 512), or 512.
pub fn udp_payload_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|m| m.extensions().as_ref().map(|e| e.max_payload()))
        .map_or(512, |n| usize::from(n.max(512)))
}

/// An empty answer with TC=1 for a query whose answer does not fit in the
/// client's UDP payload size: the client asks again over TCP.
pub fn truncated(info: &QueryInfo) -> Vec<u8> {
    let mut reply = synth_reply(info, ResponseCode::NoError);
    if let Some(flags) = reply.get_mut(2) {
        *flags |= 0x02;
    }
    reply
}

/// REFUSED for any message with a readable header (used when the query itself
/// is not parsed, e.g. an ACL refusal over TCP).
pub fn refused_for(buf: &[u8]) -> Option<Vec<u8>> {
    let mut dec = BinDecoder::new(buf);
    let header = Header::read(&mut dec).ok()?;
    if let Verdict::Forward(q) = classify_query(buf) {
        return Some(synth_reply(&q, ResponseCode::Refused));
    }
    Some(header_only_reply(&header, ResponseCode::Refused))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn reply_rcode(v: Verdict) -> ResponseCode {
        match v {
            Verdict::Reply(b, _) => {
                let m = Message::from_vec(&b).unwrap();
                assert_eq!(m.message_type(), MessageType::Response);
                m.response_code()
            }
            other => panic!("expected reply, got {other:?}"),
        }
    }

    #[test]
    fn good_query_forwards() {
        let q = query("www.example.test.");
        match classify_query(&q) {
            Verdict::Forward(info) => {
                assert_eq!(info.id, 0x1234);
                assert_eq!(info.question.name().to_ascii(), "www.example.test.");
                assert!(info.recursion_desired);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn edns_query_forwards() {
        let mut m = Message::new();
        m.add_query(Query::query(
            Name::from_ascii("a.test.").unwrap(),
            RecordType::A,
        ));
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(4096);
        m.set_edns(edns);
        assert!(matches!(
            classify_query(&m.to_vec().unwrap()),
            Verdict::Forward(_)
        ));
    }

    #[test]
    fn short_and_response_and_tc_are_dropped() {
        assert_eq!(classify_query(&[]), Verdict::Drop(DropReason::Short));
        assert_eq!(classify_query(&[0; 11]), Verdict::Drop(DropReason::Short));
        let mut q = query("a.test.");
        q[2] |= 0x80;
        assert_eq!(classify_query(&q), Verdict::Drop(DropReason::Response));
        let mut q = query("a.test.");
        q[2] |= 0x02;
        assert_eq!(classify_query(&q), Verdict::Drop(DropReason::Truncated));
    }

    #[test]
    fn question_count_zero_or_two_is_formerr() {
        let mut q = query("a.test.");
        q[5] = 0;
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
        q[5] = 2;
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
        // header only, empty query
        let mut h = vec![0u8; 12];
        h[0] = 7;
        assert_eq!(reply_rcode(classify_query(&h)), ResponseCode::FormErr);
    }

    #[test]
    fn other_opcode_is_notimp() {
        let mut q = query("a.test.");
        q[2] |= 2 << 3; // STATUS
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::NotImp);
    }

    /// A query with ARCOUNT 2: a record whose opaque data holds the root
    /// and `hops` pointers, each to the one before it, then a record whose
    /// owner name points at the last of them.
    fn pointer_chain_query(hops: usize) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 2];
        q.extend_from_slice(&[3, b'w', b'w', b'w', 0, 0, 1, 0, 1]);
        // Record 1: root owner, private type 65280, opaque data.
        q.extend_from_slice(&[0, 0xff, 0x00, 0, 1, 0, 0, 0, 0]);
        let rdlen = 1 + 2 * hops;
        q.extend_from_slice(&u16::try_from(rdlen).unwrap().to_be_bytes());
        let first = q.len();
        q.push(0);
        let mut last = first;
        for _ in 0..hops {
            let at = q.len();
            q.extend_from_slice(&(0xC000 | u16::try_from(last).unwrap()).to_be_bytes());
            last = at;
        }
        // Record 2: its owner is the last pointer's target chain.
        q.extend_from_slice(&(0xC000 | u16::try_from(last).unwrap()).to_be_bytes());
        q.extend_from_slice(&[0xff, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q
    }

    #[test]
    fn long_pointer_chains_are_formerr_without_deep_recursion() {
        // 16 000 hops fill a 32 KB message: on a thread with a small stack
        // (64 KiB) the check must still end in an answer, not an overflow.
        // A short chain is valid DNS: forwarded.
        assert!(matches!(
            classify_query(&pointer_chain_query(2)),
            Verdict::Forward(_)
        ));
        for hops in [MAX_POINTER_BYTES, 200, 16_000] {
            let q = pointer_chain_query(hops);
            let verdict = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || classify_query(&q))
                .unwrap()
                .join()
                .expect("no stack overflow");
            assert_eq!(reply_rcode(verdict), ResponseCode::FormErr, "{hops} hops");
        }
    }

    #[test]
    fn compression_loops_are_formerr() {
        let header = [0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for name in [
            &[0xC0, 0x00][..],
            &[0x01, 0x41, 0xC0, 0x00],
            &[0xC0, 0x02, 0xC0, 0x00],
            &[0xC0, 0x0C],
            &[0xC0, 0x0E, 0xC0, 0x0C],
        ] {
            let mut q = header.to_vec();
            q.extend_from_slice(name);
            q.extend_from_slice(&[0, 1, 0, 1]);
            assert_eq!(
                reply_rcode(classify_query(&q)),
                ResponseCode::FormErr,
                "{name:02x?}"
            );
        }
    }

    #[test]
    fn long_labels_and_names_are_formerr() {
        let header = [0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let mut q = header.to_vec();
        q.push(64);
        q.extend_from_slice(&[b'a'; 64]);
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
        let mut q = header.to_vec();
        for _ in 0..5 {
            q.push(63);
            q.extend_from_slice(&[b'a'; 63]);
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
    }

    #[test]
    fn pointer_into_the_id_in_a_record_is_formerr() {
        // fuzz finding: an additional record whose owner name points at the
        // ID bytes decodes differently once the ID is rewritten.
        let mut q = query("a.test.");
        q[11] = 1; // ARCOUNT 1
        q.extend_from_slice(&[0xC0, 0x00, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        q[0] = 0;
        q[1] = 0;
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
        // the same record with a pointer to the question name is fine
        let mut q = query("a.test.");
        q[11] = 1;
        q.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(classify_query(&q), Verdict::Forward(_)));
    }

    #[test]
    fn trailing_garbage_is_formerr() {
        let mut q = query("a.test.");
        q.extend_from_slice(b"smuggled");
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
    }

    #[test]
    fn huge_counts_with_tiny_body_are_rejected_early() {
        let mut q = query("a.test.");
        q[6] = 0xff;
        q[7] = 0xff;
        q[10] = 0xff;
        q[11] = 0xff;
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
    }

    #[test]
    fn id_rewrite_and_answer_match() {
        let mut q = query("WwW.Example.Test.");
        let Verdict::Forward(info) = classify_query(&q) else {
            panic!()
        };
        rewrite_id(&mut q, 0xBEEF);
        assert_eq!(message_id(&q), Some(0xBEEF));
        let mut ans = Message::from_vec(&q).unwrap();
        ans.set_message_type(MessageType::Response);
        let bytes = ans.to_vec().unwrap();
        let a = parse_answer(&bytes).unwrap();
        assert_eq!(a.id, 0xBEEF);
        // case-insensitive question match
        let other = Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        );
        assert!(answer_matches(&a, &other));
        assert!(answer_matches(&a, &info.question));
        let wrong = Query::query(Name::from_ascii("x.test.").unwrap(), RecordType::A);
        assert!(!answer_matches(&a, &wrong));
        // a query is not an answer
        assert!(parse_answer(&query("a.test.")).is_none());
        assert!(parse_answer(&[1, 2, 3]).is_none());
    }

    #[test]
    fn rcode_names_as_dig_prints_them() {
        assert_eq!(rcode_name(ResponseCode::NoError), "NOERROR");
        assert_eq!(rcode_name(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::Unknown(3000)), "RCODE3000");
        assert_eq!(rcode_label(None), "-");
    }

    #[test]
    fn synthesized_servfail_keeps_id_and_question() {
        let q = query("a.test.");
        let Verdict::Forward(info) = classify_query(&q) else {
            panic!()
        };
        let m = Message::from_vec(&synth_reply(&info, ResponseCode::ServFail)).unwrap();
        assert_eq!(m.id(), 0x1234);
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        assert_eq!(m.queries(), &[info.question]);
        let r = Message::from_vec(&refused_for(&q).unwrap()).unwrap();
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert!(refused_for(&[0; 3]).is_none());
    }

    fn edns_query(options: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x4242).add_query(Query::query(
            Name::from_ascii("Mixed.Case.test.").unwrap(),
            RecordType::AAAA,
        ));
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(1232);
        if options {
            edns.options_mut()
                .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                    10,
                    vec![1, 2, 3, 4, 5, 6, 7, 8],
                ));
        }
        m.set_edns(edns);
        m.to_vec().unwrap()
    }

    /// The header-and-question fast path and the full parse agree on every
    /// query both accept: same ID, question and RD flag.
    #[test]
    fn fast_path_and_full_parse_agree() {
        for q in [
            query("www.example.test."),
            edns_query(false),
            edns_query(true),
        ] {
            let full = Message::from_vec(&q).unwrap();
            match classify_query(&q) {
                Verdict::Forward(info) => {
                    assert_eq!(info.id, full.id());
                    assert_eq!(Some(&info.question), full.queries().first());
                    assert_eq!(info.recursion_desired, full.recursion_desired());
                }
                other => panic!("{other:?}"),
            }
        }
        let bare = edns_query(false);
        assert!(is_bare_opt(&bare[bare.len() - 11..]));
        let with_option = edns_query(true);
        assert!(!is_bare_opt(&with_option[with_option.len() - 23..]));
    }

    #[test]
    fn damaged_opt_records_are_formerr() {
        // A bare OPT with a byte after it.
        let mut q = edns_query(false);
        q.push(0);
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
        // An OPT whose RDLENGTH claims more than there is.
        let mut q = edns_query(false);
        let n = q.len();
        q[n - 1] = 4;
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
        // ARCOUNT 1 and no record.
        let mut q = query("a.test.");
        q[11] = 1;
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
        // An option cut short inside the OPT record.
        let mut q = edns_query(true);
        q.truncate(q.len() - 3);
        assert_eq!(reply_rcode(classify_query(&q)), ResponseCode::FormErr);
    }
}

#[cfg(test)]
mod case_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_proto::rr::{Name, RecordType};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(9)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    #[test]
    fn case_is_randomized_checked_and_restored() {
        let client = query("WwW.Example.TEST.");
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut q = client.clone();
            let mask = randomize_case(&mut q, &mut rng).unwrap();
            // Same name, other case; the rest untouched.
            assert!(q[12..].eq_ignore_ascii_case(&client[12..]));
            assert_eq!(q[..12], client[..12]);
            seen.insert(q.clone());
            // The backend echoes the question it got.
            let mut answer = q.clone();
            answer[2] |= 0x80;
            assert!(same_name_case(&q, &answer));
            assert!(!same_name_case(&client, &answer) || q == client);
            restore_case(&mut answer, &mask);
            assert_eq!(answer[12..], client[12..]);
        }
        assert!(seen.len() > 10, "{} spellings", seen.len());
        // A forged answer in another case is told apart.
        let mut q = client.clone();
        randomize_case(&mut q, &mut rng).unwrap();
        let mut forged = q.clone();
        forged[13] ^= 0x20;
        assert!(!same_name_case(&q, &forged));
        // Digits and the root are left alone.
        let mut q = query("123.");
        let mask = randomize_case(&mut q, &mut rng).unwrap();
        assert_eq!(mask, CaseMask::default());
        assert!(randomize_case(&mut [0u8; 5], &mut rng).is_none());
    }
}
