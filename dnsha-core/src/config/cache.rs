//! `[pool.cache]`: the pool's packet cache (off unless the table is there).

use super::raw::RawCache;
use super::Validator;

/// Settings of a pool's packet cache. TTLs are in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most answers kept; the oldest give way beyond it.
    pub max_entries: usize,
    /// Longest an answer is kept, whatever its records say.
    pub max_ttl: u32,
    /// Answers whose smallest TTL is lower are not stored.
    pub min_ttl: u32,
    /// Longest an NXDOMAIN or NODATA answer is kept (RFC 2308: the SOA
    /// record's TTL and MINIMUM, the smaller); 0 stores none.
    pub max_negative_ttl: u32,
    /// How long a SERVFAIL or REFUSED answer is kept; 0 stores none.
    pub servfail_ttl: u32,
    /// The TTL of an expired answer served when the pool cannot answer
    /// (RFC 8767 serve-stale); 0 serves nothing stale.
    pub stale_ttl: u32,
    /// How long after its expiry an answer may still be served stale.
    pub max_stale: u32,
    /// Whether answers to queries carrying an EDNS Client Subnet option are
    /// cached (the option then part of the key); off: never cached.
    pub ecs: bool,
}

impl CacheConfig {
    /// Most entries a cache may be given.
    pub const MAX_ENTRIES: usize = 10_000_000;
    /// Largest `max_ttl`, `max_stale`: a week.
    pub const MAX_TTL: u32 = 604_800;
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_ttl: 86_400,
            min_ttl: 0,
            max_negative_ttl: 3_600,
            servfail_ttl: 0,
            stale_ttl: 0,
            max_stale: 86_400,
            ecs: false,
        }
    }
}

impl Validator {
    pub(super) fn cache(&mut self, raw: &RawCache) -> CacheConfig {
        let d = CacheConfig::default();
        let mut secs =
            |what: &str, v: &Option<toml::Spanned<u64>>, min: u32, max: u32, def: u32| {
                let Some(v) = v else { return def };
                match u32::try_from(*v.get_ref()) {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        self.err(
                            v.span(),
                            format!(
                                "cache {what} must be between {min} and {max}, not {}",
                                v.get_ref()
                            ),
                        );
                        def
                    }
                }
            };
        let max_ttl = secs("max_ttl", &raw.max_ttl, 1, CacheConfig::MAX_TTL, d.max_ttl);
        let min_ttl = secs("min_ttl", &raw.min_ttl, 0, max_ttl, d.min_ttl);
        let max_negative_ttl = secs(
            "max_negative_ttl",
            &raw.max_negative_ttl,
            0,
            CacheConfig::MAX_TTL,
            d.max_negative_ttl,
        );
        let servfail_ttl = secs("servfail_ttl", &raw.servfail_ttl, 0, 3_600, d.servfail_ttl);
        let stale_ttl = secs("stale_ttl", &raw.stale_ttl, 0, 86_400, d.stale_ttl);
        let max_stale = secs(
            "max_stale",
            &raw.max_stale,
            1,
            CacheConfig::MAX_TTL,
            d.max_stale,
        );
        let max_entries = raw.max_entries.as_ref().map_or(d.max_entries, |v| {
            self.between("cache max_entries", v, CacheConfig::MAX_ENTRIES)
        });
        CacheConfig {
            max_entries,
            max_ttl,
            min_ttl,
            max_negative_ttl,
            servfail_ttl,
            stale_ttl,
            max_stale,
            ecs: raw.ecs.as_ref().is_some_and(|v| *v.get_ref()),
        }
    }
}
