//! The keepalived 2.2.7 captures in `tests/data/` (Ethernet pcap) decode as
//! their README says: VRRPv2 with and without PASS auth, priority 0 on stop,
//! and VRRPv3 rejected with a typed version error.

use std::net::Ipv4Addr;

use dnsha_vrrp::codec::{parse_ipv4, Advertisement, Auth, DecodeError, IPPROTO_VRRP};

/// The IP datagrams of a little-endian, Ethernet-linktype pcap file.
fn packets(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read(&path).expect("read pcap");
    assert_eq!(&data[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    assert_eq!(
        u32::from_le_bytes(data[20..24].try_into().expect("4 bytes")),
        1,
        "Ethernet"
    );
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let caplen =
            u32::from_le_bytes(data[off + 8..off + 12].try_into().expect("4 bytes")) as usize;
        let frame = &data[off + 16..off + 16 + caplen];
        assert_eq!(&frame[12..14], &[0x08, 0x00], "IPv4 ethertype");
        out.push(frame[14..].to_vec());
        off += 16 + caplen;
    }
    out
}

const VIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 168, 1, 5), Ipv4Addr::new(192, 168, 1, 6)];

fn decode(name: &str) -> Vec<Result<Advertisement, DecodeError>> {
    packets(name)
        .iter()
        .map(|p| {
            let (meta, payload) = parse_ipv4(p).expect("IPv4");
            assert_eq!(meta.src, Ipv4Addr::new(10, 66, 0, 3));
            assert_eq!(meta.ttl, 255);
            assert_eq!(meta.protocol, IPPROTO_VRRP);
            Advertisement::decode(payload)
        })
        .collect()
}

#[test]
fn pass_capture() {
    let advs: Vec<Advertisement> = decode("keepalived-v2-pass.pcap")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(advs.len(), 2);
    assert_eq!(advs[0].priority, 100);
    assert_eq!(advs[1].priority, 0);
    for a in &advs {
        assert_eq!(a.vrid, 134);
        assert_eq!(a.auth, Auth::password("dnsvip"));
        assert_eq!(a.addresses, VIPS);
        a.verify(&Auth::password("dnsvip"), 1).unwrap();
        assert!(matches!(
            a.verify(&Auth::password("other"), 1),
            Err(DecodeError::Password)
        ));
    }
}

#[test]
fn noauth_capture() {
    let advs: Vec<Advertisement> = decode("keepalived-v2-noauth.pcap")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(advs.iter().map(|a| a.priority).collect::<Vec<_>>(), [90, 0]);
    assert!(advs.iter().all(|a| a.auth == Auth::None));
}

#[test]
fn v3_capture_is_rejected_as_version_3() {
    let res = decode("keepalived-v3.pcap");
    assert_eq!(res.len(), 2);
    for r in res {
        assert!(
            matches!(r, Err(DecodeError::Version { version: 3 })),
            "{r:?}"
        );
    }
}
