//! `[pool.health]` and `[pool.backend.health]`: what the health checker of
//! `dnsha-health` runs against each backend.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use toml::Spanned;

use super::raw::{RawCommand, RawHealth};
use super::{BackendConfig, Transport, Validator};

/// The kind of active check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CheckKind {
    /// A DNS query over UDP, TCP or TLS; the answer's ID, question and RCODE
    /// are checked.
    #[default]
    Dns,
    /// A TCP connect.
    Tcp,
    /// A UDP datagram that must be answered (ICMP refusal or silence is down).
    Udp,
    /// A TLS handshake.
    Tls,
    /// A DNS query over HTTPS (RFC 8484 POST); HTTP 200 and a valid answer.
    Doh,
    /// A command run with the backend's address in its environment; exit 0 is up.
    Exec,
    /// No active check: only live traffic marks the backend down.
    None,
}

impl CheckKind {
    /// Every kind, in documentation order.
    pub const ALL: [Self; 7] = [
        Self::Dns,
        Self::Tcp,
        Self::Udp,
        Self::Tls,
        Self::Doh,
        Self::Exec,
        Self::None,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Tls => "tls",
            Self::Doh => "doh",
            Self::Exec => "exec",
            Self::None => "none",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a `dns` check reaches the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CheckTransport {
    /// One datagram each way.
    #[default]
    Udp,
    /// A new TCP connection per probe, 2-byte length prefix (RFC 7766).
    Tcp,
    /// A new TLS connection per probe (RFC 7858): ALPN `dot`, 2-byte length
    /// prefix.
    Dot,
    /// A new HTTP/2 over TLS connection per probe (RFC 8484): ALPN `h2`,
    /// POST of `application/dns-message` to the backend's `doh_path`.
    Doh,
    /// A new QUIC connection per probe (RFC 9250): ALPN `doq`, one stream,
    /// message ID 0.
    Doq,
}

impl CheckTransport {
    /// Every transport, in documentation order.
    pub const ALL: [Self; 5] = [Self::Udp, Self::Tcp, Self::Dot, Self::Doh, Self::Doq];

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

    /// The transport that reaches a backend the way the balancer does.
    pub fn of_backend(transport: Transport) -> Self {
        match transport {
            Transport::Udp => Self::Udp,
            Transport::Tcp => Self::Tcp,
            Transport::Dot => Self::Dot,
            Transport::Doh => Self::Doh,
            Transport::Doq => Self::Doq,
        }
    }

    /// True for the transports that speak TLS and take `tls_name`.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Dot | Self::Doh | Self::Doq)
    }
}

impl fmt::Display for CheckTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A DNS RR type by number, parsed from its mnemonic (`SOA`, `AAAA`…) or
/// `TYPEnnn` (RFC 3597).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryType(pub u16);

const QUERY_TYPES: [(&str, u16); 20] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("HINFO", 13),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("NAPTR", 35),
    ("DS", 43),
    ("RRSIG", 46),
    ("NSEC", 47),
    ("DNSKEY", 48),
    ("TLSA", 52),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("ANY", 255),
    ("CAA", 257),
];

impl QueryType {
    /// `SOA`, the default of a `dns` check.
    pub const SOA: Self = Self(6);

    /// Parses a mnemonic (case-insensitive) or `TYPEnnn`.
    pub fn parse(s: &str) -> Option<Self> {
        let up = s.trim().to_ascii_uppercase();
        if let Some(&(_, n)) = QUERY_TYPES.iter().find(|(name, _)| *name == up) {
            return Some(Self(n));
        }
        up.strip_prefix("TYPE")
            .and_then(|n| n.parse::<u16>().ok())
            .map(Self)
    }
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match QUERY_TYPES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

/// The label template replaced by a fresh random label in every probe.
pub const RANDOM_LABEL: &str = "{random}";

/// The effective health check settings of one backend (the pool's
/// `[pool.health]`, overridden key by key by `[pool.backend.health]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// The kind of active check.
    pub check: CheckKind,
    /// Time between the start of two probes while the backend passes.
    pub interval_ms: u64,
    /// A probe not finished within this time fails as a timeout.
    pub timeout_ms: u64,
    /// Consecutive good probes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failed probes that take an up backend down (keepalived:
    /// `retry` + 1).
    pub fall: u32,
    /// Time before the next probe after a failed one (keepalived's
    /// `delay_before_retry`); `interval_ms` when unset.
    pub retry_interval_ms: Option<u64>,
    /// `dns`/`doh`: name to query; [`RANDOM_LABEL`] is replaced by a random label.
    pub query_name: String,
    /// `dns`/`doh`: type to query.
    pub query_type: QueryType,
    /// `dns`/`doh`: only NOERROR is healthy (otherwise anything but SERVFAIL is).
    pub must_resolve: bool,
    /// `dns`/`doh`: the answer must contain this address (A or AAAA).
    pub expect_address: Option<IpAddr>,
    /// `dns`/`doh`: set the CD (checking disabled) bit.
    pub cd_flag: bool,
    /// `dns`: UDP, TCP or DoT; `None` (the key not set) means the
    /// backend's own transport, see [`HealthConfig::for_backend`].
    pub transport: Option<CheckTransport>,
    /// `udp`: the datagram to send; a DNS query for `. SOA` when unset.
    pub payload: Option<Vec<u8>>,
    /// `tls`/`doh`/`dns` over DoT: server name sent as SNI and verified; the
    /// backend IP when unset.
    pub tls_name: Option<String>,
    /// `tls`/`doh`/`dns` over DoT: verify the certificate chain and name.
    pub tls_verify: bool,
    /// `tls`/`doh`: PEM file of trusted CA certificates (system roots when
    /// unset). `dns` over DoT: CA certificates trusted besides the system's,
    /// as the backend's own `tls_ca`.
    pub tls_ca: Option<PathBuf>,
    /// `doh`: the HTTP path.
    pub path: String,
    /// `exec`: program and arguments (a string is run by `/bin/sh -c`).
    pub command: Vec<String>,
    /// Consecutive bad live outcomes (timeouts, refusals, SERVFAIL) that make
    /// the backend suspect and probe it at once; 0 disables.
    pub passive_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check: CheckKind::Dns,
            interval_ms: 1000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
            retry_interval_ms: None,
            query_name: ".".into(),
            query_type: QueryType::SOA,
            must_resolve: false,
            expect_address: None,
            cd_flag: false,
            transport: None,
            payload: None,
            tls_name: None,
            tls_verify: true,
            tls_ca: None,
            path: "/dns-query".into(),
            command: Vec::new(),
            passive_threshold: 3,
        }
    }
}

impl HealthConfig {
    /// Whether an active check runs (`check` is not `none`).
    pub fn is_active(&self) -> bool {
        self.check != CheckKind::None
    }

    /// Time before the next probe after a failed one.
    pub fn retry_interval(&self) -> u64 {
        self.retry_interval_ms.unwrap_or(self.interval_ms)
    }

    /// The check as it runs against `backend`. A `dns` check whose
    /// `transport` is not set uses the backend's: `udp`, `tcp`, `dot`, `doh`
    /// or `doq`. Over DoT, DoH and DoQ the backend's `tls_name` and `tls_ca`
    /// apply unless the health table sets its own, and the certificate is
    /// verified unless either table says `tls_verify = false`; over DoH the
    /// path is the backend's `doh_path`.
    pub fn for_backend(&self, backend: &BackendConfig) -> Self {
        let mut out = self.clone();
        if self.check != CheckKind::Dns {
            return out;
        }
        let transport = self
            .transport
            .unwrap_or_else(|| CheckTransport::of_backend(backend.transport));
        out.transport = Some(transport);
        if let (true, Some(tls)) = (transport.is_tls(), &backend.tls) {
            out.tls_name = out.tls_name.or_else(|| tls.name.clone());
            out.tls_ca = out.tls_ca.or_else(|| tls.ca.clone());
            out.tls_verify = out.tls_verify && tls.verify;
        }
        if transport == CheckTransport::Doh && backend.transport == Transport::Doh {
            out.path.clone_from(&backend.doh_path);
        }
        out
    }

    /// Worst-case time from a backend going silent to its removal by active
    /// checks alone: a probe may just have passed (one interval), then
    /// `fall` probes time out, each starting when the previous one ended or
    /// its retry interval passed, whichever is later.
    pub fn worst_case_detection_ms(&self) -> u64 {
        let retries = u64::from(self.fall.saturating_sub(1));
        let gap = self.retry_interval().max(self.timeout_ms);
        self.interval_ms
            .saturating_add(retries.saturating_mul(gap))
            .saturating_add(self.timeout_ms)
    }
}

impl Validator {
    /// Validates a merged `[pool.health]` table.
    pub(super) fn health(&mut self, r: &RawHealth) -> HealthConfig {
        let d = HealthConfig::default();
        let check = self.health_check_kind(r);
        let interval_ms = r
            .interval_ms
            .as_ref()
            .map_or(d.interval_ms, |v| self.duration_ms("interval_ms", v));
        let timeout_ms = r
            .timeout_ms
            .as_ref()
            .map_or(d.timeout_ms, |v| self.duration_ms("timeout_ms", v));
        let rise = r
            .rise
            .as_ref()
            .map_or(d.rise, |v| self.at_least_one("rise", v));
        let fall = self.health_fall(r, d.fall);
        let retry_interval_ms = self.health_delay_before_retry(r);
        let query_name = self.health_query_name(r, &d.query_name);
        let query_type = self.health_query_type(r, d.query_type);
        let expect_address = self.health_expect_address(r);
        self.query_keys_only_for_queries(r, check);
        let transport = self.health_transport(r, check);
        let payload = self.health_payload(r, check);
        let tls_name = self.health_tls_name(r, check, transport);
        let tls_ca = r.tls_ca.as_ref().map(|s| {
            let t = s.get_ref().trim();
            if t.is_empty() {
                self.err(s.span(), "tls_ca is empty");
            } else {
                self.files.push(super::FileRef {
                    role: super::FileRole::HealthTlsCa,
                    path: PathBuf::from(t),
                    span: s.span(),
                });
            }
            PathBuf::from(t)
        });
        let path = self.health_path(r, check, &d.path);
        let command = self.health_command(r, check);
        HealthConfig {
            check,
            interval_ms,
            timeout_ms,
            rise,
            fall,
            retry_interval_ms,
            query_name,
            query_type,
            must_resolve: r
                .must_resolve
                .as_ref()
                .map_or(d.must_resolve, |v| *v.get_ref()),
            expect_address,
            cd_flag: r.cd_flag.as_ref().map_or(d.cd_flag, |v| *v.get_ref()),
            transport,
            payload,
            tls_name,
            tls_verify: r.tls_verify.as_ref().map_or(d.tls_verify, |v| *v.get_ref()),
            tls_ca,
            path,
            command,
            passive_threshold: r
                .passive_threshold
                .as_ref()
                .map_or(d.passive_threshold, |v| *v.get_ref()),
        }
    }

    /// `check`, `dns` when absent (`none`, with an error, when unknown).
    fn health_check_kind(&mut self, r: &RawHealth) -> CheckKind {
        match &r.check {
            None => CheckKind::Dns,
            Some(s) => CheckKind::parse(s.get_ref().trim()).unwrap_or_else(|| {
                let kinds: Vec<&str> = CheckKind::ALL.iter().map(|k| k.as_str()).collect();
                self.err(
                    s.span(),
                    format!(
                        "unknown check kind `{}` (expected one of {})",
                        s.get_ref(),
                        kinds.join(", ")
                    ),
                );
                CheckKind::None
            }),
        }
    }

    /// `fall`, or keepalived's `retry` (`fall - 1`), not both.
    fn health_fall(&mut self, r: &RawHealth, default: u32) -> u32 {
        match (&r.fall, &r.retry) {
            (Some(f), Some(retry)) => {
                self.err(
                    retry.span(),
                    "set either fall or retry (keepalived's spelling of fall - 1), not both",
                );
                *f.get_ref()
            }
            (Some(f), None) => self.at_least_one("fall", f),
            (None, Some(retry)) => retry.get_ref().saturating_add(1),
            (None, None) => default,
        }
    }

    /// `delay_before_retry` (seconds) as whole milliseconds.
    fn health_delay_before_retry(&mut self, r: &RawHealth) -> Option<u64> {
        r.delay_before_retry.as_ref().and_then(|v| {
            let secs = *v.get_ref();
            if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
                // Whole milliseconds; the bound above keeps the cast exact.
                Some(((secs * 1000.0).round() as u64).max(1))
            } else {
                self.err(
                    v.span(),
                    "delay_before_retry must be a number of seconds greater than 0",
                );
                None
            }
        })
    }

    /// `query_name`, checked as the probe will send it.
    fn health_query_name(&mut self, r: &RawHealth, default: &str) -> String {
        match &r.query_name {
            None => default.to_string(),
            Some(s) => {
                let t = s.get_ref().trim();
                if let Err(why) = check_query_name(t) {
                    self.err(s.span(), format!("invalid query_name `{t}`: {why}"));
                }
                t.to_string()
            }
        }
    }

    /// `query_type`: a mnemonic or `TYPEnn`.
    fn health_query_type(&mut self, r: &RawHealth, default: QueryType) -> QueryType {
        match &r.query_type {
            None => default,
            Some(s) => QueryType::parse(s.get_ref()).unwrap_or_else(|| {
                self.err(
                    s.span(),
                    format!(
                        "unknown query_type `{}` (expected a type such as SOA, A, AAAA or TYPE65)",
                        s.get_ref()
                    ),
                );
                default
            }),
        }
    }

    /// The keys of the DNS query a probe sends (`query_name`, `query_type`,
    /// `must_resolve`, `expect_address`, `cd_flag`) have no effect on a
    /// check that sends none: an error, not a silent no-op.
    fn query_keys_only_for_queries(&mut self, r: &RawHealth, check: CheckKind) {
        let unknown_kind = r
            .check
            .as_ref()
            .is_some_and(|c| CheckKind::parse(c.get_ref().trim()).is_none());
        if unknown_kind || matches!(check, CheckKind::Dns | CheckKind::Doh) {
            return;
        }
        let spans = [
            ("query_name", r.query_name.as_ref().map(Spanned::span)),
            ("query_type", r.query_type.as_ref().map(Spanned::span)),
            ("must_resolve", r.must_resolve.as_ref().map(Spanned::span)),
            (
                "expect_address",
                r.expect_address.as_ref().map(Spanned::span),
            ),
            ("cd_flag", r.cd_flag.as_ref().map(Spanned::span)),
        ];
        for (key, span) in spans {
            if let Some(span) = span {
                self.err(
                    span,
                    format!(
                        "{key} is only used by check = \"dns\" or \"doh\" (which send a query), not \"{check}\""
                    ),
                );
            }
        }
    }

    /// `expect_address`: an IPv4 or IPv6 address.
    fn health_expect_address(&mut self, r: &RawHealth) -> Option<IpAddr> {
        r.expect_address.as_ref().and_then(|s| {
            let t = s.get_ref().trim();
            let ip = t.parse::<IpAddr>().ok();
            if ip.is_none() {
                self.err(
                    s.span(),
                    format!("invalid expect_address `{t}` (expected an IPv4 or IPv6 address)"),
                );
            }
            ip
        })
    }

    /// `transport`, only for `check = "dns"`.
    fn health_transport(&mut self, r: &RawHealth, check: CheckKind) -> Option<CheckTransport> {
        r.transport.as_ref().map(|s| {
            if check != CheckKind::Dns {
                self.err(
                    s.span(),
                    format!("transport is only used by check = \"dns\", not \"{check}\""),
                );
            }
            let t = s.get_ref().trim();
            CheckTransport::ALL
                .into_iter()
                .find(|k| k.as_str() == t)
                .unwrap_or_else(|| {
                    self.err(
                        s.span(),
                        format!("unknown transport `{t}` (expected udp, tcp, dot, doh or doq)"),
                    );
                    CheckTransport::Udp
                })
        })
    }

    /// `payload` (hex), only for `check = "udp"`.
    fn health_payload(&mut self, r: &RawHealth, check: CheckKind) -> Option<Vec<u8>> {
        r.payload.as_ref().and_then(|s| {
            if check != CheckKind::Udp {
                self.err(
                    s.span(),
                    format!("payload is only used by check = \"udp\", not \"{check}\""),
                );
            }
            let bytes = decode_hex(s.get_ref());
            match &bytes {
                Some(b) if !b.is_empty() => {}
                _ => self.err(
                    s.span(),
                    "payload must be a non-empty even number of hex digits (as keepalived's UDP_CHECK)",
                ),
            }
            bytes
        })
    }

    /// `tls_name`, for the checks that speak TLS.
    fn health_tls_name(
        &mut self,
        r: &RawHealth,
        check: CheckKind,
        transport: Option<CheckTransport>,
    ) -> Option<String> {
        r.tls_name.as_ref().map(|s| {
            let t = s.get_ref().trim();
            if t.is_empty() || t.contains(char::is_whitespace) {
                self.err(s.span(), format!("invalid tls_name `{t}`"));
            }
            if check == CheckKind::Dns && !transport.is_some_and(CheckTransport::is_tls) {
                self.err(
                    s.span(),
                    "tls_name is only used by check = \"dns\" with transport = \"dot\", \"doh\" or \"doq\" (a TLS backend's own tls_name is used by default)",
                );
            } else if !matches!(check, CheckKind::Tls | CheckKind::Doh | CheckKind::Dns) {
                self.err(
                    s.span(),
                    format!("tls_name is only used by check = \"tls\", \"doh\" or \"dns\", not \"{check}\""),
                );
            }
            t.to_string()
        })
    }

    /// `path`, only for `check = "doh"`.
    fn health_path(&mut self, r: &RawHealth, check: CheckKind, default: &str) -> String {
        match &r.path {
            None => default.to_string(),
            Some(s) => {
                let t = s.get_ref().trim();
                if !t.starts_with('/') || t.contains(char::is_whitespace) {
                    self.err(
                        s.span(),
                        format!("invalid path `{t}` (expected an absolute HTTP path such as /dns-query)"),
                    );
                }
                if check != CheckKind::Doh {
                    self.err(
                        s.span(),
                        format!("path is only used by check = \"doh\", not \"{check}\""),
                    );
                }
                t.to_string()
            }
        }
    }

    /// `command` (a shell line or an argv), needed by and only for
    /// `check = "exec"`.
    fn health_command(&mut self, r: &RawHealth, check: CheckKind) -> Vec<String> {
        let Some(c) = &r.command else {
            if check == CheckKind::Exec {
                let check_span = r.check.as_ref().map_or(0..0, Spanned::span);
                self.err(check_span, "check = \"exec\" needs a command");
            }
            return Vec::new();
        };
        if check != CheckKind::Exec {
            self.err(
                c.span(),
                format!("command is only used by check = \"exec\", not \"{check}\""),
            );
        }
        let argv = match c.get_ref() {
            RawCommand::Shell(line) if !line.trim().is_empty() => {
                vec!["/bin/sh".into(), "-c".into(), line.clone()]
            }
            RawCommand::Argv(argv) if argv.first().is_some_and(|p| !p.is_empty()) => argv.clone(),
            _ => Vec::new(),
        };
        if argv.is_empty() {
            self.err(c.span(), "command is empty");
        }
        argv
    }

    fn at_least_one(&mut self, what: &str, v: &Spanned<u32>) -> u32 {
        if *v.get_ref() == 0 {
            self.err(v.span(), format!("{what} must be at least 1"));
            return 1;
        }
        *v.get_ref()
    }
}

/// Checks a query name as the probe will send it: `.` or dot-separated
/// labels of 1 to 63 bytes, 253 in all, where `{random}` stands for a label.
fn check_query_name(name: &str) -> Result<(), String> {
    if name == "." {
        return Ok(());
    }
    // The random label is 16 characters long.
    let expanded = name.replace(RANDOM_LABEL, "r123456789abcdef");
    if expanded.contains(['{', '}']) {
        return Err(format!("the only template is {RANDOM_LABEL}"));
    }
    let body = expanded.strip_suffix('.').unwrap_or(&expanded);
    if body.is_empty() || body.len() > 253 {
        return Err("a name has 1 to 253 characters".into());
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 bytes"));
        }
        if label.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("label `{label}` contains white space"));
        }
    }
    Ok(())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
