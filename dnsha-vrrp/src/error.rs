//! The error type of `dnsha-vrrp`.

use std::io;

use crate::codec::DecodeError;
use crate::config::error::ConfigError;

/// Errors of the VRRP crate: advertisement decoding, configuration and I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An advertisement or IP datagram was rejected.
    #[error("VRRP packet rejected")]
    Decode {
        /// Why.
        #[from]
        source: DecodeError,
    },
    /// The configuration is invalid; every problem is listed.
    #[error("{} VRRP configuration error(s): {}", errors.len(), join(errors))]
    Config {
        /// Every problem found.
        errors: Vec<ConfigError>,
    },
    /// A network interface does not exist or has no usable address.
    #[error("interface {interface}: {reason}")]
    Interface {
        /// Interface name.
        interface: String,
        /// What is missing.
        reason: String,
    },
    /// Adding or removing an address over rtnetlink failed.
    #[error("netlink: {operation} {address}: {reason}")]
    Netlink {
        /// What was attempted (`add`, `del`, `link`).
        operation: &'static str,
        /// The address concerned.
        address: std::net::IpAddr,
        /// The kernel's or library's message.
        reason: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The system error.
        source: io::Error,
    },
}

fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The drop counter this error feeds when an advertisement is rejected,
    /// or `None` for errors that are not about a received packet.
    pub fn drop_reason(&self) -> Option<crate::DropReason> {
        match self {
            Self::Decode { source } => Some(source.drop_reason()),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub(crate) type Result<T> = std::result::Result<T, Error>;
