//! The `dnsha` daemon: see `dnsha --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    dnsha::cli::main()
}
