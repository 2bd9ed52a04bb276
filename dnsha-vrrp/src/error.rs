//! The error type of `dnsha-vrrp`.

use std::io;
use std::net::Ipv4Addr;

/// Errors of the VRRP crate: advertisement decoding, configuration and I/O.
///
/// The decode variants map one-to-one onto a [`DropReason`](crate::DropReason)
/// through [`Error::drop_reason`], which is how the router counts dropped
/// advertisements.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the fixed part of the packet (or of the IP header).
    #[error("packet truncated: {len} bytes, need at least {min}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// More bytes than any VRRPv2 advertisement can hold.
    #[error("packet too long: {len} bytes, at most {max}")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// Largest possible advertisement.
        max: usize,
    },
    /// The version nibble is not 2 (VRRPv3 packets land here).
    #[error("unsupported VRRP version {version}")]
    Version {
        /// The version found.
        version: u8,
    },
    /// The type nibble is not 1 (ADVERTISEMENT).
    #[error("unknown VRRP packet type {kind}")]
    Type {
        /// The type found.
        kind: u8,
    },
    /// The checksum does not match the contents.
    #[error("bad checksum: packet says {found:#06x}, contents give {computed:#06x}")]
    Checksum {
        /// Checksum carried by the packet.
        found: u16,
        /// Checksum computed over the packet.
        computed: u16,
    },
    /// The address count does not match the packet length.
    #[error("address count {count} does not match length {len}")]
    CountMismatch {
        /// The count field.
        count: u8,
        /// The VRRP payload length.
        len: usize,
    },
    /// The authentication type is unknown, unsupported, or not ours.
    #[error("authentication type {found}, expected {expected}")]
    AuthType {
        /// Type we are configured for.
        expected: u8,
        /// Type carried by the packet.
        found: u8,
    },
    /// Simple-password authentication with the wrong password.
    #[error("authentication password mismatch")]
    Password,
    /// The advertisement interval is not ours.
    #[error("advertisement interval {found}s, ours is {expected}s")]
    Interval {
        /// Our interval in seconds.
        expected: u8,
        /// The packet's interval in seconds.
        found: u8,
    },
    /// The IP header is malformed or is not a VRRP packet.
    #[error("bad IPv4 header: {reason}")]
    IpHeader {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The configuration is invalid; every problem is listed.
    #[error("{} VRRP configuration error(s): {}", errors.len(), join(errors))]
    Config {
        /// Every problem found.
        errors: Vec<crate::config::ConfigError>,
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
        address: Ipv4Addr,
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

fn join(errors: &[crate::config::ConfigError]) -> String {
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
        use crate::DropReason as D;
        Some(match self {
            Self::Truncated { .. } => D::Truncated,
            Self::TooLong { .. } => D::TooLong,
            Self::Version { .. } => D::Version,
            Self::Type { .. } => D::Type,
            Self::Checksum { .. } => D::Checksum,
            Self::CountMismatch { .. } => D::CountMismatch,
            Self::AuthType { .. } => D::AuthType,
            Self::Password => D::Password,
            Self::Interval { .. } => D::Interval,
            Self::IpHeader { .. } => D::IpHeader,
            _ => return None,
        })
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
