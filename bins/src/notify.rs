//! systemd's notify protocol (`Type=notify`), spoken through the
//! `sd-notify` crate: `READY=1` once the listeners are bound and the first
//! health round has run, `RELOADING=1` with `MONOTONIC_USEC` and then
//! `READY=1` around a SIGHUP reload (so `systemctl reload` waits for it,
//! and `Type=notify-reload` works on systemd 253 and later), `STOPPING=1`
//! at shutdown, `STATUS=` with a one-line summary, and `WATCHDOG=1` every
//! half `WatchdogSec` when the unit sets one; `FDSTORE=1` and
//! `FDSTOREREMOVE=1` keep the listening sockets in systemd's descriptor
//! store across restarts. Without `NOTIFY_SOCKET` (not started by systemd)
//! every call does nothing.

use std::time::Duration;

use dnsha_proxy::server::Server;
use sd_notify::NotifyState;

/// Longest wait for the first health round before `READY=1`.
const FIRST_ROUND_LIMIT: Duration = Duration::from_secs(5);

/// The service manager's side, if there is one.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets (`NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How often to ping the watchdog: half its timeout, as sd_notify(3)
    /// advises; `None` without one.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
            .filter(|_| self.enabled)
            .map(|t| (t / 2).max(Duration::from_millis(10)))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with the monotonic clock, before a reload.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading"),
            ]),
            Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock"),
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `FDSTORE=1` with each descriptor under its name: systemd keeps them
    /// (`FileDescriptorStoreMax=`) and hands them to the next process of
    /// the unit as `LISTEN_FDS`. A descriptor already stored is not stored
    /// twice.
    pub fn store_fds(&self, fds: &[(String, std::os::fd::OwnedFd)]) {
        if !self.enabled {
            return;
        }
        for (name, fd) in fds {
            use std::os::fd::AsFd;
            let states = [NotifyState::FdStore, NotifyState::FdName(name)];
            if let Err(e) = sd_notify::notify_with_fds(&states, &[fd.as_fd()]) {
                tracing::warn!(error = %e, name = %name, "cannot store a descriptor with systemd");
            }
        }
    }

    /// `FDSTOREREMOVE=1` for each name: systemd closes what it keeps
    /// under it.
    pub fn remove_fds(&self, names: &[String]) {
        for name in names {
            self.send(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]);
        }
    }
}

/// Waits until every checked backend has been probed once (so `READY=1`
/// means the pools' states are known), at most [`FIRST_ROUND_LIMIT`].
pub async fn first_health_round(server: &Server) {
    let deadline = tokio::time::Instant::now() + FIRST_ROUND_LIMIT;
    loop {
        let all = server.pools().iter().all(|p| {
            p.snapshot().backends().iter().all(|b| {
                server
                    .health()
                    .backend(p.name(), b.name())
                    .is_none_or(|h| h.good_run + h.bad_run > 0)
            })
        });
        if all || tokio::time::Instant::now() >= deadline {
            if !all {
                tracing::info!("ready before every backend was probed once (5 s passed)");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one-line `STATUS=`: pools with a backend up, and listeners.
pub fn summary(server: &Server, vrrp: &str) -> String {
    let pools = server.pools();
    let up = pools.iter().filter(|p| p.snapshot().any_up()).count();
    let mut s = format!("{up}/{} pools up", pools.len());
    if !vrrp.is_empty() {
        s.push_str("; ");
        s.push_str(vrrp);
    }
    s
}
