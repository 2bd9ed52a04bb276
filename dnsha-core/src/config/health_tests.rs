//! Tests of the `[pool.health]` model: query types and names.

use super::*;

#[test]
fn query_types_round_trip() {
    for (name, n) in QUERY_TYPES {
        assert_eq!(QueryType::parse(name), Some(QueryType(n)));
        assert_eq!(QueryType(n).to_string(), name);
    }
    assert_eq!(QueryType::parse("aaaa"), Some(QueryType(28)));
    assert_eq!(QueryType::parse("TYPE65534"), Some(QueryType(65534)));
    assert_eq!(QueryType(65534).to_string(), "TYPE65534");
    assert_eq!(QueryType::parse("BOGUS"), None);
    assert_eq!(QueryType::parse("TYPE70000"), None);
}

#[test]
fn query_names() {
    assert!(check_query_name(".").is_ok());
    assert!(check_query_name("example.test").is_ok());
    assert!(check_query_name("{random}.example.test.").is_ok());
    assert!(check_query_name("a..b").is_err());
    assert!(check_query_name("{rand}.x").is_err());
    assert!(check_query_name(&"x".repeat(64)).is_err());
    assert!(check_query_name(&["abc"; 70].join(".")).is_err());
    assert!(check_query_name("has space.test").is_err());
}

#[test]
fn hex() {
    assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
    assert_eq!(
        decode_hex("de:ad be:ef"),
        Some(vec![0xde, 0xad, 0xbe, 0xef])
    );
    assert_eq!(decode_hex("abc"), None);
    assert_eq!(decode_hex("zz"), None);
}

#[test]
fn detection_bound() {
    let h = HealthConfig::default();
    // 1000 + 2 × 1000 + 1000
    assert_eq!(h.worst_case_detection_ms(), 4000);
    let k = HealthConfig {
        retry_interval_ms: Some(200),
        fall: 2,
        ..HealthConfig::default()
    };
    assert_eq!(k.worst_case_detection_ms(), 3000);
}
