//! Arbitrary bytes through the VRRP advertisement decoder and the router:
//! decode never panics, valid adverts round-trip, and a router fed the
//! bytes in any state stays consistent.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dnsha_vrrp::codec::{parse_ipv4, Advertisement, Auth};
use dnsha_vrrp::{Command, Router, RouterConfig, State, Vip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(adv) = Advertisement::decode(data) {
        let bytes = adv.to_bytes();
        assert_eq!(bytes.len(), data.len());
        assert_eq!(Advertisement::decode(&bytes).expect("re-decodes"), adv);
        if matches!(adv.auth, Auth::Password(_)) {
            // Nothing is ignored with a password: the bytes are identical.
            assert_eq!(bytes, data);
        }
    }
    if let Ok((_, payload)) = parse_ipv4(data) {
        let _ = Advertisement::decode(payload);
    }
    // A backup and a master receiving the bytes (TTL 255, from a peer).
    let cfg = RouterConfig {
        auth: Auth::password("dnsvip"),
        vips: vec![Vip {
            addr: Ipv4Addr::new(192, 168, 1, 5).into(),
            prefix_len: 32,
        }],
        ..RouterConfig::new(134, 100, Ipv4Addr::new(10, 0, 0, 2))
    };
    let t0 = Instant::now();
    let mut r = Router::new(cfg).expect("valid config");
    r.handle_command(t0, Command::Start);
    let dropped = r.handle_packet(t0, Ipv4Addr::new(10, 0, 0, 1), 255, data);
    if dropped.is_some() {
        assert_eq!(r.state(), State::Backup);
    }
    let t1 = t0 + Duration::from_secs(5);
    r.handle_timeout(t1);
    r.handle_packet(t1, Ipv4Addr::new(10, 0, 0, 3), 255, data);
    assert!(matches!(r.state(), State::Master | State::Backup));
    if let Some(t) = r.poll_timeout() {
        assert!(t >= t1, "a timer in the past after handle_timeout");
    }
    while r.poll_output().is_some() {}
});
