//! Values as the imported formats write them: numbers, durations with
//! units, addresses with or without a port. Each parser returns a located
//! error naming the directive.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use super::syntax::{Loc, Stmt};
use crate::error::Result;

/// `text` as a `T`, or an error at `loc` naming `what`.
pub(crate) fn num<T: FromStr>(loc: &Loc, what: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|_| loc.error(format!("{what}: `{text}` is not a valid number here")))
}

/// Argument `i` of `s` as a `T`.
pub(crate) fn arg_num<T: FromStr>(s: &Stmt, i: usize) -> Result<T> {
    let text = s.arg(i, "value")?;
    num(&s.loc, s.name(), text)
}

/// A number of seconds, fractions allowed, finite and not negative.
pub(crate) fn secs(loc: &Loc, what: &str, text: &str) -> Result<f64> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(loc.error(format!("{what}: `{text}` is not a number of seconds"))),
    }
}

/// Seconds as whole milliseconds.
pub(crate) fn secs_to_ms(v: f64) -> u64 {
    // Bounded by the caller's checks; a huge value saturates.
    (v * 1000.0).round().clamp(0.0, u64::MAX as f64) as u64
}

/// A duration with units (`500ms`, `1s`, `1m30s`, `2h`, `1d`); a bare
/// number is `bare_ms` milliseconds each (nginx: 1000, HAProxy: 1).
pub(crate) fn duration_ms(loc: &Loc, what: &str, text: &str, bare_ms: u64) -> Result<u64> {
    let bad = || loc.error(format!("{what}: `{text}` is not a duration"));
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = text.parse::<u64>() {
        return n.checked_mul(bare_ms).ok_or_else(bad);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| i + digits);
        let unit = match &rest[digits..unit_end] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "us" => {
                // Rounded up to a whole millisecond.
                total = total.saturating_add(n.div_ceil(1000));
                rest = &rest[unit_end..];
                continue;
            }
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(unit));
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// An IP address.
pub(crate) fn ip(loc: &Loc, what: &str, text: &str) -> Result<IpAddr> {
    text.parse()
        .map_err(|_| loc.error(format!("{what}: `{text}` is not an IP address")))
}

/// A port, 1-65535.
pub(crate) fn port(loc: &Loc, what: &str, text: &str) -> Result<u16> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(loc.error(format!("{what}: `{text}` is not a port"))),
    }
}

/// What an address written `HOST:PORT`, `[V6]:PORT`, `PORT` or `HOST`
/// holds: `None` for a host name (which dnsha cannot take: it balances
/// over addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostPort {
    /// An address, with its port when written.
    Addr(IpAddr, Option<u16>),
    /// A port alone (a wildcard address).
    Port(u16),
    /// A name to resolve.
    Name,
}

/// Reads `text` as [`HostPort`]; `*` and an empty host are the IPv4
/// wildcard.
pub(crate) fn host_port(loc: &Loc, what: &str, text: &str) -> Result<HostPort> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(HostPort::Addr(a.ip(), Some(a.port())));
    }
    if let Ok(a) = text.parse::<IpAddr>() {
        return Ok(HostPort::Addr(a, None));
    }
    if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
        return Ok(HostPort::Port(port(loc, what, text)?));
    }
    if let Some(inner) = text.strip_prefix('[') {
        // `[::]` without a port.
        if let Some(a) = inner
            .strip_suffix(']')
            .and_then(|a| a.parse::<IpAddr>().ok())
        {
            return Ok(HostPort::Addr(a, None));
        }
    }
    if let Some((host, p)) = text.rsplit_once(':') {
        let p = port(loc, what, p)?;
        return match host {
            "" | "*" => Ok(HostPort::Port(p)),
            // HAProxy writes `:::53` for the IPv6 wildcard.
            "::" => Ok(HostPort::Addr(IpAddr::from([0u16; 8]), Some(p))),
            h if h.parse::<IpAddr>().is_ok() => Ok(HostPort::Addr(ip(loc, what, h)?, Some(p))),
            h if h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') =>
            {
                Ok(HostPort::Name)
            }
            _ => Err(loc.error(format!("{what}: `{text}` is not an address"))),
        };
    }
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Ok(HostPort::Name);
    }
    Err(loc.error(format!("{what}: `{text}` is not an address")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn loc() -> Loc {
        Loc {
            file: Arc::from("f"),
            line: 1,
        }
    }

    #[test]
    fn durations_in_both_defaults() {
        let d = |t, bare| duration_ms(&loc(), "t", t, bare);
        assert_eq!(d("1s", 1000).unwrap(), 1000);
        assert_eq!(d("3", 1000).unwrap(), 3000);
        assert_eq!(d("2000", 1).unwrap(), 2000);
        assert_eq!(d("1m30s", 1).unwrap(), 90_000);
        assert_eq!(d("500ms", 1).unwrap(), 500);
        assert_eq!(d("1500us", 1).unwrap(), 2);
        assert!(d("1x", 1).is_err());
        assert!(d("s", 1).is_err());
        assert!(d("", 1).is_err());
        assert_eq!(
            d("99999999999999999999d", 1).unwrap_err().to_string(),
            "f:1: t: `99999999999999999999d` is not a duration"
        );
    }

    #[test]
    fn addresses_in_every_spelling() {
        let h = |t| host_port(&loc(), "a", t).unwrap();
        assert_eq!(
            h("192.168.1.1:53"),
            HostPort::Addr([192, 168, 1, 1].into(), Some(53))
        );
        assert_eq!(
            h("[::1]:853"),
            HostPort::Addr("::1".parse().unwrap(), Some(853))
        );
        assert_eq!(h(":::53"), HostPort::Addr("::".parse().unwrap(), Some(53)));
        assert_eq!(h("*:53"), HostPort::Port(53));
        assert_eq!(h(":53"), HostPort::Port(53));
        assert_eq!(h("53"), HostPort::Port(53));
        assert_eq!(
            h("192.168.1.1"),
            HostPort::Addr([192, 168, 1, 1].into(), None)
        );
        assert_eq!(h("dns.example:53"), HostPort::Name);
        assert!(host_port(&loc(), "a", "1.2.3.4:99999").is_err());
        assert!(host_port(&loc(), "a", "unix:/x").is_err());
    }
}
