//! Running notify and track scripts: each in a process group of its own, so
//! that at its timeout the whole group is killed (SIGKILL) and a shell's
//! children do not outlive it, holding the next run's resources.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

/// How a script run ended.
#[derive(Debug)]
pub(crate) enum Ran {
    /// It exited with this status.
    Exited(ExitStatus),
    /// It could not be started.
    NotStarted(std::io::Error),
    /// Waiting for it failed.
    Lost(std::io::Error),
    /// It ran past its timeout and its process group was killed.
    Killed,
}

/// Runs `cmd` (stdin from /dev/null) in a new process group, waiting at
/// most `timeout`.
pub(crate) async fn run_in_group(mut cmd: Command, timeout: Duration) -> Ran {
    cmd.stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ran::NotStarted(e),
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ran::Exited(status),
        Ok(Err(e)) => Ran::Lost(e),
        Err(_) => {
            // Not reaped yet (`child` lives until the end of this function):
            // its group ID cannot have been reused.
            if let Some(pgid) = pgid {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            Ran::Killed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_hung_script_and_its_children_are_killed() {
        let marker = std::env::temp_dir().join(format!("dnsha-vrrp-run-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("(sleep 1; touch {}) & sleep 30", marker.display()));
        let started = Instant::now();
        assert!(matches!(
            run_in_group(cmd, Duration::from_millis(200)).await,
            Ran::Killed
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(!marker.exists(), "a child of the killed script survived");
        let mut ok = Command::new("/bin/sh");
        ok.arg("-c").arg("exit 0");
        assert!(matches!(
            run_in_group(ok, Duration::from_secs(5)).await,
            Ran::Exited(s) if s.success()
        ));
    }
}
