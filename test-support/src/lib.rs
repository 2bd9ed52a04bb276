//! # test-support
//!
//! Helpers shared by dnsha's integration tests in `bins/tests/`, in the
//! manner of hickory-dns's `tests/test-support`:
//!
//! - [`init_tracing`] installs a test-friendly `tracing` subscriber once;
//! - [`skip`] skips a test whose peer or privilege is missing, or fails it
//!   when [`REQUIRE_ALL`] is set (as CI does);
//! - [`free_port`] / [`free_addr`] find a loopback port free for UDP and TCP;
//! - [`Nsd`] runs a real NSD serving the `example.test` zone as a backend;
//! - [`Dnsha`] runs the built `dnsha` binary with a given configuration;
//! - [`Blackhole`] accepts and reads but never answers;
//! - [`TestCa`] makes certificates at test time (rcgen) for the TLS tests;
//! - [`netns`] builds a lab of network namespaces on a bridge (balancers,
//!   backends, clients, keepalived), where [`Nsd::start_in`] and
//!   [`Dnsha::start_in`] run their processes;
//! - [`query_udp`], [`query_tcp`], [`a_record`], [`dig`] and friends are a
//!   small blocking DNS client built on hickory-proto;
//! - [`webdriver::Browser`] drives a headless Chromium (the web console).
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

pub mod bird;
mod blackhole;
mod certs;
mod client;
mod dnsha;
pub mod fdstore;
pub mod icmp;
pub mod netns;
mod nsd;
mod ports;
mod process;
pub mod webdriver;

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

/// The environment variable that turns every [`skip`] into a failure:
/// `.ci/run` sets it to `1`, so a green CI means every test really ran.
pub const REQUIRE_ALL: &str = "DNSHA_TEST_REQUIRE_ALL";

/// Whether [`REQUIRE_ALL`] is set (to anything but empty or `0`).
pub fn require_all() -> bool {
    std::env::var_os(REQUIRE_ALL).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips a test because `why` (a peer, a program or a privilege is
/// missing): prints `SKIPPED: why` and returns, so the caller returns and
/// the test passes on a developer's machine. With [`REQUIRE_ALL`] set it
/// panics instead, and the test fails.
///
/// ```no_run
/// if !std::path::Path::new("/usr/sbin/keepalived").exists() {
///     test_support::skip("/usr/sbin/keepalived not installed");
///     return;
/// }
/// ```
pub fn skip(why: &str) {
    assert!(!require_all(), "{REQUIRE_ALL} is set and {why}");
    println!("SKIPPED: {why}");
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_fails_only_when_every_test_is_required() {
        // The only test of this binary that touches the variable.
        let before = std::env::var_os(REQUIRE_ALL);
        std::env::remove_var(REQUIRE_ALL);
        skip("nothing is missing, this is a test");
        std::env::set_var(REQUIRE_ALL, "0");
        skip("nothing is missing, this is a test");
        std::env::set_var(REQUIRE_ALL, "1");
        let e = std::panic::catch_unwind(|| skip("/usr/sbin/keepalived not installed"))
            .expect_err("skip passed with DNSHA_TEST_REQUIRE_ALL=1");
        let message = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(
            message,
            "DNSHA_TEST_REQUIRE_ALL is set and /usr/sbin/keepalived not installed"
        );
        match before {
            Some(v) => std::env::set_var(REQUIRE_ALL, v),
            None => std::env::remove_var(REQUIRE_ALL),
        }
    }
}
