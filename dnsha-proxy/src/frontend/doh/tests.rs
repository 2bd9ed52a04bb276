#![allow(clippy::unwrap_used)]

use super::*;
use crate::testing::query_msg;
use base64::Engine as _;
use ipnet::IpNet;
use proptest::prelude::*;
use std::net::IpAddr;

const P: &str = "/dns-query";
const CT: Option<&[u8]> = Some(b"application/dns-message");

fn get(target: &str) -> Result<Vec<u8>, DohError> {
    decode_request("GET", target, None, &[], P)
}

#[test]
fn get_decodes_base64url_without_padding() {
    let (q, _) = query_msg(0, "www.example.test.");
    let target = format!("{P}?dns={}", encode_get_param(&q));
    assert!(!target.ends_with('='));
    assert_eq!(get(&target), Ok(q.clone()));
    // Other parameters around it are ignored; padding is tolerated.
    let padded = base64::engine::general_purpose::URL_SAFE.encode(&q);
    assert_eq!(get(&format!("{P}?ct=x&dns={padded}&z=1")), Ok(q));
}

#[test]
fn each_error_has_its_status() {
    let (q, _) = query_msg(0, "a.test.");
    let ok = encode_get_param(&q);
    type Case<'a> = (&'a str, String, Option<&'a [u8]>, Vec<u8>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("GET", format!("/other?dns={ok}"), None, vec![], 404),
        ("GET", format!("{P}/x?dns={ok}"), None, vec![], 404),
        ("GET", format!("{P}?dns=***"), None, vec![], 400),
        ("GET", format!("{P}?dns=AAAA"), None, vec![], 400),
        ("GET", P.to_string(), None, vec![], 400),
        (
            "GET",
            format!("{P}?dns={}", "A".repeat(90_000)),
            None,
            vec![],
            413,
        ),
        ("PUT", P.to_string(), CT, q.clone(), 405),
        ("HEAD", format!("{P}?dns={ok}"), None, vec![], 405),
        ("POST", P.to_string(), None, q.clone(), 415),
        ("POST", P.to_string(), Some(b"text/plain"), q.clone(), 415),
        ("POST", P.to_string(), CT, vec![0; 65_536], 413),
        ("POST", P.to_string(), CT, vec![0; 5], 400),
        (
            "POST",
            "/nope".to_string(),
            Some(b"text/plain"),
            vec![],
            404,
        ),
    ];
    for (method, target, ct, body, status) in cases {
        let got = decode_request(method, &target, ct, &body, P).map_err(|e| e.status().as_u16());
        assert_eq!(
            got,
            Err(status),
            "{method} {}",
            &target[..target.len().min(60)]
        );
    }
    // Content type parameters and case do not matter.
    let ct: &[u8] = b"Application/DNS-Message; charset=binary";
    assert_eq!(decode_request("POST", P, Some(ct), &q, P), Ok(q.clone()));
    // A declared length over the limit is refused before any body is read.
    assert_eq!(
        check_head("POST", P, CT, Some(1 << 20), P),
        Err(DohError::PayloadTooLarge)
    );
    assert_eq!(check_head("POST", P, CT, Some(100), P), Ok(Head::Post));
}

#[test]
fn forwarded_for_only_from_trusted_proxies() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let proxy: SocketAddr = "10.1.2.3:4000".parse().unwrap();
    let stranger: SocketAddr = "192.0.2.9:4000".parse().unwrap();
    // Not a proxy: the header is ignored.
    assert_eq!(client_addr(stranger, &["198.51.100.1"], &trusted), stranger);
    // A proxy: the rightmost untrusted entry.
    let c = client_addr(proxy, &["198.51.100.1, 203.0.113.5, 10.9.9.9"], &trusted);
    assert_eq!(c.ip(), "203.0.113.5".parse::<IpAddr>().unwrap());
    // Several headers are one list.
    let c = client_addr(proxy, &["198.51.100.1", "203.0.113.7"], &trusted);
    assert_eq!(c.ip(), "203.0.113.7".parse::<IpAddr>().unwrap());
    // Garbage stops the walk at the last good address.
    assert_eq!(client_addr(proxy, &["junk"], &trusted), proxy);
    let c = client_addr(proxy, &["[2001:db8::1]:443"], &trusted);
    assert_eq!(c.ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
    // No trusted proxies configured: never.
    assert_eq!(client_addr(proxy, &["198.51.100.1"], &[]), proxy);
}

#[test]
fn max_age_is_the_smallest_ttl() {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record};
    let name = Name::from_ascii("a.test.").unwrap();
    let mut m = Message::new();
    m.set_message_type(MessageType::Response);
    m.add_answer(Record::from_rdata(
        name.clone(),
        300,
        RData::A(A::new(192, 0, 2, 1)),
    ));
    m.add_answer(Record::from_rdata(
        name.clone(),
        42,
        RData::A(A::new(192, 0, 2, 2)),
    ));
    assert_eq!(min_ttl(&m.to_vec().unwrap()), 42);
    let mut neg = Message::new();
    neg.set_message_type(MessageType::Response);
    let soa = SOA::new(name.clone(), name.clone(), 1, 3600, 600, 86400, 30);
    neg.add_name_server(Record::from_rdata(name, 3600, RData::SOA(soa)));
    assert_eq!(min_ttl(&neg.to_vec().unwrap()), 30);
    assert_eq!(min_ttl(&[1, 2, 3]), 0);
    // An OPT record's TTL field (extended RCODE and flags, here DO) is no
    // TTL.
    let mut edns = Message::new();
    edns.set_message_type(MessageType::Response);
    edns.add_answer(Record::from_rdata(
        Name::from_ascii("a.test.").unwrap(),
        300,
        RData::A(A::new(192, 0, 2, 1)),
    ));
    let mut e = hickory_proto::op::Edns::new();
    e.set_dnssec_ok(true);
    edns.set_edns(e);
    let wire = edns.to_vec().unwrap();
    assert_eq!(min_ttl(&wire), 300);
    // Cut short inside the last record: does not parse.
    assert_eq!(min_ttl(&wire[..wire.len() - 3]), 0);
    // RFC 2181 §8: a TTL with the top bit set counts as 0.
    let mut huge = Message::new();
    huge.set_message_type(MessageType::Response);
    huge.add_answer(Record::from_rdata(
        Name::from_ascii("a.test.").unwrap(),
        0x8000_0001,
        RData::A(A::new(192, 0, 2, 1)),
    ));
    assert_eq!(min_ttl(&huge.to_vec().unwrap()), 0);
    // An SOA record without its data (found by the fuzzer): no max-age.
    let empty_soa = [
        0x3a, 0x0a, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, // header: 1 question, 1 answer
        0, 0x3a, 0x0a, 0, 0, // question: root
        0, 0, 6, 0, 0xfe, 0xff, 0x10, 0x2d, 0x0d, 0, 0, // SOA, class NONE, no data
    ];
    assert_eq!(min_ttl(&empty_soa), 0);
    // No records at all.
    let mut empty = Message::new();
    empty.set_message_type(MessageType::Response);
    assert_eq!(min_ttl(&empty.to_vec().unwrap()), 0);
}

#[test]
fn rate_limiter_allows_bursts_then_the_rate() {
    let lim = RateLimiter::default();
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    let t0 = Instant::now();
    let allowed = (0..15).filter(|_| lim.allow(ip, 10, t0)).count();
    assert_eq!(allowed, 10);
    assert!(lim.allow(other, 10, t0), "buckets are per client");
    assert!(!lim.allow(ip, 10, t0));
    assert!(lim.allow(ip, 10, t0 + Duration::from_millis(100)));
    assert!(!lim.allow(ip, 10, t0 + Duration::from_millis(100)));
}

proptest! {
    /// Any message survives GET encoding and decoding; decoding never panics.
    #[test]
    fn get_round_trips(msg in proptest::collection::vec(any::<u8>(), 12..600)) {
        let target = format!("{P}?dns={}", encode_get_param(&msg));
        prop_assert_eq!(get(&target), Ok(msg));
    }

    #[test]
    fn decoding_never_panics(
        method in "(GET|POST|PUT)",
        target in "[/a-z?=&%A-Za-z0-9_-]{0,80}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = decode_request(&method, &target, CT, &body, P);
    }
}
