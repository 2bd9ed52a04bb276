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

#[cfg(test)]
mod tests {
    use crate::config::{Config, LimitAction};

    const BASE: &str = "[[listener]]\nname = \"udp\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\npool = \"p\"\n\n\
                        [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\naddress = \"192.0.2.1\"\n";

    fn rendered(src: &str) -> Vec<String> {
        Config::parse(src)
            .unwrap_err()
            .iter()
            .map(|e| e.render("t.toml", src))
            .collect()
    }

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
}
