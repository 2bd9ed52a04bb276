//! DNS over HTTPS, client side (RFC 8484 §4.1 and §4.2), sans-IO: the
//! POST request a `transport = "doh"` backend is asked with, and the checks
//! its response must pass before its body is taken as the answer (status
//! 200, media type `application/dns-message`, a length within a DNS
//! message, the body an answer to the question asked).
//!
//! The HTTP/2 connection itself is `upstream::doh`'s.

use hickory_proto::op::Query;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};

use super::dns::{answer_matches, parse_answer, HEADER_LEN, MAX_MESSAGE};

/// The media type of RFC 8484 §6.
pub const DNS_MESSAGE: &str = "application/dns-message";

/// Why a DoH response is not an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// The status was not 200.
    Status(u16),
    /// The body is not `application/dns-message` (what it says it is).
    ContentType(String),
    /// The body is larger than a DNS message (its `content-length`).
    TooLarge(u64),
    /// The body is shorter than a DNS header.
    TooShort(usize),
    /// The body is not an answer to the question asked.
    NotMatching,
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "HTTP status {s}"),
            Self::ContentType(t) => write!(f, "content-type `{t}`, not {DNS_MESSAGE}"),
            Self::TooLarge(n) => write!(f, "body of {n} bytes, more than a DNS message"),
            Self::TooShort(n) => write!(f, "body of {n} bytes, less than a DNS header"),
            Self::NotMatching => f.write_str("body is not an answer to the query"),
        }
    }
}

/// The POST of `query` to `https://{authority}{path}` (RFC 8484 §4.1):
/// `content-type` and `accept` `application/dns-message`, the length set.
/// The message goes as it is: its ID is the caller's (POST answers are not
/// cached, so ID 0 would gain nothing and lose the check of the ID).
pub fn request(
    authority: &str,
    path: &str,
    query: Bytes,
) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("https://{authority}{path}"))
        .header(CONTENT_TYPE, DNS_MESSAGE)
        .header(ACCEPT, DNS_MESSAGE)
        .header(CONTENT_LENGTH, query.len())
        .body(Full::new(query))
}

/// The `host:port` naming a backend in the request: its TLS name when it
/// has one, its address otherwise (`[v6]:port` for IPv6).
pub fn authority(name: Option<&str>, addr: std::net::SocketAddr) -> String {
    match name {
        Some(n) if n.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{n}]:{}", addr.port()),
        Some(n) => format!("{n}:{}", addr.port()),
        None => addr.to_string(),
    }
}

/// Checks a response's status and headers: 200, a media type of
/// `application/dns-message` (parameters and case aside), and no
/// `content-length` beyond a DNS message.
pub fn check_head(status: StatusCode, headers: &HeaderMap) -> Result<(), AnswerError> {
    if status != StatusCode::OK {
        return Err(AnswerError::Status(status.as_u16()));
    }
    let media = headers
        .get(CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let essence = media.split(|b| *b == b';').next().unwrap_or_default();
    if !essence
        .trim_ascii()
        .eq_ignore_ascii_case(DNS_MESSAGE.as_bytes())
    {
        return Err(AnswerError::ContentType(
            String::from_utf8_lossy(media).into_owned(),
        ));
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) if n > MAX_MESSAGE as u64 => Err(AnswerError::TooLarge(n)),
        _ => Ok(()),
    }
}

/// Checks a response body: at least a header, a response with the ID
/// `id` the query was sent with and the question asked.
pub fn check_body(body: &[u8], id: u16, question: &Query) -> Result<(), AnswerError> {
    if body.len() < HEADER_LEN {
        return Err(AnswerError::TooShort(body.len()));
    }
    match parse_answer(body) {
        Some(info) if info.id == id && answer_matches(&info, question) => Ok(()),
        _ => Err(AnswerError::NotMatching),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{Name, RecordType};

    fn query(id: u16, name: &str) -> (Vec<u8>, Query) {
        let q = Query::query(Name::from_ascii(name).unwrap(), RecordType::A);
        let mut m = Message::new();
        m.set_id(id)
            .set_recursion_desired(true)
            .add_query(q.clone());
        (m.to_vec().unwrap(), q)
    }

    fn answer_to(query: &[u8]) -> Vec<u8> {
        let mut m = Message::from_vec(query).unwrap();
        m.set_message_type(MessageType::Response);
        m.to_vec().unwrap()
    }

    fn head(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_request_is_an_rfc_8484_post() {
        let (q, _) = query(7, "a.test.");
        let r = request("dns.test:443", "/dns-query", Bytes::from(q.clone())).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri().to_string(), "https://dns.test:443/dns-query");
        assert_eq!(r.headers()[CONTENT_TYPE], DNS_MESSAGE);
        assert_eq!(r.headers()[ACCEPT], DNS_MESSAGE);
        assert_eq!(r.headers()[CONTENT_LENGTH], q.len().to_string().as_str());
        let addr = "192.0.2.1:8443".parse().unwrap();
        assert_eq!(authority(Some("dns.test"), addr), "dns.test:8443");
        assert_eq!(authority(None, addr), "192.0.2.1:8443");
        assert_eq!(authority(Some("2001:db8::1"), addr), "[2001:db8::1]:8443");
        let v6 = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(authority(None, v6), "[2001:db8::1]:443");
        assert!(request("dns.test", "no spaces allowed", Bytes::new()).is_err());
    }

    #[test]
    fn status_media_type_and_length_are_checked() {
        let ok = head(&[("content-type", DNS_MESSAGE), ("content-length", "40")]);
        assert_eq!(check_head(StatusCode::OK, &ok), Ok(()));
        let with_params = head(&[("content-type", "Application/DNS-Message; charset=x")]);
        assert_eq!(check_head(StatusCode::OK, &with_params), Ok(()));
        assert_eq!(
            check_head(StatusCode::NOT_FOUND, &ok),
            Err(AnswerError::Status(404))
        );
        assert_eq!(
            check_head(StatusCode::OK, &head(&[("content-type", "text/html")])),
            Err(AnswerError::ContentType("text/html".into()))
        );
        assert_eq!(
            check_head(StatusCode::OK, &HeaderMap::new()),
            Err(AnswerError::ContentType(String::new()))
        );
        let big = head(&[("content-type", DNS_MESSAGE), ("content-length", "65536")]);
        assert_eq!(
            check_head(StatusCode::OK, &big),
            Err(AnswerError::TooLarge(65_536))
        );
    }

    #[test]
    fn the_body_must_answer_the_query() {
        let (q, question) = query(0x4242, "a.test.");
        let a = answer_to(&q);
        assert_eq!(check_body(&a, 0x4242, &question), Ok(()));
        assert_eq!(
            check_body(&a, 0x4243, &question),
            Err(AnswerError::NotMatching)
        );
        let (_, other) = query(0x4242, "b.test.");
        assert_eq!(
            check_body(&a, 0x4242, &other),
            Err(AnswerError::NotMatching)
        );
        // The query itself (QR=0) is not an answer.
        assert_eq!(
            check_body(&q, 0x4242, &question),
            Err(AnswerError::NotMatching)
        );
        assert_eq!(
            check_body(&a[..5], 0x4242, &question),
            Err(AnswerError::TooShort(5))
        );
    }
}
