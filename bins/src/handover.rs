//! Restarts that lose nothing. Under systemd, dnsha stores its listening
//! sockets in the unit's descriptor store (`FDSTORE=1`); `systemctl
//! restart` (and a package upgrade, which restarts the unit) sends
//! `SIGUSR2` (the unit's `RestartKillSignal=`) instead of `SIGTERM`, and the
//! process hands over: VRRP masters leave their addresses and send no
//! priority 0, a note of them goes to the store too, the kernel path's
//! table stays, and the listeners drain. systemd keeps the sockets open
//! meanwhile, so queries queue in them instead of being refused, and gives
//! them to the next process as `LISTEN_FDS`: its listeners take them, and
//! the masters resume at once, before their backups' Master_Down_Interval
//! runs out.

use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The descriptor name of the note of VRRP masters.
pub const STATE_NAME: &str = "dnsha-state";

/// One VRRP instance that was master when the previous process handed
/// over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Master {
    /// The instance.
    pub name: String,
    /// Its advertisement interval, in milliseconds.
    pub advert_int_ms: u64,
}

/// What a process hands the next one, besides its sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// `CLOCK_MONOTONIC` when it was written, in microseconds.
    pub monotonic_usec: u64,
    /// The VRRP instances that were master.
    pub masters: Vec<Master>,
}

impl Note {
    /// The instances to resume at `now_usec`: those whose backups cannot
    /// have taken over yet (less than three advertisement intervals have
    /// passed, the smallest Master_Down_Interval). The others start as
    /// after a stop.
    pub fn resumable(&self, now_usec: u64) -> Vec<String> {
        let elapsed = Duration::from_micros(now_usec.saturating_sub(self.monotonic_usec));
        self.masters
            .iter()
            .filter(|m| elapsed < Duration::from_millis(3 * m.advert_int_ms))
            .map(|m| m.name.clone())
            .collect()
    }
}

/// What the previous process handed over.
#[derive(Debug, Default)]
pub struct Handover {
    /// Its listening sockets, by name.
    pub sockets: Vec<(String, OwnedFd)>,
    /// Its note, if it left one.
    pub note: Option<Note>,
}

/// `CLOCK_MONOTONIC` now, in microseconds.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

/// Takes what the service manager passed (`LISTEN_FDS`, named by
/// `LISTEN_FDNAMES`). Call once, first thing: the descriptors become this
/// process's to close.
pub fn take() -> Handover {
    let mut h = Handover::default();
    for (name, fd) in crate::sys::take_listen_fds() {
        if name == STATE_NAME {
            match read_note(fd) {
                Ok(note) => h.note = Some(note),
                Err(e) => tracing::warn!(error = %e, "unreadable restart note ignored"),
            }
        } else {
            h.sockets.push((name, fd));
        }
    }
    h
}

fn read_note(fd: OwnedFd) -> std::io::Result<Note> {
    let mut file = std::fs::File::from(fd);
    file.rewind()?;
    let mut text = String::new();
    file.take(64 * 1024).read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

/// The note written to a memory file, for the descriptor store.
pub fn write_note(note: &Note) -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"dnsha-state", MFdFlags::MFD_CLOEXEC).map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&serde_json::to_vec(note).map_err(std::io::Error::other)?)?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> Note {
        Note {
            monotonic_usec: 10_000_000,
            masters: vec![
                Master {
                    name: "fast".into(),
                    advert_int_ms: 100,
                },
                Master {
                    name: "slow".into(),
                    advert_int_ms: 1000,
                },
            ],
        }
    }

    #[test]
    fn masters_resume_only_before_their_backups_can_take_over() {
        let n = note();
        assert_eq!(n.resumable(10_000_000 + 200_000), ["fast", "slow"]);
        assert_eq!(n.resumable(10_000_000 + 300_000), ["slow"]);
        assert_eq!(n.resumable(10_000_000 + 2_999_000), ["slow"]);
        assert!(n.resumable(10_000_000 + 3_000_000).is_empty());
    }

    #[test]
    fn a_note_survives_its_memory_file() {
        let fd = write_note(&note()).unwrap();
        assert_eq!(read_note(fd).unwrap(), note());
    }
}
