//! Command-line interface.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dnsha_core::config::LogFormat;

/// dnsha: a DNS-aware load balancer (UDP, TCP, TCP passthrough) with health
/// checking, in front of NSD, CoreDNS, Unbound or any DNS server.
#[derive(Debug, Parser)]
#[command(name = "dnsha", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the balancer in the foreground (logs to stderr).
    Run {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a configuration file and exit (0 when valid).
    Check {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the balancer on 127.0.0.1:5353 in front of two built-in demo
    /// backends serving example.test.
    Demo {
        /// Where the balancer listens (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5353")]
        listen: SocketAddr,
        /// Admin HTTP endpoint of the demo.
        #[arg(long, default_value = "127.0.0.1:8053")]
        admin: SocketAddr,
    },
    /// Show pools and backends of a running dnsha (like `ipvsadm -Ln`).
    Status {
        /// Admin endpoint of the running daemon: ADDR:PORT, or
        /// https://HOST:PORT when it has a certificate (checked against
        /// the CA file in DNSHA_ADMIN_CA, else the system's roots).
        #[arg(long, default_value = "127.0.0.1:8088")]
        admin: crate::client::AdminTarget,
        /// Print the raw JSON of `/status`.
        #[arg(long)]
        json: bool,
    },
    /// Work on the packet caches of a running dnsha.
    Cache {
        /// What to do.
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// Print an Argon2id hash (PHC format) of a password read from the
    /// standard input, for `[admin] users = ["NAME:HASH"]`.
    HashPassword,
    /// Drain a backend of a running dnsha, put it back, or probe it now
    /// (like `ipvsadm -e -w 0` or HAProxy's `disable server`).
    Backend {
        /// What to do.
        #[arg(value_enum)]
        action: crate::admin::BackendAction,
        /// Admin endpoint of the running daemon: ADDR:PORT, or
        /// https://HOST:PORT when it has a certificate (checked against
        /// the CA file in DNSHA_ADMIN_CA, else the system's roots).
        #[arg(long, default_value = "127.0.0.1:8088")]
        admin: crate::client::AdminTarget,
        /// The backend's pool.
        pool: String,
        /// The backend.
        name: String,
    },
    /// Translate an existing stack's configuration (keepalived, nginx
    /// `stream`, HAProxy, nftables) into one dnsha configuration.
    ///
    /// The configuration goes to standard output, or to --output, with a
    /// comment above each section naming the file and line it came from;
    /// whatever has no equivalent is reported on standard error as
    /// `FILE:LINE: warning: ...`. A malformed input (unbalanced braces, an
    /// include that loops or cannot be read, an unknown directive where it
    /// matters) stops it with `FILE:LINE: message` and exit status 1.
    #[command(group(
        clap::ArgGroup::new("inputs")
            .required(true)
            .multiple(true)
            .args(["keepalived", "nginx", "haproxy", "nftables"])
    ))]
    Import {
        /// keepalived.conf: vrrp_instance into [[vrrp]], virtual_server
        /// into listeners on the VIP and pools with health checks.
        /// Repeatable.
        #[arg(long, value_name = "FILE")]
        keepalived: Vec<PathBuf>,
        /// nginx.conf, or a file of `stream` directives: upstream into
        /// pools, server into listeners. Repeatable.
        #[arg(long, value_name = "FILE")]
        nginx: Vec<PathBuf>,
        /// haproxy.cfg: frontend, backend and listen into listeners and
        /// pools, `listen stats` into [admin]. Repeatable.
        #[arg(long, value_name = "FILE")]
        haproxy: Vec<PathBuf>,
        /// An nftables ruleset: `numgen` DNAT rules into pools and
        /// listeners. Repeatable.
        #[arg(long, value_name = "FILE")]
        nftables: Vec<PathBuf>,
        /// Write the configuration to FILE (replaced whole) instead of
        /// standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Directory the imported access logs are written to.
        #[arg(long, value_name = "DIR", default_value = "/var/log/dnsha")]
        log_dir: PathBuf,
    },
}

/// `dnsha cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove answers from a pool's cache: all of them, a name's, or a
    /// name's of one type (`POST /cache/purge` on the admin endpoint).
    Purge {
        /// Admin endpoint of the running daemon: ADDR:PORT, or
        /// https://HOST:PORT when it has a certificate (checked against
        /// the CA file in DNSHA_ADMIN_CA, else the system's roots).
        #[arg(long, default_value = "127.0.0.1:8088")]
        admin: crate::client::AdminTarget,
        /// Every name under NAME too (NAME itself included).
        #[arg(long)]
        suffix: bool,
        /// The pool whose cache is purged.
        pool: String,
        /// Only this name (any case; absolute with or without the dot).
        name: Option<String>,
        /// Only this type of NAME (A, AAAA, MX...).
        #[arg(value_name = "TYPE")]
        qtype: Option<String>,
    },
}

/// Installs the stderr logger (RUST_LOG or `info`), with colours only when
/// stderr is a terminal (`dnsha run 2>file` gets plain text). Under
/// systemd (`JOURNAL_STREAM` set: stderr is the journal), without
/// timestamps, which the journal adds, and without colours: one event per
/// line with its fields. `LogFormat::Json` writes one JSON object per
/// event (timestamp, level, target, fields, spans), for log shippers.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            builder.with_ansi(false).without_time().try_init()
        }
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => crate::daemon::check(&config),
        Command::Run { config } => {
            // Read first: the configuration says how to log.
            let cfg = match crate::daemon::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(cfg.process.log_format);
            // What a restart's previous process handed over (LISTEN_FDS).
            let handover = crate::handover::take();
            match runtime() {
                Ok(rt) => rt.block_on(crate::daemon::serve(
                    cfg,
                    Some(config),
                    None,
                    None,
                    handover,
                )),
                Err(e) => {
                    eprintln!("dnsha: cannot start runtime: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { listen, admin } => {
            init_logging(LogFormat::Text);
            match runtime() {
                Ok(rt) => rt.block_on(crate::demo::run(listen, admin)),
                Err(e) => {
                    eprintln!("dnsha: cannot start runtime: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cache {
            action:
                CacheCommand::Purge {
                    admin,
                    suffix,
                    pool,
                    name,
                    qtype,
                },
        } => match runtime() {
            Ok(rt) => rt.block_on(crate::status::purge(&admin, &pool, name, qtype, suffix)),
            Err(e) => {
                eprintln!("dnsha: cannot start runtime: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Import {
            keepalived,
            nginx,
            haproxy,
            nftables,
            output,
            log_dir,
        } => {
            use crate::import::Kind;
            let inputs = [
                (Kind::Keepalived, keepalived),
                (Kind::Nginx, nginx),
                (Kind::Haproxy, haproxy),
                (Kind::Nftables, nftables),
            ]
            .into_iter()
            .flat_map(|(kind, files)| files.into_iter().map(move |f| (kind, f)))
            .collect();
            crate::import::run(&crate::import::Request {
                inputs,
                output,
                log_dir,
            })
        }
        Command::HashPassword => hash_password(),
        Command::Backend {
            action,
            admin,
            pool,
            name,
        } => match runtime() {
            Ok(rt) => rt.block_on(crate::status::backend(&admin, action, &pool, &name)),
            Err(e) => {
                eprintln!("dnsha: cannot start runtime: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Status { admin, json } => match runtime() {
            Ok(rt) => rt.block_on(crate::status::run(&admin, json)),
            Err(e) => {
                eprintln!("dnsha: cannot start runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `dnsha hash-password`: one line from stdin (a prompt on stderr when it
/// is a terminal), its hash on stdout.
fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (shown as typed): ");
    }
    let mut line = String::new();
    if let Err(e) = stdin.read_line(&mut line) {
        eprintln!("dnsha hash-password: cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("dnsha hash-password: empty password");
        return ExitCode::FAILURE;
    }
    match crate::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dnsha hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}
