//! The VRRPv3 codec against advertisements keepalived 2.2.7 sent
//! (`tests/data/keepalived-v3*.pcap`; the bytes are copied here).

use super::*;
use crate::stats::DropReason;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks_exact(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const V4_SRC: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 3);

fn v6_src() -> Ipv6Addr {
    "fe80::683a:94ff:fe56:b9a4".parse().unwrap()
}

/// keepalived-v3.pcap, after the IPv4 header: VRID 134, priority 100,
/// 100 cs, 192.168.1.5 and 192.168.1.6.
const V4_1S: &str = "3186 6402 0064 fbde c0a8 0105 c0a8 0106";
/// keepalived-v3-centisecond-v4-v6.pcap: the same at 10 cs.
const V4_10CS: &str = "3186 6402 000a fc38 c0a8 0105 c0a8 0106";
/// Its priority-0 advertisement at SIGTERM.
const V4_10CS_STOP: &str = "3186 0002 000a 6039 c0a8 0105 c0a8 0106";
/// The IPv6 instance: VRID 135, priority 100, 10 cs, fe80::5 and
/// 2001:db8::5, from fe80::683a:94ff:fe56:b9a4 to ff02::12.
const V6_10CS: &str = "3187 6402 000a 8ac4 \
    fe80 0000 0000 0000 0000 0000 0000 0005 \
    2001 0db8 0000 0000 0000 0000 0000 0005";
const V6_10CS_STOP: &str = "3187 0002 000a eec4 \
    fe80 0000 0000 0000 0000 0000 0000 0005 \
    2001 0db8 0000 0000 0000 0000 0000 0005";

fn v4_addrs() -> Addresses {
    Addresses::V4(vec![
        Ipv4Addr::new(192, 168, 1, 5),
        Ipv4Addr::new(192, 168, 1, 6),
    ])
}

fn v6_addrs() -> Addresses {
    Addresses::V6(vec![
        "fe80::5".parse().unwrap(),
        "2001:db8::5".parse().unwrap(),
    ])
}

#[test]
fn keepalived_v4_advertisements_decode_and_encode_byte_for_byte() {
    let ip = PseudoHeader::v4(V4_SRC);
    for (bytes, priority, interval_cs) in
        [(V4_1S, 100, 100), (V4_10CS, 100, 10), (V4_10CS_STOP, 0, 10)]
    {
        let bytes = hex(bytes);
        let adv = AdvertisementV3::decode(&bytes, &ip).unwrap();
        assert_eq!(
            adv,
            AdvertisementV3 {
                vrid: 134,
                priority,
                interval_cs,
                addresses: v4_addrs(),
            }
        );
        assert_eq!(adv.to_bytes(&ip), bytes);
        assert_eq!(adv.encoded_len(), bytes.len());
    }
}

#[test]
fn keepalived_v6_advertisements_decode_and_encode_byte_for_byte() {
    let ip = PseudoHeader::v6(v6_src());
    for (bytes, priority) in [(V6_10CS, 100), (V6_10CS_STOP, 0)] {
        let bytes = hex(bytes);
        let adv = AdvertisementV3::decode(&bytes, &ip).unwrap();
        assert_eq!(
            adv,
            AdvertisementV3 {
                vrid: 135,
                priority,
                interval_cs: 10,
                addresses: v6_addrs(),
            }
        );
        assert_eq!(adv.to_bytes(&ip), bytes);
    }
}

#[test]
fn the_checksum_covers_the_pseudo_header() {
    // The same bytes from another source address do not check out.
    let bytes = hex(V4_10CS);
    let other = PseudoHeader::v4(Ipv4Addr::new(10, 66, 0, 4));
    let e = AdvertisementV3::decode(&bytes, &other).unwrap_err();
    assert_eq!(e.drop_reason(), DropReason::Checksum);
    let bytes = hex(V6_10CS);
    let other = PseudoHeader::v6("fe80::1".parse().unwrap());
    let e = AdvertisementV3::decode(&bytes, &other).unwrap_err();
    assert_eq!(e.drop_reason(), DropReason::Checksum);
    // A flipped bit in the body too.
    let mut bytes = hex(V4_10CS);
    bytes[9] ^= 1;
    let e = AdvertisementV3::decode(&bytes, &PseudoHeader::v4(V4_SRC)).unwrap_err();
    assert!(
        matches!(e, DecodeError::Checksum { found: 0xfc38, .. }),
        "{e:?}"
    );
}

/// `adv` encoded for `ip`, then changed by `edit` and its checksum fixed,
/// so that only the edit is wrong.
fn edited(adv: &AdvertisementV3, ip: &PseudoHeader, edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = adv.to_bytes(ip);
    edit(&mut b);
    b[6] = 0;
    b[7] = 0;
    let sum = checksum_from(ip.sum(b.len()), &b).to_be_bytes();
    b[6] = sum[0];
    b[7] = sum[1];
    b
}

#[test]
fn bad_advertisements_are_dropped_by_reason() {
    let ip4 = PseudoHeader::v4(V4_SRC);
    let ip6 = PseudoHeader::v6(v6_src());
    let v4 = AdvertisementV3::decode(&hex(V4_10CS), &ip4).unwrap();
    let v6 = AdvertisementV3::decode(&hex(V6_10CS), &ip6).unwrap();
    let reason =
        |b: &[u8], ip: &PseudoHeader| AdvertisementV3::decode(b, ip).unwrap_err().drop_reason();
    // An interval of 0.
    let b = edited(&v4, &ip4, |b| {
        b[4] = 0;
        b[5] = 0;
    });
    assert_eq!(reason(&b, &ip4), DropReason::ZeroInterval);
    // A count that does not match the length, both ways.
    let b = edited(&v4, &ip4, |b| b[3] = 3);
    assert_eq!(reason(&b, &ip4), DropReason::CountMismatch);
    let b = edited(&v6, &ip6, |b| b[3] = 1);
    assert_eq!(reason(&b, &ip6), DropReason::CountMismatch);
    // IPv4 addresses in an IPv6 advertisement: by length, or mapped.
    let b = edited(&v4, &ip6, |_| {});
    assert_eq!(reason(&b, &ip6), DropReason::CountMismatch);
    let mapped = AdvertisementV3 {
        addresses: Addresses::V6(vec![Ipv4Addr::new(192, 168, 1, 5).to_ipv6_mapped()]),
        ..v6.clone()
    };
    assert_eq!(
        reason(&mapped.to_bytes(&ip6), &ip6),
        DropReason::AddressFamily
    );
    // VRRPv2 packets, other types, truncated and oversized packets.
    let b = edited(&v4, &ip4, |b| b[0] = 0x21);
    assert_eq!(reason(&b, &ip4), DropReason::Version);
    let b = edited(&v4, &ip4, |b| b[0] = 0x32);
    assert_eq!(reason(&b, &ip4), DropReason::Type);
    assert_eq!(reason(&hex(V4_10CS)[..7], &ip4), DropReason::Truncated);
    let mut long = hex(V4_10CS);
    long.resize(8 + 4 * 256, 0);
    assert_eq!(reason(&long, &ip4), DropReason::TooLong);
}

#[test]
fn intervals_are_kept_to_twelve_bits() {
    let ip = PseudoHeader::v4(V4_SRC);
    for (asked, sent) in [(0, 1), (1, 1), (4095, 4095), (5000, 4095)] {
        let adv = AdvertisementV3 {
            vrid: 1,
            priority: 100,
            interval_cs: asked,
            addresses: v4_addrs(),
        };
        let back = AdvertisementV3::decode(&adv.to_bytes(&ip), &ip).unwrap();
        assert_eq!(back.interval_cs, sent);
    }
    // The reserved nibble is ignored on receipt.
    let b = edited(
        &AdvertisementV3::decode(&hex(V4_10CS), &ip).unwrap(),
        &ip,
        |b| b[4] |= 0xf0,
    );
    assert_eq!(AdvertisementV3::decode(&b, &ip).unwrap().interval_cs, 10);
}
