//! The UDP fast path allocates nothing per query once warmed up: receiving a
//! batch of queries, validating each (header and question only), entering it
//! in the pending table under a random ID, sending the batch upstream,
//! receiving the answers, matching them and sending them back. Counted by a
//! global allocator that counts the allocations of this test's thread.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::time::Duration;

use dnsha_core::Millis;
use dnsha_proxy::dns::{answer_matches, classify_query, parse_answer, rewrite_id, Verdict};
use dnsha_proxy::pending::PendingTable;
use dnsha_proxy::sys::{RecvBatch, SendBatch};
use rand::rngs::StdRng;
use rand::SeedableRng;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts, in thread-local cells that need no allocation.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap());
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// An answer to `q`: QR set, one A record pointing at the question.
fn answer_to(q: &[u8]) -> Vec<u8> {
    let mut a = q.to_vec();
    a[2] |= 0x80;
    a[7] = 1;
    a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
    a
}

#[test]
fn udp_query_path_allocates_nothing_per_query() {
    const BATCH: usize = 16;
    const ROUNDS: usize = 200;
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream.connect(backend.local_addr().unwrap()).unwrap();
    for s in [&client, &listener, &backend, &upstream] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let queries: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| query(u16::try_from(i).unwrap(), &format!("q{i}.example.test")))
        .collect();
    let mut recv = RecvBatch::new(32);
    let mut send = SendBatch::new(32);
    let mut table: PendingTable<(std::net::SocketAddr, Vec<u8>, hickory_proto::op::Query, u16)> =
        PendingTable::new(1024);
    let mut rng = StdRng::seed_from_u64(1);
    let mut spare: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut ids: Vec<u16> = Vec::with_capacity(BATCH);
    let mut answers: Vec<Vec<u8>> = Vec::new();
    let mut answered = 0;

    for round in 0..ROUNDS {
        // The client side (not the proxy): outside the count.
        for q in &queries {
            client.send_to(q, listener.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
        let counting = round >= 10;
        COUNTING.with(|c| c.set(counting));

        // Proxy: queries in, validated, entered, sent upstream in one batch.
        let mut got = 0;
        while got < BATCH {
            let n = recv.recv(&listener).unwrap();
            ids.clear();
            for i in 0..n {
                let src = recv.received()[i].src;
                let bytes = recv.datagram(i).unwrap();
                let Verdict::Forward(info) = classify_query(bytes) else {
                    panic!("valid query refused");
                };
                let mut buf = spare.pop().unwrap();
                buf.clear();
                buf.extend_from_slice(bytes);
                let id = table
                    .insert(
                        0,
                        (src, buf, info.question, info.id),
                        Millis(u64::MAX),
                        &mut rng,
                    )
                    .ok()
                    .unwrap();
                rewrite_id(&mut table.get_mut((0, id)).unwrap().1, id);
                ids.push(id);
            }
            let msgs: smallvec::SmallVec<[(&[u8], Option<std::net::SocketAddr>); 32]> = ids
                .iter()
                .map(|&id| (table.get((0, id)).unwrap().1.as_slice(), None))
                .collect();
            assert_eq!(send.send(&upstream, &msgs).unwrap(), n);
            got += n;
        }

        // The backend (not the proxy): outside the count.
        COUNTING.with(|c| c.set(false));
        answers.clear();
        let mut buf = [0u8; 512];
        for _ in 0..BATCH {
            let (n, from) = backend.recv_from(&mut buf).unwrap();
            let a = answer_to(&buf[..n]);
            backend.send_to(&a, from).unwrap();
            answers.push(a);
        }
        std::thread::sleep(Duration::from_millis(2));
        COUNTING.with(|c| c.set(counting));

        // Proxy: answers in, matched, ID restored, sent back in one batch.
        let mut got = 0;
        while got < BATCH {
            let n = recv.recv(&upstream).unwrap();
            let mut replies: smallvec::SmallVec<[(usize, std::net::SocketAddr); 32]> =
                smallvec::SmallVec::new();
            for i in 0..n {
                let a = recv.datagram_mut(i).unwrap();
                let ai = parse_answer(a).unwrap();
                let (client_addr, buf, question, client_id) = table.remove((0, ai.id)).unwrap();
                assert!(answer_matches(&ai, &question));
                rewrite_id(a, client_id);
                spare.push(buf);
                replies.push((i, client_addr));
            }
            let msgs: smallvec::SmallVec<[(&[u8], Option<std::net::SocketAddr>); 32]> = replies
                .iter()
                .map(|&(i, to)| (recv.datagram(i).unwrap(), Some(to)))
                .collect();
            assert_eq!(send.send(&listener, &msgs).unwrap(), n);
            got += n;
        }
        // As the worker does before it sleeps: the next deadline (drops the
        // deadlines of answered queries).
        assert_eq!(table.next_deadline(), None);
        COUNTING.with(|c| c.set(false));

        // The client gets every answer with its own ID.
        for _ in 0..BATCH {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            let q = &queries[id];
            assert_eq!(
                &buf[12..q.len()],
                &q[12..],
                "answer {id} carries its question"
            );
            assert!(n > q.len());
            answered += 1;
        }
    }
    assert_eq!(answered, ROUNDS * BATCH);
    let allocs = ALLOCS.with(Cell::get);
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations over {} queries",
        (ROUNDS - 10) * BATCH
    );
}
