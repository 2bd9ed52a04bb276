//! The `udp-tcp-lb` example balances real NSD backends.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::{a_record, free_addr, query_tcp, query_udp, wait_tcp, Nsd, RecordType};

#[test]
fn balances_udp_and_tcp_over_the_given_backends() {
    let (n1, n2) = (
        Nsd::start(Ipv4Addr::new(10, 0, 0, 1)),
        Nsd::start(Ipv4Addr::new(10, 0, 0, 2)),
    );
    let listen = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_udp-tcp-lb"))
        .args([
            listen.to_string(),
            n1.addr().to_string(),
            n2.addr().to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_tcp(listen, Duration::from_secs(10)).unwrap();
    let t = Duration::from_secs(3);
    let udp: Vec<_> = (0..4)
        .map(|_| {
            a_record(&query_udp(listen, "www.example.test.", RecordType::A, t).unwrap()).unwrap()
        })
        .collect();
    let tcp: Vec<_> = (0..4)
        .map(|_| {
            a_record(&query_tcp(listen, "www.example.test.", RecordType::A, t).unwrap()).unwrap()
        })
        .collect();
    child.kill().unwrap();
    let _ = child.wait();
    for seen in [udp, tcp] {
        assert!(
            seen.contains(&Ipv4Addr::new(10, 0, 0, 1))
                && seen.contains(&Ipv4Addr::new(10, 0, 0, 2)),
            "{seen:?}"
        );
    }
}
