//! A VRRP-only daemon: runs the `[[vrrp]]` instances of a TOML file.
//!
//! ```text
//! vrrpd CONFIG.toml [--status FILE]
//! ```
//!
//! SIGTERM or SIGINT stops gracefully (priority 0, VIPs removed). With
//! `--status`, the instances' status is written there as JSON whenever it
//! changes. Lines on stdin feed the generic tracker input the daemon uses for
//! `track_pools`: `pool NAME up` or `pool NAME down`.

use std::time::Duration;

use dnsha_vrrp::config::InstanceConfig;
use dnsha_vrrp::shell::Vrrp;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    vrrp: Vec<InstanceConfig>,
}

fn usage() -> ! {
    eprintln!("usage: vrrpd CONFIG.toml [--status FILE]");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else { usage() };
    let mut status_path = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--status" => status_path = Some(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let file: File = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let vrrp = match Vrrp::start(&file.vrrp).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot install signal handlers");
        std::process::exit(1);
    };
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["pool", name, "up"] => vrrp.set_pool_health(name, true),
                        ["pool", name, "down"] => vrrp.set_pool_health(name, false),
                        _ => eprintln!("unknown command: {line}"),
                    }
                }
                _ => stdin_open = false,
            },
            _ = tick.tick() => {
                if let Some(p) = &status_path {
                    let json = serde_json::to_string(&vrrp.status()).unwrap_or_default();
                    if json != last {
                        let tmp = format!("{p}.tmp");
                        if std::fs::write(&tmp, &json).and_then(|()| std::fs::rename(&tmp, p)).is_ok() {
                            last = json;
                        }
                    }
                }
            }
        }
    }
    vrrp.shutdown().await;
    // Don't wait for the blocking stdin reader at runtime shutdown.
    std::process::exit(0);
}
