//! DoH request decoding (path, query string, content type, body): never
//! panics, accepts only DNS-message-sized payloads, and whatever it accepts
//! decodes → encodes (as a GET) → decodes to the same bytes.
//!
//! Input layout: `[flags][target length][target][content-type length]
//! [content type][body]`; the low two bits of `flags` pick the method, the
//! next one the configured path.
#![no_main]

use dnsha_proxy::wire::dns::classify_query;
use dnsha_proxy::frontend::doh::{decode_request, encode_get_param};
use libfuzzer_sys::fuzz_target;

fn take(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at(usize::from(n).min(rest.len()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let method = ["GET", "POST", "PUT", "HEAD"][usize::from(flags & 3)];
    let path = if flags & 4 == 0 { "/dns-query" } else { "/q" };
    let (target, rest) = take(rest);
    let (content_type, body) = take(rest);
    let target = String::from_utf8_lossy(target);
    let content_type = (flags & 8 == 0).then_some(content_type);
    match decode_request(method, &target, content_type, body, path) {
        Ok(msg) => {
            assert!((12..=65_535).contains(&msg.len()));
            let get = format!("{path}?dns={}", encode_get_param(&msg));
            assert_eq!(
                decode_request("GET", &get, None, &[], path),
                Ok(msg.clone())
            );
            let _ = classify_query(&msg);
        }
        Err(e) => {
            assert!(e.status().is_client_error() || e.status().is_server_error());
        }
    }
});
