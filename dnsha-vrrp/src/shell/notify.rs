//! The notify queue: one command at a time, in the order of the changes.

use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How long one notify command may run before it is killed.
pub(crate) const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

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
    tx: mpsc::UnboundedSender<NotifyJob>,
}

impl Notifier {
    /// Spawns the single worker; returns the queue and the worker's handle
    /// (which ends once every `Notifier` clone is dropped and the queue is
    /// drained).
    pub(crate) fn spawn() -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<NotifyJob>();
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                run(job).await;
            }
        });
        (Self { tx }, task)
    }

    pub(crate) fn push(&self, job: NotifyJob) {
        if self.tx.send(job).is_err() {
            warn!("notify queue closed");
        }
    }
}

async fn run(job: NotifyJob) {
    let mut cmd = Command::new(&job.program);
    cmd.arg("INSTANCE")
        .arg(&job.instance)
        .arg(job.state)
        .arg(job.priority.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(program = %job.program, error = %e, "notify command failed to start");
            return;
        }
    };
    match tokio::time::timeout(NOTIFY_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            debug!(instance = %job.instance, state = job.state, "notify done");
        }
        Ok(Ok(out)) => {
            warn!(program = %job.program, instance = %job.instance, status = %out.status, "notify command failed");
        }
        Ok(Err(e)) => warn!(program = %job.program, error = %e, "notify command wait failed"),
        Err(_) => warn!(program = %job.program, "notify command timed out and was killed"),
    }
}
