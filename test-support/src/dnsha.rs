//! The built `dnsha` binary, run as a child process with a given config.

use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::client;
use crate::netns;
use crate::process::signal_tree;

/// How long [`Dnsha::wait_udp`] and [`Dnsha::wait_tcp`] wait.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `dnsha run --config FILE`, with its configuration in a
/// temporary directory and its stdout and stderr captured to a log file
/// there.
///
/// The binary's path is only known inside the `dnsha` package's tests, so it
/// is passed in:
///
/// ```no_run
/// # use std::path::Path;
/// # let config = "";
/// # let addr = test_support::free_addr();
/// // In `bins/tests/*.rs`: Path::new(env!("CARGO_BIN_EXE_dnsha"))
/// let bin = Path::new("target/debug/dnsha");
/// let mut dnsha = test_support::Dnsha::start(bin, config);
/// dnsha.wait_udp(addr);
/// ```
///
/// [`Dnsha::start_in`] runs it in a network namespace (see
/// [`netns`](crate::netns)); [`Dnsha::wait_udp`] and [`Dnsha::wait_tcp`]
/// then probe from inside that namespace.
///
/// Dropping it kills the process (SIGKILL); if the test is panicking, the
/// log is printed first, so a failing test shows what the daemon said.
#[derive(Debug)]
pub struct Dnsha {
    dir: TempDir,
    config: PathBuf,
    log: PathBuf,
    pid: u32,
    netns: Option<String>,
    child: Option<Child>,
}

impl Dnsha {
    /// Writes `config_toml` to a file and runs `bin run --config FILE`.
    /// Panics if the process cannot be started. It does not wait for the
    /// listeners: use [`Dnsha::wait_udp`] or [`Dnsha::wait_tcp`].
    pub fn start(bin: &Path, config_toml: &str) -> Self {
        Self::try_start(bin, config_toml)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
    }

    /// Like [`Dnsha::start`], returning the error instead of panicking.
    pub fn try_start(bin: &Path, config_toml: &str) -> io::Result<Self> {
        Self::try_start_with(bin, config_toml, &[], &[])
    }

    /// Like [`Dnsha::try_start`], appending `extra_args` after
    /// `run --config FILE` and setting the environment variables `env` (for
    /// instance `("RUST_LOG", "debug")`) on top of the inherited ones.
    pub fn try_start_with(
        bin: &Path,
        config_toml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> io::Result<Self> {
        Self::try_start_in(None, bin, config_toml, extra_args, env)
    }

    /// Like [`Dnsha::start`], in network namespace `netns` (with
    /// `ip netns exec`, so [`Dnsha::pid`] is the daemon's own).
    pub fn start_in(netns: &str, bin: &Path, config_toml: &str) -> Self {
        Self::try_start_in(Some(netns), bin, config_toml, &[], &[])
            .unwrap_or_else(|e| panic!("cannot start {} in {netns}: {e}", bin.display()))
    }

    /// Like [`Dnsha::try_start_with`], in network namespace `netns` when it
    /// is given.
    pub fn try_start_in(
        netns: Option<&str>,
        bin: &Path,
        config_toml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("dnsha-run-").tempdir()?;
        let config = dir.path().join("dnsha.toml");
        let log = dir.path().join("dnsha.log");
        fs::write(&config, config_toml)?;
        let output = File::create(&log)?;
        let child = netns::command(netns, bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(extra_args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", bin.display())))?;
        tracing::debug!(pid = child.id(), config = %config.display(), "dnsha started");
        Ok(Self {
            pid: child.id(),
            dir,
            config,
            log,
            netns: netns.map(str::to_owned),
            child: Some(child),
        })
    }

    /// The daemon's process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The configuration file it was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Its temporary directory, where a test may put other files (keys,
    /// certificates) that the configuration refers to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the daemon has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, for at most `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `addr` answers a DNS query over UDP (any answer counts),
    /// for at most 10 s. Panics, showing the log, if it does not or if the
    /// daemon exits.
    pub fn wait_udp(&mut self, addr: SocketAddr) {
        self.wait_ready(addr, "UDP", client::wait_udp);
    }

    /// Waits until `addr` accepts a TCP connection, for at most 10 s.
    /// Panics, showing the log, if it does not or if the daemon exits.
    pub fn wait_tcp(&mut self, addr: SocketAddr) {
        self.wait_ready(addr, "TCP", client::wait_tcp);
    }

    fn wait_ready(
        &mut self,
        addr: SocketAddr,
        what: &str,
        probe: impl Fn(SocketAddr, Duration) -> Result<(), String> + Sync,
    ) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                panic!(
                    "dnsha exited ({status}) before {addr} was ready over {what}; log:\n{}",
                    self.log()
                );
            }
            let result = netns::maybe_in(self.netns.as_deref(), || {
                probe(addr, Duration::from_millis(250))
            });
            match result {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
        }
        panic!(
            "dnsha not ready on {addr} over {what} within {READY_TIMEOUT:?} ({last_error}); log:\n{}",
            self.log()
        );
    }

    /// Sends `signal` to the daemon (and any process it forked).
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.child.is_none() {
            return Err(io::Error::other("dnsha has already exited"));
        }
        signal_tree(self.pid, signal).map_err(io::Error::from)
    }

    /// Replaces the configuration file with `new_toml`, atomically (write
    /// then rename), so a daemon reloading at that moment never sees half a
    /// file. Follow with `signal(Signal::SIGHUP)`. Panics on I/O errors.
    pub fn rewrite_config(&self, new_toml: &str) {
        let tmp = self.dir.path().join("dnsha.toml.new");
        fs::write(&tmp, new_toml)
            .and_then(|()| fs::rename(&tmp, &self.config))
            .unwrap_or_else(|e| panic!("cannot rewrite {}: {e}", self.config.display()));
    }

    /// The exit status, if the daemon has exited (without waiting).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_status().is_none()
    }

    /// Waits up to `timeout` for the daemon to exit and returns its status,
    /// or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the daemon (SIGKILL) and waits for it. Does nothing if it has
    /// already been killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal_tree(child.id(), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsha {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- dnsha (pid {}) log ---\n{}", self.pid, self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A stand-in for the daemon: a shell script that logs its arguments and
    /// config, and reacts to SIGHUP and SIGTERM.
    fn fake_daemon(dir: &Path) -> PathBuf {
        let path = dir.join("fake-dnsha");
        fs::write(
            &path,
            "#!/bin/sh\n\
             echo \"args: $*\" >&2\n\
             trap 'echo reloaded >&2; cat \"$3\"' HUP\n\
             trap 'echo bye >&2; exit 3' TERM\n\
             cat \"$3\"\n\
             while :; do sleep 0.05; done\n",
        )
        .unwrap();
        let status = Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        assert!(status.success());
        path
    }

    #[test]
    fn runs_signals_and_rewrites_config() {
        let scripts = tempfile::tempdir().unwrap();
        let bin = fake_daemon(scripts.path());
        let mut dnsha = Dnsha::start(&bin, "first = 1\n");
        assert!(
            dnsha.wait_log("first = 1", Duration::from_secs(5)),
            "{}",
            dnsha.log()
        );
        let log = dnsha.log();
        assert!(log.contains("args: run --config "), "{log}");
        assert!(
            log.contains(&dnsha.config_path().display().to_string()),
            "{log}"
        );
        assert!(dnsha.is_running());
        assert_eq!(dnsha.wait_exit(Duration::from_millis(50)), None);

        dnsha.rewrite_config("second = 2\n");
        dnsha.signal(Signal::SIGHUP).unwrap();
        assert!(
            dnsha.wait_log("second = 2", Duration::from_secs(5)),
            "{}",
            dnsha.log()
        );

        dnsha.signal(Signal::SIGTERM).unwrap();
        let status = dnsha
            .wait_exit(Duration::from_secs(5))
            .expect("exits on SIGTERM");
        assert_eq!(status.code(), Some(3));
        assert!(!dnsha.is_running());
        assert!(dnsha.log().contains("bye"));
    }

    #[test]
    #[should_panic(expected = "dnsha exited")]
    fn wait_udp_fails_fast_when_the_daemon_exits() {
        let mut dnsha = Dnsha::start(Path::new("/bin/false"), "");
        dnsha.wait_udp(crate::free_addr());
    }
}
