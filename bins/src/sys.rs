//! The crate's only `unsafe` code: switching the user, group and
//! capabilities of every thread of the process.
//!
//! Linux keeps credentials per thread. glibc's `setuid` makes a uid change
//! process-wide by signalling each thread, but nothing does that for
//! `capset`, and a thread whose uid leaves 0 without `PR_SET_KEEPCAPS` set
//! loses every capability. So each thread runs the whole switch itself, in
//! a signal handler, with raw system calls (all async-signal-safe): keep
//! capabilities, set the groups, gid and uid, then set the capability sets
//! and clear keep-capabilities. The target is published in atomics before
//! the first signal, and the handler only reads them.

#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use nix::libc;

/// Most supplementary groups the switch sets.
pub(crate) const MAX_GROUPS: usize = 64;

static UID: AtomicU32 = AtomicU32::new(0);
static GID: AtomicU32 = AtomicU32::new(0);
static CAPS: AtomicU64 = AtomicU64::new(0);
static NGROUPS: AtomicUsize = AtomicUsize::new(0);
static GROUPS: [AtomicU32; MAX_GROUPS] = [const { AtomicU32::new(0) }; MAX_GROUPS];
/// Threads that ran the switch from the signal.
static DONE: AtomicUsize = AtomicUsize::new(0);
/// The first errno a thread met, or 0.
static FAILED: AtomicI32 = AtomicI32::new(0);

/// What every thread switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// Supplementary groups (at most [`MAX_GROUPS`]).
    pub groups: Vec<u32>,
    /// The capabilities kept, as a capabilities(7) bit mask: permitted and
    /// effective; inheritable and ambient become empty.
    pub caps: u64,
}

/// Publishes `t` for [`switch_this_thread`] and the signal handler, and
/// resets the counters.
pub(crate) fn set_target(t: &Target) {
    UID.store(t.uid, Ordering::SeqCst);
    GID.store(t.gid, Ordering::SeqCst);
    CAPS.store(t.caps, Ordering::SeqCst);
    let n = t.groups.len().min(MAX_GROUPS);
    for (slot, g) in GROUPS.iter().zip(&t.groups) {
        slot.store(*g, Ordering::SeqCst);
    }
    NGROUPS.store(n, Ordering::SeqCst);
    DONE.store(0, Ordering::SeqCst);
    FAILED.store(0, Ordering::SeqCst);
}

/// Threads that ran the switch from the signal since [`set_target`].
pub(crate) fn done() -> usize {
    DONE.load(Ordering::SeqCst)
}

/// The first error a thread met since [`set_target`], if any.
pub(crate) fn failure() -> Option<io::Error> {
    match FAILED.load(Ordering::SeqCst) {
        0 => None,
        errno => Some(io::Error::from_raw_os_error(errno)),
    }
}

/// The signal the switch travels on: a real-time one nothing else uses
/// (glibc keeps the first few for itself).
fn signal_number() -> libc::c_int {
    libc::SIGRTMAX() - 1
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two data structs.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Runs the switch on the calling thread; 0 or the errno of the call that
/// failed. Raw system calls only, so that the signal handler may call it.
fn switch_raw() -> libc::c_int {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EPERM)
    };
    let uid = UID.load(Ordering::SeqCst);
    let gid = GID.load(Ordering::SeqCst);
    // SAFETY: geteuid takes no arguments and cannot fail.
    let euid = unsafe { libc::syscall(libc::SYS_geteuid) };
    if euid == 0 {
        let n = NGROUPS.load(Ordering::SeqCst).min(MAX_GROUPS);
        let mut groups = [0 as libc::gid_t; MAX_GROUPS];
        for (g, slot) in groups.iter_mut().zip(&GROUPS).take(n) {
            *g = slot.load(Ordering::SeqCst);
        }
        // SAFETY: plain integer arguments; `groups` is a live array of at
        // least `n` gid_t, read by the kernel before the call returns.
        let failed = unsafe {
            libc::syscall(libc::SYS_prctl, libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_setgroups, n, groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
        };
        if failed {
            return errno();
        }
    } else if u32::try_from(euid).ok() != Some(uid) {
        // Already another user: only root may switch.
        return libc::EPERM;
    }
    let caps = CAPS.load(Ordering::SeqCst);
    let (low, high) = (caps as u32, (caps >> 32) as u32);
    let header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: `header` and `data` are live, correctly laid out
    // (`_LINUX_CAPABILITY_VERSION_3` takes two data structs) and only read.
    let failed = unsafe {
        libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) != 0
            || libc::syscall(libc::SYS_prctl, libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0
    };
    if failed {
        errno()
    } else {
        0
    }
}

/// Switches the calling thread to the published target.
pub(crate) fn switch_this_thread() -> io::Result<()> {
    match switch_raw() {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

extern "C" fn on_signal(_sig: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno, valid for the
    // thread's life; saved and restored so the interrupted code sees its
    // own.
    let saved = unsafe { *libc::__errno_location() };
    let r = switch_raw();
    if r != 0 {
        let _ = FAILED.compare_exchange(0, r, Ordering::SeqCst, Ordering::SeqCst);
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Installs the handler of the switch signal (`SA_RESTART`: interrupted
/// calls resume). It stays installed: a late signal only finds the thread
/// switched already.
pub(crate) fn install_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid value to fill in; the handler
    // is an `extern "C" fn(c_int)` that only makes async-signal-safe calls.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(signal_number(), &sa, std::ptr::null_mut())
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends the switch signal to thread `tid` of this process; false when the
/// thread has exited.
pub(crate) fn signal_thread(tid: i32) -> io::Result<bool> {
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: tgkill takes plain integers; a wrong tid is an error, never
    // another process's thread (the tgid is ours).
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal_number()) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The calling thread's id.
pub(crate) fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// The descriptors the service manager passed (`LISTEN_FDS` from fd 3,
/// named by `LISTEN_FDNAMES`), now owned: each closes when dropped.
/// Empty when `LISTEN_PID` is not this process. Call at most once.
pub(crate) fn take_listen_fds() -> Vec<(String, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    match sd_notify::listen_fds_with_names() {
        Ok(fds) => fds
            // SAFETY: sd_listen_fds(3): descriptors 3 .. 3 + LISTEN_FDS are
            // open and passed to this process (LISTEN_PID checked); this is
            // the only place that takes them, once, at start.
            .map(|(fd, name)| (name, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "LISTEN_FDS ignored");
            Vec::new()
        }
    }
}
