//! Sends hand-made VRRP packets, good or deliberately broken, for tests.
//!
//! ```text
//! vrrp_inject --iface IF --src IP --vrid N --prio P [--pass PW] [--int S]
//!             [--kind good|ttl254|checksum|password|truncated|count|v3|interval]
//!             [--repeat N] [--gap-ms MS]
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use dnsha_vrrp::codec::{build_ipv4, checksum, Advertisement, Auth, IPPROTO_VRRP, VRRP_GROUP};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn usage(msg: &str) -> ! {
    eprintln!("vrrp_inject: {msg}");
    std::process::exit(2)
}

fn fix_checksum(b: &mut [u8]) {
    b[6] = 0;
    b[7] = 0;
    let s = checksum(b).to_be_bytes();
    b[6] = s[0];
    b[7] = s[1];
}

fn main() {
    let mut iface = None;
    let mut src: Option<Ipv4Addr> = None;
    let mut vrid = 1u8;
    let mut prio = 100u8;
    let mut pass: Option<String> = None;
    let mut int = 1u8;
    let mut kind = "good".to_owned();
    let mut repeat = 1u32;
    let mut gap = 100u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage("missing value"));
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage("bad number"));
        match a.as_str() {
            "--iface" => iface = Some(v),
            "--src" => src = Some(v.parse().unwrap_or_else(|_| usage("bad --src"))),
            "--vrid" => vrid = num(&v) as u8,
            "--prio" => prio = num(&v) as u8,
            "--pass" => pass = Some(v),
            "--int" => int = num(&v) as u8,
            "--kind" => kind = v,
            "--repeat" => repeat = num(&v) as u32,
            "--gap-ms" => gap = num(&v),
            _ => usage("unknown option"),
        }
    }
    let iface = iface.unwrap_or_else(|| usage("--iface needed"));
    let src = src.unwrap_or_else(|| usage("--src needed"));
    let auth = pass.as_deref().map_or(Auth::None, Auth::password);
    let mut adv = Advertisement {
        vrid,
        priority: prio,
        advert_int: int,
        auth,
        addresses: vec![Ipv4Addr::new(192, 168, 1, 5)],
    };
    let mut ttl = 255;
    match kind.as_str() {
        "password" => adv.auth = Auth::password("wrongpw"),
        "interval" => adv.advert_int = int.wrapping_add(1),
        _ => {}
    }
    let mut payload = adv.to_bytes();
    match kind.as_str() {
        "good" | "password" | "interval" => {}
        "ttl254" => ttl = 254,
        "checksum" => payload[7] ^= 0x5a,
        "truncated" => payload.truncate(10),
        "count" => {
            payload[3] = 3;
            fix_checksum(&mut payload);
        }
        "v3" => {
            payload[0] = 0x31;
            fix_checksum(&mut payload);
        }
        _ => usage("unknown --kind"),
    }
    let sock = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )
    .unwrap_or_else(|e| usage(&format!("raw socket: {e}")));
    sock.set_header_included_v4(true)
        .and_then(|()| sock.bind_device(Some(iface.as_bytes())))
        .unwrap_or_else(|e| usage(&format!("socket options: {e}")));
    let packet = build_ipv4(src, VRRP_GROUP, ttl, IPPROTO_VRRP, 7, &payload);
    let to = SockAddr::from(SocketAddrV4::new(VRRP_GROUP, 0));
    for i in 0..repeat {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(gap));
        }
        if let Err(e) = sock.send_to(&packet, &to) {
            usage(&format!("send: {e}"));
        }
    }
}
