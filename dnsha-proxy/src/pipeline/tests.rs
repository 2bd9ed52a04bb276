//! The per-query core without sockets or sleeps: every path the
//! integration tests drive through real frontends, fed by hand.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use dnsha_core::config::Protocol;
use dnsha_core::{BackendState, FailureKind, Millis};
use hickory_proto::op::{Message, MessageType, ResponseCode};

use super::*;
use crate::error::RetryType;
use crate::frontend::ListenerCtx;
use crate::metrics::{get, ListenerMetrics};
use crate::testing::{answer, ctx, query_msg};
use crate::wire::dns::{parse_answer, DropReason};

const CLIENT: &str = "127.0.0.1:40000";

fn backends(n: u8) -> Vec<SocketAddr> {
    (1..=n)
        .map(|i| format!("192.0.2.{i}:53").parse().unwrap())
        .collect()
}

fn listener(
    protocol: &str,
    listener_extra: &str,
    pool_extra: &str,
    n: u8,
) -> std::sync::Arc<ListenerCtx> {
    ctx(protocol, listener_extra, pool_extra, &backends(n))
}

fn admitted(l: &ListenerCtx, id: u16, name: &str) -> (Vec<u8>, Admitted) {
    let (q, _) = query_msg(id, name);
    let shared = l.shared.load();
    match admit(&shared, &l.metrics, client().ip(), Protocol::Udp, &q) {
        Admission::Forward(info) => (q, info),
        other => panic!("not forwarded: {other:?}"),
    }
}

/// A query for `name` admitted on `l` and started at `now`: its flight
/// and first attempt.
fn sent(
    l: &ListenerCtx,
    id: u16,
    name: &str,
    protocol: Protocol,
    now: Millis,
) -> (Flight, Attempt) {
    let (_, info) = admitted(l, id, name);
    let mut f = Flight::new(client(), protocol, info, now);
    let a = send(f.start(&l.shared.load(), &l.metrics, now));
    (f, a)
}

fn client() -> SocketAddr {
    CLIENT.parse().unwrap()
}

fn send(next: Next) -> Attempt {
    match next {
        Next::Send(a) => a,
        other => panic!("expected a send, got {other:?}"),
    }
}

/// The backend's answer to `q` with its upstream `id` and `rcode`.
fn backend_answer(q: &[u8], id: u16, rcode: ResponseCode) -> Vec<u8> {
    let msg = Message::from_vec(q).unwrap();
    let mut a = answer(&msg, 1);
    a.set_id(id).set_response_code(rcode);
    a.to_vec().unwrap()
}

fn m(l: &ListenerCtx) -> &ListenerMetrics {
    &l.metrics
}

#[test]
fn admission_counts_each_outcome() {
    let l = listener("udp", "allow = [\"198.51.100.0/24\"]", "", 1);
    let shared = l.shared.load();
    let inside: IpAddr = "198.51.100.7".parse().unwrap();
    let (q, _) = query_msg(1, "a.test.");
    assert!(matches!(
        admit(&shared, m(&l), inside, Protocol::Udp, &q),
        Admission::Forward(_)
    ));
    assert_eq!(get(&m(&l).queries), 1);
    // Outside the ACL: silent over UDP, REFUSED over streams.
    let outsider: IpAddr = "203.0.113.1".parse().unwrap();
    assert_eq!(
        admit(&shared, m(&l), outsider, Protocol::Udp, &q),
        Admission::Drop(DropReason::Acl)
    );
    let Admission::Reply(r, DropReason::Acl) = admit(&shared, m(&l), outsider, Protocol::Tcp, &q)
    else {
        panic!("stream clients outside the acl get REFUSED");
    };
    assert_eq!(
        Message::from_vec(&r).unwrap().response_code(),
        ResponseCode::Refused
    );
    assert_eq!(get(&m(&l).refused), 1);
    assert_eq!(m(&l).drops(DropReason::Acl), 2);
    // A response sent to the listener, and a short message: dropped.
    let mut resp = q.clone();
    resp[2] |= 0x80;
    assert_eq!(
        admit(&shared, m(&l), inside, Protocol::Udp, &resp),
        Admission::Drop(DropReason::Response)
    );
    assert_eq!(
        admit(&shared, m(&l), inside, Protocol::Udp, &[0, 1, 2]),
        Admission::Drop(DropReason::Short)
    );
    // A header with garbage behind it: FORMERR, backend never involved.
    let mut bad = q[..12].to_vec();
    bad.extend_from_slice(&[0xc0, 0x00, 0, 1, 0, 1]);
    let Admission::Reply(r, DropReason::Malformed) =
        admit(&shared, m(&l), inside, Protocol::Udp, &bad)
    else {
        panic!("malformed query gets FORMERR");
    };
    assert_eq!(
        Message::from_vec(&r).unwrap().response_code(),
        ResponseCode::FormErr
    );
    assert_eq!(get(&m(&l).queries), 1);
}

#[test]
fn answer_is_delivered_with_the_client_id_and_logged_once() {
    let l = listener("udp", "", "", 2);
    let shared = l.shared.load();
    let (q, info) = admitted(&l, 0x4242, "www.example.test.");
    let now = Millis(1_000);
    let mut f = Flight::new(client(), Protocol::Udp, info, now);
    let a = send(f.start(&shared, m(&l), now));
    assert_eq!(a.backend.outstanding(), 1);
    assert_eq!(a.timeout_ms, 1000);
    let mut bytes = backend_answer(&q, 0x1111, ResponseCode::NoError);
    let ai = parse_answer(&bytes).unwrap();
    assert_eq!(f.check_answer(&ai), Ok(()));
    f.answered(&shared, m(&l), &mut bytes, ai.rcode, Millis(1_031));
    assert_eq!(Message::from_vec(&bytes).unwrap().id(), 0x4242);
    assert_eq!(a.backend.outstanding(), 0);
    assert_eq!(a.backend.queries(), 1);
    assert_eq!(get(&m(&l).answers), 1);
    assert_eq!(get(&m(&l).retries), 0);
    let rec = f.record(Some(&bytes), Millis(1_031));
    assert_eq!(rec.backend, Some(a.backend.address()));
    assert_eq!(rec.protocol, Protocol::Udp);
    assert_eq!(rec.rcode, "NOERROR");
    assert_eq!(rec.duration.as_millis(), 31);
    assert_eq!(rec.qname, "www.example.test.");
    assert_eq!(rec.qtype, "A");
}

#[test]
fn answers_that_match_nothing_are_refused() {
    let l = listener("udp", "", "", 1);
    let (q, info) = admitted(&l, 7, "a.test.");
    let f = Flight::new(client(), Protocol::Udp, info, Millis(0));
    let (other, _) = query_msg(7, "b.test.");
    let wrong = parse_answer(&backend_answer(&other, 7, ResponseCode::NoError)).unwrap();
    assert_eq!(f.check_answer(&wrong), Err(DropReason::WrongQuestion));
    // Same name in another case: the same question.
    let (upper, _) = query_msg(7, "A.TEST.");
    let same = parse_answer(&backend_answer(&upper, 7, ResponseCode::NoError)).unwrap();
    assert_eq!(f.check_answer(&same), Ok(()));
    // An answer without the question is matched by nothing, truncated or
    // not: the ID alone is not enough.
    let mut tc = backend_answer(&q, 7, ResponseCode::NoError);
    tc[2] |= 0x02;
    tc[4..6].copy_from_slice(&[0, 0]);
    tc.truncate(12);
    assert_eq!(
        f.check_answer(&parse_answer(&tc).unwrap()),
        Err(DropReason::WrongQuestion)
    );
    tc[2] &= !0x02;
    assert_eq!(
        f.check_answer(&parse_answer(&tc).unwrap()),
        Err(DropReason::WrongQuestion)
    );
}

#[test]
fn servfail_is_relayed_counted_as_an_answer_and_reported_to_health() {
    let l = listener("udp", "", "", 1);
    let shared = l.shared.load();
    let (q, info) = admitted(&l, 9, "sf.test.");
    let mut f = Flight::new(client(), Protocol::Udp, info, Millis(0));
    let a = send(f.start(&shared, m(&l), Millis(0)));
    let mut bytes = backend_answer(&q, 3, ResponseCode::ServFail);
    f.answered(
        &shared,
        m(&l),
        &mut bytes,
        ResponseCode::ServFail,
        Millis(5),
    );
    assert_eq!(
        Message::from_vec(&bytes).unwrap().response_code(),
        ResponseCode::ServFail
    );
    assert_eq!(get(&m(&l).answers), 1);
    assert_eq!(get(&m(&l).servfail), 0, "not made by the balancer");
    assert_eq!(a.backend.passive_run(), 1, "counted for passive health");
    assert_eq!(f.record(Some(&bytes), Millis(5)).rcode, "SERVFAIL");
}

fn retried_after(kind: FailureKind) {
    let l = listener("udp", "", "", 2);
    let shared = l.shared.load();
    let (mut f, first) = sent(&l, 1, "r.test.", Protocol::Udp, Millis(0));
    let second = send(f.failed(&shared, m(&l), Failure::retry(kind), Millis(10)));
    assert_ne!(first.backend.id(), second.backend.id());
    assert_eq!(first.backend.consecutive_failures(), 1);
    assert_eq!(first.backend.outstanding(), 0);
    assert_eq!(second.backend.outstanding(), 1);
    assert_eq!(get(&m(&l).retries), 1);
    let timeouts = u64::from(kind == FailureKind::Timeout);
    assert_eq!(get(&m(&l).timeouts), timeouts);
    assert_eq!(
        f.record(None, Millis(20)).backend,
        Some(second.backend.address())
    );
}

#[test]
fn retry_on_timeout() {
    retried_after(FailureKind::Timeout);
}

#[test]
fn retry_on_refusal() {
    retried_after(FailureKind::Refused);
}

#[test]
fn retry_on_a_closed_connection() {
    retried_after(FailureKind::Closed);
}

#[test]
fn no_retry_failure_gives_up_at_once() {
    let l = listener("tcp", "", "", 2);
    let shared = l.shared.load();
    let (mut f, _) = sent(&l, 1, "n.test.", Protocol::Tcp, Millis(0));
    let failure = Failure {
        kind: FailureKind::Closed,
        retry: RetryType::NoRetry,
        blame: true,
    };
    assert!(matches!(
        f.failed(&shared, m(&l), failure, Millis(1)),
        Next::Reply(_)
    ));
    assert_eq!(get(&m(&l).retries), 0);
    assert_eq!(get(&m(&l).servfail), 1);
}

#[test]
fn all_backends_failing_gives_servfail() {
    let l = listener("udp", "", "retries = 3", 2);
    let shared = l.shared.load();
    let (q, info) = admitted(&l, 0x0102, "down.test.");
    let mut f = Flight::new(client(), Protocol::Udp, info, Millis(0));
    send(f.start(&shared, m(&l), Millis(0)));
    send(f.failed(
        &shared,
        m(&l),
        Failure::retry(FailureKind::Timeout),
        Millis(1000),
    ));
    // Two backends, both tried: retries left but nobody to try.
    let Next::Reply(r) = f.failed(
        &shared,
        m(&l),
        Failure::retry(FailureKind::Timeout),
        Millis(2000),
    ) else {
        panic!("servfail expected");
    };
    let msg = Message::from_vec(&r).unwrap();
    assert_eq!(msg.id(), 0x0102);
    assert_eq!(msg.message_type(), MessageType::Response);
    assert_eq!(msg.response_code(), ResponseCode::ServFail);
    assert_eq!(msg.queries(), Message::from_vec(&q).unwrap().queries());
    assert_eq!(get(&m(&l).servfail), 1);
    assert_eq!(get(&m(&l).timeouts), 2);
    assert_eq!(f.record(Some(&r), Millis(2000)).rcode, "SERVFAIL");
}

#[test]
fn all_backends_failing_with_drop_sends_nothing() {
    let l = listener("udp", "", "on_no_backend = \"drop\"", 1);
    let shared = l.shared.load();
    let (mut f, _) = sent(&l, 1, "d.test.", Protocol::Udp, Millis(0));
    assert!(matches!(
        f.failed(
            &shared,
            m(&l),
            Failure::retry(FailureKind::Refused),
            Millis(1)
        ),
        Next::Drop
    ));
    assert_eq!(m(&l).drops(DropReason::NoBackend), 1);
    assert_eq!(get(&m(&l).servfail), 0);
    assert_eq!(f.record(None, Millis(1)).rcode, "-");
}

#[test]
fn no_backend_up_answers_at_once_with_both_policies() {
    for (pool, servfail) in [("", true), ("on_no_backend = \"drop\"", false)] {
        let l = listener("udp", "", pool, 2);
        let shared = l.shared.load();
        for b in shared.target.pool.snapshot().backends() {
            b.set_state(BackendState::DownByCheck);
        }
        let (_, info) = admitted(&l, 1, "x.test.");
        let mut f = Flight::new(client(), Protocol::Udp, info, Millis(0));
        let next = f.start(&shared, m(&l), Millis(0));
        assert_eq!(matches!(next, Next::Reply(_)), servfail);
        assert_eq!(matches!(next, Next::Drop), !servfail);
        assert_eq!(f.record(None, Millis(0)).backend, None);
        assert_eq!(get(&m(&l).servfail), u64::from(servfail));
        assert_eq!(m(&l).drops(DropReason::NoBackend), u64::from(!servfail));
    }
}

#[test]
fn retries_bound_the_attempts() {
    let l = listener("udp", "", "retries = 0", 3);
    let shared = l.shared.load();
    let (mut f, _) = sent(&l, 1, "once.test.", Protocol::Udp, Millis(0));
    assert!(matches!(
        f.failed(
            &shared,
            m(&l),
            Failure::retry(FailureKind::Timeout),
            Millis(1)
        ),
        Next::Reply(_)
    ));
    assert_eq!(get(&m(&l).retries), 0);
}

#[test]
fn consecutive_failures_mark_a_backend_down_and_it_is_skipped() {
    let l = listener("udp", "", "max_fails = 2\npolicy = \"first\"", 2);
    let shared = l.shared.load();
    let first = shared.target.pool.snapshot().backends()[0].clone();
    for i in 0..2 {
        let (mut f, a) = sent(&l, i, "f.test.", Protocol::Udp, Millis(0));
        assert_eq!(a.backend.id(), first.id());
        send(f.failed(
            &shared,
            m(&l),
            Failure::retry(FailureKind::Timeout),
            Millis(1),
        ));
    }
    assert!(!first.is_up());
    let (_f, a) = sent(&l, 3, "f.test.", Protocol::Udp, Millis(2));
    assert_ne!(
        a.backend.id(),
        first.id(),
        "a backend marked down is skipped"
    );
}

#[test]
fn abandoned_query_records_nothing_against_the_backend() {
    let l = listener("tcp", "", "", 2);
    let shared = l.shared.load();
    let (mut f, a) = sent(&l, 1, "a.test.", Protocol::Tcp, Millis(0));
    assert!(matches!(
        f.abandon(&shared, m(&l), Millis(1)),
        Next::Reply(_)
    ));
    assert_eq!(a.backend.consecutive_failures(), 0);
    assert_eq!(a.backend.outstanding(), 0);
    assert_eq!(get(&m(&l).retries), 0);
}

#[test]
fn attempts_keep_the_backend_busy_while_connected() {
    let l = listener("tcp-passthrough", "", "", 2);
    let shared = l.shared.load();
    let mut att = Attempts::new();
    let a = att.first(&shared.target.pool, Millis(0)).unwrap();
    att.failed(
        &shared.target.pool,
        m(&l),
        FailureKind::Refused,
        true,
        Millis(0),
    );
    let b = att.next(&shared.target.pool, m(&l), Millis(0)).unwrap();
    assert_ne!(a.backend.id(), b.backend.id());
    let guard = att.succeeded().unwrap();
    record_connected(&shared.target.pool, guard.backend(), Millis(0));
    assert_eq!(b.backend.outstanding(), 1);
    assert!(
        att.next(&shared.target.pool, m(&l), Millis(0)).is_none(),
        "retries spent"
    );
    drop(guard);
    assert_eq!(b.backend.outstanding(), 0);
    assert_eq!(att.count(), 2);
    assert_eq!(l.metrics.retries.load(Ordering::Relaxed), 1);
}

#[test]
fn a_refused_socket_resends_once_to_the_same_backend_and_blames_only_a_second_refusal() {
    let l = listener("udp", "", "policy = \"first\"", 2);
    let shared = l.shared.load();
    let (mut f, first) = sent(&l, 1, "icmp.test.", Protocol::Udp, Millis(0));
    // Spoofable: sent again to the same backend, nothing counted against it.
    let Next::Resend(again) = f.failed(&shared, m(&l), Failure::refused_socket(), Millis(1)) else {
        panic!("resend to the same backend");
    };
    assert_eq!(again.backend.id(), first.backend.id());
    assert_eq!(first.backend.outstanding(), 1, "still the same attempt");
    assert_eq!(first.backend.consecutive_failures(), 0);
    assert_eq!(get(&m(&l).resent), 1);
    assert_eq!(get(&m(&l).retries), 0);
    // Many queries lost with one socket: none blamed.
    for i in 0..10 {
        let (mut g, _) = sent(&l, i, "icmp.test.", Protocol::Udp, Millis(0));
        assert!(matches!(
            g.failed(&shared, m(&l), Failure::refused_socket(), Millis(1)),
            Next::Resend(_)
        ));
    }
    assert_eq!(first.backend.consecutive_failures(), 0);
    assert!(first.backend.is_up());
    // Refused again on the fresh port: confirmed, blamed, another backend.
    let next = send(f.failed(&shared, m(&l), Failure::refused_socket(), Millis(2)));
    assert_ne!(next.backend.id(), first.backend.id());
    assert_eq!(first.backend.consecutive_failures(), 1);
    assert_eq!(get(&m(&l).retries), 1);
}

#[test]
fn a_really_refusing_backend_is_marked_down_and_skipped() {
    let l = listener("udp", "", "policy = \"first\"\nmax_fails = 1", 2);
    let shared = l.shared.load();
    let (mut f, first) = sent(&l, 1, "down.test.", Protocol::Udp, Millis(0));
    assert!(matches!(
        f.failed(&shared, m(&l), Failure::refused_socket(), Millis(1)),
        Next::Resend(_)
    ));
    let next = send(f.failed(&shared, m(&l), Failure::refused_socket(), Millis(2)));
    assert!(
        !first.backend.is_up(),
        "the confirmed refusal marks it down"
    );
    assert_ne!(next.backend.id(), first.backend.id());
    // The next query goes straight to the other backend.
    let (_, info) = admitted(&l, 2, "down.test.");
    let mut g = Flight::new(client(), Protocol::Udp, info, Millis(3));
    assert_ne!(
        send(g.start(&shared, m(&l), Millis(3))).backend.id(),
        first.backend.id()
    );
}

#[test]
fn local_overload_is_not_the_backends_fault() {
    let l = listener("tcp", "", "max_fails = 1\npolicy = \"first\"", 2);
    let shared = l.shared.load();
    for i in 0..10 {
        let (mut f, a) = sent(&l, i, "busy.test.", Protocol::Tcp, Millis(0));
        let overload = Failure {
            blame: false,
            ..Failure::retry(FailureKind::Timeout)
        };
        let next = send(f.failed(&shared, m(&l), overload, Millis(1)));
        assert_ne!(next.backend.id(), a.backend.id(), "tried elsewhere");
        assert!(a.backend.is_up());
        assert_eq!(a.backend.consecutive_failures(), 0);
    }
    assert_eq!(get(&m(&l).timeouts), 10);
}

#[test]
fn a_burst_of_unanswered_names_does_not_take_down_a_backend_that_answers() {
    let l = listener("udp", "", "policy = \"first\"\nretries = 0", 1);
    let shared = l.shared.load();
    // Steady answers for other names.
    for i in 0..200 {
        let (q, info) = admitted(&l, i, "ok.test.");
        let mut f = Flight::new(client(), Protocol::Udp, info, Millis(i.into()));
        send(f.start(&shared, m(&l), Millis(i.into())));
        let mut a = backend_answer(&q, 1, ResponseCode::NoError);
        f.answered(
            &shared,
            m(&l),
            &mut a,
            ResponseCode::NoError,
            Millis(i.into()),
        );
    }
    // Then 50 queries for a name the backend never answers, all timing out
    // in one timer pass.
    let mut flights = Vec::new();
    for i in 0..50 {
        let (f, _) = sent(&l, i, "void.test.", Protocol::Udp, Millis(300));
        flights.push(f);
    }
    for f in &mut flights {
        f.failed(
            &shared,
            m(&l),
            Failure::retry(FailureKind::Timeout),
            Millis(1_300),
        );
    }
    let b = std::sync::Arc::clone(&shared.target.pool.snapshot().backends()[0]);
    assert_eq!(b.consecutive_failures(), 50);
    assert!(b.is_up(), "answers still outweigh the burst");
    let (_, info) = admitted(&l, 1, "ok.test.");
    let mut f = Flight::new(client(), Protocol::Udp, info, Millis(1_301));
    assert!(matches!(
        f.start(&shared, m(&l), Millis(1_301)),
        Next::Send(_)
    ));
}

#[test]
fn any_over_udp_is_answered_at_once_as_configured() {
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};
    let any = {
        let mut msg = Message::new();
        msg.set_id(77)
            .set_recursion_desired(true)
            .add_query(Query::query(
                Name::from_ascii("example.test.").unwrap(),
                RecordType::ANY,
            ));
        msg.to_vec().unwrap()
    };
    for (setting, expect) in [
        ("", Some((true, ResponseCode::NoError))),
        (
            "any_over_udp = \"truncate\"",
            Some((true, ResponseCode::NoError)),
        ),
        (
            "any_over_udp = \"refuse\"",
            Some((false, ResponseCode::Refused)),
        ),
        ("any_over_udp = \"allow\"", None),
    ] {
        let l = listener("udp", setting, "", 1);
        let shared = l.shared.load();
        match (
            admit(&shared, m(&l), client().ip(), Protocol::Udp, &any),
            expect,
        ) {
            (Admission::Reply(r, DropReason::AnyOverUdp), Some((tc, rcode))) => {
                assert!(
                    r.len() <= any.len() + 12,
                    "no amplification: {} bytes",
                    r.len()
                );
                let msg = Message::from_vec(&r).unwrap();
                assert_eq!((msg.truncated(), msg.response_code()), (tc, rcode));
                assert_eq!(msg.id(), 77);
                assert!(msg.answers().is_empty());
                assert_eq!(m(&l).drops(DropReason::AnyOverUdp), 1);
                // A valid query, answered by the balancer: counted.
                assert_eq!(get(&m(&l).queries), 1);
            }
            (Admission::Forward(_), None) => assert_eq!(get(&m(&l).queries), 1),
            (other, _) => panic!("{setting}: {other:?}"),
        }
        // Over TCP the question is answered like any other.
        assert!(matches!(
            admit(&shared, m(&l), client().ip(), Protocol::Tcp, &any),
            Admission::Forward(_)
        ));
    }
}

#[test]
fn a_chash_pool_sends_each_name_to_one_backend_and_retries_along_the_ring() {
    let l = listener("udp", "", "policy = \"chash\"\nretries = 3", 4);
    let mut homes = std::collections::HashMap::new();
    for i in 0..200u16 {
        let name = format!("n{i}.example.test.");
        let (mut f, a) = sent(&l, i, &name, Protocol::Udp, Millis(0));
        // Any case of the name goes to the same backend.
        let (mut g, b) = sent(&l, i, &name.to_uppercase(), Protocol::Udp, Millis(0));
        assert_eq!(a.backend.name(), b.backend.name(), "{name}");
        homes.insert(name, a.backend.name().to_string());
        f.abandon(&l.shared.load(), &l.metrics, Millis(0));
        g.abandon(&l.shared.load(), &l.metrics, Millis(0));
    }
    let used: std::collections::HashSet<&String> = homes.values().collect();
    assert_eq!(used.len(), 4, "200 names over 4 backends: {used:?}");
    // A failed attempt goes to the next backend on the ring, never back.
    let (mut f, first) = sent(&l, 999, "n7.example.test.", Protocol::Udp, Millis(0));
    let failure = Failure::retry(FailureKind::Timeout);
    let second = send(f.failed(&l.shared.load(), &l.metrics, failure, Millis(1)));
    assert_ne!(first.backend.name(), second.backend.name());
}

#[test]
fn a_chash_pool_on_clients_keeps_a_client_on_one_backend() {
    let l = listener("udp", "", "policy = \"chash\"\nhash_key = \"client\"", 4);
    let backends: std::collections::HashSet<String> = (0..50u16)
        .map(|i| {
            let (mut f, a) = sent(
                &l,
                i,
                &format!("n{i}.example.test."),
                Protocol::Udp,
                Millis(0),
            );
            f.abandon(&l.shared.load(), &l.metrics, Millis(0));
            a.backend.name().to_string()
        })
        .collect();
    // Fifty names from one client: one backend.
    assert_eq!(backends.len(), 1, "{backends:?}");
}
