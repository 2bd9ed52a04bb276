//! The admin HTTP endpoint: `GET /status` (JSON) and `GET /metrics`
//! (Prometheus text).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::AdminConfig;
use dnsha_proxy::server::Server;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// Pause after a failed `accept` (out of descriptors): the loop must not
/// spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Longest life of one admin connection.
const CONNECTION_LIFE: Duration = Duration::from_secs(30);

/// A running admin endpoint (or none).
#[derive(Debug)]
pub struct Admin {
    config: Option<AdminConfig>,
    stop: CancellationToken,
}

impl Admin {
    /// The address it listens on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.config.as_ref().map(|c| c.listen)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> Option<&AdminConfig> {
        self.config.as_ref()
    }

    /// Stops accepting.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// The daemon's VRRP instances, if any (shared with the admin endpoint).
pub type VrrpSlot = Arc<std::sync::Mutex<Option<crate::vrrp::Running>>>;

/// Starts the endpoint `config` describes (nothing when `None`). A client
/// outside its `allow` networks, or beyond its `max_connections`, is closed
/// at accept.
pub async fn start(
    config: Option<&AdminConfig>,
    server: Arc<Server>,
    vrrp: VrrpSlot,
) -> std::io::Result<Admin> {
    let stop = CancellationToken::new();
    let Some(config) = config.cloned() else {
        return Ok(Admin { config: None, stop });
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %config.listen, "admin endpoint listening");
    let token = stop.clone();
    let limits = config.clone();
    tokio::spawn(async move {
        let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        loop {
            let accepted = tokio::select! {
                () = token.cancelled() => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if !limits
                .allow
                .iter()
                .any(|n| n.contains(&peer.ip().to_canonical()))
            {
                tracing::debug!(client = %peer, "admin client outside allow closed");
                continue;
            }
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                tracing::debug!(client = %peer, "admin connection over max_connections closed");
                continue;
            };
            let server = Arc::clone(&server);
            let vrrp = Arc::clone(&vrrp);
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let server = Arc::clone(&server);
                    let vrrp = Arc::clone(&vrrp);
                    async move { Ok::<_, Infallible>(handle(&server, &vrrp, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(CONNECTION_LIFE, conn).await;
            });
        }
    });
    Ok(Admin {
        config: Some(config),
        stop,
    })
}

fn reply(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Routes one request.
pub fn handle(server: &Server, vrrp: &VrrpSlot, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let instances = vrrp
        .lock()
        .ok()
        .and_then(|g| g.as_ref().map(crate::vrrp::Running::status))
        .unwrap_or_default();
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/status" => match status_json(server, &instances) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            server.prometheus() + &crate::vrrp::prometheus(&instances),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /status or /metrics\n".into(),
        ),
    }
}

/// The balancer's status with the VRRP instances added as `"vrrp"` (an
/// empty list when there are none).
fn status_json(
    server: &Server,
    instances: &[dnsha_vrrp::shell::InstanceStatus],
) -> serde_json::Result<String> {
    let mut status = serde_json::to_value(server.status())?;
    if let Some(obj) = status.as_object_mut() {
        obj.insert("vrrp".into(), serde_json::to_value(instances)?);
    }
    serde_json::to_string(&status)
}
