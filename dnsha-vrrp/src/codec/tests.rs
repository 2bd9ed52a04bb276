//! Codec tests, mostly on packets captured from keepalived 2.2.7
//! (`tests/data/*.pcap`; the hex below is what `tcpdump -x` prints for them).

use super::*;

/// Parses `tcpdump -x` style hex (whitespace ignored).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        })
        .collect();
    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

/// keepalived, VRRPv2, priority 100, auth_type PASS "dnsvip", VIPs .5 and .6.
pub(crate) const KA_PASS_100: &str = "45c0 002c 0001 0000 ff70 d049 0a42 0003
    e000 0012 2186 6402 0101 b4c4 c0a8 0105 c0a8 0106 646e 7376 6970 0000";
/// The same keepalived stopping: priority 0.
pub(crate) const KA_PASS_0: &str = "45c0 002c 0002 0000 ff70 d048 0a42 0003
    e000 0012 2186 0002 0101 18c5 c0a8 0105 c0a8 0106 646e 7376 6970 0000";
/// keepalived, VRRPv2, priority 90, no authentication.
const KA_NOAUTH_90: &str = "45c0 002c 0001 0000 ff70 d049 0a42 0003
    e000 0012 2186 5a02 0001 011a c0a8 0105 c0a8 0106 0000 0000 0000 0000";
/// The same keepalived stopping: priority 0.
const KA_NOAUTH_0: &str = "45c0 002c 0002 0000 ff70 d048 0a42 0003
    e000 0012 2186 0002 0001 5b1a c0a8 0105 c0a8 0106 0000 0000 0000 0000";
/// keepalived, VRRPv3, priority 100.
const KA_V3_100: &str = "45c0 0024 0001 0000 ff70 d051 0a42 0003
    e000 0012 3186 6402 0064 fbde c0a8 0105 c0a8 0106";
/// The same VRRPv3 keepalived stopping.
const KA_V3_0: &str = "45c0 0024 0002 0000 ff70 d050 0a42 0003
    e000 0012 3186 0002 0064 5fdf c0a8 0105 c0a8 0106";

const VIP5: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 5);
const VIP6: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 6);
const SENDER: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 3);

fn payload(ip_hex: &str) -> Vec<u8> {
    let packet = hex(ip_hex);
    let (meta, payload) = parse_ipv4(&packet).unwrap();
    assert_eq!(meta.src, SENDER);
    assert_eq!(meta.dst, VRRP_GROUP);
    assert_eq!(meta.ttl, VRRP_TTL);
    assert_eq!(meta.protocol, IPPROTO_VRRP);
    payload.to_vec()
}

#[test]
fn decodes_keepalived_pass() {
    let adv = Advertisement::decode(&payload(KA_PASS_100)).unwrap();
    assert_eq!(
        adv,
        Advertisement {
            vrid: 134,
            priority: 100,
            advert_int: 1,
            auth: Auth::password("dnsvip"),
            addresses: vec![VIP5, VIP6],
        }
    );
    adv.verify(&Auth::password("dnsvip"), 1).unwrap();
}

#[test]
fn decodes_keepalived_priority_zero() {
    for (h, auth) in [
        (KA_PASS_0, Auth::password("dnsvip")),
        (KA_NOAUTH_0, Auth::None),
    ] {
        let adv = Advertisement::decode(&payload(h)).unwrap();
        assert_eq!(adv.priority, 0);
        assert_eq!(adv.auth, auth);
        assert_eq!(adv.addresses, [VIP5, VIP6]);
    }
}

#[test]
fn decodes_keepalived_noauth() {
    let adv = Advertisement::decode(&payload(KA_NOAUTH_90)).unwrap();
    assert_eq!(adv.priority, 90);
    assert_eq!(adv.auth, Auth::None);
    adv.verify(&Auth::None, 1).unwrap();
}

#[test]
fn encodes_byte_identical_to_keepalived() {
    for h in [KA_PASS_100, KA_PASS_0, KA_NOAUTH_90, KA_NOAUTH_0] {
        let bytes = payload(h);
        let adv = Advertisement::decode(&bytes).unwrap();
        assert_eq!(adv.to_bytes(), bytes);
        assert_eq!(adv.encoded_len(), bytes.len());
    }
}

#[test]
fn ip_framing_byte_identical_to_keepalived() {
    let packet = hex(KA_PASS_100);
    let rebuilt = build_ipv4(SENDER, VRRP_GROUP, 255, IPPROTO_VRRP, 1, &packet[20..]);
    assert_eq!(rebuilt, packet);
    assert_eq!(checksum(&packet[..20]), 0);
}

#[test]
fn rejects_vrrpv3_with_version_error() {
    for h in [KA_V3_100, KA_V3_0] {
        let err = Advertisement::decode(&payload(h)).unwrap_err();
        assert!(matches!(err, DecodeError::Version { version: 3 }), "{err}");
        assert_eq!(err.drop_reason(), DropReason::Version);
        assert_eq!(
            crate::Error::from(err).drop_reason(),
            Some(DropReason::Version)
        );
    }
}

#[test]
fn rejects_wrong_password() {
    let adv = Advertisement::decode(&payload(KA_PASS_100)).unwrap();
    let err = adv.verify(&Auth::password("other"), 1).unwrap_err();
    assert!(matches!(err, DecodeError::Password));
    // "dnsvip" is a prefix of "dnsvip12": the whole 8 octets are compared.
    assert!(matches!(
        adv.verify(&Auth::password("dnsvip12"), 1),
        Err(DecodeError::Password)
    ));
}

#[test]
fn rejects_auth_type_mismatch_both_ways() {
    let pass = Advertisement::decode(&payload(KA_PASS_100)).unwrap();
    assert!(matches!(
        pass.verify(&Auth::None, 1),
        Err(DecodeError::AuthType {
            expected: 0,
            found: 1
        })
    ));
    let none = Advertisement::decode(&payload(KA_NOAUTH_90)).unwrap();
    assert!(matches!(
        none.verify(&Auth::password("dnsvip"), 1),
        Err(DecodeError::AuthType {
            expected: 1,
            found: 0
        })
    ));
}

#[test]
fn rejects_interval_mismatch() {
    let adv = Advertisement::decode(&payload(KA_PASS_100)).unwrap();
    assert!(matches!(
        adv.verify(&Auth::password("dnsvip"), 2),
        Err(DecodeError::Interval {
            expected: 2,
            found: 1
        })
    ));
}

#[test]
fn rejects_bad_checksum() {
    let mut bytes = payload(KA_PASS_100);
    bytes[7] ^= 0x01;
    let err = Advertisement::decode(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Checksum {
                found: 0xb4c5,
                computed: 0xb4c4
            }
        ),
        "{err}"
    );
    // A flipped bit in the password is a checksum error too.
    let mut bytes = payload(KA_PASS_100);
    bytes[17] ^= 0x20;
    assert!(matches!(
        Advertisement::decode(&bytes),
        Err(DecodeError::Checksum { .. })
    ));
}

#[test]
fn rejects_short_and_truncated() {
    let bytes = payload(KA_PASS_100);
    for len in 0..HEADER_LEN {
        assert!(matches!(
            Advertisement::decode(&bytes[..len]),
            Err(DecodeError::Truncated { .. })
        ));
    }
    for len in HEADER_LEN..MIN_LEN {
        assert!(matches!(
            Advertisement::decode(&bytes[..len]),
            Err(DecodeError::Truncated { .. })
        ));
    }
    // Cut inside the addresses or the auth data: the count says more.
    for len in MIN_LEN..bytes.len() {
        assert!(matches!(
            Advertisement::decode(&bytes[..len]),
            Err(DecodeError::CountMismatch { count: 2, .. })
        ));
    }
}

#[test]
fn rejects_long_and_count_mismatch() {
    let mut bytes = payload(KA_PASS_100);
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    assert!(matches!(
        Advertisement::decode(&bytes),
        Err(DecodeError::CountMismatch { count: 2, len: 28 })
    ));
    let huge = [&bytes[..8], &[0u8; MAX_LEN][..]].concat();
    assert!(matches!(
        Advertisement::decode(&huge),
        Err(DecodeError::TooLong { .. })
    ));
    // Count says 3, two addresses present, checksum fixed up: still caught.
    let mut bytes = payload(KA_PASS_100);
    bytes[3] = 3;
    bytes[6] = 0;
    bytes[7] = 0;
    let sum = checksum(&bytes).to_be_bytes();
    bytes[6] = sum[0];
    bytes[7] = sum[1];
    assert!(matches!(
        Advertisement::decode(&bytes),
        Err(DecodeError::CountMismatch { count: 3, len: 24 })
    ));
}

#[test]
fn rejects_wrong_type_and_ah_auth() {
    let mut bytes = payload(KA_PASS_100);
    bytes[0] = 0x22;
    assert!(matches!(
        Advertisement::decode(&bytes),
        Err(DecodeError::Type { kind: 2 })
    ));
    let adv = Advertisement {
        vrid: 1,
        priority: 100,
        advert_int: 1,
        auth: Auth::None,
        addresses: vec![VIP5],
    };
    let mut bytes = adv.to_bytes();
    bytes[4] = AUTH_TYPE_AH;
    bytes[6] = 0;
    bytes[7] = 0;
    let sum = checksum(&bytes).to_be_bytes();
    bytes[6] = sum[0];
    bytes[7] = sum[1];
    assert!(matches!(
        Advertisement::decode(&bytes),
        Err(DecodeError::AuthType { found: 2, .. })
    ));
}

#[test]
fn round_trips_zero_and_max_addresses() {
    for n in [0usize, 1, 255] {
        let adv = Advertisement {
            vrid: 255,
            priority: 255,
            advert_int: 255,
            auth: Auth::password("12345678"),
            addresses: (0..n)
                .map(|i| Ipv4Addr::from(0x0a00_0000 + i as u32))
                .collect(),
        };
        let bytes = adv.to_bytes();
        assert_eq!(bytes.len(), MIN_LEN + 4 * n);
        assert_eq!(Advertisement::decode(&bytes).unwrap(), adv);
    }
}

#[test]
fn odd_length_checksum() {
    // RFC 1071 example words: 0001 f203 f4f5 f6f7 -> sum ddf2, checksum 220d.
    assert_eq!(
        checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0x220d
    );
    assert_eq!(checksum(&[0xff]), !0xff00);
    assert_eq!(checksum(&[]), 0xffff);
}

#[test]
fn ip_header_errors() {
    let packet = hex(KA_PASS_100);
    assert!(matches!(
        parse_ipv4(&packet[..19]),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        parse_ipv4(&packet[..40]),
        Err(DecodeError::IpHeader { .. })
    ));
    let mut v6 = packet.clone();
    v6[0] = 0x65;
    assert!(matches!(parse_ipv4(&v6), Err(DecodeError::IpHeader { .. })));
    let mut ihl = packet.clone();
    ihl[0] = 0x44;
    assert!(matches!(
        parse_ipv4(&ihl),
        Err(DecodeError::IpHeader { .. })
    ));
    // Ethernet padding after the datagram is trimmed.
    let mut padded = packet.clone();
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(parse_ipv4(&padded).unwrap().1.len(), 24);
}
