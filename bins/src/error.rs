//! The error type of the `dnsha` binary's library: configuration files that
//! cannot be read or are invalid, and the `dnsha status` client.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use dnsha_core::ConfigError;

/// Errors of the daemon's commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The configuration is invalid. Displays as one `FILE:LINE:COL:
    /// message` line per error, in source order.
    #[error("{}", render(file, text, errors))]
    Config {
        /// The file name as shown in messages.
        file: String,
        /// The file's text, to turn spans into lines and columns.
        text: String,
        /// Every error found, each with its location.
        errors: Vec<ConfigError>,
    },
    /// `dnsha status` cannot connect to the admin endpoint.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The admin endpoint.
        addr: SocketAddr,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Sending the request or reading the answer failed.
    #[error("{addr}: {source}")]
    Exchange {
        /// The admin endpoint.
        addr: SocketAddr,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The answer is not HTTP.
    #[error("{addr}: malformed HTTP answer")]
    MalformedAnswer {
        /// The admin endpoint.
        addr: SocketAddr,
    },
    /// The answer is not 200 OK.
    #[error("{addr}: {status_line}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    HttpStatus {
        /// The admin endpoint.
        addr: SocketAddr,
        /// The answer's first line.
        status_line: String,
        /// The answer's body, trimmed (the endpoint's explanation).
        body: String,
    },
    /// No complete answer in time.
    #[error("{addr}: timed out")]
    Timeout {
        /// The admin endpoint.
        addr: SocketAddr,
    },
    /// The kernel path cannot be installed or changed.
    #[error(transparent)]
    Kernel(#[from] dnsha_kernel::Error),
    /// A kernel listener whose clients' packets the kernel would not
    /// forward.
    #[error(
        "listener {listener} has forwarding = \"kernel\" but {sysctl} is 0: the kernel would not \
         forward its clients' packets (sysctl -w {sysctl}=1, or in /etc/sysctl.d)"
    )]
    ForwardingOff {
        /// The listener.
        listener: String,
        /// The sysctl to set.
        sysctl: &'static str,
    },
    /// `user` names another user than the one dnsha runs as, and dnsha is
    /// not root.
    #[error(
        "user = {user:?}: dnsha runs as uid {euid}, not root, and cannot switch user (start it as \
         root, or leave `user` out when systemd's User= switches it)"
    )]
    NotRoot {
        /// The configured user.
        user: String,
        /// The effective uid dnsha runs as.
        euid: u32,
    },
    /// A step of the user switch failed.
    #[error("cannot switch user: {step}: {source}")]
    Switch {
        /// What was being done.
        step: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Threads that still show other credentials after the switch.
    #[error("cannot switch user: threads {threads:?} kept their credentials")]
    Credentials {
        /// Their ids.
        threads: Vec<i32>,
    },
}

fn render(file: &str, text: &str, errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.render(file, text))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
