//! Trackers the shell runs itself: interface link state and check scripts.
//! Each reports changes as [`Command::TrackerChanged`] into its instance.

use std::time::Duration;

use tokio::process::Command as Process;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::command::{run_in_group, Ran};
use super::netlink::Netlink;
use super::InstanceMsg;
use crate::config::{interface_tracker, script_tracker, TrackScript};
use crate::router::Command;

/// How often link state is polled.
pub(crate) const LINK_POLL: Duration = Duration::from_millis(200);

/// Rise/fall hysteresis of a check, as keepalived applies it to scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: Option<bool>,
    streak: u32,
}

impl RiseFall {
    /// A new counter; the first result decides the initial state.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up: None,
            streak: 0,
        }
    }

    /// Feeds one result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        match self.up {
            None => {
                self.up = Some(ok);
                self.streak = 0;
                Some(ok)
            }
            Some(up) if up == ok => {
                self.streak = 0;
                None
            }
            Some(_) => {
                self.streak += 1;
                let needed = if ok { self.rise } else { self.fall };
                if self.streak >= needed {
                    self.up = Some(ok);
                    self.streak = 0;
                    Some(ok)
                } else {
                    None
                }
            }
        }
    }
}

fn report(tx: &mpsc::UnboundedSender<InstanceMsg>, name: String, up: bool) -> bool {
    tx.send(InstanceMsg::Router(Command::TrackerChanged { name, up }))
        .is_ok()
}

/// Polls `interface`'s link state, reporting every change (and the first
/// state) until the instance goes away.
pub(crate) async fn interface(
    nl: Netlink,
    interface: String,
    tx: mpsc::UnboundedSender<InstanceMsg>,
) {
    let name = interface_tracker(&interface);
    let mut last = None;
    loop {
        let up = nl.link_running(&interface).await;
        if last != Some(up) {
            if last.is_some() {
                info!(%interface, up, "tracked link changed");
            }
            last = Some(up);
            if !report(&tx, name.clone(), up) {
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LINK_POLL) => {}
            () = tx.closed() => return,
        }
    }
}

/// Runs a check script every interval, applying timeout and rise/fall.
pub(crate) async fn script(spec: TrackScript, tx: mpsc::UnboundedSender<InstanceMsg>) {
    let name = script_tracker(spec.display_name());
    let mut rf = RiseFall::new(spec.rise, spec.fall);
    let mut tick = tokio::time::interval(spec.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tx.closed() => return,
        }
        let ok = run_script(&spec.command, spec.timeout()).await;
        debug!(script = %name, ok, "check ran");
        if let Some(up) = rf.observe(ok) {
            info!(script = %name, up, "check script state changed");
            if !report(&tx, name.clone(), up) {
                return;
            }
        }
    }
}

async fn run_script(command: &str, timeout: Duration) -> bool {
    let mut cmd = Process::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    matches!(run_in_group(cmd, timeout).await, Ran::Exited(s) if s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_fall_hysteresis() {
        let mut rf = RiseFall::new(2, 3);
        assert_eq!(rf.observe(true), Some(true));
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(true), None); // streak broken
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), Some(false));
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(true), Some(true));
        let mut rf = RiseFall::new(1, 1);
        assert_eq!(rf.observe(false), Some(false));
        assert_eq!(rf.observe(true), Some(true));
    }

    #[tokio::test]
    async fn script_exit_status_and_timeout() {
        assert!(run_script("exit 0", Duration::from_secs(5)).await);
        assert!(!run_script("exit 3", Duration::from_secs(5)).await);
        assert!(!run_script("sleep 5", Duration::from_millis(100)).await);
    }
}
