#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;
use crate::testing::{answer, answer_tag, query_msg};

#[derive(Clone, Copy)]
enum Mode {
    Normal,
    /// A wrong ID and a wrong question before each real answer.
    BogusFirst,
    /// An answer of about 6 kB.
    Big,
    Silent,
}

/// A UDP DNS server answering `A 10.0.0.<tag>`; counts queries and keeps
/// the IDs it saw.
struct FakeUdp {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    ids: Arc<Mutex<Vec<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUdp {
    async fn start(tag: u8, mode: Mode) -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let ids = Arc::new(Mutex::new(Vec::new()));
        let (q2, ids2) = (Arc::clone(&queries), Arc::clone(&ids));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, from)) = s.recv_from(&mut buf).await else {
                    return;
                };
                q2.fetch_add(1, Ordering::SeqCst);
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                ids2.lock().unwrap().push(q.id());
                let mut out = Vec::new();
                match mode {
                    Mode::Silent => continue,
                    Mode::Normal => out.push(answer(&q, tag)),
                    Mode::BogusFirst => {
                        let mut wrong_id = answer(&q, tag);
                        wrong_id.set_id(q.id().wrapping_add(1));
                        let mut wrong_q = answer(&q, tag);
                        wrong_q.take_queries();
                        wrong_q.add_query(Query::query(
                            Name::from_ascii("other.test.").unwrap(),
                            RecordType::A,
                        ));
                        out.extend([wrong_id, wrong_q, answer(&q, tag)]);
                    }
                    Mode::Big => {
                        let mut a = answer(&q, tag);
                        let name = q.queries()[0].name().clone();
                        for _ in 0..30 {
                            a.add_answer(Record::from_rdata(
                                name.clone(),
                                60,
                                RData::TXT(TXT::new(vec!["x".repeat(200)])),
                            ));
                        }
                        out.push(a);
                    }
                }
                for m in out {
                    let _ = s.send_to(&m.to_vec().unwrap(), from).await;
                }
            }
        });
        Self {
            addr,
            queries,
            ids,
            task,
        }
    }
}

const T: Duration = Duration::from_millis(500);

#[tokio::test]
async fn answers_come_back_with_upstream_id_and_sockets_are_reused() {
    let be = FakeUdp::start(7, Mode::Normal).await;
    let up = UdpUpstreams::new();
    for i in 0..20u16 {
        let (msg, q) = query_msg(1000 + i, "a.test.");
        let UdpReply::Answer(a) = up.query(be.addr, &msg, &q, T).await.unwrap() else {
            panic!("expected an answer");
        };
        assert_eq!(answer_tag(&a), Some(7));
        let sent = *be.ids.lock().unwrap().last().unwrap();
        assert_eq!(
            message_id(&a),
            Some(sent),
            "upstream ID left for the caller"
        );
    }
    assert_eq!(be.queries.load(Ordering::SeqCst), 20);
    assert_eq!(up.sockets(), SOCKETS_PER_BACKEND);
    assert_eq!(
        up.stats().sockets_opened.load(Ordering::SeqCst),
        SOCKETS_PER_BACKEND as u64
    );
}

#[tokio::test]
async fn queries_spread_over_the_pools_socket_count() {
    let be = FakeUdp::start(7, Mode::Normal).await;
    let up = UdpUpstreams::new();
    for i in 0..30u16 {
        let (msg, q) = query_msg(i, "a.test.");
        let r = up.query_over(be.addr, 5, &msg, &q, T).await.unwrap();
        assert!(matches!(r, UdpReply::Answer(_)));
    }
    assert_eq!(up.sockets(), 5);
    // A count of 0 is taken as 1 (no division by zero).
    let other = FakeUdp::start(8, Mode::Normal).await;
    let (msg, q) = query_msg(99, "b.test.");
    let r = up.query_over(other.addr, 0, &msg, &q, T).await.unwrap();
    assert!(matches!(r, UdpReply::Answer(_)));
    assert_eq!(up.sockets(), 6);
}

#[tokio::test]
async fn upstream_ids_are_random_not_the_clients() {
    let be = FakeUdp::start(1, Mode::Normal).await;
    let up = UdpUpstreams::new();
    for _ in 0..50 {
        let (msg, q) = query_msg(4242, "a.test.");
        up.query(be.addr, &msg, &q, T).await.unwrap();
    }
    let ids = be.ids.lock().unwrap().clone();
    assert!(!ids.contains(&4242));
    let distinct: HashSet<_> = ids.iter().collect();
    assert!(distinct.len() > 45, "{} distinct of 50", distinct.len());
}

#[tokio::test]
async fn wrong_id_and_wrong_question_are_dropped_and_counted() {
    let be = FakeUdp::start(3, Mode::BogusFirst).await;
    let up = UdpUpstreams::new();
    for i in 0..10 {
        let (msg, q) = query_msg(i, "b.test.");
        let UdpReply::Answer(a) = up.query(be.addr, &msg, &q, T).await.unwrap() else {
            panic!("expected an answer");
        };
        assert_eq!(answer_tag(&a), Some(3));
    }
    // Give the last bogus datagrams time to be read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(up.stats().unmatched.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn many_concurrent_queries_each_get_their_own_answer() {
    let be = FakeUdp::start(9, Mode::Normal).await;
    let up = Arc::new(UdpUpstreams::new());
    let mut tasks = Vec::new();
    // 200 at once: a default receive buffer (208 KiB) holds them all.
    for i in 0..200u16 {
        let up = Arc::clone(&up);
        let addr = be.addr;
        tasks.push(tokio::spawn(async move {
            let name = format!("n{i}.test.");
            let (msg, q) = query_msg(i, &name);
            let UdpReply::Answer(a) = up
                .query(addr, &msg, &q, Duration::from_secs(2))
                .await
                .unwrap()
            else {
                panic!("expected an answer");
            };
            let m = Message::from_vec(&a).unwrap();
            assert_eq!(m.queries()[0].name().to_ascii(), name);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.stats().unmatched.load(Ordering::SeqCst), 0);
    for s in lock(&up.inner.socks).values() {
        assert!(lock(&s.table).waiting.is_empty());
    }
}

#[tokio::test]
async fn silence_is_a_timeout_and_leaves_nothing_behind() {
    let be = FakeUdp::start(1, Mode::Silent).await;
    let up = UdpUpstreams::new();
    let (msg, q) = query_msg(1, "c.test.");
    let started = Instant::now();
    let err = up
        .query(be.addr, &msg, &q, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Upstream {
            kind: FailureKind::Timeout,
            retry: RetryType::Retry,
            ..
        }
    ));
    assert!(started.elapsed() < Duration::from_millis(400));
    for s in lock(&up.inner.socks).values() {
        assert!(lock(&s.table).waiting.is_empty());
    }
}

#[tokio::test]
async fn an_abandoned_query_removes_its_entry() {
    let be = FakeUdp::start(1, Mode::Silent).await;
    let up = Arc::new(UdpUpstreams::new());
    let (msg, q) = query_msg(1, "d.test.");
    let up2 = Arc::clone(&up);
    let addr = be.addr;
    let t = tokio::spawn(async move { up2.query(addr, &msg, &q, Duration::from_secs(30)).await });
    while be.queries.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.abort();
    let _ = t.await;
    for s in lock(&up.inner.socks).values() {
        assert!(lock(&s.table).waiting.is_empty());
    }
}

#[tokio::test]
async fn icmp_refusal_fails_at_once_as_refused() {
    // A bound UDP socket that is then closed: nothing listens there.
    let addr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let up = UdpUpstreams::new();
    let (msg, q) = query_msg(1, "e.test.");
    let started = Instant::now();
    let err = up
        .query(addr, &msg, &q, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Upstream {
                kind: FailureKind::Refused,
                retry: RetryType::Resend,
                blame: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    // The refused socket is closed: the next query goes out on a new one.
    assert_eq!(up.stats().refused.load(Ordering::Relaxed), 1);
    assert_eq!(up.sockets(), 0);
}

#[tokio::test]
async fn a_refusal_blames_no_query_and_closes_the_socket() {
    let up = UdpUpstreams::new();
    let be = FakeUdp::start(1, Mode::Normal).await;
    let sock = up.socket(be.addr, 0).unwrap();
    let (_, q) = query_msg(1, "i.test.");
    let mut rxs = Vec::new();
    {
        let mut t = lock(&sock.table);
        for id in 0..5u16 {
            let (tx, rx) = oneshot::channel();
            t.waiting.insert(
                id,
                Waiter {
                    question: q.clone(),
                    reply: tx,
                },
            );
            rxs.push(rx);
        }
    }
    assert!(lost_socket(
        &up.inner,
        (be.addr, 0),
        &sock,
        FailureKind::Refused
    ));
    let mut blamed = 0;
    for rx in rxs {
        let lost = rx.await.unwrap().unwrap_err();
        assert_eq!(lost.kind, FailureKind::Refused);
        assert_eq!(lost.retry, RetryType::Resend);
        blamed += usize::from(lost.blame);
    }
    assert_eq!(blamed, 0, "each is resent; only a second refusal counts");
    assert_eq!(up.sockets(), 0, "closed: its port is not reused");
}

#[tokio::test]
async fn sockets_rotate_after_their_share_of_queries() {
    let be = FakeUdp::start(1, Mode::Normal).await;
    let up = UdpUpstreams::new();
    let first = up.socket(be.addr, 0).unwrap();
    first.used.store(ROTATE_QUERIES, Ordering::Relaxed);
    let second = up.socket(be.addr, 0).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_ne!(
        first.io.local_addr().unwrap().port(),
        second.io.local_addr().unwrap().port()
    );
    // The old socket still answers the queries it carries.
    let (msg, q) = query_msg(1, "j.test.");
    assert!(matches!(
        up.query_over(be.addr, 1, &msg, &q, T).await.unwrap(),
        UdpReply::Answer(_)
    ));
}

#[tokio::test]
async fn an_answer_too_big_for_a_slot_says_so() {
    let be = FakeUdp::start(1, Mode::Big).await;
    let up = UdpUpstreams::new();
    let (msg, q) = query_msg(1, "f.test.");
    assert_eq!(
        up.query(be.addr, &msg, &q, T).await.unwrap(),
        UdpReply::TooBig
    );
}

#[tokio::test]
async fn a_message_of_impossible_size_is_refused_before_sending() {
    let be = FakeUdp::start(1, Mode::Normal).await;
    let up = UdpUpstreams::new();
    let (_, q) = query_msg(1, "g.test.");
    let err = up.query(be.addr, &[0u8; 5], &q, T).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert_eq!(be.queries.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn idle_sockets_close_and_reopen_on_next_use() {
    let be = FakeUdp::start(2, Mode::Normal).await;
    let up = UdpUpstreams::new();
    let (msg, q) = query_msg(1, "h.test.");
    up.query(be.addr, &msg, &q, T).await.unwrap();
    assert_eq!(up.sockets(), 1);
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    // Let the reader run its idle check.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(up.sockets(), 0);
    up.query(be.addr, &msg, &q, T).await.unwrap();
    assert_eq!(up.stats().sockets_opened.load(Ordering::SeqCst), 2);
}
