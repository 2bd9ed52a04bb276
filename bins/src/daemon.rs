//! The daemon loop: load the configuration, start the balancer, handle
//! signals (SIGTERM/SIGINT stop, SIGHUP reload, SIGUSR1 reopen logs).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::Config;
use dnsha_proxy::server::Server;
use tokio::signal::unix::{signal, SignalKind};

/// Reads and validates a configuration file; the error is the text to print
/// (`FILE:LINE:COL: message` per error).
pub fn load(path: &Path) -> Result<Config, String> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let render = |errors: Vec<dnsha_core::ConfigError>| {
        errors
            .iter()
            .map(|e| e.render(&path.display().to_string(), &src))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut cfg = Config::parse(&src).map_err(render)?;
    // Certificates, keys and CA files: relative to the configuration file,
    // readable, matching, not expired.
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    dnsha_proxy::tls::resolve_relative(&mut cfg, dir);
    let mut errors = dnsha_proxy::tls::check_files(&cfg);
    if let Err(vrrp_errors) = crate::vrrp::instances(&cfg) {
        errors.extend(vrrp_errors);
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.span.as_ref().map_or(0, |s| s.start));
        return Err(render(errors));
    }
    Ok(cfg)
}

/// `dnsha check`.
pub fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            println!("{}: ok: {}", path.display(), cfg.summary());
            ExitCode::SUCCESS
        }
        Err(text) => {
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

/// How long SIGTERM waits for queries in flight: the longest pool's
/// timeout × attempts, plus a second, at most 30 s.
pub fn grace_for(cfg: &Config) -> Duration {
    let ms = cfg
        .pools
        .iter()
        .map(|p| p.settings.timeout_ms * (u64::from(p.settings.retries) + 1))
        .max()
        .unwrap_or(0);
    Duration::from_millis(ms + 1000).min(Duration::from_secs(30))
}

/// `dnsha run`.
pub async fn run(path: PathBuf) -> ExitCode {
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(text) => {
            eprintln!("{text}");
            return ExitCode::FAILURE;
        }
    };
    serve(cfg, Some(path), None).await
}

/// Runs a balancer for `cfg` until SIGTERM/SIGINT (or `stop` resolves).
/// With `path`, SIGHUP re-reads that file.
pub async fn serve(
    cfg: Config,
    path: Option<PathBuf>,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> ExitCode {
    let server = match Server::start(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let vrrp: crate::admin::VrrpSlot = Arc::default();
    let instances = match crate::vrrp::instances(&cfg) {
        Ok(i) => i,
        Err(errors) => {
            for e in errors {
                tracing::error!(error = %e.message, "vrrp configuration error");
            }
            server.shutdown(Duration::from_millis(100)).await;
            return ExitCode::FAILURE;
        }
    };
    match crate::vrrp::start(instances, Arc::clone(&server)).await {
        Ok(running) => {
            if let Ok(mut slot) = vrrp.lock() {
                *slot = running;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start vrrp");
            server.shutdown(Duration::from_millis(100)).await;
            return ExitCode::FAILURE;
        }
    }
    let mut admin = match crate::admin::start(
        cfg.admin.as_ref().map(|a| a.listen),
        Arc::clone(&server),
        Arc::clone(&vrrp),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start admin endpoint");
            server.shutdown(Duration::from_millis(100)).await;
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(summary = %cfg.summary(), "dnsha running");
    let mut grace = grace_for(&cfg);
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let stop = async {
        match stop {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = &mut stop => break,
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: reopening access logs");
                server.reopen_logs();
            }
            _ = hup.recv() => {
                let Some(p) = &path else { continue };
                match load(p) {
                    Err(text) => {
                        for line in text.lines() {
                            tracing::error!(error = %line, "reload refused: configuration error");
                        }
                    }
                    Ok(new) => match server.reload(&new) {
                        Ok(s) => {
                            let running_vrrp = vrrp
                                .lock()
                                .ok()
                                .and_then(|g| g.as_ref().map(|r| r.configs().to_vec()));
                            if crate::vrrp::instances(&new).ok() != running_vrrp.or_else(|| Some(Vec::new())) {
                                tracing::warn!("[[vrrp]] changes take effect at the next restart; the running instances are kept");
                            }
                            grace = grace_for(&new);
                            let admin_addr = new.admin.as_ref().map(|a| a.listen);
                            if admin_addr != admin.addr() {
                                admin.stop();
                                match crate::admin::start(admin_addr, Arc::clone(&server), Arc::clone(&vrrp)).await {
                                    Ok(a) => admin = a,
                                    Err(e) => tracing::error!(error = %e, "admin endpoint not restarted"),
                                }
                            }
                            tracing::info!(
                                pools_added = s.pools_added,
                                pools_removed = s.pools_removed,
                                listeners_added = s.listeners_added,
                                listeners_removed = s.listeners_removed,
                                summary = %new.summary(),
                                "configuration reloaded"
                            );
                        }
                        Err(e) => tracing::error!(error = %e, "reload refused; the old configuration keeps running"),
                    },
                }
            }
        }
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "stopping: finishing queries in flight"
    );
    // Hand the virtual IPs over first (priority 0), then drain the queries
    // that are still in flight, as keepalived + a proxy would.
    let running = vrrp.lock().ok().and_then(|mut g| g.take());
    if let Some(r) = running {
        r.shutdown().await;
    }
    admin.stop();
    let drained = server.shutdown(grace).await;
    if drained {
        tracing::info!("stopped");
    } else {
        tracing::warn!("stopped with queries still in flight after the grace period");
    }
    ExitCode::SUCCESS
}
