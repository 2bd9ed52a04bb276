//! Arbitrary bytes through the query path: validation, ID rewrite, the
//! answers the balancer makes, answer matching, and a DoH answer's max-age.
#![no_main]

use dnsha_proxy::wire::dns::{
    answer_matches, classify_query, parse_answer, refused_for, rewrite_id, synth_reply, Verdict,
};
use dnsha_proxy::frontend::doh::min_ttl;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match classify_query(data) {
        Verdict::Forward(info) => {
            // What is forwarded is the client's bytes with only the ID changed:
            // it must decode to the same message.
            let mut fwd = data.to_vec();
            rewrite_id(&mut fwd, info.id ^ 0x5a5a);
            let original = Message::from_vec(data).expect("validated query decodes");
            let forwarded = Message::from_vec(&fwd).expect("rewritten query decodes");
            assert_eq!(forwarded.id(), info.id ^ 0x5a5a);
            assert_eq!(original.queries(), forwarded.queries());
            assert_eq!(original.queries().len(), 1);
            // The header-and-question fast path reads what a full parse reads.
            assert_eq!(original.queries().first(), Some(&info.question));
            assert_eq!(original.recursion_desired(), info.recursion_desired);
            // Nothing after the question changes meaning with the ID.
            assert_eq!(original.answers(), forwarded.answers());
            assert_eq!(original.name_servers(), forwarded.name_servers());
            assert_eq!(original.additionals(), forwarded.additionals());
            assert_eq!(original.extensions(), forwarded.extensions());
            // The balancer's own answers decode and match the question.
            for rcode in [ResponseCode::ServFail, ResponseCode::Refused] {
                let bytes = synth_reply(&info, rcode);
                let m = Message::from_vec(&bytes).expect("synthesized answer decodes");
                assert_eq!(m.id(), info.id);
                let a = parse_answer(&bytes).expect("synthesized answer parses");
                assert!(answer_matches(&a, &info.question));
            }
        }
        Verdict::Reply(bytes, _) => {
            let m = Message::from_vec(&bytes).expect("error reply decodes");
            assert_eq!(&bytes[..2], &data[..2]);
            assert!(m.queries().is_empty());
        }
        Verdict::Drop(_) => {}
    }
    // Any bytes as a backend answer: never panics.
    if let Some(a) = parse_answer(data) {
        if let Some(q) = &a.question {
            assert!(answer_matches(&a, q));
        }
    }
    let _ = refused_for(data);
    // Any bytes as an answer to a DoH request: the record-by-record max-age
    // agrees with the same rule over hickory's full decode.
    let ttl = min_ttl(data);
    if let Ok(m) = Message::from_vec(data) {
        // RFC 2181 §8: a TTL with the top bit set counts as 0.
        let clamp = |t: u32| if t > i32::MAX as u32 { 0 } else { t };
        let expected = m
            .answers()
            .iter()
            .chain(m.name_servers())
            .chain(m.additionals())
            .filter(|r| {
                !matches!(
                    r.record_type(),
                    RecordType::OPT | RecordType::SIG | RecordType::TSIG
                )
            })
            .map(|r| match r.data() {
                RData::SOA(soa) => Some(clamp(r.ttl()).min(clamp(soa.minimum()))),
                // An SOA without its data (as in an UPDATE) is no answer.
                _ if r.record_type() == RecordType::SOA => None,
                _ => Some(clamp(r.ttl())),
            })
            .try_fold(None, |min: Option<u32>, t| {
                t.map(|t| Some(min.map_or(t, |m| m.min(t))))
            })
            .flatten()
            .unwrap_or(0);
        assert_eq!(ttl, expected, "max-age of a message hickory decodes");
    }
});
