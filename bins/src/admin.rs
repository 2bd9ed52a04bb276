//! The admin HTTP endpoint (HTTPS with `tls_cert`): the web console at
//! `GET /` with its `GET /history`, `GET /status` (JSON), `GET /metrics`
//! (Prometheus text), and the actions (`POST`): backends drained, enabled
//! or checked, caches purged, blocks lifted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::AdminConfig;
use dnsha_proxy::server::Server;
use dnsha_proxy::tls::ServerTls;
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
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
    /// The settings it runs with, which its accept loop and requests read
    /// (`allow`, `users`, `auth` change in place: [`Admin::update`]);
    /// `None` without an endpoint.
    config: Option<Arc<arc_swap::ArcSwap<AdminConfig>>>,
    stop: CancellationToken,
    /// The accept loop, which owns the listening socket.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Its certificate with `tls_cert`, replaced in place on reload.
    tls: Option<Arc<ServerTls>>,
}

impl Admin {
    /// The address it listens on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.config.as_ref().map(|c| c.load().listen)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> Option<Arc<AdminConfig>> {
        self.config.as_ref().map(|c| c.load_full())
    }

    /// Stops accepting.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops accepting and waits until the listening socket is closed (so
    /// that a new endpoint can bind the same address).
    pub async fn stop_and_wait(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Takes `config` in place when it listens where this one does with
    /// the same connection limit, with TLS or without as before (a reload
    /// that changes `allow`, `users`, `auth`, `refresh_ms`, or the
    /// certificate files, whose new key serves the next handshakes); false
    /// when it needs a new endpoint.
    pub fn update(&mut self, config: &AdminConfig) -> bool {
        let Some(shared) = &self.config else {
            return false;
        };
        let c = shared.load();
        let same_socket = c.listen == config.listen
            && c.max_connections == config.max_connections
            && c.tls.is_some() == config.tls.is_some();
        if !same_socket {
            return false;
        }
        if let (Some(tls), Some(files)) = (&self.tls, &config.tls) {
            match dnsha_proxy::tls::load_certified_key(files) {
                Ok(key) => {
                    if tls.current().cert != key.cert {
                        tracing::info!(address = %config.listen, "admin certificate reloaded");
                    }
                    tls.install(key);
                }
                Err(errors) => {
                    for e in errors {
                        tracing::error!(error = %e, "admin certificate not reloaded");
                    }
                }
            }
        }
        shared.store(Arc::new(config.clone()));
        true
    }
}

/// The daemon's VRRP instances, if any (shared with the admin endpoint).
pub type VrrpSlot = Arc<std::sync::Mutex<Option<crate::vrrp::Running>>>;

/// What the daemon shares with the admin endpoint beside the balancer.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    /// The VRRP instances.
    pub vrrp: VrrpSlot,
    /// The kernel path's status.
    pub kernel: crate::kernel::KernelSlot,
    /// The web console's last five minutes (kept across endpoint
    /// restarts).
    pub history: crate::console::HistorySlot,
    /// The `[[anycast]]` sections' state.
    pub anycast: crate::anycast::AnycastSlot,
}

/// Starts the endpoint `config` describes (nothing when `None`). A client
/// outside its `allow` networks, or beyond its `max_connections`, is closed
/// at accept.
pub async fn start(
    config: Option<&AdminConfig>,
    server: Arc<Server>,
    slots: Slots,
) -> std::io::Result<Admin> {
    let stop = CancellationToken::new();
    let Some(config) = config.cloned() else {
        return Ok(Admin {
            config: None,
            stop,
            task: None,
            tls: None,
        });
    };
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(
            ServerTls::new(files, &[b"http/1.1"]).map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %config.listen, tls = tls.is_some(), "admin endpoint listening");
    crate::console::spawn_sampler(
        Arc::clone(&server),
        Arc::clone(&slots.history),
        stop.child_token(),
    );
    let acceptor = tls.as_ref().map(|t| t.acceptor());
    let token = stop.clone();
    let access = Arc::new(arc_swap::ArcSwap::from_pointee(config.clone()));
    let shared = Arc::clone(&access);
    let max_connections = config.max_connections;
    let task = tokio::spawn(async move {
        let access = shared;
        let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
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
            if !access
                .load()
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
            let slots = slots.clone();
            let access = Arc::clone(&access);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let server = Arc::clone(&server);
                    let slots = slots.clone();
                    let access = Arc::clone(&access);
                    async move {
                        let access = access.load_full();
                        Ok::<_, Infallible>(authorized(&server, &slots, &access, peer, req).await)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let served = async {
                    match acceptor {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => {
                                let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                            }
                            Err(e) => {
                                tracing::debug!(client = %peer, error = %e, "admin tls handshake failed");
                            }
                        },
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                };
                let _ = tokio::time::timeout(CONNECTION_LIFE, served).await;
            });
        }
    });
    Ok(Admin {
        config: Some(access),
        stop,
        task: Some(task),
        tls,
    })
}

/// Checks who asks ([`crate::auth`]), logs an action with its user, then
/// routes the request.
async fn authorized(
    server: &Server,
    slots: &Slots,
    access: &AdminConfig,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let is_action = req.method() == Method::POST;
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match crate::auth::precheck(access, peer.ip(), is_action, header) {
        Ok(None) => None,
        Ok(Some((name, password))) => {
            let users = access.users.clone();
            let who = name.clone();
            let ok =
                tokio::task::spawn_blocking(move || crate::auth::verify(&users, &who, &password))
                    .await
                    .unwrap_or(false);
            if !ok {
                tracing::warn!(client = %peer, user = %name, path = %req.uri().path(), "admin authentication failed");
                return unauthorized(&req);
            }
            Some(name)
        }
        Err(crate::auth::Refusal::Unauthorized) => return unauthorized(&req),
        Err(crate::auth::Refusal::Forbidden(why)) => {
            tracing::warn!(client = %peer, path = %req.uri().path(), "admin action refused: {why}");
            return reply(StatusCode::FORBIDDEN, "text/plain", format!("{why}\n"));
        }
    };
    if is_action {
        tracing::info!(client = %peer, user = user.as_deref().unwrap_or("-"), request = %req.uri(), "admin action");
    }
    handle(server, slots, access.refresh_ms, &req)
}

/// The header the console's own requests carry: their 401 comes without
/// the challenge, so that the page asks for the user in its form instead
/// of the browser's dialog (which would also remember the user for every
/// later request).
pub const CONSOLE_HEADER: &str = "x-dnsha-console";

/// 401 with the challenge a browser and curl answer (not for the
/// console's requests: [`CONSOLE_HEADER`]).
fn unauthorized<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let mut r = reply(
        StatusCode::UNAUTHORIZED,
        "text/plain",
        "a user is needed (HTTP basic auth)\n".into(),
    );
    if req.headers().contains_key(CONSOLE_HEADER) {
        return r;
    }
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"dnsha\""),
    );
    r
}

fn reply(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Routes one request (`refresh_ms`: the console's refresh interval).
pub fn handle(
    server: &Server,
    slots: &Slots,
    refresh_ms: u64,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let instances = slots
        .vrrp
        .lock()
        .ok()
        .and_then(|g| g.as_ref().map(crate::vrrp::Running::status))
        .unwrap_or_default();
    let kernel = slots.kernel.lock().ok().and_then(|g| g.clone());
    let anycast: Vec<crate::anycast::AnycastStatus> = slots
        .anycast
        .lock()
        .map(|g| g.values().cloned().collect())
        .unwrap_or_default();
    if req.method() == Method::POST && req.uri().path() == "/cache/purge" {
        let (status, body) = purge(server, req.uri().query().unwrap_or(""));
        return reply(status, "application/json", body);
    }
    if req.method() == Method::POST && req.uri().path() == "/blocks/lift" {
        let (status, body) = lift(server, req.uri().query().unwrap_or(""));
        return reply(status, "application/json", body);
    }
    if req.method() == Method::POST {
        if let Some(action) = req
            .uri()
            .path()
            .strip_prefix("/backends/")
            .and_then(BackendAction::parse)
        {
            let (status, body) = backend_action(server, action, req.uri().query().unwrap_or(""));
            return reply(status, "application/json", body);
        }
    }
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only (POST for /cache/purge, /blocks/lift and /backends/{drain,enable,check})\n"
                .into(),
        );
    }
    match req.uri().path() {
        "/" => {
            let mut r = reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                crate::console::PAGE.into(),
            );
            r.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-store"),
            );
            r
        }
        "/history" => match crate::console::history_json(&slots.history, server, refresh_ms) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/status" => match status_json(server, &instances, kernel.as_ref(), &anycast) {
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
            server.prometheus()
                + &crate::vrrp::prometheus(&instances)
                + &crate::kernel::prometheus(kernel.as_ref())
                + &crate::anycast::prometheus(&slots.anycast),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try / (the console), /status or /metrics\n".into(),
        ),
    }
}

/// What an operator does to one backend during an incident (`dnsha
/// backend ACTION`, `POST /backends/ACTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendAction {
    /// No new queries; those in flight finish; health checks go on.
    Drain,
    /// Take queries again, as its health allows.
    Enable,
    /// Run its health check now.
    Check,
}

impl BackendAction {
    /// From the last part of `/backends/{drain,enable,check}`.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "drain" => Some(Self::Drain),
            "enable" => Some(Self::Enable),
            "check" => Some(Self::Check),
            _ => None,
        }
    }

    /// Its name in the path.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::Enable => "enable",
            Self::Check => "check",
        }
    }
}

/// `POST /backends/{drain,enable,check}?pool=P&backend=B`: the incident
/// actions of `ipvsadm -e -w 0` and HAProxy's `disable server`, logged.
fn backend_action(server: &Server, action: BackendAction, query: &str) -> (StatusCode, String) {
    let error = |status, msg: String| (status, serde_json::json!({ "error": msg }).to_string());
    let (mut pool, mut name) = (None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "pool" => pool = Some(v.into_owned()),
            "backend" => name = Some(v.into_owned()),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter `{other}`"),
                )
            }
        }
    }
    let (Some(pool), Some(name)) = (pool, name) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the `pool` and `backend` parameters are required".into(),
        );
    };
    let Some(backend) = server
        .pools()
        .iter()
        .find(|p| p.name() == pool)
        .and_then(|p| {
            p.snapshot()
                .backends()
                .iter()
                .find(|b| b.name() == name)
                .cloned()
        })
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no backend `{name}` in pool `{pool}`"),
        );
    };
    match action {
        BackendAction::Drain | BackendAction::Enable => {
            let drain = action == BackendAction::Drain;
            let was = backend.set_drained(drain);
            tracing::info!(pool = %pool, backend = %name, action = action.as_str(), was_drained = was, "backend {} by the operator", if drain { "drained" } else { "enabled" });
        }
        BackendAction::Check => {
            if !server.health().check_now(&pool, &name) {
                return error(
                    StatusCode::CONFLICT,
                    format!("backend `{name}` of pool `{pool}` has no active health check"),
                );
            }
        }
    }
    let state = if backend.is_drained() {
        "drain"
    } else {
        backend.state().as_str()
    };
    (
        StatusCode::OK,
        serde_json::json!({
            "pool": pool,
            "backend": name,
            "action": action.as_str(),
            "state": state,
            "outstanding": backend.outstanding(),
        })
        .to_string(),
    )
}

/// `POST /blocks/lift?prefix=192.0.2.0/24`: lifts a dynamic block before
/// its time (an address alone names its /32 or /128). Logged.
fn lift(server: &Server, query: &str) -> (StatusCode, String) {
    let error = |status, msg: String| (status, serde_json::json!({ "error": msg }).to_string());
    let mut prefix = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "prefix" => prefix = Some(v.into_owned()),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter `{other}`"),
                )
            }
        }
    }
    let Some(text) = prefix else {
        return error(
            StatusCode::BAD_REQUEST,
            "the `prefix` parameter is required".into(),
        );
    };
    let net = match dnsha_core::rules::nets::parse_net(&text) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match server.lift_block(net) {
        Some(b) => (
            StatusCode::OK,
            serde_json::json!({ "lifted": b.prefix.to_string(), "rule": b.rule }).to_string(),
        ),
        None => error(StatusCode::NOT_FOUND, format!("no dynamic block on {net}")),
    }
}

/// What `POST /cache/purge?pool=P[&name=N[&type=T]][&suffix=true]` asks.
#[derive(Debug, Default, PartialEq, Eq)]
struct PurgeRequest {
    pool: String,
    name: Option<String>,
    qtype: Option<String>,
    suffix: bool,
}

impl PurgeRequest {
    /// Reads the query string; unknown keys and a missing pool are errors.
    fn parse(query: &str) -> Result<Self, String> {
        let mut r = Self::default();
        let mut pool = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "pool" => pool = Some(v.into_owned()),
                "name" => r.name = Some(v.into_owned()),
                "type" => r.qtype = Some(v.into_owned()),
                "suffix" => r.suffix = matches!(&*v, "1" | "true" | "yes"),
                other => return Err(format!("unknown parameter `{other}`")),
            }
        }
        r.pool = pool.ok_or("the `pool` parameter is required")?;
        if r.qtype.is_some() && r.name.is_none() {
            return Err("`type` needs a `name`".into());
        }
        Ok(r)
    }
}

/// Removes entries from a pool's packet cache: all of them, a name's, a
/// name's of one type, or (`suffix`) every name under one. Logged.
fn purge(server: &Server, query: &str) -> (StatusCode, String) {
    let error = |status, msg: String| (status, serde_json::json!({ "error": msg }).to_string());
    let r = match PurgeRequest::parse(query) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(cache) = server.cache(&r.pool) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("pool `{}` does not exist or has no [pool.cache]", r.pool),
        );
    };
    let name = match r.name.as_deref().map(wire_name).transpose() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let qtype = match r
        .qtype
        .as_deref()
        .map(|t| t.parse::<RecordType>())
        .transpose()
    {
        Ok(t) => t.map(u16::from),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad type: {e}")),
    };
    let removed = cache.purge(name.as_deref(), qtype, r.suffix);
    tracing::info!(pool = %r.pool, name = r.name.as_deref().unwrap_or("*"), qtype = r.qtype.as_deref().unwrap_or("*"), suffix = r.suffix, removed, "cache purged");
    let body = serde_json::json!({ "pool": r.pool, "removed": removed });
    (StatusCode::OK, body.to_string())
}

/// A domain name in wire form (absolute whether or not it ends in a dot).
fn wire_name(text: &str) -> Result<Vec<u8>, String> {
    let mut name = Name::from_ascii(text).map_err(|e| format!("bad name `{text}`: {e}"))?;
    name.set_fqdn(true);
    name.to_bytes()
        .map_err(|e| format!("bad name `{text}`: {e}"))
}

/// The balancer's status with the VRRP instances added as `"vrrp"` (an
/// empty list when there are none), the `[[anycast]]` sections as
/// `"anycast"` (likewise) and the kernel path as `"kernel"` (when a
/// listener has `forwarding = "kernel"`).
fn status_json(
    server: &Server,
    instances: &[dnsha_vrrp::shell::InstanceStatus],
    kernel: Option<&crate::kernel::KernelStatus>,
    anycast: &[crate::anycast::AnycastStatus],
) -> serde_json::Result<String> {
    let mut status = serde_json::to_value(server.status())?;
    if let Some(obj) = status.as_object_mut() {
        obj.insert("vrrp".into(), serde_json::to_value(instances)?);
        obj.insert("anycast".into(), serde_json::to_value(anycast)?);
        if let Some(k) = kernel {
            obj.insert("kernel".into(), serde_json::to_value(k)?);
        }
    }
    serde_json::to_string(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_requests_are_read_strictly() {
        let r = PurgeRequest::parse("pool=p&name=www.example.&type=AAAA&suffix=1").unwrap();
        assert_eq!(
            r,
            PurgeRequest {
                pool: "p".into(),
                name: Some("www.example.".into()),
                qtype: Some("AAAA".into()),
                suffix: true,
            }
        );
        assert_eq!(PurgeRequest::parse("pool=p").unwrap().name, None);
        assert!(PurgeRequest::parse("name=x").is_err());
        assert!(PurgeRequest::parse("pool=p&type=A").is_err());
        assert!(PurgeRequest::parse("pool=p&nmae=x").is_err());
        assert!(wire_name("www.example").is_ok());
        assert!(wire_name("a..b").is_err());
    }
}
