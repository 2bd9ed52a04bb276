//! The configuration's shape as written, key by key with locations, read by
//! [`super::read`] (every type error, unknown key and missing key collected)
//! before typed validation.

use toml::Spanned;

pub(super) use super::read::RawCommand;
use super::read::{Errors, Located, Table};
use super::{AnyOverUdp, LogFormat, Protocol, Transport};
use crate::error::ConfigError;
use crate::policy::PolicyKind;
use crate::pool::{OnNoBackend, PoolSettings};

#[derive(Debug)]
pub(super) struct RawConfig {
    pub(super) admin: Option<RawAdmin>,
    pub(super) listener: Vec<RawListener>,
    /// `[[listener]]` tables written, complete or not.
    pub(super) listener_tables: usize,
    pub(super) pool: Vec<RawPool>,
    /// `[[vrrp]]` tables (their locations; the values are read by
    /// dnsha-vrrp, not by this crate).
    pub(super) vrrp: Vec<Located>,
    /// `[[rule]]` tables.
    pub(super) rule: Vec<super::rules::RawRule>,
    /// `[[limit]]` tables.
    pub(super) limit: Vec<super::limits::RawLimit>,
    /// `[[dynamic_block]]` tables.
    pub(super) dynamic_block: Vec<super::limits::RawDynBlock>,
    /// The top-level process keys.
    pub(super) process: super::process::RawProcess,
    /// `[[anycast]]` tables.
    pub(super) anycast: Vec<super::anycast::RawAnycast>,
}

#[derive(Debug)]
pub(super) struct RawAdmin {
    pub(super) listen: Spanned<String>,
    pub(super) allow: Option<Vec<Spanned<String>>>,
    pub(super) max_connections: Option<Spanned<u64>>,
    pub(super) users: Option<Vec<Spanned<String>>>,
    pub(super) auth: Option<Spanned<super::AdminAuth>>,
    pub(super) refresh_ms: Option<Spanned<u64>>,
    pub(super) tls_cert: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
}

fn spanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

fn d_idle() -> Spanned<u64> {
    spanned(10_000)
}
fn d_read() -> Spanned<u64> {
    spanned(2_000)
}
fn d_maxconn() -> Spanned<u64> {
    spanned(10_000)
}
fn d_maxconn_client() -> Spanned<u64> {
    spanned(64)
}
fn d_timeout() -> Spanned<u64> {
    spanned(1000)
}
// The stream and socket limits default to `PoolSettings::default()`'s.
fn d_udp_sockets() -> Spanned<u64> {
    spanned(PoolSettings::default().udp_sockets_per_backend as u64)
}
fn d_max_connections() -> Spanned<u64> {
    spanned(PoolSettings::default().max_connections_per_backend as u64)
}
fn d_max_in_flight() -> Spanned<u64> {
    spanned(PoolSettings::default().max_in_flight_per_connection as u64)
}
fn d_fail_timeout() -> Spanned<u64> {
    spanned(10_000)
}
fn d_fail_percent() -> Spanned<u64> {
    spanned(u64::from(PoolSettings::default().fail_percent))
}
fn d_weight() -> Spanned<u32> {
    spanned(1)
}
fn d_transport() -> Spanned<Transport> {
    spanned(Transport::Udp)
}

#[derive(Debug)]
pub(super) struct RawListener {
    pub(super) name: Spanned<String>,
    pub(super) protocol: Protocol,
    pub(super) listen: Spanned<String>,
    pub(super) pool: Spanned<String>,
    pub(super) allow: Option<Vec<Spanned<String>>>,
    pub(super) access_log: Option<Spanned<String>>,
    pub(super) format: LogFormat,
    pub(super) idle_timeout_ms: Spanned<u64>,
    pub(super) read_timeout_ms: Spanned<u64>,
    pub(super) max_connections: Spanned<u64>,
    pub(super) max_connections_per_client: Spanned<u64>,
    pub(super) max_queries_per_client: Option<Spanned<u64>>,
    pub(super) client_prefix_v6: Option<Spanned<u64>>,
    pub(super) write_timeout_ms: Option<Spanned<u64>>,
    pub(super) workers: Option<Spanned<u64>>,
    pub(super) pin_workers: Option<Spanned<bool>>,
    pub(super) adaptive_workers: Option<Spanned<bool>>,
    pub(super) max_udp_size: Option<Spanned<u64>>,
    pub(super) any_over_udp: Option<Spanned<AnyOverUdp>>,
    pub(super) forwarding: Option<Spanned<super::Forwarding>>,
    // DoT and DoH (issue 5).
    pub(super) tls_cert: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<bool>>,
    pub(super) handshake_timeout_ms: Option<Spanned<u64>>,
    pub(super) max_handshakes_per_client: Option<Spanned<u64>>,
    pub(super) max_handshakes_per_second: Option<Spanned<u64>>,
    pub(super) quic_retry: Option<Spanned<super::QuicRetry>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(super) max_streams: Option<Spanned<u64>>,
    pub(super) max_header_bytes: Option<Spanned<u64>>,
    pub(super) max_requests_per_second: Option<Spanned<u64>>,
}

#[derive(Debug)]
pub(super) struct RawPool {
    pub(super) name: Spanned<String>,
    pub(super) policy: PolicyKind,
    pub(super) timeout_ms: Spanned<u64>,
    pub(super) retries: Option<Spanned<u32>>,
    pub(super) on_no_backend: OnNoBackend,
    pub(super) max_fails: Option<Spanned<u32>>,
    pub(super) fail_timeout_ms: Spanned<u64>,
    pub(super) fail_percent: Spanned<u64>,
    pub(super) randomize_case: Option<Spanned<bool>>,
    pub(super) udp_sockets_per_backend: Spanned<u64>,
    pub(super) max_connections_per_backend: Spanned<u64>,
    pub(super) max_in_flight_per_connection: Spanned<u64>,
    pub(super) max_outstanding_per_backend: Option<Spanned<u64>>,
    pub(super) hash_key: Option<Spanned<crate::policy::HashKey>>,
    pub(super) hash_balance: Option<Spanned<f64>>,
    pub(super) backend: Vec<RawBackend>,
    /// `[[pool.backend]]` tables written, complete or not.
    pub(super) backend_tables: usize,
    pub(super) health: Option<RawHealth>,
    pub(super) cache: Option<RawCache>,
}

/// `[pool.cache]`.
#[derive(Debug, Default)]
pub(super) struct RawCache {
    pub(super) max_entries: Option<Spanned<u64>>,
    pub(super) max_ttl: Option<Spanned<u64>>,
    pub(super) min_ttl: Option<Spanned<u64>>,
    pub(super) max_negative_ttl: Option<Spanned<u64>>,
    pub(super) servfail_ttl: Option<Spanned<u64>>,
    pub(super) stale_ttl: Option<Spanned<u64>>,
    pub(super) max_stale: Option<Spanned<u64>>,
    pub(super) ecs: Option<Spanned<bool>>,
}

#[derive(Debug)]
pub(super) struct RawBackend {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    pub(super) weight: Spanned<u32>,
    // Transport to the backend (issue 5).
    pub(super) transport: Spanned<Transport>,
    pub(super) tls_verify: Option<Spanned<bool>>,
    pub(super) tls_name: Option<Spanned<String>>,
    pub(super) tls_ca: Option<Spanned<String>>,
    pub(super) doh_path: Option<Spanned<String>>,
    pub(super) health: Option<RawHealth>,
}

/// `[pool.health]` and `[pool.backend.health]`: every key optional, so that a
/// backend's table overrides the pool's key by key.
#[derive(Debug, Clone, Default)]
pub(super) struct RawHealth {
    pub(super) check: Option<Spanned<String>>,
    pub(super) interval_ms: Option<Spanned<u64>>,
    pub(super) timeout_ms: Option<Spanned<u64>>,
    pub(super) rise: Option<Spanned<u32>>,
    pub(super) fall: Option<Spanned<u32>>,
    pub(super) retry: Option<Spanned<u32>>,
    pub(super) delay_before_retry: Option<Spanned<f64>>,
    pub(super) query_name: Option<Spanned<String>>,
    pub(super) query_type: Option<Spanned<String>>,
    pub(super) must_resolve: Option<Spanned<bool>>,
    pub(super) expect_address: Option<Spanned<String>>,
    pub(super) cd_flag: Option<Spanned<bool>>,
    pub(super) transport: Option<Spanned<String>>,
    pub(super) payload: Option<Spanned<String>>,
    pub(super) tls_name: Option<Spanned<String>>,
    pub(super) tls_verify: Option<Spanned<bool>>,
    pub(super) tls_ca: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<RawCommand>>,
    pub(super) passive_threshold: Option<Spanned<u32>>,
}

impl RawHealth {
    /// `self` with every key it lacks taken from `base`.
    pub(super) fn over(&self, base: &Self) -> Self {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        // A backend that changes the check kind inherits only the keys every
        // kind has (timing, rise/fall): the pool's query, TLS, path or
        // command keys belong to the pool's kind, and are not carried over to
        // a check that has no use for them.
        let kind = |h: &Self| h.check.as_ref().map(|c| c.get_ref().trim().to_string());
        let own_kind = self.check.is_some() && kind(self) != kind(base);
        fn pick_kind<T: Clone>(own_kind: bool, a: &Option<T>, b: &Option<T>) -> Option<T> {
            if own_kind {
                a.clone()
            } else {
                a.clone().or_else(|| b.clone())
            }
        }
        let k = own_kind;
        // `fall` and keepalived's `retry` say the same thing: a backend that
        // sets either overrides both of the pool's.
        let (fall, retry) = if self.fall.is_some() || self.retry.is_some() {
            (self.fall.clone(), self.retry.clone())
        } else {
            (base.fall.clone(), base.retry.clone())
        };
        Self {
            check: pick(&self.check, &base.check),
            interval_ms: pick(&self.interval_ms, &base.interval_ms),
            timeout_ms: pick(&self.timeout_ms, &base.timeout_ms),
            rise: pick(&self.rise, &base.rise),
            fall,
            retry,
            delay_before_retry: pick(&self.delay_before_retry, &base.delay_before_retry),
            query_name: pick_kind(k, &self.query_name, &base.query_name),
            query_type: pick_kind(k, &self.query_type, &base.query_type),
            must_resolve: pick_kind(k, &self.must_resolve, &base.must_resolve),
            expect_address: pick_kind(k, &self.expect_address, &base.expect_address),
            cd_flag: pick_kind(k, &self.cd_flag, &base.cd_flag),
            transport: pick_kind(k, &self.transport, &base.transport),
            payload: pick_kind(k, &self.payload, &base.payload),
            tls_name: pick_kind(k, &self.tls_name, &base.tls_name),
            tls_verify: pick_kind(k, &self.tls_verify, &base.tls_verify),
            tls_ca: pick_kind(k, &self.tls_ca, &base.tls_ca),
            path: pick_kind(k, &self.path, &base.path),
            command: pick_kind(k, &self.command, &base.command),
            passive_threshold: pick(&self.passive_threshold, &base.passive_threshold),
        }
    }
}

/// Reads the whole document: every table, every key.
pub(super) fn config(mut root: Table<'_>, errs: &mut Errors) -> RawConfig {
    let admin = root.table(errs, "admin").and_then(|t| admin(t, errs));
    let tables = root.tables(errs, "listener");
    let listener_tables = tables.len();
    let listener = tables
        .into_iter()
        .filter_map(|t| listener(t, errs))
        .collect();
    let pool = root
        .tables(errs, "pool")
        .into_iter()
        .filter_map(|t| pool(t, errs))
        .collect();
    let vrrp = root
        .tables(errs, "vrrp")
        .into_iter()
        .map(Table::section)
        .collect();
    let rule = root
        .tables(errs, "rule")
        .into_iter()
        .map(|t| super::rules::rule(t, errs))
        .collect();
    let limit = root
        .tables(errs, "limit")
        .into_iter()
        .map(|t| super::limits::limit(t, errs))
        .collect();
    let dynamic_block = root
        .tables(errs, "dynamic_block")
        .into_iter()
        .map(|t| super::limits::dynamic_block(t, errs))
        .collect();
    let anycast = root
        .tables(errs, "anycast")
        .into_iter()
        .map(|t| super::anycast::anycast(t, errs))
        .collect();
    let process = super::process::raw(&mut root, errs);
    root.finish(errs);
    RawConfig {
        process,
        admin,
        listener,
        listener_tables,
        pool,
        vrrp,
        rule,
        limit,
        dynamic_block,
        anycast,
    }
}

fn admin(mut t: Table<'_>, errs: &mut Errors) -> Option<RawAdmin> {
    let listen = t.required(errs, "listen");
    let allow = t.strings(errs, "allow");
    let max_connections = t.u64(errs, "max_connections");
    let users = t.strings(errs, "users");
    let auth = t.choice(errs, "auth");
    let refresh_ms = t.u64(errs, "refresh_ms");
    let tls_cert = t.string(errs, "tls_cert");
    let tls_key = t.string(errs, "tls_key");
    t.finish(errs);
    Some(RawAdmin {
        listen: listen?,
        allow,
        max_connections,
        users,
        auth,
        refresh_ms,
        tls_cert,
        tls_key,
    })
}

/// A missing required key is an error at the table (reported by
/// [`Table::required`]); the listener or pool is then left out of the
/// typed validation, its other keys still read and checked.
fn listener(mut t: Table<'_>, errs: &mut Errors) -> Option<RawListener> {
    let name = t.required(errs, "name");
    let protocol_present = t.has("protocol");
    let protocol = t.choice::<Protocol>(errs, "protocol");
    if !protocol_present {
        errs.push(ConfigError::at(
            t.span(),
            format!(
                "{} has no `protocol` (required: udp, tcp, tcp-passthrough, dot, doh, doq or doh3)",
                t.what()
            ),
        ));
    }
    let listen = t.required(errs, "listen");
    let pool = t.required(errs, "pool");
    let l = listener_keys(&mut t, errs, protocol.as_ref().map(|p| *p.get_ref()));
    t.finish(errs);
    Some(RawListener {
        name: name?,
        protocol: *protocol?.get_ref(),
        listen: listen?,
        pool: pool?,
        ..l?
    })
}

/// The optional keys of a listener (`None` when `protocol` is unusable).
fn listener_keys(
    t: &mut Table<'_>,
    errs: &mut Errors,
    protocol: Option<Protocol>,
) -> Option<RawListener> {
    let l = RawListener {
        name: spanned(String::new()),
        protocol: protocol.unwrap_or(Protocol::Udp),
        listen: spanned(String::new()),
        pool: spanned(String::new()),
        allow: t.strings(errs, "allow"),
        access_log: t.string(errs, "access_log"),
        format: t
            .choice::<LogFormat>(errs, "format")
            .map(Spanned::into_inner)
            .unwrap_or_default(),
        idle_timeout_ms: t.u64(errs, "idle_timeout_ms").unwrap_or_else(d_idle),
        read_timeout_ms: t.u64(errs, "read_timeout_ms").unwrap_or_else(d_read),
        max_connections: t.u64(errs, "max_connections").unwrap_or_else(d_maxconn),
        max_connections_per_client: t
            .u64(errs, "max_connections_per_client")
            .unwrap_or_else(d_maxconn_client),
        max_queries_per_client: t.u64(errs, "max_queries_per_client"),
        client_prefix_v6: t.u64(errs, "client_prefix_v6"),
        write_timeout_ms: t.u64(errs, "write_timeout_ms"),
        workers: t.u64(errs, "workers"),
        pin_workers: t.bool(errs, "pin_workers"),
        adaptive_workers: t.bool(errs, "adaptive_workers"),
        max_udp_size: t.u64(errs, "max_udp_size"),
        any_over_udp: t.choice(errs, "any_over_udp"),
        forwarding: t.choice(errs, "forwarding"),
        tls_cert: t.string(errs, "tls_cert"),
        tls_key: t.string(errs, "tls_key"),
        tls: t.bool(errs, "tls"),
        handshake_timeout_ms: t.u64(errs, "handshake_timeout_ms"),
        max_handshakes_per_client: t.u64(errs, "max_handshakes_per_client"),
        max_handshakes_per_second: t.u64(errs, "max_handshakes_per_second"),
        quic_retry: t.choice(errs, "quic_retry"),
        path: t.string(errs, "path"),
        trusted_proxies: t.strings(errs, "trusted_proxies"),
        max_streams: t.u64(errs, "max_streams"),
        max_header_bytes: t.u64(errs, "max_header_bytes"),
        max_requests_per_second: t.u64(errs, "max_requests_per_second"),
    };
    protocol.map(|_| l)
}

fn pool(mut t: Table<'_>, errs: &mut Errors) -> Option<RawPool> {
    let name = t.required(errs, "name");
    let p = RawPool {
        name: spanned(String::new()),
        policy: t
            .choice::<PolicyKind>(errs, "policy")
            .map(Spanned::into_inner)
            .unwrap_or_default(),
        timeout_ms: t.u64(errs, "timeout_ms").unwrap_or_else(d_timeout),
        retries: t.u32(errs, "retries"),
        on_no_backend: t
            .choice::<OnNoBackend>(errs, "on_no_backend")
            .map(Spanned::into_inner)
            .unwrap_or_default(),
        max_fails: t.u32(errs, "max_fails"),
        fail_timeout_ms: t
            .u64(errs, "fail_timeout_ms")
            .unwrap_or_else(d_fail_timeout),
        fail_percent: t.u64(errs, "fail_percent").unwrap_or_else(d_fail_percent),
        randomize_case: t.bool(errs, "randomize_case"),
        udp_sockets_per_backend: t
            .u64(errs, "udp_sockets_per_backend")
            .unwrap_or_else(d_udp_sockets),
        max_connections_per_backend: t
            .u64(errs, "max_connections_per_backend")
            .unwrap_or_else(d_max_connections),
        max_in_flight_per_connection: t
            .u64(errs, "max_in_flight_per_connection")
            .unwrap_or_else(d_max_in_flight),
        max_outstanding_per_backend: t.u64(errs, "max_outstanding_per_backend"),
        hash_key: t.choice::<crate::policy::HashKey>(errs, "hash_key"),
        hash_balance: t.f64(errs, "hash_balance"),
        health: t.table(errs, "health").map(|h| health(h, errs)),
        cache: t.table(errs, "cache").map(|c| cache(c, errs)),
        backend: Vec::new(),
        backend_tables: 0,
    };
    let tables = t.tables(errs, "backend");
    let backend_tables = tables.len();
    let backend = tables
        .into_iter()
        .filter_map(|b| backend(b, errs))
        .collect();
    t.finish(errs);
    Some(RawPool {
        name: name?,
        backend,
        backend_tables,
        ..p
    })
}

fn cache(mut t: Table<'_>, errs: &mut Errors) -> RawCache {
    let c = RawCache {
        max_entries: t.u64(errs, "max_entries"),
        max_ttl: t.u64(errs, "max_ttl"),
        min_ttl: t.u64(errs, "min_ttl"),
        max_negative_ttl: t.u64(errs, "max_negative_ttl"),
        servfail_ttl: t.u64(errs, "servfail_ttl"),
        stale_ttl: t.u64(errs, "stale_ttl"),
        max_stale: t.u64(errs, "max_stale"),
        ecs: t.bool(errs, "ecs"),
    };
    t.finish(errs);
    c
}

fn backend(mut t: Table<'_>, errs: &mut Errors) -> Option<RawBackend> {
    let name = t.required(errs, "name");
    let address = t.required(errs, "address");
    let weight = t.u32(errs, "weight").unwrap_or_else(d_weight);
    let transport = t.choice(errs, "transport").unwrap_or_else(d_transport);
    let tls_verify = t.bool(errs, "tls_verify");
    let tls_name = t.string(errs, "tls_name");
    let tls_ca = t.string(errs, "tls_ca");
    let doh_path = t.string(errs, "doh_path");
    let health = t.table(errs, "health").map(|h| health(h, errs));
    t.finish(errs);
    Some(RawBackend {
        name: name?,
        address: address?,
        weight,
        transport,
        tls_verify,
        tls_name,
        tls_ca,
        doh_path,
        health,
    })
}

fn health(mut t: Table<'_>, errs: &mut Errors) -> RawHealth {
    let h = RawHealth {
        check: t.string(errs, "check"),
        interval_ms: t.u64(errs, "interval_ms"),
        timeout_ms: t.u64(errs, "timeout_ms"),
        rise: t.u32(errs, "rise"),
        fall: t.u32(errs, "fall"),
        retry: t.u32(errs, "retry"),
        delay_before_retry: t.f64(errs, "delay_before_retry"),
        query_name: t.string(errs, "query_name"),
        query_type: t.string(errs, "query_type"),
        must_resolve: t.bool(errs, "must_resolve"),
        expect_address: t.string(errs, "expect_address"),
        cd_flag: t.bool(errs, "cd_flag"),
        transport: t.string(errs, "transport"),
        payload: t.string(errs, "payload"),
        tls_name: t.string(errs, "tls_name"),
        tls_verify: t.bool(errs, "tls_verify"),
        tls_ca: t.string(errs, "tls_ca"),
        path: t.string(errs, "path"),
        command: t.command(errs, "command"),
        passive_threshold: t.u32(errs, "passive_threshold"),
    };
    t.finish(errs);
    h
}
