//! The admin HTTP endpoint: `GET /status` (JSON) and `GET /metrics`
//! (Prometheus text).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use dnsha_proxy::server::Server;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// A running admin endpoint (or none).
#[derive(Debug)]
pub struct Admin {
    addr: Option<SocketAddr>,
    stop: CancellationToken,
}

impl Admin {
    /// The address it listens on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops accepting.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// The daemon's VRRP instances, if any (shared with the admin endpoint).
pub type VrrpSlot = Arc<std::sync::Mutex<Option<crate::vrrp::Running>>>;

/// Starts the endpoint on `addr` (nothing when `None`).
pub async fn start(
    addr: Option<SocketAddr>,
    server: Arc<Server>,
    vrrp: VrrpSlot,
) -> std::io::Result<Admin> {
    let stop = CancellationToken::new();
    let Some(addr) = addr else {
        return Ok(Admin { addr: None, stop });
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %addr, "admin endpoint listening");
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = token.cancelled() => break,
                r = listener.accept() => r,
            };
            let Ok((stream, _)) = accepted else { continue };
            let server = Arc::clone(&server);
            let vrrp = Arc::clone(&vrrp);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let server = Arc::clone(&server);
                    let vrrp = Arc::clone(&vrrp);
                    async move { Ok::<_, Infallible>(handle(&server, &vrrp, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    });
    Ok(Admin {
        addr: Some(addr),
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
