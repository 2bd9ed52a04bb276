//! `dnsha demo`: the balancer on an embedded configuration, in front of two
//! in-process authoritative backends serving `example.test`.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use dnsha_core::config::Config;
use tokio::io::AsyncBufReadExt;

use crate::demo_backend::DemoBackend;

/// The embedded configuration; `{LISTEN}`, `{ADMIN}`, `{B1}` and `{B2}` are
/// filled in at start.
pub const DEMO_CONFIG: &str = r#"
[admin]
listen = "{ADMIN}"

[[listener]]
name = "demo-udp"
protocol = "udp"
listen = "{LISTEN}"
pool = "demo"
workers = 1
access_log = "stderr"

[[listener]]
name = "demo-tcp"
protocol = "tcp"
listen = "{LISTEN}"
pool = "demo"
access_log = "stderr"

[[pool]]
name = "demo"
policy = "rr"
timeout_ms = 500
retries = 1
max_fails = 2
fail_timeout_ms = 5000

[[pool.backend]]
name = "demo-1"
address = "{B1}"

[[pool.backend]]
name = "demo-2"
address = "{B2}"
"#;

/// The demo configuration for these addresses.
pub fn config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    b1: SocketAddr,
    b2: SocketAddr,
) -> String {
    DEMO_CONFIG
        .replace("{LISTEN}", &listen.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{B1}", &b1.to_string())
        .replace("{B2}", &b2.to_string())
}

/// Runs the demo until `quit`, SIGTERM or Ctrl-C.
pub async fn run(listen: SocketAddr, admin: SocketAddr) -> ExitCode {
    // The backends take free ports, so the demo never collides with another
    // service; their addresses are printed below.
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let mut backends = Vec::new();
    for (name, answer) in [
        ("demo-1", Ipv4Addr::new(192, 0, 2, 1)),
        ("demo-2", Ipv4Addr::new(192, 0, 2, 2)),
    ] {
        match DemoBackend::start(name, any, answer).await {
            Ok(b) => backends.push(b),
            Err(e) => {
                eprintln!("dnsha demo: cannot start backend {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (b1, b2) = match (backends.first(), backends.get(1)) {
        (Some(a), Some(b)) => (a.addr(), b.addr()),
        _ => return ExitCode::FAILURE,
    };
    let text = config_text(listen, admin, b1, b2);
    let cfg = match Config::parse(&text) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("{}", e.render("demo", &text));
            }
            return ExitCode::FAILURE;
        }
    };
    let port = listen.port();
    let ip = listen.ip();
    let banner = format!(
        "dnsha demo: balancer on {listen} (UDP and TCP), round robin over two backends:\n\
         \x20 demo-1 {b1} answers www.example.test with 192.0.2.1\n\
         \x20 demo-2 {b2} answers www.example.test with 192.0.2.2\n\
         \n\
         Try, in another terminal:\n\
         \x20 dig @{ip} -p {port} www.example.test +short         # alternates 192.0.2.1 / 192.0.2.2\n\
         \x20 dig @{ip} -p {port} www.example.test +short +tcp    # the same over TCP\n\
         \x20 dig @{ip} -p {port} whoami.example.test TXT +short  # the backend's name\n\
         \x20 dnsha status --admin {admin}                     # pools and backends, like ipvsadm -Ln\n\
         \x20 curl -s http://{admin}/metrics                   # Prometheus metrics\n\
         \n\
         To see failover, type here and press Enter:\n\
         \x20 stop 1     kill backend demo-1: every query is still answered, by demo-2\n\
         \x20 start 1    bring demo-1 back (it gets traffic again after its fail timeout, 5 s)\n\
         \x20 quit       stop the demo (or Ctrl-C)\n"
    );
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut quit_tx = Some(quit_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["quit" | "exit" | "q"] => {
                    if let Some(tx) = quit_tx.take() {
                        let _ = tx.send(());
                    }
                    break;
                }
                [cmd @ ("stop" | "start"), which] => {
                    let idx = match *which {
                        "1" | "demo-1" => 0,
                        "2" | "demo-2" => 1,
                        _ => {
                            println!("which backend? 1 or 2");
                            continue;
                        }
                    };
                    if let Some(b) = backends.get_mut(idx) {
                        let r = if *cmd == "stop" {
                            b.stop().await
                        } else {
                            b.restart().await
                        };
                        match r {
                            Ok(()) => println!(
                                "demo-{}: {}",
                                idx + 1,
                                if *cmd == "stop" { "stopped" } else { "started" }
                            ),
                            Err(e) => println!("demo-{}: {e}", idx + 1),
                        }
                    }
                }
                [] => {}
                _ => println!("commands: stop 1|2, start 1|2, quit"),
            }
        }
        // stdin closed: keep the backends running until the process ends.
        std::future::pending::<()>().await;
        drop(backends);
    });
    crate::daemon::serve(
        cfg,
        None,
        Some(quit_rx),
        Some(banner),
        crate::handover::Handover::default(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_is_valid() {
        let t = config_text(
            "127.0.0.1:5353".parse().unwrap(),
            "127.0.0.1:8053".parse().unwrap(),
            "127.0.0.1:5301".parse().unwrap(),
            "127.0.0.1:5302".parse().unwrap(),
        );
        let c = Config::parse(&t).unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.pools[0].backends.len(), 2);
    }
}
