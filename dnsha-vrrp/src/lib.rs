//! # dnsha-vrrp
//!
//! VRRPv2 (RFC 3768) for dnsha: moves virtual IPs between balancer nodes
//! and interoperates with keepalived (`auth_type PASS` included).
//!
//! - [`codec`]: advertisement encode/decode, with its own typed error
//!   ([`codec::DecodeError`]) that the crate's [`Error`] wraps.
//! - [`Router`]: the sans-IO state machine (Initialize, Backup, Master,
//!   Fault). Packets, commands and time go in; adverts to send, VIPs to
//!   add or remove, gratuitous ARPs and transitions come out.
//! - [`config`]: one `[[vrrp]]` instance of the daemon's TOML, with
//!   validation returning every problem, each a [`config::ConfigError`]
//!   located at its instance and field.
//! - [`shell`] (Linux): the tokio I/O around the router: raw socket for
//!   protocol 112, rtnetlink for VIPs, AF_PACKET for gratuitous ARP,
//!   trackers and the notify queue.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod error;
pub mod router;
#[cfg(target_os = "linux")]
pub mod shell;
mod stats;
pub mod sync;

pub use codec::{Advertisement, Auth};
pub use error::Error;
pub use router::{
    Command, GarpConfig, Outgoing, Output, Reason, Router, RouterConfig, State, TrackerSpec,
    Version, Vip,
};
pub use stats::{DropReason, Stats};
