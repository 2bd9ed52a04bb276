//! Arbitrary bytes through the VRRPv3 decoder, as if received over IPv4
//! and over IPv6: decode never panics, and what decodes encodes back to the
//! same bytes (the reserved nibble aside) and decodes again to the same
//! advertisement.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use dnsha_vrrp::codec::v3::{AdvertisementV3, PseudoHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v4 = PseudoHeader::v4(Ipv4Addr::new(10, 66, 0, 3));
    let v6 = PseudoHeader::v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0x683a, 0x94ff, 0xfe56, 0xb9a4));
    for ip in [v4, v6] {
        if let Ok(adv) = AdvertisementV3::decode(data, &ip) {
            let bytes = adv.to_bytes(&ip);
            assert_eq!(bytes.len(), data.len());
            assert_eq!(bytes[..4], data[..4]);
            assert_eq!(bytes[8..], data[8..]);
            assert_eq!(AdvertisementV3::decode(&bytes, &ip).expect("re-decodes"), adv);
        }
    }
});
