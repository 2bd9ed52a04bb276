//! The monitor against loopback sockets, in real (short) time.

use std::time::Duration;

use dnsha_core::{FailureKind, Millis, PolicyKind, PoolSettings};
use tokio::net::TcpListener;

use super::*;
use crate::state::Reason;

const WAIT: Duration = Duration::from_secs(5);

fn config(health: &str, backends: &[(&str, SocketAddr)]) -> Config {
    let mut s = format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:1\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\n\n[pool.health]\n{health}\n"
    );
    for (name, addr) in backends {
        s.push_str(&format!(
            "\n[[pool.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    Config::parse(&s).unwrap_or_else(|e| panic!("{e:?}\n{s}"))
}

fn pool_of(cfg: &Config) -> Arc<Pool> {
    let pc = &cfg.pools[0];
    Arc::new(Pool::new(
        pc.name.clone(),
        PolicyKind::RoundRobin,
        pc.settings.clone(),
        pc.backends
            .iter()
            .map(|b| Arc::new(Backend::new(b.name.clone(), b.address, b.weight)))
            .collect(),
    ))
}

async fn next_event(rx: &mut broadcast::Receiver<HealthEvent>) -> HealthEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event in time")
        .expect("event channel open")
}

/// An address where connections are refused, and the socket that keeps
/// its port from any other test (bound, never listening) until dropped.
async fn closed_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (s.local_addr().unwrap(), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_goes_down_then_comes_back_after_rise() {
    let (addr, held) = closed_addr().await;
    let cfg = config(
        "check = \"tcp\"\ninterval_ms = 50\ntimeout_ms = 200\nrise = 2\nfall = 2",
        &[("a", addr)],
    );
    let pool = pool_of(&cfg);
    let m = HealthMonitor::new().unwrap();
    let mut events = m.subscribe();
    m.reconcile(&cfg, &[Arc::clone(&pool)]).unwrap();
    assert_eq!(m.checked(), 1);
    // New backend, first probe refused: down at once, and the pool with it.
    match next_event(&mut events).await {
        HealthEvent::BackendDown {
            backend, reason, ..
        } => {
            assert_eq!(backend, "a");
            assert_eq!(reason.to_string(), "first check failed: refused");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        next_event(&mut events).await,
        HealthEvent::PoolDown { pool: "p".into() }
    );
    let b = Arc::clone(&pool.snapshot().backends()[0]);
    assert_eq!(b.state(), BackendState::DownByCheck);
    assert_eq!(
        m.pools().borrow().get("p"),
        Some(&PoolHealth { up: 0, total: 1 })
    );
    // It comes back after two good probes.
    drop(held);
    let listener = TcpListener::bind(addr).await.unwrap();
    let started = std::time::Instant::now();
    match next_event(&mut events).await {
        HealthEvent::BackendUp { reason, .. } => {
            assert_eq!(reason.to_string(), "2 consecutive good checks");
        }
        e => panic!("{e:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        next_event(&mut events).await,
        HealthEvent::PoolUp {
            pool: "p".into(),
            up: 1
        }
    );
    assert!(b.is_up());
    let report = m.backend("p", "a").unwrap();
    assert_eq!(report.health, Health::Up);
    assert!(report.good_run >= 2);
    let text = m.prometheus();
    for want in [
        "dnsha_health_check_failures_total{pool=\"p\",backend=\"a\",address=\"",
        "reason=\"refused\"} 1",
        "dnsha_health_transitions_total{pool=\"p\",backend=\"a\"",
        "dnsha_pool_no_backend_events_total{pool=\"p\"} 1",
        "dnsha_pool_backends_up{pool=\"p\"} 1",
        "dnsha_health_check_duration_seconds_count{pool=\"p\"",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    drop(listener);
    m.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_mark_is_held_until_rise_good_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = config(
        "check = \"tcp\"\ninterval_ms = 300\nrise = 3\nfall = 3",
        &[("a", addr)],
    );
    let pool = pool_of(&cfg);
    let m = HealthMonitor::start(&cfg, &[Arc::clone(&pool)]).unwrap();
    let mut events = m.subscribe();
    assert!(pool.has_observer());
    let b = Arc::clone(&pool.snapshot().backends()[0]);
    // Let the first probe confirm it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(b.is_up());
    for _ in 0..3 {
        pool.record_failure(&b, FailureKind::Timeout, Millis::now());
    }
    match next_event(&mut events).await {
        HealthEvent::BackendDown { reason, .. } => assert_eq!(
            reason.to_string(),
            "marked down by live traffic: 3 consecutive timeouts"
        ),
        e => panic!("{e:?}"),
    }
    // Held by the checker: a successful live answer does not bring it back.
    assert_eq!(b.state(), BackendState::DownByCheck);
    assert_eq!(b.record_success(Millis(0), 10_000), None);
    let down_at = std::time::Instant::now();
    match next_event(&mut events).await {
        HealthEvent::PoolDown { .. } => {}
        e => panic!("{e:?}"),
    }
    match next_event(&mut events).await {
        HealthEvent::BackendUp { reason, .. } => {
            assert_eq!(reason, Reason::Recovered { count: 3 })
        }
        e => panic!("{e:?}"),
    }
    // One immediate probe, then two more an interval apart.
    let took = down_at.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    m.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_runs_make_a_suspect_probed_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = config(
        "check = \"tcp\"\ninterval_ms = 2000\npassive_threshold = 2",
        &[("a", addr)],
    );
    let pool = pool_of(&cfg);
    let m = HealthMonitor::start(&cfg, &[Arc::clone(&pool)]).unwrap();
    let b = Arc::clone(&pool.snapshot().backends()[0]);
    // Past the first probe (within 250 ms) and the least gap between two
    // probes (interval / 4), before the second regular probe (≥ 1800 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ok_before = m.inner.lock().tasks[0].metrics.ok();
    pool.record_servfail(&b, Millis(0));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(m.inner.lock().tasks[0].metrics.suspicions(), 0);
    pool.record_servfail(&b, Millis(0));
    tokio::time::sleep(Duration::from_millis(40)).await;
    let task = Arc::clone(&m.inner.lock().tasks[0]);
    assert_eq!(task.metrics.suspicions(), 1);
    assert_eq!(task.metrics.ok(), ok_before + 1, "probed at once");
    assert!(b.is_up(), "suspicion alone takes nothing down");
    m.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_keeps_state_stops_removed_and_releases_unchecked() {
    let (dead, _held) = closed_addr().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alive = listener.local_addr().unwrap();
    let health = "check = \"tcp\"\ninterval_ms = 50\nrise = 2\nfall = 2";
    let cfg = config(health, &[("dead", dead), ("alive", alive)]);
    let pool = pool_of(&cfg);
    let m = HealthMonitor::start(&cfg, &[Arc::clone(&pool)]).unwrap();
    let mut events = m.subscribe();
    let dead_b = Arc::clone(&pool.snapshot().backends()[0]);
    match next_event(&mut events).await {
        HealthEvent::BackendDown { backend, .. } => assert_eq!(backend, "dead"),
        e => panic!("{e:?}"),
    }
    // Reload: same backends, a new weight for "dead" (a new Backend value
    // taking the old state), a longer interval. It stays down.
    let cfg2 = Config::parse(&format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:1\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n[pool.health]\ncheck = \"tcp\"\ninterval_ms = 60\nrise = 2\nfall = 2\n[[pool.backend]]\nname = \"dead\"\naddress = \"{dead}\"\nweight = 5\n[[pool.backend]]\nname = \"alive\"\naddress = \"{alive}\"\n"
    ))
    .unwrap();
    pool.update(
        PoolSettings::default(),
        cfg2.pools[0]
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.address, b.weight))
            .collect(),
    );
    m.reconcile(&cfg2, &[Arc::clone(&pool)]).unwrap();
    let new_dead = Arc::clone(&pool.snapshot().backends()[0]);
    assert!(!Arc::ptr_eq(&new_dead, &dead_b));
    assert_eq!(new_dead.state(), BackendState::DownByCheck);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(new_dead.state(), BackendState::DownByCheck);
    assert_eq!(m.checked(), 2);
    // The passive observer follows the new Backend value.
    let alive_b = Arc::clone(&pool.snapshot().backends()[1]);
    for _ in 0..3 {
        pool.record_failure(&alive_b, FailureKind::Refused, Millis::now());
    }
    match next_event(&mut events).await {
        HealthEvent::BackendDown {
            backend, reason, ..
        } => {
            assert_eq!(backend, "alive");
            assert!(reason
                .to_string()
                .starts_with("marked down by live traffic"));
        }
        e => panic!("{e:?}"),
    }
    // Remove the checks of the pool: the held-down backend is released.
    let cfg3 = Config::parse(&format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:1\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"dead\"\naddress = \"{dead}\"\nweight = 5\n"
    ))
    .unwrap();
    pool.update(PoolSettings::default(), vec![("dead".into(), dead, 5)]);
    m.reconcile(&cfg3, &[Arc::clone(&pool)]).unwrap();
    assert_eq!(m.checked(), 0);
    assert!(!pool.has_observer());
    assert!(new_dead.is_up());
    assert!(m
        .prometheus()
        .contains("dnsha_pool_backends_up{pool=\"p\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_setup_is_refused_and_changes_nothing() {
    let cfg = config(
        "check = \"tcp\"\ninterval_ms = 1000",
        &[("a", "127.0.0.1:9".parse().unwrap())],
    );
    let pool = pool_of(&cfg);
    let m = HealthMonitor::start(&cfg, &[Arc::clone(&pool)]).unwrap();
    let bad = config(
        "check = \"tls\"\ntls_ca = \"/nonexistent/ca.pem\"",
        &[("a", "127.0.0.1:9".parse().unwrap())],
    );
    let e = HealthMonitor::validate(&bad).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("pool p, backend a: tls_ca /nonexistent/ca.pem"),
        "{e}"
    );
    assert!(m.reconcile(&bad, &[Arc::clone(&pool)]).is_err());
    assert_eq!(
        m.backend("p", "a").map(|b| b.check),
        Some(dnsha_core::config::CheckKind::Tcp)
    );
    assert!(HealthMonitor::validate(&cfg).is_ok());
    m.stop();
}

#[test]
fn needs_a_runtime() {
    assert!(matches!(HealthMonitor::new(), Err(Error::NoRuntime)));
}
