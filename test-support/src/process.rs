//! Signalling a child process together with the processes it forked.

use std::fs;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `pid` followed by all its descendants, parents before children, as
/// listed by `/proc/<pid>/task/<tid>/children`.
pub(crate) fn tree(pid: u32) -> Vec<Pid> {
    let Ok(root) = i32::try_from(pid) else {
        return Vec::new();
    };
    let mut all = vec![Pid::from_raw(root)];
    let mut next = 0;
    // Bounded in case /proc returns something odd.
    while next < all.len() && all.len() < 1024 {
        let parent = all[next];
        next += 1;
        let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok())
                    .map(Pid::from_raw),
            );
        }
    }
    all
}

/// Sends `signal` to `pid` and to every process it forked. Fails only if
/// `pid` itself could not be signalled.
pub(crate) fn signal_tree(pid: u32, signal: Signal) -> nix::Result<()> {
    let mut tree = tree(pid).into_iter();
    let root = tree.next().ok_or(nix::errno::Errno::ESRCH)?;
    kill(root, signal)?;
    for child in tree {
        // A child may be gone by now.
        let _ = kill(child, signal);
    }
    Ok(())
}
