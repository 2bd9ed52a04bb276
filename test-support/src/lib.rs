//! # test-support
//!
//! Helpers shared by dnsha's integration tests in `bins/tests/`, in the
//! manner of hickory-dns's `tests/test-support`:
//!
//! - [`init_tracing`] installs a test-friendly `tracing` subscriber once;
//! - [`free_port`] / [`free_addr`] find a loopback port free for UDP and TCP;
//! - [`Nsd`] runs a real NSD serving the `example.test` zone as a backend;
//! - [`Dnsha`] runs the built `dnsha` binary with a given configuration;
//! - [`Blackhole`] accepts and reads but never answers;
//! - [`TestCa`] makes certificates at test time (rcgen) for the TLS tests;
//! - [`netns`] builds a lab of network namespaces on a bridge (balancers,
//!   backends, clients, keepalived), where [`Nsd::start_in`] and
//!   [`Dnsha::start_in`] run their processes;
//! - [`query_udp`], [`query_tcp`], [`a_record`], [`dig`] and friends are a
//!   small blocking DNS client built on hickory-proto.
//!
//! The helpers are written for tests: the `start` constructors panic with a
//! descriptive message (including the child's log) when something goes
//! wrong, while the `try_` variants return the error instead.
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use std::time::Duration;
//! use test_support::{a_record, query_udp, Nsd, RecordType};
//!
//! test_support::init_tracing();
//! let nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
//! let answer = query_udp(nsd.addr(), "www.example.test.", RecordType::A, Duration::from_secs(2))
//!     .unwrap();
//! assert_eq!(a_record(&answer), Some(Ipv4Addr::new(10, 0, 0, 1)));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod blackhole;
mod certs;
mod client;
mod dnsha;
pub mod netns;
mod nsd;
mod ports;
mod process;

use std::sync::Once;

pub use blackhole::Blackhole;
pub use certs::{CertFiles, TestCa};
pub use client::{
    a_record, a_records, build_query, dig, exchange_tcp, exchange_udp, query_tcp, query_udp,
    send_tcp, send_udp, txt_strings, wait_tcp, wait_udp,
};
pub use dnsha::Dnsha;
pub use hickory_proto::op::{Message, ResponseCode};
pub use hickory_proto::rr::RecordType;
pub use nix::sys::signal::Signal;
pub use nsd::{Nsd, BIG_TXT_RECORDS, ZONE};
pub use ports::{free_addr, free_port};

/// Installs a `tracing` subscriber for tests, once per process.
///
/// It writes through the test harness's capture (`with_test_writer`), so the
/// output of a test is shown only when it fails (or with `--nocapture`). The
/// filter comes from `RUST_LOG` and defaults to `info`. Calling it again, or
/// after another subscriber was installed, does nothing.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another crate may already have installed a global subscriber; that
        // one is then kept.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
