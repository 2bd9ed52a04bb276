//! `/metrics`: the balancer's counters in the Prometheus text format, all
//! written through one [`Exposition`] writer.

use std::fmt::Write as _;
use std::sync::Arc;

use dnsha_core::config::Protocol;
use dnsha_core::latency::LatencySnapshot;
use dnsha_core::{Backend, Pool};

use super::{RunningListener, Server};
use crate::cache::{PacketCache, Size, Stats};
use crate::metrics::{get, ListenerMetrics, HTTP_STATUSES};
use crate::wire::dns::DropReason;

/// The Prometheus text exposition format (version 0.0.4), one metric family
/// at a time: `# HELP`, `# TYPE`, then one line per labelled value.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the family `dnsha_{name}` of type `kind` (`counter`, `gauge`)
    /// with one sample per row: its labels (`a="x",b="y"`, empty for
    /// none) and value.
    pub fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        rows: impl IntoIterator<Item = (String, u64)>,
    ) {
        let _ = writeln!(
            self.out,
            "# HELP dnsha_{name} {help}\n# TYPE dnsha_{name} {kind}"
        );
        for (labels, v) in rows {
            if labels.is_empty() {
                let _ = writeln!(self.out, "dnsha_{name} {v}");
            } else {
                let _ = writeln!(self.out, "dnsha_{name}{{{labels}}} {v}");
            }
        }
    }

    /// Writes the histogram family `dnsha_{name}` (in seconds) with one
    /// histogram per row: its labels and the counts (`_bucket` per bound,
    /// cumulative, then `_sum` and `_count`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (String, LatencySnapshot)>,
    ) {
        let _ = writeln!(
            self.out,
            "# HELP dnsha_{name} {help}\n# TYPE dnsha_{name} histogram"
        );
        for (labels, s) in rows {
            let sep = if labels.is_empty() { "" } else { "," };
            for (le, n) in s.cumulative() {
                let le =
                    le.map_or_else(|| "+Inf".to_string(), |ms| (ms as f64 / 1000.0).to_string());
                let _ = writeln!(
                    self.out,
                    "dnsha_{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}"
                );
            }
            let sum = s.sum_ms() as f64 / 1000.0;
            let (open, close) = if labels.is_empty() {
                ("", "")
            } else {
                ("{", "}")
            };
            let _ = writeln!(self.out, "dnsha_{name}_sum{open}{labels}{close} {sum}");
            let _ = writeln!(
                self.out,
                "dnsha_{name}_count{open}{labels}{close} {}",
                s.count()
            );
        }
    }

    /// Appends text already in the format (another component's families).
    pub fn push_str(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

type Pick = fn(&ListenerMetrics) -> u64;

/// A backend family: name, help, type, and the value of one backend.
type BackendFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Backend) -> u64,
);

const LISTENER_COUNTERS: [(&str, &str, Pick); 13] = [
    ("queries_total", "Valid queries received.", |m| {
        get(&m.queries)
    }),
    (
        "answers_total",
        "Backend answers relayed to clients.",
        |m| get(&m.answers),
    ),
    (
        "cache_answers_total",
        "Answers served from the pool's packet cache by this listener, stale ones included.",
        |m| get(&m.cache_hits),
    ),
    (
        "servfail_total",
        "SERVFAIL answers made by the balancer.",
        |m| get(&m.servfail),
    ),
    (
        "refused_total",
        "REFUSED answers made by the balancer (ACL).",
        |m| get(&m.refused),
    ),
    (
        "retries_total",
        "Queries re-sent to another backend.",
        |m| get(&m.retries),
    ),
    (
        "resent_total",
        "Queries sent again to the same backend after an ICMP refusal of their upstream socket.",
        |m| get(&m.resent),
    ),
    ("timeouts_total", "Backend timeouts.", |m| get(&m.timeouts)),
    (
        "udp_truncated_total",
        "UDP answers replaced by an empty TC=1 answer (over max_udp_size or the client's EDNS size).",
        |m| get(&m.udp_truncated),
    ),
    (
        "tcp_fallbacks_total",
        "DoH answers over UDP that were truncated, asked again over TCP.",
        |m| get(&m.tcp_fallbacks),
    ),
    ("connections_total", "Client connections accepted.", |m| {
        get(&m.connections_total)
    }),
    (
        "connections_refused_total",
        "Client connections refused by limits.",
        |m| get(&m.connections_refused),
    ),
    ("access_log_dropped_total", "Access log lines lost.", |m| {
        get(&m.log_dropped)
    }),
];

const TLS_COUNTERS: [(&str, &str, Pick); 9] = [
    (
        "tls_handshake_failures_total",
        "TLS handshakes that failed (not TLS, no common protocol).",
        |m| get(&m.tls_handshake_failures),
    ),
    (
        "tls_handshake_timeouts_total",
        "TLS handshakes not finished within handshake_timeout_ms.",
        |m| get(&m.tls_handshake_timeouts),
    ),
    (
        "tls_handshake_rate_limited_total",
        "TLS connections closed at accept, over max_handshakes_per_second.",
        |m| get(&m.tls_handshake_rate_limited),
    ),
    (
        "tls_resumed_total",
        "TLS handshakes that resumed a session.",
        |m| get(&m.tls_resumed),
    ),
    (
        "quic_retries_total",
        "DoQ/DoH3 connection attempts sent a QUIC Retry to prove their address.",
        |m| get(&m.quic_retries),
    ),
    (
        "http_rate_limited_total",
        "DoH requests over the per-client rate (429).",
        |m| get(&m.rate_limited),
    ),
    (
        "http_cancelled_total",
        "DoH requests abandoned by the client before their answer.",
        |m| get(&m.http_cancelled),
    ),
    (
        "http_abusive_closed_total",
        "DoH connections closed for too many reset or refused requests.",
        |m| get(&m.http_abusive_closed),
    ),
    (
        "http_protocol_errors_total",
        "DoH connections ended by an HTTP protocol error (oversized headers, bad frames).",
        |m| get(&m.http_protocol_errors),
    ),
];

/// `v` as a label value: backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The labels of a listener's samples.
fn listener_labels(r: &RunningListener) -> String {
    format!(
        "listener=\"{}\",protocol=\"{}\"",
        r.config.name,
        r.config.protocol.as_str()
    )
}

fn listener_families(w: &mut Exposition, listeners: &[RunningListener]) {
    for (name, help, pick) in LISTENER_COUNTERS {
        let rows = listeners
            .iter()
            .map(|r| (listener_labels(r), pick(&r.ctx.metrics)));
        w.family(name, help, "counter", rows);
    }
    let rows = listeners
        .iter()
        .map(|r| (listener_labels(r), get(&r.ctx.metrics.connections)));
    w.family("connections", "Client connections open now.", "gauge", rows);
    let rows = listeners
        .iter()
        .map(|r| (listener_labels(r), r.ctx.metrics.latency.snapshot()));
    w.histogram(
        "query_duration_seconds",
        "Time from a query's receipt to the reply the balancer sent (backend answers, cached answers, its own SERVFAIL), counted in whole milliseconds.",
        rows,
    );
    let udp = || {
        listeners
            .iter()
            .filter(|r| r.config.protocol == Protocol::Udp)
    };
    let rows = udp().map(|r| (listener_labels(r), get(&r.ctx.metrics.udp_active_workers)));
    w.family(
        "udp_active_workers",
        "UDP workers taking new queries now (adaptive_workers).",
        "gauge",
        rows,
    );
    let rows = udp().map(|r| (listener_labels(r), get(&r.ctx.metrics.udp_steering_changes)));
    w.family(
        "udp_steering_changes_total",
        "Changes of the number of UDP workers taking queries.",
        "counter",
        rows,
    );
    let drops = listeners.iter().flat_map(|r| {
        DropReason::ALL.into_iter().map(move |reason| {
            (
                format!("{},reason=\"{}\"", listener_labels(r), reason.as_str()),
                r.ctx.metrics.drops(reason),
            )
        })
    });
    w.family(
        "dropped_total",
        "Messages dropped, by reason.",
        "counter",
        drops,
    );
}

fn tls_families(w: &mut Exposition, listeners: &[RunningListener]) {
    let tls: Vec<&RunningListener> = listeners
        .iter()
        .filter(|r| {
            matches!(
                r.config.protocol,
                Protocol::Dot | Protocol::Doh | Protocol::Doq | Protocol::Doh3
            )
        })
        .collect();
    for (name, help, pick) in TLS_COUNTERS {
        let rows = tls
            .iter()
            .map(|r| (listener_labels(r), pick(&r.ctx.metrics)));
        w.family(name, help, "counter", rows);
    }
    let statuses = tls
        .iter()
        .filter(|r| r.config.protocol.is_http())
        .flat_map(|r| {
            HTTP_STATUSES.iter().enumerate().map(move |(i, code)| {
                let n = r.ctx.metrics.http_responses.get(i).map_or(0, get);
                let code = if *code == 0 {
                    "other".to_string()
                } else {
                    code.to_string()
                };
                (format!("{},status=\"{code}\"", listener_labels(r)), n)
            })
        });
    w.family(
        "http_responses_total",
        "DoH responses, by HTTP status.",
        "counter",
        statuses,
    );
}

fn backend_families(w: &mut Exposition, pools: &[Arc<Pool>]) {
    let backends: Vec<(String, Arc<Backend>)> = pools
        .iter()
        .flat_map(|p| {
            let snapshot = p.snapshot();
            snapshot
                .backends()
                .iter()
                .map(|b| {
                    let labels = format!(
                        "pool=\"{}\",backend=\"{}\",address=\"{}\"",
                        p.name(),
                        b.name(),
                        b.address()
                    );
                    (labels, Arc::clone(b))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let families: [BackendFamily; 6] = [
        ("backend_up", "1 when the backend is up.", "gauge", |b| {
            u64::from(b.is_up())
        }),
        (
            "backend_drained",
            "1 while an operator drains the backend (no new queries).",
            "gauge",
            |b| u64::from(b.is_drained()),
        ),
        (
            "backend_outstanding",
            "Queries in flight to the backend.",
            "gauge",
            Backend::outstanding,
        ),
        (
            "backend_queries_total",
            "Queries sent to the backend.",
            "counter",
            Backend::queries,
        ),
        (
            "backend_failures_total",
            "Failed queries to the backend.",
            "counter",
            Backend::failures,
        ),
        ("backend_weight", "Configured weight.", "gauge", |b| {
            u64::from(b.weight())
        }),
    ];
    for (name, help, kind, f) in families {
        let rows = backends.iter().map(|(l, b)| (l.clone(), f(b)));
        w.family(name, help, kind, rows);
    }
    let rows = backends.iter().map(|(l, b)| (l.clone(), b.latency()));
    w.histogram(
        "backend_response_seconds",
        "Time from sending a query to the backend to its answer, counted in whole milliseconds.",
        rows,
    );
}

/// The pools' packet caches: counters and sizes, labelled by pool.
fn cache_families(w: &mut Exposition, caches: &[(String, Arc<PacketCache>)]) {
    if caches.is_empty() {
        return;
    }
    /// One pool's figures: labels, counters, size, skipped inserts, and
    /// (queries without a key, answers not stored).
    type Row = (String, Stats, Size, u64, (u64, u64));
    let rows: Vec<Row> = caches
        .iter()
        .map(|(name, c)| {
            (
                format!("pool=\"{name}\""),
                c.stats(),
                c.size(),
                c.skipped_inserts(),
                c.uncacheable(),
            )
        })
        .collect();
    type Pick = fn(&Row) -> u64;
    let counters: [(&str, &str, Pick); 11] = [
        ("cache_hits_total", "Queries answered fresh from the cache.", |r| r.1.hits),
        ("cache_misses_total", "Lookups that found nothing fresh.", |r| r.1.misses),
        ("cache_stale_hits_total", "Expired answers served because the pool could not answer (serve-stale).", |r| r.1.stale_hits),
        ("cache_inserts_total", "Answers stored.", |r| r.1.inserts),
        ("cache_evictions_total", "Servable entries pushed out by newer ones (max_entries).", |r| r.1.evictions),
        ("cache_expired_total", "Entries removed once past serving.", |r| r.1.expired),
        ("cache_collisions_total", "Lookups whose hash matched an entry of another question.", |r| r.1.collisions),
        ("cache_purged_total", "Entries removed by a purge.", |r| r.1.purged),
        ("cache_insert_skipped_total", "Inserts skipped because another worker held the shard.", |r| r.3),
        ("cache_uncacheable_total", "Queries that could not be keyed (ECS without `ecs = true`, TSIG).", |r| r.4 .0),
        ("cache_not_stored_total", "Answers not stored (truncated, TTL 0 or under min_ttl, negative without SOA, error codes).", |r| r.4 .1),
    ];
    for (name, help, f) in counters {
        w.family(
            name,
            help,
            "counter",
            rows.iter().map(|r| (r.0.clone(), f(r))),
        );
    }
    w.family(
        "cache_entries",
        "Answers held.",
        "gauge",
        rows.iter().map(|r| (r.0.clone(), r.2.entries as u64)),
    );
    w.family(
        "cache_bytes",
        "Memory the answers hold, about.",
        "gauge",
        rows.iter().map(|r| (r.0.clone(), r.2.bytes as u64)),
    );
}

impl Server {
    /// Metrics in the Prometheus text format, series named `dnsha_*`.
    pub fn prometheus(&self) -> String {
        let st = self.lock();
        let mut w = Exposition::new();
        listener_families(&mut w, &st.listeners);
        tls_families(&mut w, &st.listeners);
        backend_families(&mut w, &st.pools);
        cache_families(&mut w, &st.caches);
        w.family(
            "rule_matches_total",
            "Queries each [[rule]] matched.",
            "counter",
            st.rules
                .counts()
                .map(|(name, n)| (format!("rule=\"{}\"", label_value(name)), n)),
        );
        w.family(
            "limit_exceeded_total",
            "Queries over each [[limit]].",
            "counter",
            st.limits.iter().map(|l| {
                (
                    format!("limit=\"{}\"", label_value(&l.config().name)),
                    l.exceeded(),
                )
            }),
        );
        w.family(
            "limit_clients",
            "Client prefixes each [[limit]] tracks now.",
            "gauge",
            st.limits.iter().map(|l| {
                (
                    format!("limit=\"{}\"", label_value(&l.config().name)),
                    u64::try_from(l.clients()).unwrap_or(u64::MAX),
                )
            }),
        );
        if let Some(d) = &st.dynblocks {
            w.family(
                "dynamic_block_stopped_total",
                "Queries stopped by each [[dynamic_block]]'s blocks.",
                "counter",
                d.stopped()
                    .map(|(name, n)| (format!("rule=\"{}\"", label_value(name)), n)),
            );
            w.family(
                "dynamic_blocks",
                "Client prefixes blocked now.",
                "gauge",
                std::iter::once((
                    String::new(),
                    u64::try_from(d.blocks().len()).unwrap_or(u64::MAX),
                )),
            );
        }
        let globals = [
            (
                "tcp_upstream_unmatched_total",
                "Backend TCP answers matching no query.",
                self.tcp_upstreams.unmatched(),
            ),
            (
                "udp_upstream_unmatched_total",
                "Backend UDP answers to DoH queries matching no query.",
                get(&self.udp_upstreams.stats().unmatched),
            ),
            (
                "tls_upstream_failures_total",
                "TLS handshakes with DoT backends that failed.",
                get(&self.tcp_upstreams.stats().tls_failures),
            ),
        ];
        for (name, help, v) in globals {
            w.family(name, help, "counter", [(String::new(), v)]);
        }
        w.push_str(&self.health.prometheus());
        w.finish()
    }
}
