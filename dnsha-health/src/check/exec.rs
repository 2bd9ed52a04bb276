//! `check = "exec"`: run a command (keepalived's `MISC_CHECK`) with the
//! backend in its environment — `DNSHA_BACKEND_ADDRESS` (`IP:PORT`),
//! `DNSHA_BACKEND_IP`, `DNSHA_BACKEND_PORT`, `DNSHA_BACKEND_NAME`. Exit
//! status 0 is healthy. At the timeout the command's whole process group is
//! killed (SIGKILL), and so are children it leaves behind when it exits, so
//! a shell's children never outlive it.
//!
//! The command gets a minimal environment: [`EXEC_PATH`] and the
//! `DNSHA_BACKEND_*` variables, nothing of the daemon's own (which may hold
//! credentials or proxies meant for it alone).

use std::process::Stdio;
use std::time::Duration;

use dnsha_core::config::HealthConfig;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{ProbeFailure, ProbeResult, Target};
use crate::state::FailureReason;

/// `PATH` of an `exec` check.
pub const EXEC_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of the command's standard error is kept for the log.
const STDERR_KEPT: usize = 512;

/// An `exec` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCheck {
    argv: Vec<String>,
}

impl ExecCheck {
    /// The check `config` describes.
    pub fn new(config: &HealthConfig) -> Self {
        Self {
            argv: config.command.clone(),
        }
    }

    /// Runs the command once for `target`.
    pub async fn probe(&self, target: &Target, timeout: Duration) -> ProbeResult {
        let Some((program, args)) = self.argv.split_first() else {
            return Err(ProbeFailure::new(FailureReason::Local, "empty command"));
        };
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", EXEC_PATH)
            .env("DNSHA_BACKEND_ADDRESS", target.address.to_string())
            .env("DNSHA_BACKEND_IP", target.address.ip().to_string())
            .env("DNSHA_BACKEND_PORT", target.address.port().to_string())
            .env("DNSHA_BACKEND_NAME", &target.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                let reason = if super::out_of_local_resources(&e) {
                    FailureReason::NoResources
                } else {
                    FailureReason::Local
                };
                ProbeFailure::new(reason, format!("cannot run {program}: {e}"))
            })?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        let stderr = child.stderr.take();
        // Drain standard error apart, so the command never blocks on a full
        // pipe and a child it left behind holding the pipe does not hold us.
        let mut reader = tokio::spawn(async move {
            let mut kept = Vec::new();
            if let Some(mut err) = stderr {
                let mut buf = [0u8; 1024];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let room = STDERR_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
                }
            }
            kept
        });
        let outcome = tokio::time::timeout(timeout, child.wait()).await;
        if let (Ok(Ok(_)), Some(pgid)) = (&outcome, pgid) {
            // The command is done; children it left running in its group
            // (a forgotten `&`) are not: the group ID stays theirs while any
            // of them lives, so this reaches only them.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let result = match outcome {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => {
                let kept = match tokio::time::timeout(Duration::from_millis(100), &mut reader).await
                {
                    Ok(Ok(k)) => k,
                    _ => Vec::new(),
                };
                Err(ProbeFailure::new(
                    FailureReason::Exit(status.code()),
                    format!(
                        "{program} exited with {status}: {}",
                        String::from_utf8_lossy(&kept).trim()
                    ),
                ))
            }
            Ok(Err(e)) => Err(ProbeFailure::new(
                FailureReason::Local,
                format!("waiting for {program}: {e}"),
            )),
            Err(_) => {
                // The child is not reaped yet (`child` lives until the end of
                // this function), so its group ID cannot have been reused.
                if let Some(pgid) = pgid {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                }
                Err(ProbeFailure::new(
                    FailureReason::Timeout(timeout),
                    format!(
                        "{program} still running after {} ms: killed",
                        timeout.as_millis()
                    ),
                ))
            }
        };
        reader.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn sh(line: &str) -> ExecCheck {
        ExecCheck {
            argv: vec!["/bin/sh".into(), "-c".into(), line.into()],
        }
    }

    fn target() -> Target {
        Target {
            name: "coredns-002".into(),
            address: "127.0.0.2:5353".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn exit_status_decides_and_the_environment_names_the_backend() {
        let t = Duration::from_secs(5);
        let env = sh(
            r#"test "$DNSHA_BACKEND_ADDRESS" = 127.0.0.2:5353 && test "$DNSHA_BACKEND_IP" = 127.0.0.2 && test "$DNSHA_BACKEND_PORT" = 5353 && test "$DNSHA_BACKEND_NAME" = coredns-002"#,
        );
        assert_eq!(env.probe(&target(), t).await, Ok(()));
        // Nothing else of the daemon's environment (HOME is set for tests).
        let minimal = sh(&format!(
            r#"test -z "$HOME" && test -z "$CARGO" && test "$PATH" = "{EXEC_PATH}""#
        ));
        assert_eq!(minimal.probe(&target(), t).await, Ok(()));
        let e = sh("echo broken >&2; exit 3")
            .probe(&target(), t)
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::Exit(Some(3)));
        assert!(e.detail.contains("broken"), "{e}");
        let e = ExecCheck {
            argv: vec!["/nonexistent/check".into()],
        }
        .probe(&target(), t)
        .await
        .unwrap_err();
        assert_eq!(e.reason, FailureReason::Local);
    }

    #[tokio::test]
    async fn children_left_behind_by_a_finished_command_are_killed() {
        let marker = std::env::temp_dir().join(format!("dnsha-exec-left-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let line = format!("(sleep 1; touch {}) & exit 0", marker.display());
        assert_eq!(
            sh(&line).probe(&target(), Duration::from_secs(5)).await,
            Ok(())
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "a child of the finished command survived");
    }

    #[tokio::test]
    async fn a_hung_command_and_its_children_are_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("dnsha-exec-{}", std::process::id()));
        let marker = dir.with_extension("alive");
        let _ = std::fs::remove_file(&marker);
        // The grandchild would touch the marker after 1.5 s if it survived.
        let line = format!("(sleep 1.5; touch {}) & sleep 30", marker.display());
        let started = Instant::now();
        let e = sh(&line)
            .probe(&target(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::Timeout(Duration::from_millis(300)));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert!(!marker.exists(), "a child of the killed command survived");
    }
}
