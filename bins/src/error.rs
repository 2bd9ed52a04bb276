//! The error type of the `dnsha` binary's library: configuration files that
//! cannot be read or are invalid, and the `dnsha status` client.

use std::io;
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
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The admin endpoint.
        target: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Sending the request or reading the answer failed (TLS included).
    #[error("{target}: {source}")]
    Exchange {
        /// The admin endpoint.
        target: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("{target}: {source}")]
    Http {
        /// The admin endpoint.
        target: String,
        /// What hyper saw.
        #[source]
        source: hyper::Error,
    },
    /// The client's TLS settings cannot be made (the `DNSHA_ADMIN_CA`
    /// file).
    #[error("admin client tls: {source}")]
    AdminTls {
        /// The cause.
        #[source]
        source: dnsha_proxy::Error,
    },
    /// The request cannot be made (a host that is no TLS server name).
    #[error("{target}: cannot make the request")]
    BadRequest {
        /// The admin endpoint.
        target: String,
    },
    /// The answer is not 200 OK.
    #[error("{target}: {status_line}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    HttpStatus {
        /// The admin endpoint.
        target: String,
        /// The answer's first line.
        status_line: String,
        /// The answer's body, trimmed (the endpoint's explanation).
        body: String,
    },
    /// No complete answer in time.
    #[error("{target}: timed out")]
    Timeout {
        /// The admin endpoint.
        target: String,
    },
    /// An `[[anycast]]` section cannot start (its interface, rtnetlink).
    #[error("anycast `{name}`: {source}")]
    Anycast {
        /// The section.
        name: String,
        /// What failed.
        #[source]
        source: dnsha_vrrp::Error,
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
    /// An input of `dnsha import` cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    ImportRead {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// An input of `dnsha import` is malformed, or says something dnsha
    /// cannot do; shown as `FILE:LINE: message`.
    #[error("{file}:{line}: {message}")]
    ImportSyntax {
        /// The file, as named on the command line or by an include.
        file: String,
        /// The 1-based line.
        line: u32,
        /// What is wrong.
        message: String,
    },
    /// A file an `include` of an input names cannot be read.
    #[error("{file}:{line}: include `{}`: cannot read: {source}", path.display())]
    ImportInclude {
        /// The file holding the include.
        file: String,
        /// Its line.
        line: u32,
        /// The file it names.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// `dnsha import --output` cannot write its file.
    #[error("{}: cannot write: {source}", path.display())]
    ImportWrite {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The inputs of `dnsha import` hold nothing dnsha can serve.
    #[error(
        "{}dnsha import: the inputs hold no listener and no VRRP instance dnsha can use{}",
        warnings.iter().map(|w| format!("{w}\n")).collect::<String>(),
        if warnings.is_empty() { "" } else { " (see the warnings above)" }
    )]
    ImportNothing {
        /// What was not carried over, `FILE:LINE: warning: ...` each.
        warnings: Vec<String>,
    },
    /// Values of the inputs of `dnsha import` that dnsha refuses, each an
    /// [`Error::ImportSyntax`] at its source line.
    #[error("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    ImportRefused {
        /// One error per value.
        errors: Vec<Self>,
    },
    /// The configuration `dnsha import` made does not validate: a fault
    /// of the importer, never of its inputs.
    #[error(
        "dnsha import made a configuration that dnsha check refuses (a bug: please report it \
         with the input files):\n{}\n{text}",
        render("<imported>", text, errors)
    )]
    ImportInvalid {
        /// The configuration made.
        text: String,
        /// What is wrong with it.
        errors: Vec<ConfigError>,
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
