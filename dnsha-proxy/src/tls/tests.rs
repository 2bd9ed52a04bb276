#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::testing::{answer_tag, query_msg, Behavior, FakeBackend};
use crate::upstream::stream::{
    TcpUpstreamSettings, TcpUpstreams, TlsWire, UpstreamTarget, UpstreamTls,
};
use dnsha_core::FailureKind;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};

/// A CA and a server certificate for `names`, written to `dir`:
/// (cert chain, key, ca) paths.
pub(crate) struct Pki {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

pub(crate) fn pki(dir: &Path, stem: &str, names: &[&str], expired: bool) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let p = Pki {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
        ca: dir.join(format!("{stem}-ca.crt")),
    };
    std::fs::write(&p.cert, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&p.key, key.serialize_pem()).unwrap();
    std::fs::write(&p.ca, ca.pem()).unwrap();
    p
}

fn files(cert: &Path, key: &Path) -> TlsFiles {
    TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        cert_span: Some(10..20),
        key_span: Some(30..40),
    }
}

#[test]
fn good_files_load_and_bad_ones_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a", &["dns.test"], false);
    let b = pki(dir.path(), "b", &["dns.test"], false);
    assert!(load_certified_key(&files(&a.cert, &a.key)).is_ok());

    // Missing certificate: at tls_cert.
    let e = load_certified_key(&files(&dir.path().join("nope.crt"), &a.key)).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].span, Some(10..20));
    assert!(e[0].message.contains("cannot read"), "{}", e[0].message);

    // A key of another certificate: at tls_key.
    let e = load_certified_key(&files(&a.cert, &b.key)).unwrap_err();
    assert_eq!(e[0].span, Some(30..40));
    assert!(e[0].message.contains("does not match"), "{}", e[0].message);

    // Not PEM at all.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    let e = load_certified_key(&files(&junk, &junk)).unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].message.contains("no certificate"), "{}", e[0].message);
    assert!(e[1].message.contains("private key"), "{}", e[1].message);

    // Expired.
    let x = pki(dir.path(), "x", &["dns.test"], true);
    let e = load_certified_key(&files(&x.cert, &x.key)).unwrap_err();
    assert_eq!(e[0].span, Some(10..20));
    assert!(e[0].message.contains("expired"), "{}", e[0].message);
}

#[test]
fn check_files_renders_at_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a", &["dns.test"], false);
    let src = format!(
        "[[listener]]\nname = \"dot\"\nprotocol = \"dot\"\nlisten = \"127.0.0.1:853\"\npool = \"p\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n[[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"127.0.0.1\"\ntransport = \"dot\"\ntls_ca = \"{}\"\n",
        dir.path().join("missing.crt").display(),
        a.key.display(),
        dir.path().join("missing-ca.crt").display(),
    );
    let cfg = Config::parse(&src).unwrap();
    let errors = check_files(&cfg);
    let rendered: Vec<String> = errors.iter().map(|e| e.render("t.toml", &src)).collect();
    assert_eq!(rendered.len(), 2, "{rendered:?}");
    assert!(
        rendered[0].starts_with("t.toml:6:12: tls_cert `"),
        "{rendered:?}"
    );
    assert!(
        rendered[1].starts_with("t.toml:16:10: tls_ca `"),
        "{rendered:?}"
    );
}

#[test]
fn relative_paths_follow_the_config_file() {
    let src = "[[listener]]\nname = \"dot\"\nprotocol = \"dot\"\nlisten = \"853\"\npool = \"p\"\ntls_cert = \"c.pem\"\ntls_key = \"/abs/k.pem\"\n\n[[pool]]\nname = \"p\"\n\n[[pool.backend]]\nname = \"b\"\naddress = \"127.0.0.1\"\n";
    let mut cfg = Config::parse(src).unwrap();
    resolve_relative(&mut cfg, Path::new("/etc/dnsha"));
    let tls = cfg.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("/etc/dnsha/c.pem"));
    assert_eq!(tls.key, Path::new("/abs/k.pem"));
}

#[test]
fn install_swaps_the_served_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a", &["dns.test"], false);
    let b = pki(dir.path(), "b", &["dns.test"], false);
    let tls = ServerTls::new(&files(&a.cert, &a.key), &[ALPN_DOT]).unwrap();
    let first = tls.current().cert[0].clone();
    tls.install(load_certified_key(&files(&b.cert, &b.key)).unwrap());
    assert_ne!(tls.current().cert[0], first);
    assert_eq!(tls.config().alpn_protocols, vec![b"dot".to_vec()]);
}

/// A DoT backend: TLS terminated here, the plaintext relayed to a fake TCP
/// backend. Counts resumed handshakes.
struct DotFront {
    addr: SocketAddr,
    resumed: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DotFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn dot_front(tls: Arc<ServerTls>, backend: SocketAddr) -> DotFront {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_front(tls, backend, listener)
}

/// Serves until dropped; dropping it also closes its open connections, as a
/// backend restart does.
fn start_front(tls: Arc<ServerTls>, backend: SocketAddr, listener: TcpListener) -> DotFront {
    let addr = listener.local_addr().unwrap();
    let resumed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r2 = Arc::clone(&resumed);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let acceptor = tls.acceptor();
            let r2 = Arc::clone(&r2);
            conns.spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    r2.fetch_add(1, Ordering::SeqCst);
                }
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    DotFront {
        addr,
        resumed,
        task,
    }
}

fn dot_target(addr: SocketAddr, tls: &BackendTls) -> UpstreamTarget {
    let server_name = server_name(tls, addr).unwrap();
    UpstreamTarget {
        addr,
        tls: Some(Arc::new(UpstreamTls {
            config: client_config(tls).unwrap(),
            key: format!("{:?}", server_name),
            server_name,
            wire: TlsWire::Dot,
        })),
        limits: None,
    }
}

#[tokio::test]
async fn dot_upstream_pools_verifies_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), "s", &["dns.test", "127.0.0.1"], false);
    let server = Arc::new(ServerTls::new(&files(&p.cert, &p.key), &[ALPN_DOT]).unwrap());
    let be = FakeBackend::start(7, Behavior::Normal).await;
    let front = dot_front(Arc::clone(&server), be.addr).await;
    let verified = BackendTls {
        verify: true,
        name: Some("dns.test".into()),
        ca: Some(p.ca.clone()),
        ca_span: None,
    };
    let up = TcpUpstreams::new(TcpUpstreamSettings {
        idle_timeout: Duration::from_millis(200),
        ..TcpUpstreamSettings::default()
    });
    let target = dot_target(front.addr, &verified);
    for i in 0..5u16 {
        let (q, question) = query_msg(i, "a.test.");
        let a = up
            .query_target(&target, &q, &question, Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(answer_tag(&a), Some(7));
    }
    // Five queries, one TLS connection.
    assert_eq!(up.stats().connections_opened.load(Ordering::Relaxed), 1);
    // After the idle close, the next connection resumes the session.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (q, question) = query_msg(9, "b.test.");
    up.query_target(&target, &q, &question, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(up.stats().connections_opened.load(Ordering::Relaxed), 2);
    assert_eq!(front.resumed.load(Ordering::SeqCst), 1);

    // The IP address is in the certificate too.
    let by_ip = BackendTls {
        name: None,
        ..verified.clone()
    };
    let (q, question) = query_msg(10, "c.test.");
    assert!(up
        .query_target(
            &dot_target(front.addr, &by_ip),
            &q,
            &question,
            Duration::from_secs(3)
        )
        .await
        .is_ok());

    // A name the certificate does not hold fails the handshake: refused.
    let wrong = BackendTls {
        name: Some("other.test".into()),
        ..verified.clone()
    };
    let r = up
        .query_target(
            &dot_target(front.addr, &wrong),
            &q,
            &question,
            Duration::from_secs(3),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Upstream {
                kind: FailureKind::Refused,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(up.stats().tls_failures.load(Ordering::Relaxed), 1);

    // Without verification, any certificate is accepted.
    let unverified = BackendTls {
        verify: false,
        name: Some("other.test".into()),
        ca: None,
        ca_span: None,
    };
    assert!(up
        .query_target(
            &dot_target(front.addr, &unverified),
            &q,
            &question,
            Duration::from_secs(3)
        )
        .await
        .is_ok());
}

#[tokio::test]
async fn dot_upstream_is_reestablished_after_the_backend_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), "s", &["dns.test"], false);
    let server = Arc::new(ServerTls::new(&files(&p.cert, &p.key), &[ALPN_DOT]).unwrap());
    let be = FakeBackend::start(3, Behavior::Normal).await;
    let front = dot_front(Arc::clone(&server), be.addr).await;
    let addr = front.addr;
    let tls = BackendTls {
        verify: true,
        name: Some("dns.test".into()),
        ca: Some(p.ca.clone()),
        ca_span: None,
    };
    let target = dot_target(addr, &tls);
    let up = TcpUpstreams::new(TcpUpstreamSettings::default());
    let (q, question) = query_msg(1, "a.test.");
    let t = Duration::from_secs(3);
    assert!(up.query_target(&target, &q, &question, t).await.is_ok());
    // The backend goes away (its connections with it) ...
    drop(front);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = up.query_target(&target, &q, &question, t).await;
    assert!(r.is_err(), "{r:?}");
    // ... and comes back on the same port.
    let _front = start_front(
        Arc::clone(&server),
        be.addr,
        TcpListener::bind(addr).await.unwrap(),
    );
    let mut ok = false;
    for _ in 0..20 {
        if up.query_target(&target, &q, &question, t).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "no answer after the backend came back");
}

#[test]
fn tls_ca_replaces_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), "pinned", &["dns.test"], false);
    let with_ca = BackendTls {
        verify: true,
        name: Some("dns.test".into()),
        ca: Some(p.ca.clone()),
        ca_span: None,
    };
    // Only the pinned CA: a certificate any public CA issued for the name
    // is not accepted.
    assert_eq!(root_store(&with_ca).unwrap().len(), 1);
    let system = BackendTls {
        ca: None,
        ..with_ca.clone()
    };
    let native = rustls_native_certs::load_native_certs().certs.len();
    let store = root_store(&system).unwrap();
    assert!(store.len() <= native);
    if native > 0 {
        assert!(
            !store.is_empty(),
            "the system roots when there is no tls_ca"
        );
    }
}

#[test]
fn a_key_readable_by_everyone_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), "k", &["dns.test"], false);
    std::fs::set_permissions(&p.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(warn_if_readable_by_others(&p.key));
    std::fs::set_permissions(&p.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!warn_if_readable_by_others(&p.key));
}
