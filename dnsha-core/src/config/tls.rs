//! Validation of the DoT and DoH listener keys and of the backend TLS keys
//! (issue 5). The files themselves are read by `dnsha_proxy::tls`, which
//! reports its errors at the spans kept in [`TlsFiles`] and [`BackendTls`].

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use toml::Spanned;

use super::{
    raw, BackendTls, ListenerConfig, Protocol, TlsFiles, Transport, Validator, DEFAULT_DOH_PATH,
    UNSPEC,
};

impl Validator {
    /// The DoT/DoH settings of a listener (other fields at their defaults),
    /// with an error for every key set on a protocol it does not apply to.
    pub(super) fn tls_listener(&mut self, l: &raw::RawListener) -> ListenerConfig {
        let mut out = ListenerConfig::new("", l.protocol, UNSPEC, "");
        self.tls_keys_out_of_place(l);
        if !matches!(l.protocol, Protocol::Dot | Protocol::Doh) && !l.protocol.is_quic() {
            return out;
        }
        if let Some(files) = self.tls_listener_files(l) {
            out.tls = Some(files);
        }
        self.tls_listener_limits(l, &mut out);
        if let Some(r) = &l.quic_retry {
            out.quic_retry = *r.get_ref();
        }
        out
    }

    /// An error for every DoT/DoH/QUIC key set on a listener whose protocol
    /// does not use it.
    fn tls_keys_out_of_place(&mut self, l: &raw::RawListener) {
        let p = l.protocol;
        let proto = p.as_str();
        let doh = p == Protocol::Doh;
        let http = p.is_http();
        // Every protocol with a certificate has handshakes to bound.
        let certified = matches!(p, Protocol::Dot | Protocol::Doh) || p.is_quic();
        let span = |s: Option<&Spanned<u64>>| s.map(Spanned::span);
        let checks = [
            ("tls", l.tls.as_ref().map(Spanned::span), doh),
            ("path", l.path.as_ref().map(Spanned::span), http),
            (
                "trusted_proxies",
                l.trusted_proxies
                    .as_ref()
                    .map(|v| v.first().map_or(0..0, Spanned::span)),
                doh,
            ),
            ("max_streams", span(l.max_streams.as_ref()), http),
            ("max_header_bytes", span(l.max_header_bytes.as_ref()), http),
            (
                "max_requests_per_second",
                span(l.max_requests_per_second.as_ref()),
                http,
            ),
            (
                "tls_cert",
                l.tls_cert.as_ref().map(Spanned::span),
                certified,
            ),
            ("tls_key", l.tls_key.as_ref().map(Spanned::span), certified),
            (
                "handshake_timeout_ms",
                span(l.handshake_timeout_ms.as_ref()),
                certified,
            ),
            (
                "max_handshakes_per_client",
                span(l.max_handshakes_per_client.as_ref()),
                certified,
            ),
            (
                "max_handshakes_per_second",
                span(l.max_handshakes_per_second.as_ref()),
                certified,
            ),
            (
                "quic_retry",
                l.quic_retry.as_ref().map(Spanned::span),
                p.is_quic(),
            ),
        ];
        for (key, at, allowed) in checks {
            if let (Some(at), false) = (at, allowed) {
                let for_what = match key {
                    "tls_cert"
                    | "tls_key"
                    | "handshake_timeout_ms"
                    | "max_handshakes_per_client"
                    | "max_handshakes_per_second" => "dot, doh, doq and doh3",
                    "quic_retry" => "doq and doh3",
                    "path" | "max_streams" | "max_header_bytes" | "max_requests_per_second" => {
                        "doh and doh3"
                    }
                    _ => "doh",
                };
                self.err(
                    at,
                    format!("`{key}` applies to {for_what} listeners only, not {proto}"),
                );
            }
        }
    }

    /// A `tls_cert` or `tls_key` path and where it is written; an empty
    /// one is an error.
    fn tls_path(
        &mut self,
        s: &Spanned<String>,
        key: &str,
    ) -> Option<(PathBuf, std::ops::Range<usize>)> {
        let t = s.get_ref().trim();
        if t.is_empty() {
            self.err(s.span(), format!("{key} is empty"));
            None
        } else {
            Some((PathBuf::from(t), s.span()))
        }
    }

    /// The certificate and key of the admin endpoint: both or neither.
    pub(super) fn admin_tls(&mut self, a: &raw::RawAdmin) -> Option<TlsFiles> {
        match (&a.tls_cert, &a.tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let (cert, key) = (self.tls_path(c, "tls_cert"), self.tls_path(k, "tls_key"));
                let ((cert, cs), (key, ks)) = (cert?, key?);
                Some(TlsFiles {
                    cert,
                    key,
                    cert_span: Some(cs),
                    key_span: Some(ks),
                })
            }
            (Some(c), None) => {
                self.err(c.span(), "[admin] tls_cert needs tls_key");
                None
            }
            (None, Some(k)) => {
                self.err(k.span(), "[admin] tls_key needs tls_cert");
                None
            }
        }
    }

    /// The certificate and key of a DoT/DoH listener (none with DoH's
    /// `tls = false`, where setting them is an error).
    fn tls_listener_files(&mut self, l: &raw::RawListener) -> Option<TlsFiles> {
        let doh = l.protocol == Protocol::Doh;
        let proto = l.protocol.as_str();
        let wants_tls = !doh || l.tls.as_ref().is_none_or(|t| *t.get_ref());
        let cert = l
            .tls_cert
            .as_ref()
            .and_then(|s| self.tls_path(s, "tls_cert"));
        let key = l.tls_key.as_ref().and_then(|s| self.tls_path(s, "tls_key"));
        if wants_tls {
            match (cert, key) {
                (Some((cert, cs)), Some((key, ks))) => {
                    return Some(TlsFiles {
                        cert,
                        key,
                        cert_span: Some(cs),
                        key_span: Some(ks),
                    });
                }
                (c, k) => {
                    let missing = match (
                        c.is_none() && l.tls_cert.is_none(),
                        k.is_none() && l.tls_key.is_none(),
                    ) {
                        (true, true) => "tls_cert and tls_key",
                        (true, false) => "tls_cert",
                        (false, true) => "tls_key",
                        (false, false) => "",
                    };
                    if !missing.is_empty() {
                        self.err(
                            l.name.span(),
                            format!(
                                "{proto} listener `{}` needs {missing}{}",
                                l.name.get_ref().trim(),
                                if doh { " (or tls = false)" } else { "" }
                            ),
                        );
                    }
                }
            }
        } else {
            for s in [&l.tls_cert, &l.tls_key].into_iter().flatten() {
                self.err(s.span(), "certificate files are not used with tls = false");
            }
        }
        None
    }

    /// Handshake, path, proxy and HTTP limits of a DoT, DoH, DoQ or DoH3
    /// listener (the keys out of place were reported already).
    fn tls_listener_limits(&mut self, l: &raw::RawListener, out: &mut ListenerConfig) {
        if let Some(t) = &l.handshake_timeout_ms {
            out.handshake_timeout_ms = self.duration_ms("handshake_timeout_ms", t);
        }
        if let Some(t) = &l.max_handshakes_per_second {
            out.max_handshakes_per_second = u32::try_from(*t.get_ref()).unwrap_or(u32::MAX);
        }
        if let Some(t) = &l.max_handshakes_per_client {
            let n = self.positive("max_handshakes_per_client", t);
            out.max_handshakes_per_client = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(p) = &l.path {
            let t = p.get_ref().trim();
            if !t.starts_with('/') || t.contains(['?', '#', ' ']) {
                self.err(
                    p.span(),
                    format!("path `{t}` must start with / and have no query"),
                );
            }
            out.path = t.to_string();
        }
        if let Some(list) = &l.trusted_proxies {
            out.trusted_proxies = list
                .iter()
                .filter_map(|s| self.cidr_for("trusted_proxies", s))
                .collect();
        }
        if let Some(n) = &l.max_streams {
            let n = self.positive("max_streams", n);
            out.max_streams = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(n) = &l.max_header_bytes {
            let v = *n.get_ref();
            if !(1024..=1 << 20).contains(&v) {
                self.err(
                    n.span(),
                    "max_header_bytes must be between 1024 and 1048576",
                );
            }
            out.max_header_bytes = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(n) = &l.max_requests_per_second {
            out.max_requests_per_second = u32::try_from(*n.get_ref()).unwrap_or(u32::MAX);
        }
    }

    /// `doh_path` of a backend: only with `transport = "doh"`, an absolute
    /// path with no query; the default `/dns-query` otherwise.
    pub(super) fn backend_doh_path(&mut self, b: &raw::RawBackend) -> String {
        let Some(p) = &b.doh_path else {
            return DEFAULT_DOH_PATH.to_string();
        };
        let t = p.get_ref().trim();
        if *b.transport.get_ref() != Transport::Doh {
            self.err(
                p.span(),
                "`doh_path` applies to transport = \"doh\" backends only",
            );
        } else if !t.starts_with('/') || t.contains(['?', '#', ' ']) {
            self.err(
                p.span(),
                format!("doh_path `{t}` must start with / and have no query"),
            );
        }
        t.to_string()
    }

    /// `tls_verify`, `tls_name`, `tls_ca` of a backend: only with a TLS
    /// transport (`dot`, `doh`, `doq`).
    pub(super) fn backend_tls(&mut self, b: &raw::RawBackend) -> Option<BackendTls> {
        if !b.transport.get_ref().is_tls() {
            let spans = [
                b.tls_verify.as_ref().map(|s| ("tls_verify", s.span())),
                b.tls_name.as_ref().map(|s| ("tls_name", s.span())),
                b.tls_ca.as_ref().map(|s| ("tls_ca", s.span())),
            ];
            for (key, span) in spans.into_iter().flatten() {
                self.err(
                    span,
                    format!(
                        "`{key}` applies to transport = \"dot\", \"doh\" or \"doq\" backends only"
                    ),
                );
            }
            return None;
        }
        let name = b.tls_name.as_ref().and_then(|n| {
            let t = n.get_ref().trim().trim_end_matches('.');
            let valid = !t.is_empty()
                && t.len() <= 253
                && (t.parse::<IpAddr>().is_ok()
                    || t.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    }));
            if valid {
                Some(t.to_string())
            } else {
                self.err(
                    n.span(),
                    format!("invalid tls_name `{t}` (expected a host name or IP)"),
                );
                None
            }
        });
        let (ca, ca_span) = match &b.tls_ca {
            Some(s) if s.get_ref().trim().is_empty() => {
                self.err(s.span(), "tls_ca is empty");
                (None, None)
            }
            Some(s) => (Some(PathBuf::from(s.get_ref().trim())), Some(s.span())),
            None => (None, None),
        };
        Some(BackendTls {
            verify: b.tls_verify.as_ref().is_none_or(|v| *v.get_ref()),
            name,
            ca,
            ca_span,
        })
    }

    fn cidr_for(&mut self, key: &str, s: &Spanned<String>) -> Option<IpNet> {
        let t = s.get_ref().trim();
        let parsed = t
            .parse::<IpNet>()
            .ok()
            .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from));
        if parsed.is_none() {
            self.err(
                s.span(),
                format!("invalid network `{t}` in {key} (expected CIDR or IP)"),
            );
        }
        parsed
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;

/// Sets [`ListenerConfig::alt_svc`] on every DoH listener over TLS that
/// shares its certificate file and address with a `doh3` listener (the same
/// name served over HTTP/3: RFC 9114 §3.1.1 lets the client switch), to
/// `h3=":PORT"; ma=86400`. An unspecified address on either side matches any.
pub(super) fn with_alt_svc(mut listeners: Vec<ListenerConfig>) -> Vec<ListenerConfig> {
    let h3: Vec<(PathBuf, std::net::SocketAddr)> = listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Doh3)
        .filter_map(|l| l.tls.as_ref().map(|t| (t.cert.clone(), l.listen)))
        .collect();
    for l in listeners.iter_mut().filter(|l| l.protocol == Protocol::Doh) {
        let Some(tls) = &l.tls else { continue };
        let ip = l.listen.ip();
        let port = h3.iter().find_map(|(cert, addr)| {
            let same_ip = ip == addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified();
            (*cert == tls.cert && same_ip).then_some(addr.port())
        });
        l.alt_svc = port.map(|p| format!("h3=\":{p}\"; ma=86400"));
    }
    listeners
}
