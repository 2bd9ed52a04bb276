//! The daemon loop: load the configuration, start the balancer, handle
//! signals (SIGTERM/SIGINT stop, SIGHUP reload, SIGUSR1 reopen logs).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::Config;
use dnsha_proxy::server::Server;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::admin::{Admin, Slots, VrrpSlot};
use crate::error::{Error, Result};

/// Reads and validates a configuration file; a [`Error::Config`] displays
/// as one `FILE:LINE:COL: message` line per error.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |errors, text: String| Error::Config {
        file: path.display().to_string(),
        text,
        errors,
    };
    let mut cfg = match Config::parse_keeping_vrrp(&text) {
        Ok(cfg) => cfg,
        Err((mut errors, vrrp)) => {
            // The [[vrrp]] sections' errors too, in the same pass.
            if let Err(vrrp_errors) = crate::vrrp::instances_of(&vrrp, None) {
                errors.extend(vrrp_errors);
                errors.sort_by_key(|e| e.span.as_ref().map_or(0, |s| s.start));
            }
            return Err(invalid(errors, text));
        }
    };
    // Certificates, keys and CA files: relative to the configuration file,
    // readable, matching, not expired.
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    dnsha_proxy::tls::resolve_relative(&mut cfg, dir);
    crate::files::resolve_relative(&mut cfg, dir);
    let mut errors = dnsha_proxy::tls::check_files(&cfg);
    errors.extend(crate::files::check(&cfg));
    if let Err(vrrp_errors) = crate::vrrp::instances(&cfg) {
        errors.extend(vrrp_errors);
    }
    if let Err(account_errors) = crate::privileges::resolve(&cfg) {
        errors.extend(account_errors);
    }
    errors.extend(crate::auth::check_users(cfg.admin.as_ref()));
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.span.as_ref().map_or(0, |s| s.start));
        return Err(invalid(errors, text));
    }
    Ok(cfg)
}

/// `dnsha check`.
pub fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            // Not errors: the addresses are managed all the same, and BIRD
            // may start later.
            for a in &cfg.anycast {
                if let Some(why) = a
                    .bird_socket
                    .as_deref()
                    .and_then(crate::anycast::bird_unreachable)
                {
                    eprintln!("{}: warning: anycast `{}`: {why}", path.display(), a.name);
                }
            }
            println!("{}: ok: {}", path.display(), cfg.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
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

/// Runs a balancer for `cfg` until SIGTERM/SIGINT (or `stop` resolves),
/// or SIGUSR2 under systemd (a restart: see [`crate::handover`]); its
/// listeners first take the sockets of `handover`. With `path`, SIGHUP
/// re-reads that file.
pub async fn serve(
    cfg: Config,
    path: Option<PathBuf>,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
    banner: Option<String>,
    handover: crate::handover::Handover,
) -> ExitCode {
    let notifier = crate::notify::Notifier::from_env();
    let Some(mut daemon) = Daemon::start(&cfg, handover).await else {
        return ExitCode::FAILURE;
    };
    daemon.sync_store(&notifier);
    // Printed once every socket is bound: never instructions for a
    // balancer that failed to start.
    if let Some(text) = banner {
        println!("{text}");
    }
    tracing::info!(summary = %cfg.summary(), "dnsha running");
    let Some(mut signals) = Signals::install() else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    if notifier.enabled() {
        crate::notify::first_health_round(&daemon.server).await;
        notifier.ready(&daemon.status_line());
    }
    let mut watchdog = notifier.watchdog_every().map(tokio::time::interval);
    let stop = async {
        match stop {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(stop);
    let mut restart = false;
    loop {
        tokio::select! {
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            () = &mut stop => break,
            _ = signals.usr2.recv() => {
                if notifier.enabled() {
                    restart = true;
                } else {
                    tracing::warn!(
                        "SIGUSR2 (restart) without a service manager to keep the sockets: \
                         stopping as for SIGTERM"
                    );
                }
                break;
            }
            _ = signals.usr1.recv() => {
                tracing::info!("SIGUSR1: reopening access logs");
                daemon.server.reopen_logs();
            }
            _ = signals.hup.recv() => {
                if let Some(p) = &path {
                    notifier.reloading();
                    let result = daemon.reload(p).await;
                    let line = daemon.status_line();
                    daemon.sync_store(&notifier);
                    match result {
                        Ok(()) => notifier.ready(&line),
                        Err(e) => notifier.ready(&format!("reload refused: {e}; {line}")),
                    }
                }
            }
            () = async {
                match watchdog.as_mut() {
                    Some(w) => {
                        w.tick().await;
                    }
                    None => std::future::pending().await,
                }
            } => notifier.watchdog(),
        }
    }
    notifier.stopping();
    if restart {
        daemon.hand_over(&notifier).await;
    } else {
        daemon.stop().await;
    }
    ExitCode::SUCCESS
}

/// The signals the daemon answers.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    fn install() -> Option<Self> {
        Some(Self {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
            usr1: signal(SignalKind::user_defined1()).ok()?,
            usr2: signal(SignalKind::user_defined2()).ok()?,
        })
    }
}

/// A running daemon: the balancer, its VRRP instances and admin endpoint.
struct Daemon {
    server: Arc<Server>,
    vrrp: VrrpSlot,
    /// The kernel path, when a listener has `forwarding = "kernel"`.
    kernel: Option<crate::kernel::Running>,
    /// The `[[anycast]]` sections.
    anycast: crate::anycast::Running,
    slots: Slots,
    admin: Admin,
    /// How long stopping waits for queries in flight.
    grace: Duration,
    /// The user and capabilities switched to, with `user`.
    dropped: Option<crate::privileges::Dropped>,
    /// The running listeners' configuration (what a reload binds anew).
    listeners: Vec<dnsha_core::config::ListenerConfig>,
    /// The process keys it started with (a reload does not change them).
    process: dnsha_core::config::ProcessConfig,
    /// The descriptors systemd keeps for it: name and socket inode.
    stored: std::collections::BTreeMap<String, u64>,
    /// Names in the store that nothing uses any more: inherited sockets no
    /// listener took, the restart note once read.
    unused: Vec<String>,
}

impl Daemon {
    /// Starts the balancer, then the kernel path, then the VRRP instances,
    /// then the admin endpoint; when one fails it is logged, what started
    /// is stopped and `None` returned.
    async fn start(cfg: &Config, handover: crate::handover::Handover) -> Option<Self> {
        raise_nofile(cfg);
        let (inherited, unusable) = dnsha_proxy::server::Inherited::new(handover.sockets);
        let mut unused = Vec::new();
        for u in unusable {
            tracing::warn!(name = %u.name, reason = %u.reason, "inherited descriptor not used");
            unused.push(u.name);
        }
        let resume = match &handover.note {
            Some(note) => {
                unused.push(crate::handover::STATE_NAME.to_string());
                note.resumable(crate::handover::monotonic_usec())
            }
            None => Vec::new(),
        };
        let server = match Server::start_with(cfg, inherited).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return None;
            }
        };
        let slots = Slots::default();
        let vrrp: VrrpSlot = Arc::clone(&slots.vrrp);
        // After the userspace listeners: they answer until the table is in
        // place, and whenever no backend of a kernel listener is healthy.
        let kernel =
            match crate::kernel::start(cfg, Arc::clone(&server), Arc::clone(&slots.kernel)).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start kernel forwarding");
                    server.shutdown(Duration::from_millis(100)).await;
                    return None;
                }
            };
        let stop_kernel = |kernel: Option<crate::kernel::Running>| async move {
            if let Some(k) = kernel {
                k.shutdown().await;
            }
        };
        let resumed = handover.note.is_some();
        if !start_vrrp(cfg, &server, &vrrp, resume).await {
            stop_kernel(kernel).await;
            server.shutdown(Duration::from_millis(100)).await;
            return None;
        }
        let anycast = match crate::anycast::Running::start(
            &cfg.anycast,
            Arc::clone(&server),
            Arc::clone(&slots.anycast),
            resumed,
        ) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                if let Some(r) = vrrp.lock().ok().and_then(|mut g| g.take()) {
                    r.shutdown().await;
                }
                stop_kernel(kernel).await;
                server.shutdown(Duration::from_millis(100)).await;
                return None;
            }
        };
        let admin =
            match crate::admin::start(cfg.admin.as_ref(), Arc::clone(&server), slots.clone()).await
            {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start admin endpoint");
                    stop_kernel(kernel).await;
                    server.shutdown(Duration::from_millis(100)).await;
                    return None;
                }
            };
        let mut daemon = Self {
            server,
            vrrp,
            kernel,
            anycast,
            slots,
            admin,
            grace: grace_for(cfg),
            dropped: None,
            listeners: cfg.listeners.clone(),
            process: cfg.process.clone(),
            stored: std::collections::BTreeMap::new(),
            unused,
        };
        // Last: every socket is bound and open.
        match switch_user(cfg) {
            Ok(dropped) => daemon.dropped = dropped,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                daemon.stop().await;
                return None;
            }
        }
        Some(daemon)
    }

    /// SIGHUP: re-reads `path` and applies it, or logs why not (and
    /// returns the first line of why).
    async fn reload(&mut self, path: &Path) -> std::result::Result<(), String> {
        let new = match load(path) {
            Ok(new) => new,
            Err(e) => {
                let text = e.to_string();
                for line in text.lines() {
                    tracing::error!(error = %line, "reload refused: configuration error");
                }
                return Err(text.lines().next().unwrap_or_default().to_string());
            }
        };
        if let Some(why) = self.dropped.as_ref().and_then(|d| {
            crate::privileges::refusal(d, &self.listeners, &new, |o, n| {
                !dnsha_proxy::server::same_sockets(o, n)
            })
        }) {
            tracing::error!(error = %why, "reload refused; the old configuration keeps running");
            return Err(why);
        }
        let s = match self.server.reload(&new) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the old configuration keeps running");
                return Err(e.to_string());
            }
        };
        self.reload_kernel(&new).await;
        self.reload_vrrp(&new).await;
        if let Err(e) = self.anycast.reload(&new.anycast).await {
            tracing::error!(error = %e, "anycast section not started by the reload");
        }
        self.grace = grace_for(&new);
        self.listeners = new.listeners.clone();
        if !same_process_keys(&self.process, &new.process) {
            tracing::warn!(
                "`user`, `group`, `keep_capabilities` and `log_format` changes take effect at the \
                 next restart"
            );
        }
        self.move_admin(new.admin.as_ref()).await;
        tracing::info!(
            pools_added = s.pools_added,
            pools_removed = s.pools_removed,
            listeners_added = s.listeners_added,
            listeners_removed = s.listeners_removed,
            summary = %new.summary(),
            "configuration reloaded"
        );
        Ok(())
    }

    /// Applies the reloaded `[[vrrp]]` sections (already validated by
    /// [`load`]): unchanged instances are not touched, changed ones change
    /// in place or restart, removed ones stop with priority 0, new ones
    /// start as backup.
    async fn reload_vrrp(&mut self, new: &Config) {
        let Ok(configs) = crate::vrrp::instances(new) else {
            return;
        };
        let running = self.vrrp.lock().ok().and_then(|mut g| g.take());
        let next = match running {
            None if configs.is_empty() => None,
            None => match crate::vrrp::start(configs, Arc::clone(&self.server), Vec::new()).await {
                Ok(r) => {
                    tracing::info!("vrrp instances started by the reload");
                    r
                }
                Err(e) => {
                    tracing::error!(error = %e, "vrrp not started by the reload");
                    None
                }
            },
            Some(r) if configs.is_empty() => {
                r.shutdown().await;
                tracing::info!("vrrp instances stopped by the reload");
                None
            }
            Some(r) if r.configs() == configs.as_slice() => Some(r),
            Some(r) => {
                let (r, result) = r.apply(configs, Arc::clone(&self.server)).await;
                match result {
                    Ok(applied) => tracing::info!(
                        unchanged = ?applied.unchanged,
                        changed = ?applied.changed,
                        restarted = ?applied.restarted,
                        started = ?applied.started,
                        stopped = ?applied.stopped,
                        "vrrp reloaded"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "vrrp reload incomplete; what runs is kept")
                    }
                }
                r
            }
        };
        if let Ok(mut g) = self.vrrp.lock() {
            *g = next;
        }
    }

    /// The one-line summary systemd shows (`STATUS=`): pools up, VRRP
    /// states.
    fn status_line(&self) -> String {
        let vrrp = self
            .vrrp
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(crate::vrrp::Running::status))
            .unwrap_or_default()
            .iter()
            .map(|i| format!("{} {}", i.name, i.state))
            .collect::<Vec<_>>()
            .join(", ");
        crate::notify::summary(&self.server, &vrrp)
    }

    /// Applies the reloaded kernel listeners: the table is replaced when
    /// they or their backends changed, installed when the first appears,
    /// removed when the last goes. On error what runs is kept.
    async fn reload_kernel(&mut self, new: &Config) {
        match self.kernel.take() {
            None => match crate::kernel::start(
                new,
                Arc::clone(&self.server),
                Arc::clone(&self.slots.kernel),
            )
            .await
            {
                Ok(k) => self.kernel = k,
                Err(e) => {
                    tracing::error!(error = %e, "kernel forwarding not started by the reload")
                }
            },
            Some(k) => match k.reload(new, &self.server).await {
                Ok(true) => self.kernel = Some(k),
                Ok(false) => {
                    k.shutdown().await;
                    if let Ok(mut s) = self.slots.kernel.lock() {
                        *s = None;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "kernel forwarding reload refused; the old table stays");
                    self.kernel = Some(k);
                }
            },
        }
    }

    /// Restarts the admin endpoint when its configuration changed.
    /// (Its certificate files are read again at every reload: a renewed
    /// certificate under the same names is served from then on.)
    async fn move_admin(&mut self, config: Option<&dnsha_core::config::AdminConfig>) {
        let same = config == self.admin.config().as_deref();
        match config {
            Some(c) if self.admin.update(c) => {
                if !same {
                    tracing::info!(address = %c.listen, "admin endpoint settings changed in place");
                }
                return;
            }
            None if same => return,
            _ => {}
        }
        self.admin.stop_and_wait().await;
        match crate::admin::start(config, Arc::clone(&self.server), self.slots.clone()).await {
            Ok(a) => self.admin = a,
            Err(e) => tracing::error!(error = %e, "admin endpoint not restarted"),
        }
    }

    /// Keeps systemd's descriptor store in step with the listeners: every
    /// listening socket stored; a name whose socket is gone or was replaced
    /// (a reload that rebinds a listener reuses its names) removed first,
    /// so that no socket nobody reads stays open in a reuseport group; the
    /// names of inherited descriptors nothing took removed too.
    fn sync_store(&mut self, notifier: &crate::notify::Notifier) {
        let sockets = self.server.listening_sockets();
        let now: std::collections::BTreeMap<String, u64> = sockets
            .iter()
            .map(|(n, fd)| {
                (
                    n.clone(),
                    nix::sys::stat::fstat(fd).map_or(0, |st| st.st_ino),
                )
            })
            .collect();
        let mut gone: Vec<String> = self
            .stored
            .iter()
            .filter(|(name, ino)| now.get(*name) != Some(*ino))
            .map(|(name, _)| name.clone())
            .collect();
        gone.append(&mut self.unused);
        gone.extend(self.server.close_unused_inherited());
        gone.sort();
        gone.dedup();
        notifier.remove_fds(&gone);
        notifier.store_fds(&sockets);
        self.stored = now;
    }

    /// SIGUSR2 under systemd, a restart: the listeners drain while VRRP
    /// still advertises (its pool tracking stopped, so draining listeners
    /// do not look like a fault), then the masters hand over without
    /// priority 0 and a note of them goes to the descriptor store; the
    /// kernel path's table and the VIPs stay for the next process.
    async fn hand_over(self, notifier: &crate::notify::Notifier) {
        tracing::info!(
            grace_ms = self.grace.as_millis() as u64,
            "restarting: handing the sockets and VRRP state to the next process"
        );
        let running = self.vrrp.lock().ok().and_then(|mut g| g.take());
        if let Some(r) = &running {
            r.stop_tracking();
        }
        // The anycast addresses stay announced for the next process.
        self.anycast.shutdown().await;
        if let Some(k) = self.kernel {
            k.leave().await;
        }
        self.admin.stop();
        let drained = self.server.shutdown(self.grace).await;
        if let Some(r) = running {
            let intervals: Vec<(String, u64)> = r
                .status()
                .into_iter()
                .map(|s| (s.name, s.advert_int_ms))
                .collect();
            let masters = r.hand_over().await;
            let note = crate::handover::Note {
                monotonic_usec: crate::handover::monotonic_usec(),
                masters: masters
                    .into_iter()
                    .map(|name| crate::handover::Master {
                        advert_int_ms: intervals
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map_or(1000, |(_, ms)| *ms),
                        name,
                    })
                    .collect(),
            };
            match crate::handover::write_note(&note) {
                Ok(fd) => notifier.store_fds(&[(crate::handover::STATE_NAME.into(), fd)]),
                Err(e) => tracing::error!(error = %e, "cannot write the restart note"),
            }
        }
        if drained {
            tracing::info!("handed over");
        } else {
            tracing::warn!("handed over with queries still in flight after the grace period");
        }
    }

    /// Withdraws the anycast addresses and waits their `drain_ms` (the
    /// routers move the flows elsewhere while the listeners still answer),
    /// hands the virtual IPs over (priority 0), then drains the queries
    /// still in flight, as keepalived + a proxy would.
    async fn stop(mut self) {
        let drain = self.anycast.withdraw_all().await;
        if !drain.is_zero() {
            tracing::info!(
                drain_ms = drain.as_millis() as u64,
                "anycast withdrawn: serving on while the routers converge"
            );
            tokio::time::sleep(drain).await;
        }
        self.anycast.shutdown().await;
        tracing::info!(
            grace_ms = self.grace.as_millis() as u64,
            "stopping: finishing queries in flight"
        );
        let running = self.vrrp.lock().ok().and_then(|mut g| g.take());
        if let Some(r) = running {
            r.shutdown().await;
        }
        // The table goes before the listeners: flows it forwarded keep
        // their conntrack entries and finish; new ones reach the listeners
        // while they drain.
        if let Some(k) = self.kernel {
            k.shutdown().await;
        }
        self.admin.stop();
        let drained = self.server.shutdown(self.grace).await;
        if drained {
            tracing::info!("stopped");
        } else {
            tracing::warn!("stopped with queries still in flight after the grace period");
        }
    }
}

/// Whether two configurations' process keys are the same (their places in
/// the file aside).
fn same_process_keys(
    a: &dnsha_core::config::ProcessConfig,
    b: &dnsha_core::config::ProcessConfig,
) -> bool {
    let name = |n: &Option<dnsha_core::config::AccountName>| n.as_ref().map(|n| n.name.clone());
    name(&a.user) == name(&b.user)
        && name(&a.group) == name(&b.group)
        && a.keep_capabilities == b.keep_capabilities
        && a.log_format == b.log_format
}

/// With `user`: switches every thread to it, keeping the capabilities
/// `cfg` needs.
fn switch_user(cfg: &Config) -> Result<Option<crate::privileges::Dropped>> {
    let account = match crate::privileges::resolve(cfg) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(None),
        Err(errors) => {
            return Err(Error::Config {
                file: "configuration".into(),
                text: String::new(),
                errors,
            })
        }
    };
    let caps = crate::privileges::needed(cfg);
    let dropped = crate::privileges::switch(&account, &caps)?;
    tracing::info!(
        user = %account.user,
        uid = account.uid,
        group = %account.group,
        gid = account.gid,
        capabilities = %crate::privileges::names(&caps),
        "switched user"
    );
    Ok(Some(dropped))
}

/// Starts the `[[vrrp]]` instances of `cfg` into `slot`; false (logged)
/// when they cannot start.
/// Descriptors the configured connection limits may use: a client and an
/// upstream side per connection, plus room for sockets, files and
/// checks.
pub fn descriptors_needed(cfg: &Config) -> u64 {
    let conns: u64 = cfg
        .listeners
        .iter()
        .filter(|l| l.protocol.is_stream())
        .map(|l| l.max_connections as u64)
        .sum();
    conns.saturating_mul(2).saturating_add(1024)
}

/// Raises the soft limit of open files towards what the configured
/// connection limits need (up to the hard limit), and says so: running out
/// of descriptors would refuse clients, and must never look like a backend
/// failure.
fn raise_nofile(cfg: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let needed = descriptors_needed(cfg);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let want = needed.min(hard);
    if want > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
            Ok(()) => tracing::info!(from = soft, to = want, needed, "open files limit raised"),
            Err(e) => tracing::warn!(error = %e, soft, needed, "cannot raise the open files limit"),
        }
    }
    if needed > hard {
        tracing::warn!(
            limit = hard,
            needed,
            "the connection limits need more open files than the hard limit allows"
        );
    }
}

async fn start_vrrp(
    cfg: &Config,
    server: &Arc<Server>,
    slot: &VrrpSlot,
    resume: Vec<String>,
) -> bool {
    let instances = match crate::vrrp::instances(cfg) {
        Ok(i) => i,
        Err(errors) => {
            for e in errors {
                tracing::error!(error = %e.message, "vrrp configuration error");
            }
            return false;
        }
    };
    match crate::vrrp::start(instances, Arc::clone(server), resume).await {
        Ok(running) => {
            if let Ok(mut slot) = slot.lock() {
                *slot = running;
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start vrrp");
            false
        }
    }
}
