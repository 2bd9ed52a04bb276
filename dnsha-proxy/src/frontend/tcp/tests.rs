use std::sync::atomic::Ordering;

use super::*;
use crate::metrics::get;
use crate::testing::*;
use crate::upstream::stream::{TcpUpstreamSettings, TcpUpstreams};
use hickory_proto::op::Message;
use hickory_proto::op::ResponseCode;
use tokio::net::TcpStream;

struct Front {
    ctx: Arc<ListenerCtx>,
    addr: SocketAddr,
    upstreams: Arc<TcpUpstreams>,
}

async fn front(listener_extra: &str, pool_extra: &str, backends: &[SocketAddr]) -> Front {
    let ctx = ctx("tcp", listener_extra, pool_extra, backends);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstreams = Arc::new(TcpUpstreams::new(TcpUpstreamSettings::default()));
    ctx.tasks.spawn(serve(
        Arc::clone(&ctx),
        listener,
        Upstreams::stream(Arc::clone(&upstreams)),
    ));
    Front {
        ctx,
        addr,
        upstreams,
    }
}

async fn send(s: &mut TcpStream, id: u16, name: &str) {
    s.write_all(&frame(&query_msg(id, name).0)).await.unwrap();
}

async fn recv(s: &mut TcpStream) -> Message {
    let bytes = timeout(Duration::from_secs(5), read_msg(s))
        .await
        .expect("answer in time")
        .expect("an answer");
    Message::from_vec(&bytes).unwrap()
}

fn tag(m: &Message) -> Option<u8> {
    answer_tag(&m.to_vec().unwrap())
}

/// Reads until EOF; returns how long it took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn round_robin_alternates() {
    let b1 = FakeBackend::start(1, Behavior::Normal).await;
    let b2 = FakeBackend::start(2, Behavior::Normal).await;
    let f = front("", "", &[b1.addr, b2.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    let mut tags = Vec::new();
    for i in 0..4 {
        send(&mut c, 100 + i, "rr.test.").await;
        let m = recv(&mut c).await;
        assert_eq!(m.id(), 100 + i);
        tags.push(tag(&m).unwrap());
    }
    assert_eq!(tags, [1, 2, 1, 2]);
    assert_eq!(get(&f.ctx.metrics.queries), 4);
    assert_eq!(get(&f.ctx.metrics.answers), 4);
    assert_eq!(get(&f.ctx.metrics.connections), 1);
    assert_eq!(get(&f.ctx.metrics.connections_total), 1);
}

#[tokio::test]
async fn answers_leave_out_of_order() {
    let b = FakeBackend::start(1, Behavior::DelayFirst(Duration::from_millis(300))).await;
    let f = front("", "", &[b.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    send(&mut c, 1, "slow.test.").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut c, 2, "fast.test.").await;
    assert_eq!(recv(&mut c).await.id(), 2);
    assert_eq!(recv(&mut c).await.id(), 1);
}

#[tokio::test]
async fn backend_closing_with_queries_in_flight_retries_elsewhere() {
    let bad = FakeBackend::start(1, Behavior::CloseAfter(1)).await;
    let good = FakeBackend::start(2, Behavior::Normal).await;
    let f = front(
        "",
        "timeout_ms = 5000\nmax_fails = 0",
        &[bad.addr, good.addr],
    )
    .await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    let start = Instant::now();
    for i in 0..10 {
        send(&mut c, i, "close.test.").await;
    }
    let mut ids = Vec::new();
    for _ in 0..10 {
        let m = recv(&mut c).await;
        assert_eq!(tag(&m), Some(2), "answered by the good backend");
        ids.push(m.id());
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "no query waited for the timeout"
    );
    assert!(bad.queries() > 0);
    assert!(get(&f.ctx.metrics.retries) > 0);
    assert_eq!(get(&f.ctx.metrics.servfail), 0);
}

#[tokio::test]
async fn refused_backend_is_retried_invisibly() {
    let dead = closed_port().await;
    let good = FakeBackend::start(2, Behavior::Normal).await;
    let f = front("", "max_fails = 0", &[dead, good.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    for i in 0..6 {
        send(&mut c, i, "refused.test.").await;
        let m = recv(&mut c).await;
        assert_eq!(m.id(), i);
        assert_eq!(tag(&m), Some(2));
    }
    let failures = f.ctx.shared.load().target.pool.snapshot().backends()[0].failures();
    assert!(failures >= 1);
    assert_eq!(get(&f.ctx.metrics.retries), failures);
    assert_eq!(get(&f.ctx.metrics.servfail), 0);
}

#[tokio::test]
async fn all_backends_down_gives_servfail_or_nothing() {
    let d1 = closed_port().await;
    let d2 = closed_port().await;
    let f = front("", "", &[d1, d2]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    send(&mut c, 77, "down.test.").await;
    let m = recv(&mut c).await;
    assert_eq!(m.id(), 77);
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert_eq!(get(&f.ctx.metrics.servfail), 1);
    assert_eq!(get(&f.ctx.metrics.retries), 1);

    let f = front("", "on_no_backend = \"drop\"", &[d1, d2]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    send(&mut c, 78, "down.test.").await;
    send(&mut c, 79, "down.test.").await;
    let r = timeout(Duration::from_millis(500), read_msg(&mut c)).await;
    assert!(r.is_err(), "nothing is written");
    assert_eq!(f.ctx.metrics.drops(DropReason::NoBackend), 2);
    assert_eq!(get(&f.ctx.metrics.servfail), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_queries_are_all_answered() {
    const N: u16 = 10_000;
    let b1 = FakeBackend::start(1, Behavior::Normal).await;
    let b2 = FakeBackend::start_counting_with(2, Behavior::Normal, &b1).await;
    let f = front("", "", &[b1.addr, b2.addr]).await;
    let c = TcpStream::connect(f.addr).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    let writer = tokio::spawn(async move {
        let mut all = Vec::new();
        for i in 0..N {
            all.extend(frame(&query_msg(i, "pipe.test.").0));
        }
        wr.write_all(&all).await.unwrap();
        wr
    });
    let mut seen = vec![false; usize::from(N)];
    for _ in 0..N {
        let bytes = timeout(Duration::from_secs(20), read_msg(&mut rd))
            .await
            .expect("answers keep coming")
            .expect("an answer");
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NoError);
        let slot = &mut seen[usize::from(m.id())];
        assert!(!*slot, "answered once");
        *slot = true;
    }
    assert!(seen.iter().all(|s| *s));
    let _wr = writer.await.unwrap();
    assert_eq!(get(&f.ctx.metrics.answers), u64::from(N));
    // Both backends count into one figure: the most they held at once.
    assert!(b1.max_in_flight() <= MAX_IN_FLIGHT_PER_CLIENT);
    assert!(
        f.upstreams
            .stats()
            .connections_opened
            .load(Ordering::Relaxed)
            <= 16
    );
}

#[tokio::test]
async fn half_closed_client_still_gets_its_answers() {
    let b = FakeBackend::start(1, Behavior::DelayAll(Duration::from_millis(50))).await;
    let f = front("", "", &[b.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    for i in 0..3 {
        send(&mut c, i, "half.test.").await;
    }
    c.shutdown().await.unwrap();
    let mut ids: Vec<u16> = Vec::new();
    for _ in 0..3 {
        ids.push(recv(&mut c).await.id());
    }
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2]);
    closed_within(&mut c, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn zero_length_prefix_closes() {
    let b = FakeBackend::start(1, Behavior::Normal).await;
    let f = front("", "", &[b.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    c.write_all(&[0, 0]).await.unwrap();
    closed_within(&mut c, Duration::from_secs(1)).await;
    assert_eq!(f.ctx.metrics.drops(DropReason::Short), 1);
}

#[tokio::test]
async fn stalled_message_closes_at_read_timeout() {
    let b = FakeBackend::start(1, Behavior::Normal).await;
    let f = front(
        "read_timeout_ms = 300\nidle_timeout_ms = 5000",
        "",
        &[b.addr],
    )
    .await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    c.write_all(&[0xff, 0xff]).await.unwrap();
    let took = closed_within(&mut c, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(250), "{took:?}");

    // One byte every 100 ms is no better.
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    let (q, _) = query_msg(1, "slow.test.");
    let bytes = frame(&q);
    let start = Instant::now();
    let mut closed = false;
    for b in bytes {
        if c.write_all(&[b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if start.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    if !closed {
        closed_within(&mut c, Duration::from_secs(2)).await;
    }
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn one_byte_reads_and_writes_on_both_sides() {
    let b = FakeBackend::start(3, Behavior::Dribble).await;
    let f = front("", "", &[b.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    for i in 0..3 {
        for byte in frame(&query_msg(i, "dribble.test.").0) {
            c.write_all(&[byte]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for i in 0..3 {
        let m = recv(&mut c).await;
        assert_eq!(m.id(), i);
        assert_eq!(tag(&m), Some(3));
    }
}

/// Case 12 of the conventions' bad-input list, with every byte of the
/// client connection in its own read and write: the connection is a pipe
/// that holds one byte (`tokio::io::duplex(1)`), so each of dnsha's writes
/// of an answer is partial, one byte accepted at a time, and each of its
/// reads yields one byte; the backend writes its answers one byte per write.
/// Twenty pipelined queries all get their own answer, whole.
#[tokio::test]
async fn every_read_and_write_on_the_client_connection_takes_one_byte() {
    let b = FakeBackend::start(3, Behavior::Dribble).await;
    let f = front("", "", &[b.addr]).await;
    let (client, server) = tokio::io::duplex(1);
    let (rd, wr) = tokio::io::split(server);
    let up = Upstreams::stream(Arc::clone(&f.upstreams));
    let peer: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    tokio::spawn(handle_connection(
        Arc::clone(&f.ctx),
        rd,
        wr,
        peer,
        up,
        Protocol::Tcp,
    ));
    let (mut crd, mut cwr) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        for i in 0..20u16 {
            cwr.write_all(&frame(&query_msg(i, "pieces.test.").0))
                .await
                .unwrap();
        }
        cwr
    });
    let mut seen = [false; 20];
    for _ in 0..20 {
        let bytes = timeout(Duration::from_secs(10), read_msg(&mut crd))
            .await
            .expect("answer in time")
            .expect("an answer");
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(tag(&m), Some(3));
        assert!(!seen[usize::from(m.id())], "answered twice: {}", m.id());
        seen[usize::from(m.id())] = true;
    }
    assert!(seen.iter().all(|&s| s));
    drop(writer.await.unwrap());
    assert_eq!(get(&f.ctx.metrics.answers), 20);
}

#[tokio::test]
async fn idle_connection_closes() {
    let b = FakeBackend::start(1, Behavior::Normal).await;
    let f = front("idle_timeout_ms = 200", "", &[b.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    send(&mut c, 1, "idle.test.").await;
    recv(&mut c).await;
    let took = closed_within(&mut c, Duration::from_secs(2)).await;
    assert!(took >= Duration::from_millis(150), "{took:?}");
}

#[tokio::test]
async fn per_client_limit_refuses_exactly_the_extra_one() {
    let b = FakeBackend::start(1, Behavior::Normal).await;
    let f = front("max_connections_per_client = 2", "", &[b.addr]).await;
    let mut c1 = TcpStream::connect(f.addr).await.unwrap();
    let mut c2 = TcpStream::connect(f.addr).await.unwrap();
    send(&mut c1, 1, "a.test.").await;
    send(&mut c2, 2, "a.test.").await;
    assert_eq!(recv(&mut c1).await.id(), 1);
    assert_eq!(recv(&mut c2).await.id(), 2);
    let mut c3 = TcpStream::connect(f.addr).await.unwrap();
    closed_within(&mut c3, Duration::from_secs(1)).await;
    assert_eq!(get(&f.ctx.metrics.connections_refused), 1);
    assert_eq!(get(&f.ctx.metrics.connections), 2);
    drop(c1);
    for _ in 0..100 {
        if get(&f.ctx.metrics.connections) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c4 = TcpStream::connect(f.addr).await.unwrap();
    send(&mut c4, 4, "a.test.").await;
    assert_eq!(recv(&mut c4).await.id(), 4);
    assert_eq!(get(&f.ctx.metrics.connections_refused), 1);
    assert_eq!(get(&f.ctx.metrics.connections_total), 3);
}

#[tokio::test]
async fn clients_outside_the_acl_are_closed_at_accept() {
    let b = FakeBackend::start(1, Behavior::Normal).await;
    let f = front("allow = [\"10.0.0.0/8\"]", "", &[b.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    // Closed before a message is read: no slot held, nothing answered.
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(2), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(f.ctx.metrics.drops(DropReason::Acl), 1);
    assert_eq!(get(&f.ctx.metrics.connections_total), 0);
    assert_eq!(b.queries(), 0);
}

#[tokio::test]
async fn malformed_gets_formerr_and_backend_is_not_asked() {
    let b = FakeBackend::start(1, Behavior::Normal).await;
    let f = front("", "", &[b.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    let (mut q, _) = query_msg(5, "a.test.");
    q.extend_from_slice(b"junk");
    c.write_all(&frame(&q)).await.unwrap();
    let m = recv(&mut c).await;
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    assert_eq!(f.ctx.metrics.drops(DropReason::Malformed), 1);
    assert_eq!(b.queries(), 0);
}

#[tokio::test]
async fn stop_finishes_queries_in_flight_then_closes() {
    let b = FakeBackend::start(1, Behavior::DelayAll(Duration::from_millis(200))).await;
    let f = front("", "", &[b.addr]).await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    send(&mut c, 9, "stop.test.").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    f.ctx.stop.cancel();
    f.ctx.tasks.close();
    assert_eq!(recv(&mut c).await.id(), 9);
    closed_within(&mut c, Duration::from_secs(1)).await;
    timeout(Duration::from_secs(1), f.ctx.tasks.wait())
        .await
        .expect("all tasks end");
    assert!(TcpStream::connect(f.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limits_bound_upstream_connections_and_pipelining() {
    let b = FakeBackend::start(1, Behavior::DelayAll(Duration::from_millis(30))).await;
    let f = front(
        "",
        "max_connections_per_backend = 2\nmax_in_flight_per_connection = 3",
        &[b.addr],
    )
    .await;
    let c = TcpStream::connect(f.addr).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    let mut all = Vec::new();
    for i in 0..40 {
        all.extend(frame(&query_msg(i, "limit.test.").0));
    }
    wr.write_all(&all).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let m = timeout(Duration::from_secs(5), read_msg(&mut rd))
            .await
            .expect("answers keep coming")
            .expect("an answer");
        ids.push(Message::from_vec(&m).unwrap().id());
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
    // 40 queries of 30 ms each over at most 2 × 3 slots.
    assert!(b.max_in_flight() <= 6, "{}", b.max_in_flight());
    assert!(b.max_in_flight() >= 4, "{}", b.max_in_flight());
    let opened = f
        .upstreams
        .stats()
        .connections_opened
        .load(Ordering::Relaxed);
    assert!((1..=2).contains(&opened), "{opened}");
    assert_eq!(get(&f.ctx.metrics.servfail), 0);
}
