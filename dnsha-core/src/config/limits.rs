//! `[[limit]]` sections: per-client rate limits.
//!
//! ```toml
//! [[limit]]
//! name = "per-host"
//! qps = 1000          # sustained queries per second per client prefix
//! burst = 2000        # queries at once after a quiet while (default: qps)
//! prefix_v4 = 32      # a client is its /32 (default) ...
//! prefix_v6 = 64      # ... or its IPv6 /64 (default)
//! action = "drop"     # or "truncate", "refuse"
//! listener = ["udp"]  # default: every listener
//! max_clients = 65536 # prefixes tracked at once (memory bound)
//! ```

use std::collections::HashSet;

use toml::Spanned;

use super::read::{Errors, Table};
use super::Validator;
use crate::dynblock::{BlockAction, DynRule};
use crate::ratelimit::RateSettings;

/// What happens to a query over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAction {
    /// No answer (counted).
    #[default]
    Drop,
    /// An empty answer with TC=1 over UDP: a real client asks again over
    /// TCP, where the limit does not truncate (its address is proven).
    Truncate,
    /// REFUSED.
    Refuse,
}

impl LimitAction {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Truncate => "truncate",
            Self::Refuse => "refuse",
        }
    }
}

/// A validated `[[limit]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConfig {
    /// Its name (metrics label).
    pub name: String,
    /// Rate, burst, prefixes and table size.
    pub settings: RateSettings,
    /// What happens to a query over the limit.
    pub action: LimitAction,
    /// The listeners it applies to; empty for all.
    pub listeners: Vec<String>,
}

impl LimitConfig {
    /// Whether the limit applies to the listener named `listener`.
    pub fn applies_to(&self, listener: &str) -> bool {
        self.listeners.is_empty() || self.listeners.iter().any(|l| l == listener)
    }
}

/// Most prefixes one limit may track.
pub(super) const MAX_CLIENTS: u64 = 10_000_000;

/// A `[[limit]]` as written.
#[derive(Debug)]
pub(super) struct RawLimit {
    name: Option<Spanned<String>>,
    qps: Option<Spanned<u64>>,
    burst: Option<Spanned<u64>>,
    prefix_v4: Option<Spanned<u64>>,
    prefix_v6: Option<Spanned<u64>>,
    action: Option<Spanned<LimitAction>>,
    listener: Option<Vec<Spanned<String>>>,
    max_clients: Option<Spanned<u64>>,
    span: std::ops::Range<usize>,
}

/// Reads one `[[limit]]` table.
pub(super) fn limit(mut t: Table<'_>, errs: &mut Errors) -> RawLimit {
    let l = RawLimit {
        name: t.required(errs, "name"),
        qps: t.u64(errs, "qps"),
        burst: t.u64(errs, "burst"),
        prefix_v4: t.u64(errs, "prefix_v4"),
        prefix_v6: t.u64(errs, "prefix_v6"),
        action: t.choice(errs, "action"),
        listener: t.strings(errs, "listener"),
        max_clients: t.u64(errs, "max_clients"),
        span: t.span(),
    };
    t.finish(errs);
    l
}

impl Validator {
    /// The limits, in order; `listeners` are the configuration's listener
    /// names.
    pub(super) fn limits(
        &mut self,
        raw: &[RawLimit],
        listeners: &HashSet<&str>,
    ) -> Vec<LimitConfig> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for l in raw {
            let Some(name) = &l.name else { continue };
            let name = self.name("limit", name, &mut seen);
            let Some(qps) = &l.qps else {
                self.err(l.span.clone(), format!("limit `{name}` has no `qps`"));
                continue;
            };
            let qps = self.between_u64("qps", qps, 1, u64::from(u32::MAX));
            let burst = l.burst.as_ref().map_or(qps, |b| {
                self.between_u64("burst", b, 1, u64::from(u32::MAX))
            });
            let prefix = |v: &Option<Spanned<u64>>, default: u64, max: u64, key, me: &mut Self| {
                v.as_ref()
                    .map_or(default, |p| me.between_u64(key, p, 1, max))
            };
            let prefix_v4 = prefix(&l.prefix_v4, 32, 32, "prefix_v4", self);
            let prefix_v6 = prefix(&l.prefix_v6, 64, 128, "prefix_v6", self);
            let max_clients = l.max_clients.as_ref().map_or(65_536, |m| {
                self.between_u64("max_clients", m, 1, MAX_CLIENTS)
            });
            let listeners: Vec<String> = l
                .listener
                .iter()
                .flatten()
                .map(|s| {
                    let n = s.get_ref().trim();
                    if !listeners.contains(n) {
                        self.err(s.span(), format!("unknown listener `{n}`"));
                    }
                    n.to_string()
                })
                .collect();
            out.push(LimitConfig {
                name,
                settings: RateSettings {
                    qps: u32::try_from(qps).unwrap_or(u32::MAX),
                    burst: u32::try_from(burst).unwrap_or(u32::MAX),
                    prefix_v4: u8::try_from(prefix_v4).unwrap_or(32),
                    prefix_v6: u8::try_from(prefix_v6).unwrap_or(64),
                    max_clients: usize::try_from(max_clients).unwrap_or(usize::MAX),
                },
                action: l
                    .action
                    .as_ref()
                    .map_or_else(LimitAction::default, |a| *a.get_ref()),
                listeners,
            });
        }
        out
    }
}

/// A `[[dynamic_block]]` as written.
#[derive(Debug)]
pub(super) struct RawDynBlock {
    name: Option<Spanned<String>>,
    window: Option<Spanned<u64>>,
    prefix_v4: Option<Spanned<u64>>,
    prefix_v6: Option<Spanned<u64>>,
    qps: Option<Spanned<f64>>,
    nxdomain_rate: Option<Spanned<f64>>,
    servfail_rate: Option<Spanned<f64>>,
    nxdomain_ratio: Option<Spanned<f64>>,
    min_answers: Option<Spanned<u64>>,
    qtype: Option<Spanned<String>>,
    qtype_rate: Option<Spanned<f64>>,
    bytes_rate: Option<Spanned<f64>>,
    block_seconds: Option<Spanned<u64>>,
    action: Option<Spanned<BlockAction>>,
    span: std::ops::Range<usize>,
}

/// Reads one `[[dynamic_block]]` table.
pub(super) fn dynamic_block(mut t: Table<'_>, errs: &mut Errors) -> RawDynBlock {
    let d = RawDynBlock {
        name: t.required(errs, "name"),
        window: t.u64(errs, "window"),
        prefix_v4: t.u64(errs, "prefix_v4"),
        prefix_v6: t.u64(errs, "prefix_v6"),
        qps: t.f64(errs, "qps"),
        nxdomain_rate: t.f64(errs, "nxdomain_rate"),
        servfail_rate: t.f64(errs, "servfail_rate"),
        nxdomain_ratio: t.f64(errs, "nxdomain_ratio"),
        min_answers: t.u64(errs, "min_answers"),
        qtype: t.string(errs, "qtype"),
        qtype_rate: t.f64(errs, "qtype_rate"),
        bytes_rate: t.f64(errs, "bytes_rate"),
        block_seconds: t.u64(errs, "block_seconds"),
        action: t.choice(errs, "action"),
        span: t.span(),
    };
    t.finish(errs);
    d
}

impl Validator {
    /// The dynamic block rules, in order.
    pub(super) fn dynamic_blocks(&mut self, raw: &[RawDynBlock]) -> Vec<DynRule> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for d in raw {
            let Some(name) = &d.name else { continue };
            let name = self.name("dynamic_block", name, &mut seen);
            let rate = |me: &mut Self, key: &str, v: &Option<Spanned<f64>>| {
                let v = v.as_ref()?;
                let r = *v.get_ref();
                if r.is_finite() && r > 0.0 {
                    Some(r)
                } else {
                    me.err(v.span(), format!("{key} must be a number above 0"));
                    None
                }
            };
            let qps = rate(self, "qps", &d.qps);
            let nxdomain_rate = rate(self, "nxdomain_rate", &d.nxdomain_rate);
            let servfail_rate = rate(self, "servfail_rate", &d.servfail_rate);
            let bytes_rate = rate(self, "bytes_rate", &d.bytes_rate);
            let nxdomain_ratio = d.nxdomain_ratio.as_ref().and_then(|v| {
                let r = *v.get_ref();
                if (0.0..1.0).contains(&r) {
                    Some(r)
                } else {
                    self.err(
                        v.span(),
                        "nxdomain_ratio must be from 0 to below 1 (0.5: half the answers)",
                    );
                    None
                }
            });
            let qtype_rate = match (&d.qtype, rate(self, "qtype_rate", &d.qtype_rate)) {
                (Some(t), Some(r)) => self.qtype(t).map(|t| (t, r)),
                (None, None) => None,
                (Some(t), None) => {
                    self.err(t.span(), "qtype needs qtype_rate");
                    None
                }
                (None, Some(_)) => {
                    self.err(
                        d.span.clone(),
                        format!("dynamic_block `{name}`: qtype_rate needs qtype"),
                    );
                    None
                }
            };
            let written = [
                &d.qps,
                &d.nxdomain_rate,
                &d.servfail_rate,
                &d.nxdomain_ratio,
            ]
            .iter()
            .any(|v| v.is_some())
                || d.bytes_rate.is_some()
                || d.qtype_rate.is_some();
            if !written {
                self.err(
                    d.span.clone(),
                    format!("dynamic_block `{name}` has no threshold (qps, nxdomain_rate, servfail_rate, nxdomain_ratio, qtype_rate, bytes_rate)"),
                );
            }
            let num = |me: &mut Self, key: &str, v: &Option<Spanned<u64>>, default, min, max| {
                v.as_ref()
                    .map_or(default, |v| me.between_u64(key, v, min, max))
            };
            let window = num(self, "window", &d.window, 10, 1, 60);
            let prefix_v4 = num(self, "prefix_v4", &d.prefix_v4, 32, 1, 32);
            let prefix_v6 = num(self, "prefix_v6", &d.prefix_v6, 64, 1, 128);
            let min_answers = num(self, "min_answers", &d.min_answers, 10, 1, 1_000_000);
            let block = num(self, "block_seconds", &d.block_seconds, 60, 1, 86_400);
            let any = [
                qps,
                nxdomain_rate,
                servfail_rate,
                bytes_rate,
                nxdomain_ratio,
            ]
            .iter()
            .any(Option::is_some)
                || qtype_rate.is_some();
            if !any {
                // No threshold written, or every one refused above.
                continue;
            }
            out.push(DynRule {
                name,
                window_s: u32::try_from(window).unwrap_or(10),
                prefix_v4: u8::try_from(prefix_v4).unwrap_or(32),
                prefix_v6: u8::try_from(prefix_v6).unwrap_or(64),
                qps,
                nxdomain_rate,
                servfail_rate,
                nxdomain_ratio,
                min_answers: u32::try_from(min_answers).unwrap_or(10),
                qtype_rate,
                bytes_rate,
                block_s: u32::try_from(block).unwrap_or(60),
                action: d
                    .action
                    .as_ref()
                    .map_or_else(BlockAction::default, |a| *a.get_ref()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::rendered;
    use crate::config::{Config, LimitAction};
    use crate::dynblock::BlockAction;

    const BASE: &str = "[[listener]]\nname = \"udp\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\n\
                        [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n";

    #[test]
    fn limits_parse_with_their_defaults() {
        let c = Config::parse(&format!(
            "{BASE}\n[[limit]]\nname = \"host\"\nqps = 1000\n\n\
             [[limit]]\nname = \"net\"\nqps = 5000\nburst = 8000\nprefix_v4 = 24\nprefix_v6 = 56\naction = \"truncate\"\nlistener = [\"udp\"]\nmax_clients = 1000\n"
        ))
        .unwrap();
        let host = &c.limits[0];
        assert_eq!((host.settings.qps, host.settings.burst), (1000, 1000));
        assert_eq!((host.settings.prefix_v4, host.settings.prefix_v6), (32, 64));
        assert_eq!(host.action, LimitAction::Drop);
        assert!(host.applies_to("anything"));
        let net = &c.limits[1];
        assert_eq!((net.settings.qps, net.settings.burst), (5000, 8000));
        assert_eq!((net.settings.prefix_v4, net.settings.prefix_v6), (24, 56));
        assert_eq!(net.settings.max_clients, 1000);
        assert_eq!(net.action, LimitAction::Truncate);
        assert!(net.applies_to("udp") && !net.applies_to("tcp"));
    }

    #[test]
    fn bad_limits_are_reported_where_they_are() {
        let src = format!(
            "{BASE}\n[[limit]]\nname = \"a\"\nqps = 0\nprefix_v4 = 33\nprefix_v6 = 0\nlistener = [\"tcp\"]\nmax_clients = 0\naction = \"slow\"\n\n\
             [[limit]]\nname = \"a\"\n"
        );
        assert_eq!(
            rendered(&src),
            [
                "t.toml:15:7: qps must be from 1 to 4294967295",
                "t.toml:16:13: prefix_v4 must be from 1 to 32",
                "t.toml:17:13: prefix_v6 must be from 1 to 128",
                "t.toml:18:13: unknown listener `tcp`",
                "t.toml:19:15: max_clients must be from 1 to 10000000",
                "t.toml:20:10: action: unknown value \"slow\", expected one of `drop`, `truncate`, `refuse`",
                "t.toml:22:1: limit `a` has no `qps`",
                "t.toml:23:8: duplicate limit name `a`",
            ]
        );
    }

    #[test]
    fn dynamic_blocks_parse_with_their_defaults() {
        let c = Config::parse(&format!(
            "{BASE}\n[[dynamic_block]]\nname = \"nx\"\nnxdomain_rate = 100\n\n\
             [[dynamic_block]]\nname = \"any\"\nqtype = \"ANY\"\nqtype_rate = 5.5\nwindow = 5\nprefix_v4 = 24\nblock_seconds = 300\naction = \"refuse\"\n"
        ))
        .unwrap();
        let nx = &c.dynamic_blocks[0];
        assert_eq!(nx.nxdomain_rate, Some(100.0));
        assert_eq!(
            (nx.window_s, nx.block_s, nx.prefix_v4, nx.prefix_v6),
            (10, 60, 32, 64)
        );
        assert_eq!(nx.action, BlockAction::Drop);
        let any = &c.dynamic_blocks[1];
        assert_eq!(any.qtype_rate, Some((255, 5.5)));
        assert_eq!((any.window_s, any.block_s, any.prefix_v4), (5, 300, 24));
        assert_eq!(any.action, BlockAction::Refuse);
    }

    #[test]
    fn bad_dynamic_blocks_are_reported_where_they_are() {
        let src = format!(
            "{BASE}\n[[dynamic_block]]\nname = \"a\"\nqps = -1\nnxdomain_ratio = 1.5\nqtype = \"NOPE\"\nqtype_rate = 3\nwindow = 0\n\n\
             [[dynamic_block]]\nname = \"b\"\nwindow = 5\n"
        );
        assert_eq!(
            rendered(&src),
            [
                "t.toml:15:7: qps must be a number above 0",
                "t.toml:16:18: nxdomain_ratio must be from 0 to below 1 (0.5: half the answers)",
                "t.toml:17:9: qtype: unknown type `NOPE` (a name such as A, AAAA, ANY, or TYPE65)",
                "t.toml:19:10: window must be from 1 to 60",
                "t.toml:21:1: dynamic_block `b` has no threshold (qps, nxdomain_rate, servfail_rate, nxdomain_ratio, qtype_rate, bytes_rate)",
            ]
        );
    }
}
