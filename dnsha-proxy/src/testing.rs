//! Test helpers shared by the TCP, passthrough and upstream tests: fake
//! DNS backends and listener contexts on real loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::Config;
use dnsha_core::{Backend, Pool};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::acl::Acl;
use crate::frontend::ListenerCtx;
use crate::metrics::ListenerMetrics;
use crate::pipeline::ListenerShared;

/// How a fake backend answers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Behavior {
    /// Answers every query at once.
    Normal,
    /// Delays the answer to its very first query.
    DelayFirst(Duration),
    /// Delays every answer.
    DelayAll(Duration),
    /// Reads this many queries on a connection, then closes it unanswered.
    CloseAfter(usize),
    /// Never answers.
    Silent,
    /// Sends an answer with a wrong ID and one with a wrong question
    /// before each real answer.
    BogusFirst,
    /// Writes answers one byte per write.
    Dribble,
    /// Leaves Nagle's algorithm on, as NSD does, and delays the answer to
    /// every second query on a connection: that answer is written while the
    /// one before may still be unacknowledged.
    NagleStaggered(Duration),
}

/// A DNS-over-TCP server answering `A 10.0.0.<tag>` for every query.
pub(crate) struct FakeBackend {
    pub(crate) addr: SocketAddr,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Stats {
    queries: AtomicUsize,
    connections: AtomicUsize,
    open: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    first_done: AtomicBool,
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBackend {
    pub(crate) async fn start(tag: u8, behavior: Behavior) -> Self {
        Self::start_with(tag, behavior, Arc::new(Stats::default())).await
    }

    /// Another backend counting into `other`'s figures: its queries in
    /// flight and theirs are one count, whose maximum is the most both
    /// held at once.
    pub(crate) async fn start_counting_with(tag: u8, behavior: Behavior, other: &Self) -> Self {
        Self::start_with(tag, behavior, Arc::clone(&other.stats)).await
    }

    async fn start_with(tag: u8, behavior: Behavior, stats: Arc<Stats>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                st.open.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    serve_conn(s, tag, behavior, &st).await;
                    st.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, stats, task }
    }

    pub(crate) fn queries(&self) -> usize {
        self.stats.queries.load(Ordering::SeqCst)
    }

    pub(crate) fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    pub(crate) fn open_connections(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.stats.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn serve_conn(s: TcpStream, tag: u8, behavior: Behavior, st: &Arc<Stats>) {
    if !matches!(behavior, Behavior::NagleStaggered(_)) {
        let _ = s.set_nodelay(true);
    }
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if let Behavior::Dribble = behavior {
                for b in frame {
                    if wr.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            } else if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut seen = 0;
    while let Ok(len) = rd.read_u16().await {
        let mut buf = vec![0; usize::from(len)];
        if rd.read_exact(&mut buf).await.is_err() {
            break;
        }
        seen += 1;
        st.queries.fetch_add(1, Ordering::SeqCst);
        let delay = match behavior {
            Behavior::CloseAfter(n) if seen >= n => break,
            Behavior::Silent | Behavior::CloseAfter(_) => continue,
            Behavior::DelayFirst(d) if !st.first_done.swap(true, Ordering::SeqCst) => d,
            Behavior::DelayAll(d) => d,
            Behavior::NagleStaggered(d) if seen % 2 == 0 => d,
            _ => Duration::ZERO,
        };
        let Ok(q) = Message::from_vec(&buf) else {
            continue;
        };
        let mut frames = Vec::new();
        if let Behavior::BogusFirst = behavior {
            let mut wrong_id = answer(&q, tag);
            wrong_id.set_id(q.id().wrapping_add(1));
            frames.push(wrong_id);
            let mut wrong_q = answer(&q, tag);
            wrong_q.take_queries();
            wrong_q.add_query(Query::query(
                Name::from_ascii("other.test.").unwrap(),
                RecordType::A,
            ));
            frames.push(wrong_q);
        }
        frames.push(answer(&q, tag));
        let tx = tx.clone();
        let st = Arc::clone(st);
        let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            st.in_flight.fetch_sub(1, Ordering::SeqCst);
            for m in frames {
                let _ = tx.send(frame(&m.to_vec().unwrap())).await;
            }
        });
    }
    drop(tx);
    if matches!(behavior, Behavior::CloseAfter(_)) {
        writer.abort();
    } else {
        let _ = writer.await;
    }
}

/// An answer to `q`: `A 10.0.0.<tag>` for each question.
pub(crate) fn answer(q: &Message, tag: u8) -> Message {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true);
    for query in q.queries() {
        m.add_query(query.clone());
        m.add_answer(Record::from_rdata(
            query.name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(10, 0, 0, tag))),
        ));
    }
    m
}

/// `msg` with its length prefix.
pub(crate) fn frame(msg: &[u8]) -> Vec<u8> {
    let mut f = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

/// A query for `name` IN A with `id`, and its question.
pub(crate) fn query_msg(id: u16, name: &str) -> (Vec<u8>, Query) {
    let q = Query::query(Name::from_ascii(name).unwrap(), RecordType::A);
    let mut m = Message::new();
    m.set_id(id)
        .set_recursion_desired(true)
        .add_query(q.clone());
    (m.to_vec().unwrap(), q)
}

/// The tag of the fake backend that made this answer.
pub(crate) fn answer_tag(bytes: &[u8]) -> Option<u8> {
    let m = Message::from_vec(bytes).ok()?;
    m.answers().iter().find_map(|r| match r.data() {
        RData::A(a) => Some(a.0.octets()[3]),
        _ => None,
    })
}

/// An address where nothing listens (connections are refused).
pub(crate) async fn closed_port() -> SocketAddr {
    // A socket bound but never listening refuses connections and keeps
    // the port reserved: a listener of a test running in parallel can't
    // be given the same port while this test still counts it as closed.
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = s.local_addr().unwrap();
    HELD.lock().unwrap().push(s);
    addr
}

/// A listener context for `backends`, with `listener_extra` and
/// `pool_extra` TOML lines added to the listener and pool tables.
pub(crate) fn ctx(
    protocol: &str,
    listener_extra: &str,
    pool_extra: &str,
    backends: &[SocketAddr],
) -> Arc<ListenerCtx> {
    let mut toml = format!(
        "[[listener]]\nname = \"t\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n{listener_extra}\n\n[[pool]]\nname = \"p\"\n{pool_extra}\n"
    );
    for (i, b) in backends.iter().enumerate() {
        toml.push_str(&format!(
            "\n[[pool.backend]]\nname = \"b{i}\"\naddress = \"{b}\"\n"
        ));
    }
    let cfg = Config::parse(&toml).unwrap();
    let lc = cfg.listeners[0].clone();
    let pc = cfg.pools[0].clone();
    let pool = Pool::new(
        pc.name.clone(),
        pc.policy,
        pc.settings.clone(),
        pc.backends
            .iter()
            .map(|b| Arc::new(Backend::new(b.name.clone(), b.address, b.weight)))
            .collect(),
    );
    let metrics = Arc::new(ListenerMetrics::new(
        lc.name.clone(),
        lc.protocol,
        lc.listen,
    ));
    let target = Arc::new(crate::pipeline::Target {
        pool: Arc::new(pool),
        routes: Arc::new(
            crate::upstream::Routes::new(
                &pc,
                &Arc::new(crate::upstream::stream::TcpUpstreams::new(
                    crate::upstream::stream::TcpUpstreamSettings::default(),
                )),
            )
            .unwrap(),
        ),
        cache: pc
            .cache
            .map(|c| Arc::new(crate::cache::PacketCache::new(c))),
    });
    let rules = crate::pipeline::Rules::new(
        cfg.rules.clone(),
        |name| (name == pc.name).then(|| Arc::clone(&target)),
        None,
    );
    Arc::new(ListenerCtx::new(
        ListenerShared {
            acl: Acl::new(lc.allow.clone()),
            config: lc,
            target,
            rules: Arc::new(rules),
            limits: Vec::new(),
            dynblocks: None,
            access_log: None,
        },
        metrics,
    ))
}

/// Reads one length-prefixed message, or `None` on EOF or error.
pub(crate) async fn read_msg(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let len = s.read_u16().await.ok()?;
    let mut buf = vec![0; usize::from(len)];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}
