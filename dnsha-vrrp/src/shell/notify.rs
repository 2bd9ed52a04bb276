//! The notify queue: one command at a time, in the order of the changes,
//! at most [`NOTIFY_QUEUE`] waiting (a flapping instance cannot pile up
//! commands without bound); each in its own process group, killed whole at
//! [`NOTIFY_TIMEOUT`].

use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::command::{run_in_group, Ran};

/// How long one notify command may run before it is killed.
pub(crate) const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Notify commands waiting at most; more are dropped and logged.
pub(crate) const NOTIFY_QUEUE: usize = 64;

/// One queued run: `program INSTANCE NAME STATE PRIORITY`.
#[derive(Debug)]
pub(crate) struct NotifyJob {
    pub(crate) program: String,
    pub(crate) instance: String,
    pub(crate) state: &'static str,
    pub(crate) priority: u8,
}

/// Sender side of the queue, shared by every instance of a process.
#[derive(Clone, Debug)]
pub(crate) struct Notifier {
    tx: mpsc::Sender<NotifyJob>,
}

impl Notifier {
    /// Spawns the single worker; returns the queue and the worker's handle
    /// (which ends once every `Notifier` clone is dropped and the queue is
    /// drained).
    pub(crate) fn spawn() -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<NotifyJob>(NOTIFY_QUEUE);
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                run(job).await;
            }
        });
        (Self { tx }, task)
    }

    /// Queues `job`; when [`NOTIFY_QUEUE`] commands already wait (the
    /// scripts are slower than the changes), it is dropped and logged.
    /// Returns whether it was queued.
    pub(crate) fn push(&self, job: NotifyJob) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(job)) => {
                warn!(program = %job.program, instance = %job.instance, state = job.state, "notify queue full: command dropped");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                warn!("notify queue closed");
                false
            }
        }
    }
}

async fn run(job: NotifyJob) {
    let mut cmd = Command::new(&job.program);
    cmd.arg("INSTANCE")
        .arg(&job.instance)
        .arg(job.state)
        .arg(job.priority.to_string());
    match run_in_group(cmd, NOTIFY_TIMEOUT).await {
        Ran::Exited(status) if status.success() => {
            debug!(instance = %job.instance, state = job.state, "notify done");
        }
        Ran::Exited(status) => {
            warn!(program = %job.program, instance = %job.instance, %status, "notify command failed");
        }
        Ran::NotStarted(e) => {
            warn!(program = %job.program, error = %e, "notify command failed to start");
        }
        Ran::Lost(e) => warn!(program = %job.program, error = %e, "notify command wait failed"),
        Ran::Killed => warn!(program = %job.program, "notify command timed out and was killed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_of_changes_queues_at_most_the_bound_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ran");
        let script = dir.path().join("notify.sh");
        // Each run appends its state, then takes a while.
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$3\" >> {}\nsleep 0.05\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let (notifier, worker) = Notifier::spawn();
        let job = |i: usize| NotifyJob {
            program: script.display().to_string(),
            instance: "vi".into(),
            state: if i.is_multiple_of(2) {
                "MASTER"
            } else {
                "BACKUP"
            },
            priority: 100,
        };
        // 200 changes at once, faster than any script: the queue holds its
        // bound (plus the one the worker has taken), the rest are dropped.
        let queued = (0..200).filter(|&i| notifier.push(job(i))).count();
        assert!(
            (NOTIFY_QUEUE..=NOTIFY_QUEUE + 1).contains(&queued),
            "{queued} queued"
        );
        drop(notifier);
        tokio::time::timeout(Duration::from_secs(30), worker)
            .await
            .unwrap()
            .unwrap();
        // Every queued command ran, one at a time, in the order of the changes.
        let ran = std::fs::read_to_string(&log).unwrap();
        let states: Vec<&str> = ran.lines().collect();
        assert_eq!(states.len(), queued);
        for (i, s) in states.iter().enumerate() {
            assert_eq!(*s, if i % 2 == 0 { "MASTER" } else { "BACKUP" });
        }
    }
}
