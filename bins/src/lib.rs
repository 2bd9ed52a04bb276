//! The `dnsha` daemon as a library: command line, daemon loop, admin HTTP
//! endpoint, status client and the embedded demo. `main.rs` only calls
//! [`cli::main`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod anycast;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod client;
pub mod console;
pub mod daemon;
pub mod demo;
pub mod demo_backend;
pub mod error;
pub mod files;
pub mod handover;
pub mod import;
pub mod kernel;
pub mod notify;
pub mod privileges;
pub mod status;
mod sys;
pub mod vrrp;

pub use error::Error;
