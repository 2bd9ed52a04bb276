//! A DNS load balancer in a few lines: UDP and TCP on one address, round
//! robin over the backends given on the command line.
//!
//! ```text
//! cargo run -p dnsha-examples --bin udp-tcp-lb -- 127.0.0.1:5300 192.168.1.1:53 192.168.1.2:53
//! dig @127.0.0.1 -p 5300 www.example.test
//! ```
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use dnsha_core::config::{BackendConfig, Config, ListenerConfig, PoolConfig, Protocol};
use dnsha_core::PolicyKind;
use dnsha_proxy::server::Server;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed: Result<Vec<SocketAddr>, _> = args.iter().map(|a| a.parse()).collect();
    let addrs = match parsed {
        Ok(a) if a.len() >= 2 => a,
        _ => {
            eprintln!("usage: udp-tcp-lb LISTEN_ADDR BACKEND_ADDR [BACKEND_ADDR...]");
            return ExitCode::FAILURE;
        }
    };
    let (listen, backends) = (addrs[0], &addrs[1..]);
    let config = Config {
        admin: None,
        listeners: vec![
            ListenerConfig::new("udp", Protocol::Udp, listen, "backends"),
            ListenerConfig::new("tcp", Protocol::Tcp, listen, "backends"),
        ],
        pools: vec![PoolConfig::new(
            "backends",
            PolicyKind::RoundRobin,
            backends
                .iter()
                .enumerate()
                .map(|(i, &address)| BackendConfig::new(format!("backend-{}", i + 1), address, 1))
                .collect(),
        )],
        vrrp: Vec::new(),
        rules: Vec::new(),
        limits: Vec::new(),
        dynamic_blocks: Vec::new(),
        files: Vec::new(),
        process: Default::default(),
        anycast: Vec::new(),
    };
    let server = match Server::start(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp-tcp-lb: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("balancing {listen} (UDP and TCP) over {backends:?}; Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown(std::time::Duration::from_secs(2)).await;
    ExitCode::SUCCESS
}
