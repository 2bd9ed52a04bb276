//! The sans-IO part of DoH: request decoding (path, query string, content
//! type, body), the client address behind a trusted proxy, the answer's
//! `max-age`, and per-client rate limiting. Pure functions over bytes and
//! strings, unit-tested and fuzzed (`fuzz/fuzz_targets/doh_request.rs`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use hyper::StatusCode;
use ipnet::IpNet;
use tokio::time::Instant;

use crate::wire::dns::{HEADER_LEN, MAX_MESSAGE};

/// The media type of DNS messages (RFC 8484 §6).
pub const DNS_MESSAGE: &str = "application/dns-message";

/// Largest request body (a DNS message).
pub const MAX_BODY: usize = MAX_MESSAGE;

/// Why a DoH request is refused before reaching a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DohError {
    /// Bad base64, no `dns` parameter, or not a DNS query: 400.
    BadRequest,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// The body did not arrive in time: 408.
    Timeout,
    /// A body (or `dns` parameter) over 65 535 bytes: 413.
    PayloadTooLarge,
    /// A POST with another content type: 415.
    UnsupportedMediaType,
    /// Over the client's request rate: 429.
    TooManyRequests,
    /// No backend answered and the pool drops: 503.
    Unavailable,
}

impl DohError {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What the request line and headers say, before any body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// A GET whose `dns` parameter decoded to this message.
    Get(Vec<u8>),
    /// A POST whose body is to be read and passed to [`decode_body`].
    Post,
}

/// The base64url engine of RFC 8484 §4.1: URL alphabet, padding optional
/// (clients must not send it; a padded value is still accepted).
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Encodes a DNS message for `GET ?dns=` (base64url without padding).
pub fn encode_get_param(msg: &[u8]) -> String {
    B64.encode(msg)
}

/// Checks a request's method, target (`path?query`) and headers against the
/// listener's `path`: 404 for another path, 405 for another method, and for
/// a GET the `dns` parameter decoded (400 when missing or not base64url,
/// 413 when over 65 535 bytes); for a POST 415 unless the content type is
/// `application/dns-message`, 413 when the declared length is over 65 535.
pub fn check_head(
    method: &str,
    target: &str,
    content_type: Option<&[u8]>,
    content_length: Option<u64>,
    path: &str,
) -> Result<Head, DohError> {
    let (req_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if req_path != path {
        return Err(DohError::NotFound);
    }
    match method {
        "GET" => {
            let value = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|kv| kv.strip_prefix("dns="))
                .ok_or(DohError::BadRequest)?;
            // 65 535 bytes encode to at most 87 380 characters.
            if value.len() > MAX_BODY.div_ceil(3) * 4 {
                return Err(DohError::PayloadTooLarge);
            }
            let msg = B64.decode(value).map_err(|_| DohError::BadRequest)?;
            check_message(msg).map(Head::Get)
        }
        "POST" => {
            let ct = content_type.ok_or(DohError::UnsupportedMediaType)?;
            let media = ct.split(|&b| b == b';').next().unwrap_or_default();
            if !media
                .trim_ascii()
                .eq_ignore_ascii_case(DNS_MESSAGE.as_bytes())
            {
                return Err(DohError::UnsupportedMediaType);
            }
            if content_length.is_some_and(|n| n > MAX_BODY as u64) {
                return Err(DohError::PayloadTooLarge);
            }
            Ok(Head::Post)
        }
        _ => Err(DohError::MethodNotAllowed),
    }
}

fn check_message(msg: Vec<u8>) -> Result<Vec<u8>, DohError> {
    if msg.len() > MAX_BODY {
        Err(DohError::PayloadTooLarge)
    } else if msg.len() < HEADER_LEN {
        Err(DohError::BadRequest)
    } else {
        Ok(msg)
    }
}

/// Checks a POST body: at most 65 535 bytes (413), at least a DNS header (400).
pub fn decode_body(body: &[u8]) -> Result<Vec<u8>, DohError> {
    check_message(body.to_vec())
}

/// Decodes a whole request (as the fuzz target drives it): [`check_head`],
/// then for a POST [`decode_body`]. Returns the DNS query to validate and
/// forward.
pub fn decode_request(
    method: &str,
    target: &str,
    content_type: Option<&[u8]>,
    body: &[u8],
    path: &str,
) -> Result<Vec<u8>, DohError> {
    let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
    match check_head(method, target, content_type, Some(len), path)? {
        Head::Get(msg) => Ok(msg),
        Head::Post => decode_body(body),
    }
}

/// The client of a request: the peer, or — when the peer is a trusted proxy
/// — the rightmost `X-Forwarded-For` address that is not itself a trusted
/// proxy (port 0). Unparsable entries end the walk.
pub fn client_addr(peer: SocketAddr, xff: &[&str], trusted: &[IpNet]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    let mut client = peer;
    for entry in xff.iter().rev().flat_map(|h| h.rsplit(',')) {
        let Some(ip) = parse_forwarded_ip(entry.trim()) else {
            break;
        };
        client = SocketAddr::new(ip.to_canonical(), 0);
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The `max-age` of an answer: the smallest TTL of its records (the SOA's
/// `minimum` too for a negative answer), 0 when it has none or does not
/// parse (an SOA without its data included). OPT, SIG(0) and TSIG are not
/// data: an OPT record's TTL field holds flags, and TSIG's is always 0; they
/// are skipped. A TTL with the top bit set counts as 0 (RFC 2181 §8).
///
/// Read record by record with hickory's decoder, without decoding record
/// data: this runs for every DoH answer.
pub fn min_ttl(answer: &[u8]) -> u32 {
    smallest_ttl(answer).unwrap_or(0)
}

fn smallest_ttl(answer: &[u8]) -> Option<u32> {
    use hickory_proto::op::{Header, Query};
    use hickory_proto::rr::{Name, RecordType};
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    /// SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM end every SOA's data.
    const SOA_TAIL: usize = 20;
    // RFC 2181 §8: a TTL with the top bit set counts as 0.
    let ttl_of = |t: u32| if t > i32::MAX as u32 { 0 } else { t };
    let mut dec = BinDecoder::new(answer);
    let header = Header::read(&mut dec).ok()?;
    for _ in 0..header.query_count() {
        Query::read(&mut dec).ok()?;
    }
    let records = u32::from(header.answer_count())
        + u32::from(header.name_server_count())
        + u32::from(header.additional_count());
    let mut min: Option<u32> = None;
    for _ in 0..records {
        Name::read(&mut dec).ok()?;
        let rtype = RecordType::from(dec.read_u16().ok()?.unverified());
        dec.read_u16().ok()?;
        let ttl = ttl_of(dec.read_u32().ok()?.unverified());
        let len = dec.read_u16().ok()?.unverified();
        let data = dec.read_slice(usize::from(len)).ok()?.unverified();
        let ttl = match rtype {
            RecordType::OPT | RecordType::SIG | RecordType::TSIG => continue,
            RecordType::SOA => {
                if data.len() < SOA_TAIL {
                    return None;
                }
                let minimum = data.get(data.len() - 4..)?;
                ttl.min(ttl_of(u32::from_be_bytes(minimum.try_into().ok()?)))
            }
            _ => ttl,
        };
        min = Some(min.map_or(ttl, |m| m.min(ttl)));
    }
    min
}

/// Per-client token buckets for `max_requests_per_second`.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before idle ones are forgotten.
const MAX_BUCKETS: usize = 16_384;

impl RateLimiter {
    /// Takes a token for `ip` at `now` when `rate` per second (bursts of
    /// `rate`) allows it.
    pub fn allow(&self, ip: IpAddr, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate.max(1));
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_BUCKETS {
            // A bucket refilled to full is the same as no bucket.
            map.retain(|_, b| (now - b.at).as_secs_f64() * rate + b.tokens < rate);
        }
        let b = map.entry(ip.to_canonical()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
