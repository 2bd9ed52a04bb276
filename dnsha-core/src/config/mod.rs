//! The configuration model: TOML in, validated values out.
//!
//! [`Config::parse`] deserializes the TOML (unknown keys are errors), then
//! validates every field and returns **all** errors at once, each with the
//! byte range of the offending text so a front end can print
//! `FILE:LINE:COL: message` (see [`ConfigError::render`]).
//!
//! ```
//! use dnsha_core::config::{Config, Protocol};
//!
//! let cfg = Config::parse(r#"
//!     [[listener]]
//!     name = "dns-udp"
//!     protocol = "udp"
//!     listen = "127.0.0.1:5353"
//!     pool = "coredns"
//!
//!     [[pool]]
//!     name = "coredns"
//!     policy = "wrr"
//!
//!     [[pool.backend]]
//!     name = "coredns-001"
//!     address = "192.168.1.1:53"
//!     weight = 3
//!
//!     [[pool.backend]]
//!     name = "coredns-002"
//!     address = "192.168.1.2"    # port 53 by default
//! "#).unwrap();
//! assert_eq!(cfg.listeners[0].protocol, Protocol::Udp);
//! assert_eq!(cfg.pools[0].backends[1].address.port(), 53);
//!
//! // Every error at once: an unknown key, and what else is wrong.
//! let src = "[[pool]]\nname = \"p\"\npolciy = \"rr\"\n";
//! let errors: Vec<String> = Config::parse(src)
//!     .unwrap_err()
//!     .iter()
//!     .map(|e| e.render("dnsha.toml", src))
//!     .collect();
//! assert!(errors.contains(&"dnsha.toml:3:1: unknown key `polciy` in [[pool]]; did you mean `policy`?".to_string()));
//! assert!(errors.contains(&"dnsha.toml:2:8: pool `p` has no backends".to_string()));
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

pub use crate::error::ConfigError;
use crate::policy::PolicyKind;
use crate::pool::PoolSettings;
pub use limits::{LimitAction, LimitConfig};

pub mod anycast;
mod cache;
mod forwarding;
mod health;
mod limits;
mod process;
mod raw;
mod read;
mod rules;
#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod tests;
mod tls;

pub use anycast::AnycastConfig;
pub use cache::CacheConfig;
pub use forwarding::Forwarding;
pub use health::{CheckKind, CheckTransport, HealthConfig, QueryType, RANDOM_LABEL};
pub use process::{AccountName, Capability, ProcessConfig};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The admin HTTP endpoint (`/status`, `/metrics`), if enabled.
    pub admin: Option<AdminConfig>,
    /// Frontends.
    pub listeners: Vec<ListenerConfig>,
    /// Pools of backends.
    pub pools: Vec<PoolConfig>,
    /// `[[vrrp]]` sections, passed through for the VRRP layer to interpret
    /// (dnsha-core does not depend on it).
    pub vrrp: Vec<Section>,
    /// `[[rule]]` sections, in order: compile them with
    /// [`crate::rules::RuleSet::new`].
    pub rules: Vec<crate::rules::Rule>,
    /// `[[limit]]` sections: per-client rate limits, checked before the
    /// rules.
    pub limits: Vec<LimitConfig>,
    /// `[[dynamic_block]]` sections: thresholds that block client prefixes
    /// for a while.
    pub dynamic_blocks: Vec<crate::dynblock::DynRule>,
    /// Files named outside the listeners' and backends' TLS settings (which
    /// carry their own locations), with where they are named: the loader
    /// checks each before anything starts, so `dnsha check` and `dnsha run`
    /// agree on them.
    pub files: Vec<FileRef>,
    /// The top-level keys about the process: user, capabilities, logs.
    pub process: ProcessConfig,
    /// `[[anycast]]` sections: addresses announced over BGP while their
    /// pools can answer.
    pub anycast: Vec<AnycastConfig>,
}

/// A file the configuration names, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// What the file is for.
    pub role: FileRole,
    /// The path as written (relative paths are resolved by the loader).
    pub path: PathBuf,
    /// Where the path is written.
    pub span: Range<usize>,
}

/// What a [`FileRef`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A health check's `tls_ca`: PEM certificates.
    HealthTlsCa,
    /// A listener's `access_log`: a file appended to (created if missing).
    AccessLog,
    /// A program run directly (an `[[anycast]]` `notify`): an executable
    /// file, or a name found in `PATH`.
    Program,
}

/// A TOML table this crate passes through uninterpreted, with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Byte range of the table's header in the source (for error locations).
    pub span: Range<usize>,
    /// Byte range of each key's name, for errors about one key.
    pub keys: BTreeMap<String, Range<usize>>,
    /// The table.
    pub value: toml::Table,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address of the HTTP endpoint.
    pub listen: SocketAddr,
    /// Client networks that may connect (loopback only by default; a
    /// non-loopback `listen` needs this set explicitly).
    pub allow: Vec<IpNet>,
    /// Connections open at once, at most; more are closed at accept.
    pub max_connections: usize,
    /// `users`: who may act (and, with [`AdminAuth::All`], read), each
    /// with a password hash in the PHC format (`dnsha hash-password`).
    pub users: Vec<AdminUser>,
    /// `auth`: what needs a user.
    pub auth: AdminAuth,
    /// `refresh_ms`: how often the web console at `/` reloads its figures.
    pub refresh_ms: u64,
    /// `tls_cert` and `tls_key`: HTTPS instead of HTTP.
    pub tls: Option<TlsFiles>,
}

/// Default [`AdminConfig::refresh_ms`].
pub const DEFAULT_ADMIN_REFRESH_MS: u64 = 2000;

/// One `[admin] users` entry, `"NAME:HASH"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    /// The user name (HTTP basic auth).
    pub name: String,
    /// Its password hash, a PHC string (`$argon2id$...`), checked by the
    /// daemon (this crate does not read it).
    pub hash: String,
    /// Where the entry is written.
    pub span: Range<usize>,
}

/// What the admin endpoint asks a user for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminAuth {
    /// The actions (`POST`): reads (`/`, `/status`, `/metrics`) stay open
    /// to the `allow` networks, for Prometheus.
    #[default]
    Actions,
    /// Every request.
    All,
}

/// Default [`AdminConfig::max_connections`].
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 16;

/// The networks the admin endpoint accepts by default: loopback.
pub fn admin_default_allow() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// DNS over UDP, balanced per query.
    Udp,
    /// DNS over TCP (RFC 7766), balanced per query.
    Tcp,
    /// L4 stream proxy: one backend per connection, bytes copied both ways.
    TcpPassthrough,
    /// DNS over TLS (RFC 7858), balanced per query.
    Dot,
    /// DNS over HTTPS (RFC 8484), HTTP/2 and HTTP/1.1, balanced per query.
    Doh,
    /// DNS over QUIC (RFC 9250), balanced per query.
    Doq,
    /// DNS over HTTPS over HTTP/3 (RFC 8484 on RFC 9114), balanced per
    /// query.
    Doh3,
}

impl Protocol {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::TcpPassthrough => "tcp-passthrough",
            Self::Dot => "dot",
            Self::Doh => "doh",
            Self::Doq => "doq",
            Self::Doh3 => "doh3",
        }
    }

    /// True for protocols served over connections with streams (everything
    /// but `udp`): answers are never truncated for size.
    pub fn is_stream(self) -> bool {
        self != Self::Udp
    }

    /// True for the protocols on QUIC (`doq`, `doh3`).
    pub fn is_quic(self) -> bool {
        matches!(self, Self::Doq | Self::Doh3)
    }

    /// True for the DNS-over-HTTPS protocols (`doh`, `doh3`).
    pub fn is_http(self) -> bool {
        matches!(self, Self::Doh | Self::Doh3)
    }
}

/// How the balancer reaches a backend (`[[pool.backend]] transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP from UDP listeners (TCP from stream listeners), the default.
    #[default]
    Udp,
    /// TCP from every listener, connections pooled and pipelined.
    Tcp,
    /// DNS over TLS (RFC 7858) from every listener, connections pooled.
    Dot,
    /// DNS over HTTPS (RFC 8484): POST over HTTP/2 with TLS (ALPN `h2`),
    /// many queries as concurrent streams of one connection.
    Doh,
    /// DNS over QUIC (RFC 9250): one long-lived QUIC connection, a stream
    /// per query.
    Doq,
}

impl Transport {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Dot => "dot",
            Self::Doh => "doh",
            Self::Doq => "doq",
        }
    }

    /// True for the transports that speak TLS (`dot`, `doh`, `doq`) and
    /// take the backend TLS keys.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Dot | Self::Doh | Self::Doq)
    }

    /// The port of a backend given as a bare IP: 53, 853 for `dot` and
    /// `doq`, 443 for `doh`.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 53,
            Self::Dot => DOT_PORT,
            Self::Doh => DOH_PORT,
            Self::Doq => DOQ_PORT,
        }
    }
}

/// Certificate chain and key files of a `dot` or `doh` listener. The spans
/// locate the `tls_cert` and `tls_key` values, so errors found when the files
/// are read (see `dnsha_proxy::tls::check_files`) point at them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Full chain PEM, end-entity certificate first.
    pub cert: PathBuf,
    /// Private key PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Byte range of the `tls_cert` value in the source.
    pub cert_span: Option<Range<usize>>,
    /// Byte range of the `tls_key` value in the source.
    pub key_span: Option<Range<usize>>,
}

/// TLS settings of a `transport = "dot"`, `"doh"` or `"doq"` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTls {
    /// Verify the backend's certificate (default true).
    pub verify: bool,
    /// Server name sent in SNI and verified; the address's IP when absent.
    pub name: Option<String>,
    /// Extra CA certificates (PEM) trusted besides the system's.
    pub ca: Option<PathBuf>,
    /// Byte range of the `tls_ca` value in the source.
    pub ca_span: Option<Range<usize>>,
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of space-separated fields, like nginx's `log_format basic`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What a UDP listener does with a query of type ANY (RFC 8482): a small
/// query whose answer can be huge is the classic reflection vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnyOverUdp {
    /// Answer at once with TC=1 and no records: a real client asks again
    /// over TCP, a spoofed source gets a reply no larger than its query.
    #[default]
    Truncate,
    /// Answer at once with REFUSED.
    Refuse,
    /// Forward it like any other query.
    Allow,
}

/// Default [`ListenerConfig::max_queries_per_client`].
pub const DEFAULT_MAX_QUERIES_PER_CLIENT: usize = 512;

/// Default [`ListenerConfig::write_timeout_ms`].
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 2_000;

/// The longest duration any `*_ms` key takes: one day.
pub const MAX_DURATION_MS: u64 = 86_400_000;

/// The default [`ListenerConfig::max_udp_size`]: the DNS Flag Day 2020
/// value, as dnsdist and the public resolvers use.
pub const DEFAULT_MAX_UDP_SIZE: usize = 1232;

/// Where an access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard error.
    Stderr,
    /// A file, appended to and reopened on SIGUSR1.
    File(PathBuf),
}

/// `[[listener]]`: one frontend socket.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name.
    pub name: String,
    /// Protocol spoken to clients.
    pub protocol: Protocol,
    /// Address to bind (may be a virtual IP not yet present: IP_FREEBIND).
    pub listen: SocketAddr,
    /// Pool the queries go to.
    pub pool: String,
    /// Clients allowed to query; others are refused.
    pub allow: Vec<IpNet>,
    /// Access log target, if any.
    pub access_log: Option<AccessLogTarget>,
    /// Access log format.
    pub format: LogFormat,
    /// TCP: close a client connection idle for this long.
    pub idle_timeout_ms: u64,
    /// TCP: close a client that takes longer than this to send one message.
    pub read_timeout_ms: u64,
    /// TCP: maximum client connections on this listener.
    pub max_connections: usize,
    /// TCP: maximum connections from one client address.
    pub max_connections_per_client: usize,
    /// Streams (TCP, DoT, DoH): queries in flight at once from one client
    /// address, over all its connections to this listener; more are
    /// answered SERVFAIL at once.
    pub max_queries_per_client: usize,
    /// How many leading bits of an IPv6 client address make one client for
    /// the per-client limits (64: a /64 is one client).
    pub client_prefix_v6: u8,
    /// TCP and DoT: how long a client may take to accept an answer before
    /// its connection is closed (a client that does not read must not pin
    /// its queries' resources).
    pub write_timeout_ms: u64,
    /// Worker threads, each with its own SO_REUSEPORT socket; 0 means one
    /// per CPU.
    pub workers: usize,
    /// UDP: pin worker `i` to the `i`th CPU the process may use, and ask the
    /// kernel (SO_INCOMING_CPU) to hand its socket the datagrams processed on
    /// that CPU, as nginx's `worker_cpu_affinity auto`.
    pub pin_workers: bool,
    /// UDP with several workers: send queries to as few workers as carry
    /// the load (fewer wake-ups per query), all of them when one falls
    /// behind. On by default; off with `pin_workers`.
    pub adaptive_workers: bool,
    /// UDP: the largest answer sent over UDP; a larger one (or one larger
    /// than the client's EDNS size) is replaced by an empty answer with
    /// TC=1, so the client asks again over TCP.
    pub max_udp_size: usize,
    /// UDP: what happens to queries of type ANY.
    pub any_over_udp: AnyOverUdp,
    /// UDP and TCP: dnsha forwards the queries, or the kernel does
    /// (`"kernel"`, see [`Forwarding`]).
    pub forwarding: Forwarding,
    /// DoT, DoH, DoQ and DoH3: certificate and key; `None` for other
    /// protocols and for DoH with `tls = false` (plain HTTP behind a reverse
    /// proxy).
    pub tls: Option<TlsFiles>,
    /// DoT, DoH, DoQ and DoH3: time allowed for a TLS (or QUIC) handshake.
    pub handshake_timeout_ms: u64,
    /// DoT, DoH, DoQ and DoH3: handshakes in progress at once from one
    /// client address.
    pub max_handshakes_per_client: usize,
    /// DoT, DoH, DoQ and DoH3: handshakes started per second on this
    /// listener, from all clients together (0: no limit); more are closed at
    /// accept (over QUIC, a client whose address is not yet validated is
    /// sent a Retry instead).
    pub max_handshakes_per_second: u32,
    /// DoQ and DoH3: when a new connection must first prove its address
    /// with a QUIC Retry.
    pub quic_retry: QuicRetry,
    /// DoH and DoH3: the URL path answered (default `/dns-query`); others
    /// get 404.
    pub path: String,
    /// DoH: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// DoH and DoH3: concurrent HTTP/2 streams (HTTP/3 request streams) per
    /// connection.
    pub max_streams: u32,
    /// DoH and DoH3: largest request header block in bytes.
    pub max_header_bytes: usize,
    /// DoH and DoH3: requests per second from one client address; 0 means
    /// no limit.
    pub max_requests_per_second: u32,
    /// DoH over TLS: the `alt-svc` value its answers carry when a `doh3`
    /// listener serves the same certificate on the same address (derived,
    /// not a key): `h3=":PORT"; ma=86400`.
    pub alt_svc: Option<String>,
}

/// When a DoQ or DoH3 listener asks new connections to prove their address
/// with a QUIC Retry (RFC 9000 §8.1) before any handshake work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuicRetry {
    /// Under load: when [`QUIC_RETRY_HANDSHAKES`] handshakes are already
    /// under way on the listener, or past `max_handshakes_per_second`.
    #[default]
    Auto,
    /// Every new connection (one round trip more for each).
    Always,
}

impl QuicRetry {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
        }
    }
}

/// With `quic_retry = "auto"`, handshakes under way on a listener from
/// which a new connection whose address is not validated gets a Retry.
pub const QUIC_RETRY_HANDSHAKES: usize = 32;

/// `[[pool]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Unique name.
    pub name: String,
    /// Balancing policy.
    pub policy: PolicyKind,
    /// Timeouts, retries and passive health settings.
    pub settings: PoolSettings,
    /// Backends in configured order.
    pub backends: Vec<BackendConfig>,
    /// `[pool.health]`: the active check of every backend, if any.
    pub health: Option<HealthConfig>,
    /// The effective check of backends with a `[pool.backend.health]`
    /// table (their keys over the pool's), by backend name.
    pub backend_health: BTreeMap<String, HealthConfig>,
    /// `[pool.cache]`: the pool's packet cache, if any.
    pub cache: Option<CacheConfig>,
}

/// `[[pool.backend]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Name, unique within the pool.
    pub name: String,
    /// Address (`IP:PORT`, or `IP` for port 53).
    pub address: SocketAddr,
    /// Weight for `wrr` and `lc` (at least 1).
    pub weight: u32,
    /// How queries reach it (default `udp`).
    pub transport: Transport,
    /// TLS settings when `transport` is `dot`, `doh` or `doq`.
    pub tls: Option<BackendTls>,
    /// `transport = "doh"`: the URL path queries are POSTed to (default
    /// `/dns-query`).
    pub doh_path: String,
}

impl BackendConfig {
    /// A backend reached over UDP (and TCP from stream listeners).
    pub fn new(name: impl Into<String>, address: SocketAddr, weight: u32) -> Self {
        Self {
            name: name.into(),
            address,
            weight,
            transport: Transport::Udp,
            tls: None,
            doh_path: DEFAULT_DOH_PATH.to_string(),
        }
    }
}

impl ListenerConfig {
    /// A listener with every optional setting at its default.
    pub fn new(
        name: impl Into<String>,
        protocol: Protocol,
        listen: SocketAddr,
        pool: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            protocol,
            listen,
            pool: pool.into(),
            allow: default_allow(),
            access_log: None,
            format: LogFormat::Text,
            idle_timeout_ms: 10_000,
            read_timeout_ms: 2_000,
            max_connections: 10_000,
            max_connections_per_client: 64,
            max_queries_per_client: DEFAULT_MAX_QUERIES_PER_CLIENT,
            client_prefix_v6: 64,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            workers: 0,
            pin_workers: false,
            adaptive_workers: true,
            max_udp_size: DEFAULT_MAX_UDP_SIZE,
            any_over_udp: AnyOverUdp::Truncate,
            forwarding: Forwarding::Userspace,
            tls: None,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            max_handshakes_per_client: DEFAULT_MAX_HANDSHAKES_PER_CLIENT,
            max_handshakes_per_second: DEFAULT_MAX_HANDSHAKES_PER_SECOND,
            path: DEFAULT_DOH_PATH.to_string(),
            trusted_proxies: Vec::new(),
            max_streams: DEFAULT_MAX_STREAMS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_requests_per_second: 0,
            quic_retry: QuicRetry::Auto,
            alt_svc: None,
        }
    }
}

impl PoolConfig {
    /// A pool of `backends` (name, address, weight) with default settings.
    pub fn new(name: impl Into<String>, policy: PolicyKind, backends: Vec<BackendConfig>) -> Self {
        Self {
            name: name.into(),
            policy,
            settings: PoolSettings::default(),
            backends,
            health: None,
            backend_health: BTreeMap::new(),
            cache: None,
        }
    }

    /// The health check of backend `name`: its own table over the pool's,
    /// or the pool's, or none.
    pub fn health_for(&self, name: &str) -> Option<&HealthConfig> {
        self.backend_health.get(name).or(self.health.as_ref())
    }
}

/// Default `handshake_timeout_ms`.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Default `max_handshakes_per_client`.
pub const DEFAULT_MAX_HANDSHAKES_PER_CLIENT: usize = 16;
/// Default `max_handshakes_per_second`: well above what a busy resolver
/// sees, well below what a small machine can do.
pub const DEFAULT_MAX_HANDSHAKES_PER_SECOND: u32 = 5_000;
/// Default DoH `path`.
pub const DEFAULT_DOH_PATH: &str = "/dns-query";
/// Default DoH `max_streams`.
pub const DEFAULT_MAX_STREAMS: u32 = 100;
/// Default DoH `max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most worker threads a listener may ask for.
pub const MAX_WORKERS: usize = 1024;

/// Default port of a `transport = "dot"` backend given as a bare IP.
pub const DOT_PORT: u16 = 853;
/// Default port of a `transport = "doh"` backend given as a bare IP.
pub const DOH_PORT: u16 = 443;
/// Default port of a `transport = "doq"` backend given as a bare IP
/// (RFC 9250 §4.1.1).
pub const DOQ_PORT: u16 = 853;

/// The client networks a listener accepts by default: loopback, RFC 1918,
/// 100.64.0.0/10 (CGNAT), link-local and fc00::/7, as dnsdist does.
pub fn default_allow() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

impl Config {
    /// Parses and validates a TOML configuration; on failure returns every
    /// error found.
    pub fn parse(source: &str) -> Result<Self, Vec<ConfigError>> {
        Self::parse_keeping_vrrp(source).map_err(|(errors, _)| errors)
    }

    /// As [`Config::parse`], returning on failure the `[[vrrp]]` sections
    /// too, so that a front end can check them in the same pass (the VRRP
    /// layer interprets them, not this crate).
    pub fn parse_keeping_vrrp(source: &str) -> Result<Self, (Vec<ConfigError>, Vec<Section>)> {
        let no_vrrp = |e| (vec![e], Vec::new());
        let doc = read::document(source).map_err(no_vrrp)?;
        let mut errors = read::Errors::default();
        let raw = raw::config(read::Table::root(&doc), &mut errors);
        let errors = errors.list;
        // The `[[vrrp]]` tables, as plain TOML for dnsha-vrrp.
        let vrrp_values = vrrp_tables(source, raw.vrrp.len()).map_err(no_vrrp)?;
        let mut v = Validator {
            errors,
            files: Vec::new(),
        };
        let cfg = v.config(raw, vrrp_values);
        if v.errors.is_empty() {
            Ok(cfg)
        } else {
            v.errors
                .sort_by_key(|e| e.span.as_ref().map_or(0, |s| s.start));
            // A pool's health key inherited by several backends is checked
            // once per backend: report it once.
            v.errors.dedup();
            Err((v.errors, cfg.vrrp))
        }
    }

    /// Every key each table takes, as the reader asks for them: `[admin]`,
    /// `[[listener]]`, `[[pool]]`, `[pool.health]`, `[[pool.backend]]`,
    /// `[pool.backend.health]` and the top level (`[[vrrp]]` keys belong to
    /// dnsha-vrrp). The documentation is checked against this list.
    ///
    /// ```
    /// let keys = dnsha_core::config::Config::keys();
    /// assert!(keys["[[pool]]"].contains(&"fail_percent"));
    /// ```
    pub fn keys() -> BTreeMap<String, Vec<&'static str>> {
        const SKELETON: &str = "[admin]\n[[listener]]\n[[pool]]\n[pool.health]\n[pool.cache]\n\
                                [[pool.backend]]\n[pool.backend.health]\n[[rule]]\n[[limit]]\n[[dynamic_block]]\n\
                                [[anycast]]\n";
        let mut errors = read::Errors::default();
        if let Ok(doc) = read::document(SKELETON) {
            let _ = raw::config(read::Table::root(&doc), &mut errors);
        }
        errors.keys
    }

    /// A one-line summary, as `dnsha check` prints it.
    pub fn summary(&self) -> String {
        let backends: usize = self.pools.iter().map(|p| p.backends.len()).sum();
        format!(
            "{} listener(s), {} pool(s), {} backend(s){}{}{}",
            self.listeners.len(),
            self.pools.len(),
            backends,
            if self.rules.is_empty() {
                String::new()
            } else {
                format!(", {} rule(s)", self.rules.len())
            },
            if self.vrrp.is_empty() {
                String::new()
            } else {
                format!(", {} vrrp instance(s)", self.vrrp.len())
            },
            self.admin
                .as_ref()
                .map(|a| format!(", admin on {}", a.listen))
                .unwrap_or_default()
        )
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
    /// Files named so far (health `tls_ca`, access logs).
    files: Vec<FileRef>,
}

impl Validator {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errors.push(ConfigError::at(span, msg));
    }

    fn name(&mut self, what: &str, name: &Spanned<String>, seen: &mut HashSet<String>) -> String {
        let n = name.get_ref().trim();
        if n.is_empty() {
            self.err(name.span(), format!("{what} name is empty"));
        } else if !seen.insert(n.to_string()) {
            self.err(name.span(), format!("duplicate {what} name `{n}`"));
        }
        n.to_string()
    }

    /// A duration in milliseconds, from 1 to [`MAX_DURATION_MS`] (one day):
    /// longer is an error (and the day is used), never a deadline that
    /// overflows the clock.
    fn duration_ms(&mut self, what: &str, v: &Spanned<u64>) -> u64 {
        let ms = self.positive(what, v);
        if ms > MAX_DURATION_MS {
            self.err(
                v.span(),
                format!("{what} must be at most {MAX_DURATION_MS} (one day), not {ms}"),
            );
            return MAX_DURATION_MS;
        }
        ms.max(1)
    }

    fn positive(&mut self, what: &str, v: &Spanned<u64>) -> u64 {
        if *v.get_ref() == 0 {
            self.err(v.span(), format!("{what} must be greater than 0"));
        }
        *v.get_ref()
    }

    /// `workers`: 0 (one per CPU, the default) to [`MAX_WORKERS`].
    fn workers(&mut self, l: &raw::RawListener) -> usize {
        let Some(v) = &l.workers else {
            return 0;
        };
        match usize::try_from(*v.get_ref()) {
            Ok(n) if n <= MAX_WORKERS => n,
            _ => {
                self.err(
                    v.span(),
                    format!(
                        "workers: expected a whole number from 0 (one per CPU) to {MAX_WORKERS}, got {}",
                        v.get_ref()
                    ),
                );
                0
            }
        }
    }

    /// `pin_workers`, which only UDP listeners take.
    fn pin_workers(&mut self, l: &raw::RawListener) -> bool {
        let Some(v) = &l.pin_workers else {
            return false;
        };
        if *v.get_ref() && l.protocol != Protocol::Udp {
            self.err(v.span(), "pin_workers applies to udp listeners only");
            return false;
        }
        *v.get_ref()
    }

    /// `v` within `min..=max`, else an error at it and `min`.
    fn between_u64(&mut self, key: &str, v: &Spanned<u64>, min: u64, max: u64) -> u64 {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            return n;
        }
        self.err(v.span(), format!("{key} must be from {min} to {max}"));
        min
    }

    /// A `chash` key (`hash_key`, `hash_balance`): an error on a pool with
    /// another policy, where it would do nothing.
    fn chash_only<T: Clone>(
        &mut self,
        p: &raw::RawPool,
        key: &str,
        v: &Option<Spanned<T>>,
    ) -> Option<Spanned<T>> {
        let v = v.as_ref()?;
        if p.policy != PolicyKind::ConsistentHash {
            self.err(
                v.span(),
                format!("{key} applies to pools with policy = \"chash\" only"),
            );
            return None;
        }
        Some(v.clone())
    }

    /// `hash_balance`: 0 (no bound) or a factor from 1.0 to 100.0, kept in
    /// percent.
    fn hash_balance(&mut self, b: &Spanned<f64>) -> u32 {
        let (span, b) = (b.span(), *b.get_ref());
        if b == 0.0 {
            return 0;
        }
        if !(1.0..=100.0).contains(&b) {
            self.err(
                span,
                format!(
                    "hash_balance = {b}: 0 (no bound) or a factor from 1.0 to 100.0 (1.5: a backend takes at most 1.5 x the average load)"
                ),
            );
            return PoolSettings::default().hash_balance_percent;
        }
        // 1.0..=100.0 × 100 fits in u32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let percent = (b * 100.0).round() as u32;
        percent
    }

    /// `adaptive_workers`: UDP listeners only, on unless set off, and not
    /// with `pin_workers` (a pinned worker takes the datagrams of its CPU).
    fn adaptive_workers(&mut self, l: &raw::RawListener, pinned: bool) -> bool {
        let udp = l.protocol == Protocol::Udp;
        let Some(v) = &l.adaptive_workers else {
            return udp && !pinned;
        };
        if *v.get_ref() && !udp {
            self.err(v.span(), "adaptive_workers applies to udp listeners only");
            return false;
        }
        if *v.get_ref() && pinned {
            self.err(
                v.span(),
                "adaptive_workers = true cannot go with pin_workers = true: a pinned worker takes the datagrams processed on its CPU",
            );
            return false;
        }
        *v.get_ref()
    }

    /// `[admin]`: an endpoint reachable from beyond this host must say from
    /// where (its `/status` tells an attacker which backends to aim at).
    fn admin(&mut self, a: &raw::RawAdmin) -> AdminConfig {
        let listen = self.listen_addr(&a.listen).unwrap_or(UNSPEC);
        let allow = match &a.allow {
            Some(list) => list.iter().filter_map(|s| self.cidr(s)).collect(),
            None => {
                if !listen.ip().is_loopback() && listen != UNSPEC {
                    self.err(
                        a.listen.span(),
                        format!(
                            "admin listen `{listen}` is not a loopback address: set [admin] allow \
                             to the networks that may read /status and /metrics"
                        ),
                    );
                }
                admin_default_allow()
            }
        };
        let max_connections = a
            .max_connections
            .as_ref()
            .map_or(DEFAULT_ADMIN_MAX_CONNECTIONS, |v| {
                self.between("max_connections", v, 4096)
            });
        let mut users: Vec<AdminUser> = Vec::new();
        for u in a.users.iter().flatten() {
            match u.get_ref().split_once(':') {
                Some((name, hash)) if !name.is_empty() && hash.starts_with('$') => {
                    if users.iter().any(|x| x.name == name) {
                        self.err(u.span(), format!("admin user `{name}` is listed twice"));
                    }
                    users.push(AdminUser {
                        name: name.to_string(),
                        hash: hash.to_string(),
                        span: u.span(),
                    });
                }
                _ => self.err(
                    u.span(),
                    "an admin user is \"NAME:HASH\", the hash as `dnsha hash-password` prints \
                     it ($argon2id$...)",
                ),
            }
        }
        let auth = a.auth.as_ref().map_or(AdminAuth::Actions, |v| *v.get_ref());
        if auth == AdminAuth::All && users.is_empty() {
            if let Some(v) = &a.auth {
                self.err(v.span(), "auth = \"all\" needs [admin] users");
            }
        }
        let refresh_ms = a.refresh_ms.as_ref().map_or(DEFAULT_ADMIN_REFRESH_MS, |v| {
            self.between_u64("refresh_ms", v, 500, 600_000)
        });
        AdminConfig {
            listen,
            allow,
            max_connections,
            users,
            auth,
            refresh_ms,
            tls: self.admin_tls(a),
        }
    }

    /// `client_prefix_v6`: 32 to 128 bits.
    fn client_prefix_v6(&mut self, l: &raw::RawListener) -> u8 {
        let Some(v) = &l.client_prefix_v6 else {
            return 64;
        };
        match u8::try_from(*v.get_ref()) {
            Ok(n) if (32..=128).contains(&n) => n,
            _ => {
                self.err(
                    v.span(),
                    format!(
                        "client_prefix_v6 must be between 32 and 128, not {}",
                        v.get_ref()
                    ),
                );
                64
            }
        }
    }

    /// An error when another listener already binds `listen` over the same
    /// transport: UDP, DoQ and DoH3 bind UDP sockets, the others TCP.
    fn bind_clash(
        &mut self,
        l: &raw::RawListener,
        listen: SocketAddr,
        binds: &mut HashSet<(SocketAddr, bool)>,
    ) {
        let over_udp = l.protocol == Protocol::Udp || l.protocol.is_quic();
        if listen != UNSPEC && !binds.insert((listen, over_udp)) {
            self.err(
                l.listen.span(),
                format!(
                    "another listener already binds {listen} over {}",
                    if over_udp { "udp" } else { "tcp" }
                ),
            );
        }
    }

    /// A key only stream listeners take: `None` (and an error) on a UDP
    /// listener.
    fn stream_only<'a, T>(
        &mut self,
        l: &raw::RawListener,
        what: &str,
        v: &'a Option<Spanned<T>>,
    ) -> Option<&'a Spanned<T>> {
        let v = v.as_ref()?;
        if l.protocol == Protocol::Udp {
            self.err(
                v.span(),
                format!("{what} applies to tcp, dot, doh, doq and doh3 listeners only"),
            );
            return None;
        }
        Some(v)
    }

    /// The connection keys with defaults (`idle_timeout_ms`,
    /// `read_timeout_ms`, `max_connections`, `max_connections_per_client`)
    /// have no effect on a UDP listener: written there, they are errors.
    fn stream_keys_on_udp(&mut self, l: &raw::RawListener) {
        if l.protocol != Protocol::Udp {
            return;
        }
        for (key, v) in [
            ("idle_timeout_ms", &l.idle_timeout_ms),
            ("read_timeout_ms", &l.read_timeout_ms),
            ("max_connections", &l.max_connections),
            ("max_connections_per_client", &l.max_connections_per_client),
        ] {
            // Defaults have an empty span: only written keys are reported.
            if !v.span().is_empty() {
                self.err(
                    v.span(),
                    format!("{key} applies to tcp, tcp-passthrough, dot, doh, doq and doh3 listeners only (udp has no connections)"),
                );
            }
        }
    }

    /// `max_udp_size`, which only UDP listeners take: 512 to 65535.
    fn max_udp_size(&mut self, l: &raw::RawListener) -> usize {
        let Some(v) = &l.max_udp_size else {
            return DEFAULT_MAX_UDP_SIZE;
        };
        if l.protocol != Protocol::Udp {
            self.err(v.span(), "max_udp_size applies to udp listeners only");
            return DEFAULT_MAX_UDP_SIZE;
        }
        match usize::try_from(*v.get_ref()) {
            Ok(n) if (512..=65_535).contains(&n) => n,
            _ => {
                self.err(
                    v.span(),
                    format!(
                        "max_udp_size must be between 512 and 65535, not {}",
                        v.get_ref()
                    ),
                );
                DEFAULT_MAX_UDP_SIZE
            }
        }
    }

    /// `any_over_udp`, which only UDP listeners take.
    fn any_over_udp(&mut self, l: &raw::RawListener) -> AnyOverUdp {
        let Some(v) = &l.any_over_udp else {
            return AnyOverUdp::default();
        };
        if l.protocol != Protocol::Udp {
            self.err(v.span(), "any_over_udp applies to udp listeners only");
        }
        *v.get_ref()
    }

    /// A count from 1 to `max`; out of range is an error (and 1 is used).
    fn between(&mut self, what: &str, v: &Spanned<u64>, max: usize) -> usize {
        match usize::try_from(*v.get_ref()) {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                self.err(
                    v.span(),
                    format!("{what} must be between 1 and {max}, not {}", v.get_ref()),
                );
                1
            }
        }
    }

    fn config(&mut self, raw: raw::RawConfig, vrrp_values: Vec<toml::Table>) -> Config {
        let admin = raw.admin.map(|a| self.admin(&a));
        let mut seen = HashSet::new();
        let pools: Vec<PoolConfig> = raw.pool.iter().map(|p| self.pool(p, &mut seen)).collect();
        let pool_names: HashSet<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut binds = HashSet::new();
        let listeners = raw
            .listener
            .iter()
            .map(|l| {
                let name = self.name("listener", &l.name, &mut seen);
                let listen = self.listen_addr(&l.listen).unwrap_or(UNSPEC);
                self.bind_clash(l, listen, &mut binds);
                let pool = l.pool.get_ref().trim().to_string();
                if pool.is_empty() {
                    self.err(l.pool.span(), "listener pool is empty");
                } else if !pool_names.contains(pool.as_str()) {
                    self.err(l.pool.span(), format!("unknown pool `{pool}`"));
                }
                let allow = match &l.allow {
                    None => default_allow(),
                    Some(list) => list.iter().filter_map(|s| self.cidr(s)).collect(),
                };
                let access_log = l
                    .access_log
                    .as_ref()
                    .and_then(|s| match s.get_ref().trim() {
                        "" => {
                            self.err(s.span(), "access_log is empty (use \"stderr\" or a path)");
                            None
                        }
                        "stderr" => Some(AccessLogTarget::Stderr),
                        p => {
                            self.files.push(FileRef {
                                role: FileRole::AccessLog,
                                path: PathBuf::from(p),
                                span: s.span(),
                            });
                            Some(AccessLogTarget::File(PathBuf::from(p)))
                        }
                    });
                self.stream_keys_on_udp(l);
                let max_connections = self.positive("max_connections", &l.max_connections);
                let per_client =
                    self.positive("max_connections_per_client", &l.max_connections_per_client);
                ListenerConfig {
                    name,
                    protocol: l.protocol,
                    listen,
                    pool,
                    allow,
                    access_log,
                    format: l.format,
                    idle_timeout_ms: self.duration_ms("idle_timeout_ms", &l.idle_timeout_ms),
                    read_timeout_ms: self.duration_ms("read_timeout_ms", &l.read_timeout_ms),
                    max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
                    max_connections_per_client: usize::try_from(per_client).unwrap_or(usize::MAX),
                    max_queries_per_client: self
                        .stream_only(l, "max_queries_per_client", &l.max_queries_per_client)
                        .map_or(DEFAULT_MAX_QUERIES_PER_CLIENT, |v| {
                            self.between("max_queries_per_client", v, 1_000_000)
                        }),
                    client_prefix_v6: self.client_prefix_v6(l),
                    write_timeout_ms: self
                        .stream_only(l, "write_timeout_ms", &l.write_timeout_ms)
                        .map_or(DEFAULT_WRITE_TIMEOUT_MS, |v| {
                            self.duration_ms("write_timeout_ms", v)
                        }),
                    workers: self.workers(l),
                    pin_workers: self.pin_workers(l),
                    adaptive_workers: {
                        let pinned = l.pin_workers.as_ref().is_some_and(|v| *v.get_ref());
                        self.adaptive_workers(l, pinned)
                    },
                    max_udp_size: self.max_udp_size(l),
                    any_over_udp: self.any_over_udp(l),
                    forwarding: self.forwarding(l, &pools),
                    ..self.tls_listener(l)
                }
            })
            .collect::<Vec<_>>();
        let listeners = tls::with_alt_svc(listeners);
        let vrrp = self.vrrp_sections(raw.vrrp, vrrp_values, raw.listener_tables);
        let listener_set: HashSet<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        let limits = self.limits(&raw.limit, &listener_set);
        let dynamic_blocks = self.dynamic_blocks(&raw.dynamic_block);
        let rules = self.rules(
            &raw.rule,
            &rules::Names {
                pools: &pool_names,
                listeners: &listener_set,
            },
        );
        let process = self.process(&raw.process);
        let anycast = self.anycast(&raw.anycast, &pool_names);
        let mut files = std::mem::take(&mut self.files);
        files.sort_by_key(|f| f.span.start);
        files.dedup();
        Config {
            admin,
            listeners,
            pools,
            vrrp,
            rules,
            limits,
            dynamic_blocks,
            files,
            process,
            anycast,
        }
    }

    /// The `[[vrrp]]` sections with their values; a configuration with
    /// neither listeners nor VRRP instances is an error.
    fn vrrp_sections(
        &mut self,
        raw_vrrp: Vec<read::Located>,
        vrrp_values: Vec<toml::Table>,
        listener_tables: usize,
    ) -> Vec<Section> {
        let vrrp: Vec<Section> = raw_vrrp
            .into_iter()
            .zip(vrrp_values)
            .map(|(t, value)| Section {
                span: t.span,
                keys: t.keys,
                value,
            })
            .collect();
        if listener_tables == 0 && vrrp.is_empty() {
            self.errors.push(ConfigError {
                span: None,
                message: "no [[listener]] and no [[vrrp]]: nothing to serve".into(),
            });
        }
        vrrp
    }

    fn pool(&mut self, p: &raw::RawPool, seen: &mut HashSet<String>) -> PoolConfig {
        let name = self.name("pool", &p.name, seen);
        if p.backend_tables == 0 {
            self.err(p.name.span(), format!("pool `{name}` has no backends"));
        }
        let mut seen_b = HashSet::new();
        let health = p.health.as_ref().map(|h| self.health(h));
        let mut backend_health = BTreeMap::new();
        let backends = p
            .backend
            .iter()
            .map(|b| {
                let bname = self.name("backend", &b.name, &mut seen_b);
                if let Some(h) = &b.health {
                    let merged = match &p.health {
                        Some(pool_health) => h.over(pool_health),
                        None => h.clone(),
                    };
                    backend_health.insert(bname.clone(), self.health(&merged));
                }
                let mut address = self.backend_addr(&b.address).unwrap_or(UNSPEC);
                if *b.weight.get_ref() == 0 {
                    self.err(b.weight.span(), "weight must be at least 1");
                }
                let transport = *b.transport.get_ref();
                if address != UNSPEC && b.address.get_ref().trim().parse::<SocketAddr>().is_err() {
                    address.set_port(transport.default_port());
                }
                BackendConfig {
                    name: bname,
                    address,
                    weight: *b.weight.get_ref(),
                    transport,
                    tls: self.backend_tls(b),
                    doh_path: self.backend_doh_path(b),
                }
            })
            .collect();
        let settings = PoolSettings {
            timeout_ms: self.duration_ms("timeout_ms", &p.timeout_ms),
            retries: p.retries.as_ref().map_or(1, |v| *v.get_ref()),
            on_no_backend: p.on_no_backend,
            max_fails: p.max_fails.as_ref().map_or(3, |v| *v.get_ref()),
            fail_timeout_ms: self.duration_ms("fail_timeout_ms", &p.fail_timeout_ms),
            fail_percent: u8::try_from(self.between("fail_percent", &p.fail_percent, 100))
                .unwrap_or(100),
            randomize_case: p.randomize_case.as_ref().is_some_and(|v| *v.get_ref()),
            udp_sockets_per_backend: self.between(
                "udp_sockets_per_backend",
                &p.udp_sockets_per_backend,
                PoolSettings::MAX_UDP_SOCKETS_PER_BACKEND,
            ),
            max_connections_per_backend: self.between(
                "max_connections_per_backend",
                &p.max_connections_per_backend,
                PoolSettings::MAX_CONNECTIONS_PER_BACKEND,
            ),
            max_in_flight_per_connection: self.between(
                "max_in_flight_per_connection",
                &p.max_in_flight_per_connection,
                PoolSettings::MAX_IN_FLIGHT_PER_CONNECTION,
            ),
            max_outstanding_per_backend: p.max_outstanding_per_backend.as_ref().map_or(0, |v| {
                self.between_u64("max_outstanding_per_backend", v, 0, 1_000_000)
            }),
            hash_key: self
                .chash_only(p, "hash_key", &p.hash_key)
                .map(Spanned::into_inner)
                .unwrap_or_default(),
            hash_balance_percent: self
                .chash_only(p, "hash_balance", &p.hash_balance)
                .map_or_else(
                    || PoolSettings::default().hash_balance_percent,
                    |b| self.hash_balance(&b),
                ),
        };
        PoolConfig {
            name,
            policy: p.policy,
            settings,
            backends,
            health,
            backend_health,
            cache: p.cache.as_ref().map(|c| self.cache(c)),
        }
    }

    fn listen_addr(&mut self, s: &Spanned<String>) -> Option<SocketAddr> {
        let t = s.get_ref().trim();
        let parsed = t
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| {
                t.parse::<u16>()
                    .ok()
                    .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
            })
            .or_else(|| {
                t.strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
            });
        if parsed.is_none() {
            self.err(
                s.span(),
                format!("invalid listen address `{t}` (expected IP:PORT, [IPv6]:PORT or PORT)"),
            );
        }
        parsed
    }

    fn backend_addr(&mut self, s: &Spanned<String>) -> Option<SocketAddr> {
        let t = s.get_ref().trim();
        let parsed = t
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| t.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Some(a) if a.port() == 0 => {
                self.err(s.span(), format!("backend address `{t}` has port 0"));
                None
            }
            Some(a) if a.ip().is_unspecified() => {
                self.err(s.span(), format!("backend address `{t}` is unspecified"));
                None
            }
            Some(a) => Some(a),
            None => {
                self.err(
                    s.span(),
                    format!("invalid backend address `{t}` (expected IP:PORT, [IPv6]:PORT or IP)"),
                );
                None
            }
        }
    }

    fn cidr(&mut self, s: &Spanned<String>) -> Option<IpNet> {
        let t = s.get_ref().trim();
        let parsed = t
            .parse::<IpNet>()
            .ok()
            .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from));
        if parsed.is_none() {
            self.err(
                s.span(),
                format!("invalid network `{t}` in allow (expected CIDR or IP)"),
            );
        }
        parsed
    }
}

/// The `[[vrrp]]` tables of `source` as plain TOML values (read again with
/// `toml`, which agrees with `toml_edit` on what the document holds).
fn vrrp_tables(source: &str, expected: usize) -> Result<Vec<toml::Table>, ConfigError> {
    if expected == 0 {
        return Ok(Vec::new());
    }
    let doc: toml::Table = toml::from_str(source).map_err(|e| ConfigError {
        span: e.span(),
        message: format!("not valid TOML: {}", e.message().trim()),
    })?;
    let tables: Vec<toml::Table> = match doc.get("vrrp") {
        Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_table().cloned()).collect(),
        _ => Vec::new(),
    };
    if tables.len() == expected {
        Ok(tables)
    } else {
        Err(ConfigError {
            span: None,
            message: "[[vrrp]]: the sections could not be read".into(),
        })
    }
}

const UNSPEC: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
