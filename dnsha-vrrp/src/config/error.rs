//! Configuration problems, each located at its instance and field, and the
//! ways a virtual address can be malformed. Plain values: this module
//! depends on nothing else in the crate.

use std::fmt;
use std::net::AddrParseError;
use std::num::ParseIntError;

/// The `[[vrrp]]` instance a [`ConfigError`] is in.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Instance {
    /// The `i`-th `[[vrrp]]` section (0-based), written `vrrp[i]`.
    Index(usize),
    /// The instance with this name, written `vrrp.NAME`.
    Named(String),
    /// No instance: a router configuration built in code.
    Unplaced,
}

/// One configuration problem and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The instance it is in.
    pub instance: Instance,
    /// The field within the instance: `priority`, `track_script[0].weight`.
    pub field: String,
    /// What is wrong, in words an operator understands.
    pub message: String,
}

impl ConfigError {
    /// A problem with `field` of `instance`.
    pub fn new(instance: Instance, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            instance,
            field: field.into(),
            message: message.into(),
        }
    }

    /// Where, as written in messages: `vrrp[0].priority`,
    /// `vrrp.VI_1.priority`, or the bare field.
    pub fn location(&self) -> String {
        match &self.instance {
            Instance::Index(i) => format!("vrrp[{i}].{}", self.field),
            Instance::Named(name) => format!("vrrp.{name}.{}", self.field),
            Instance::Unplaced => self.field.clone(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Why a `virtual_ipaddress` entry is not a usable address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VipError {
    /// The part after `/` is not a number.
    #[error("{text:?}: prefix is not a number")]
    Prefix {
        /// The entry as written.
        text: String,
        /// The parse failure.
        #[source]
        source: ParseIntError,
    },
    /// The prefix length is over 32.
    #[error("{text:?}: prefix length over 32")]
    PrefixTooLong {
        /// The entry as written.
        text: String,
        /// The prefix length given.
        prefix: u8,
    },
    /// The address part is not an IPv4 address.
    #[error("{text:?} is not an IPv4 address")]
    Address {
        /// The entry as written.
        text: String,
        /// The parse failure.
        #[source]
        source: AddrParseError,
    },
    /// Unspecified, multicast, broadcast or loopback.
    #[error("{text:?} cannot be a virtual address")]
    Reserved {
        /// The entry as written.
        text: String,
    },
}
