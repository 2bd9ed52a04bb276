//! The service manager's side of systemd's notify protocol and descriptor
//! store, for restart tests on machines where systemd is not PID 1: a Unix
//! datagram socket a daemon is given as `NOTIFY_SOCKET`, which keeps every
//! message and, as systemd does with `FileDescriptorStoreMax=`, the
//! descriptors sent with `FDSTORE=1` under their `FDNAME=` (one copy of a
//! socket sent twice; `FDSTOREREMOVE=1` closes them), and the command that
//! starts the unit's next process with them as `LISTEN_FDS`, named by
//! `LISTEN_FDNAMES`, `LISTEN_PID` set to it, as systemd does on restart.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// A descriptor the store keeps. Descriptors received with `SCM_RIGHTS`
/// come without close-on-exec, so the processes this test starts inherit
/// them; [`FdStore::launch_script`] closes those the next process must not
/// keep.
#[derive(Debug, Clone)]
struct Stored {
    name: String,
    fd: RawFd,
    /// `/proc/self/fd/N`'s target (`socket:[INODE]`): the same socket sent
    /// twice is kept once.
    object: String,
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<String>,
    stored: Vec<Stored>,
    /// Received descriptors not kept (duplicates, removed): closed.
    closed: usize,
}

/// A notify socket with a descriptor store.
#[derive(Debug)]
pub struct FdStore {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FdStore {
    /// Binds `dir/notify` and starts receiving.
    pub fn new(dir: &Path) -> Self {
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        // The daemon may run as another user.
        let _ =
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777));
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::spawn(move || receive(&sock, &st, &stp));
        Self {
            path,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<String> {
        self.lock().messages.clone()
    }

    /// Messages holding `needle` (a line such as `READY=1`).
    pub fn count(&self, needle: &str) -> usize {
        self.lock()
            .messages
            .iter()
            .filter(|m| m.lines().any(|l| l == needle))
            .count()
    }

    /// Waits until [`FdStore::count`] of `needle` reaches `n`.
    pub fn wait_count(&self, needle: &str, n: usize, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        while Instant::now() < deadline {
            if self.count(needle) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// The names of the descriptors kept, in order.
    pub fn names(&self) -> Vec<String> {
        self.lock().stored.iter().map(|s| s.name.clone()).collect()
    }

    /// A `bash -c` script that starts `"$0" "$@"` as the unit's next
    /// process: the kept descriptors at 3, 4, ... (`LISTEN_FDS`,
    /// `LISTEN_FDNAMES`, `LISTEN_PID` = its own pid, as the script execs
    /// it), every other received descriptor closed, `NOTIFY_SOCKET` set.
    pub fn launch_script(&self) -> String {
        let st = self.lock();
        let mut s = String::from("set -e; ");
        for (i, k) in st.stored.iter().enumerate() {
            s.push_str(&format!("exec {}<&{}; exec {}<&-; ", 900 + i, k.fd, k.fd));
        }
        for (i, _) in st.stored.iter().enumerate() {
            s.push_str(&format!(
                "exec {}<&{}; exec {}<&-; ",
                3 + i,
                900 + i,
                900 + i
            ));
        }
        let names: Vec<&str> = st.stored.iter().map(|k| k.name.as_str()).collect();
        s.push_str(&format!(
            "export NOTIFY_SOCKET={} LISTEN_FDS={} LISTEN_FDNAMES={}; export LISTEN_PID=$$; \
             exec \"$0\" \"$@\"",
            self.path.display(),
            st.stored.len(),
            names.join(":")
        ));
        s
    }
}

impl Drop for FdStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for k in self.lock().stored.drain(..) {
            let _ = nix::unistd::close(k.fd);
        }
    }
}

fn receive(sock: &UnixDatagram, state: &Mutex<State>, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 32]);
        let (bytes, fds) = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(f) = c {
                            fds.extend(f);
                        }
                    }
                }
                (msg.bytes, fds)
            }
            Err(_) => continue,
        };
        let text = String::from_utf8_lossy(&buf[..bytes]).into_owned();
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("FDNAME="))
            .unwrap_or("stored")
            .to_string();
        if text.lines().any(|l| l == "FDSTORE=1") {
            for fd in fds {
                let object = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if st.stored.iter().any(|k| k.object == object) {
                    let _ = nix::unistd::close(fd);
                    st.closed += 1;
                } else {
                    st.stored.push(Stored {
                        name: name.clone(),
                        fd,
                        object,
                    });
                }
            }
        } else {
            for fd in fds {
                let _ = nix::unistd::close(fd);
                st.closed += 1;
            }
        }
        if text.lines().any(|l| l == "FDSTOREREMOVE=1") {
            let (gone, kept): (Vec<Stored>, Vec<Stored>) =
                st.stored.drain(..).partition(|k| k.name == name);
            st.stored = kept;
            for k in gone {
                let _ = nix::unistd::close(k.fd);
                st.closed += 1;
            }
        }
        st.messages.push(text);
    }
}
