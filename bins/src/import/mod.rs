//! `dnsha import`: one dnsha configuration from an existing stack's files
//! (keepalived, nginx `stream`, HAProxy, nftables).
//!
//! Each reader is a pure function from a file's text (and, for
//! `include`, a [`syntax::Loader`]) to additions to one [`plan::Plan`]:
//! listeners, pools, VRRP instances, the admin endpoint, and a warning
//! with its file and line for everything that has no equivalent.
//! [`write::render`] turns the plan into TOML, which is then validated
//! as `dnsha check` validates a file (every file a configuration names
//! excepted: certificates and access log directories belong to the node
//! the configuration is for). Only [`run`] and [`FsLoader`] touch files.

mod haproxy;
mod haproxy_map;
mod keepalived;
mod lvs;
mod nftables;
mod nginx;
mod plan;
mod syntax;
mod values;
mod write;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use dnsha_core::config::Config;

use crate::error::{Error, Result};
use syntax::{Ends, LoadError, Loader, Source, Warning};

/// The kind of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// keepalived.conf: VRRP instances and LVS virtual servers.
    Keepalived,
    /// nginx.conf (its `stream` block) or a file of `stream` directives.
    Nginx,
    /// haproxy.cfg.
    Haproxy,
    /// An nftables ruleset.
    Nftables,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Keepalived => "keepalived",
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
            Self::Nftables => "nftables",
        }
    }
}

/// What `dnsha import` is asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// The inputs, in the order they are read.
    pub inputs: Vec<(Kind, PathBuf)>,
    /// Where to write the configuration; standard output when `None`.
    pub output: Option<PathBuf>,
    /// The directory imported access logs are written to.
    pub log_dir: PathBuf,
}

/// What the readers need besides the text: where access logs go, how a
/// password is hashed, and whether a file exists (HAProxy's key next to
/// its certificate). Passed in, so that the readers stay pure.
pub(crate) struct Options<'a> {
    /// The directory of the imported access logs.
    pub(crate) log_dir: &'a str,
    /// An `[admin] users` hash of a password.
    pub(crate) hash: &'a dyn Fn(&str) -> Option<String>,
    /// Whether a file exists.
    pub(crate) exists: &'a dyn Fn(&str) -> bool,
}

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The configuration (TOML).
    pub text: String,
    /// What was not carried over, each with its file and line.
    pub warnings: Vec<String>,
    /// `N listener(s), M pool(s)...`.
    pub summary: String,
}

/// `dnsha import`: the configuration on standard output or in the output
/// file, warnings on standard error; exit 1, with a `FILE:LINE: message`,
/// when an input is malformed.
pub fn run(req: &Request) -> ExitCode {
    match import(req) {
        Ok(out) => {
            for w in &out.warnings {
                eprintln!("{w}");
            }
            let written = match &req.output {
                None => {
                    print!("{}", out.text);
                    Ok(())
                }
                Some(path) => write_file(path, &out.text),
            };
            if let Err(e) = written {
                eprintln!("dnsha import: {e}");
                return ExitCode::FAILURE;
            }
            if let Some(path) = &req.output {
                eprintln!("dnsha import: wrote {}: {}", path.display(), out.summary);
            } else {
                eprintln!("dnsha import: {}", out.summary);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the inputs of `req` and translates them.
pub fn import(req: &Request) -> Result<Imported> {
    let mut sources = Vec::new();
    for (kind, path) in &req.inputs {
        sources.push((*kind, FsLoader::read(path)?));
    }
    let hash = |p: &str| crate::auth::hash_password(p).ok();
    let exists = |p: &str| Path::new(p).is_file();
    let log_dir = req.log_dir.display().to_string();
    let opts = Options {
        log_dir: &log_dir,
        hash: &hash,
        exists: &exists,
    };
    translate(&sources, &mut FsLoader, &opts)
}

/// The configuration made from `sources` (read in the order keepalived,
/// nginx, HAProxy, nftables, whatever their order here).
pub(crate) fn translate(
    sources: &[(Kind, Source)],
    loader: &mut dyn Loader,
    opts: &Options<'_>,
) -> Result<Imported> {
    let mut plan = plan::Plan::default();
    for kind in [Kind::Keepalived, Kind::Nginx, Kind::Haproxy, Kind::Nftables] {
        for (_, src) in sources.iter().filter(|(k, _)| *k == kind) {
            read(kind, src, loader, opts, &mut plan)?;
        }
    }
    plan.finish();
    if plan.listeners.is_empty() && plan.vrrp.is_empty() {
        return Err(Error::ImportNothing {
            warnings: plan.warnings.iter().map(Warning::to_string).collect(),
        });
    }
    let header = write::Header {
        inputs: sources
            .iter()
            .map(|(k, s)| (k.as_str(), s.name.to_string()))
            .collect(),
    };
    let rendered = write::render(&plan, &header);
    validate(&rendered, &plan)?;
    let text = rendered.text;
    Ok(Imported {
        summary: format!(
            "{} listener(s), {} pool(s), {} vrrp instance(s){}, {} warning(s)",
            plan.listeners.len(),
            plan.pools.len(),
            plan.vrrp.len(),
            if plan.admin.is_some() { ", admin" } else { "" },
            plan.warnings.len()
        ),
        warnings: plan.warnings.iter().map(Warning::to_string).collect(),
        text,
    })
}

fn read(
    kind: Kind,
    src: &Source,
    loader: &mut dyn Loader,
    opts: &Options<'_>,
    plan: &mut plan::Plan,
) -> Result<()> {
    match kind {
        Kind::Keepalived => {
            let stmts = syntax::parse_with_includes(
                src,
                syntax::KEEPALIVED,
                Ends::Newline,
                loader,
                &mut plan.warnings,
            )?;
            keepalived::import(&stmts, plan)
        }
        Kind::Nginx => {
            let stmts = syntax::parse_with_includes(
                src,
                syntax::NGINX,
                Ends::Semicolon,
                loader,
                &mut plan.warnings,
            )?;
            nginx::import(&stmts, plan, opts)
        }
        Kind::Haproxy => {
            let proxies = haproxy::read(src, plan)?;
            haproxy_map::make(&proxies, plan, opts)
        }
        Kind::Nftables => nftables::import(src, loader, plan),
    }
}

/// `out` checked as `dnsha check` checks a file, files apart: the typed
/// configuration and the `[[vrrp]]` sections. A value dnsha refuses (a
/// priority of 0, a timeout over a day) is an error of the source line
/// its section came from; an error no section holds is the importer's.
fn validate(out: &write::Rendered, plan: &plan::Plan) -> Result<()> {
    let text = &out.text;
    let mut located = Vec::new();
    let mut unplaced = Vec::new();
    let mut place = |origin: Option<&plan::Origin>, message: String| match origin {
        Some(o) => located.push(o.loc.error(format!("{}: {message}", o.what))),
        None => unplaced.push(dnsha_core::ConfigError {
            span: None,
            message,
        }),
    };
    let cfg = match Config::parse_keeping_vrrp(text) {
        Ok(cfg) => Some(cfg),
        Err((errors, _)) => {
            for e in errors {
                let origin = e.span.as_ref().and_then(|s| out.origin_at(s.start));
                place(origin, e.message);
            }
            None
        }
    };
    if let Some(cfg) = &cfg {
        let mut instances = Vec::new();
        for (i, section) in cfg.vrrp.iter().enumerate() {
            let value = toml::Value::Table(section.value.clone());
            match <dnsha_vrrp::config::InstanceConfig as serde::Deserialize>::deserialize(value) {
                Ok(ic) => instances.push(ic),
                Err(e) => place(plan.vrrp.get(i).map(|v| &v.origin), e.to_string()),
            }
        }
        for e in dnsha_vrrp::config::validate_all(&instances) {
            let origin = match e.instance {
                dnsha_vrrp::config::Instance::Index(i) => plan.vrrp.get(i).map(|v| &v.origin),
                _ => None,
            };
            place(origin, format!("{}: {}", e.field, e.message));
        }
        for (ic, v) in instances.iter().zip(&plan.vrrp) {
            for t in &ic.track_pools {
                if cfg.pool(t.parts().0).is_none() {
                    place(
                        None,
                        format!("{}: track_pools: unknown pool `{}`", v.name, t.parts().0),
                    );
                }
            }
        }
        for e in crate::auth::check_users(cfg.admin.as_ref()) {
            let origin = e.span.as_ref().and_then(|s| out.origin_at(s.start));
            place(origin, e.message);
        }
    }
    if !unplaced.is_empty() {
        return Err(Error::ImportInvalid {
            text: text.clone(),
            errors: unplaced,
        });
    }
    match located.len() {
        0 => Ok(()),
        1 => Err(located.remove(0)),
        _ => Err(Error::ImportRefused { errors: located }),
    }
}

/// Writes `text` to `path` through a temporary file in the same directory
/// and a rename: an interrupted write leaves the old file whole.
fn write_file(path: &Path, text: &str) -> Result<()> {
    let fail = |source| Error::ImportWrite {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dnsha.toml".into());
    let tmp = dir.join(format!(".{name}.import-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// Reads files from the file system: the inputs, and what their
/// `include`s name (relative to the including file's directory).
#[derive(Debug, Default)]
pub(crate) struct FsLoader;

impl FsLoader {
    /// The file at `path`, shown as written.
    fn read(path: &Path) -> Result<Source> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ImportRead {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Source {
            name: Arc::from(path.display().to_string()),
            id: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            text,
        })
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `name` matches the shell pattern `pat` (`*`, `?`, `[abc]`,
/// `[a-z]`, `[!a]`), as glob(3) matches one path component.
fn matches(pat: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pat.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => class(&pat[p..], name[n]),
            Some(c) if *c == name[n] => Some(1),
            _ => None,
        };
        match step {
            Some(len) => {
                p += len;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|c| *c == '*')
}

/// The length of the `[...]` class at the start of `pat` when it takes
/// `c`.
fn class(pat: &[char], c: char) -> Option<usize> {
    let end = pat.iter().skip(2).position(|x| *x == ']')? + 2;
    let body = &pat[1..end];
    let (negate, body) = match body.first() {
        Some('!' | '^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut hit = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == '-' {
            hit |= body[i] <= c && c <= body[i + 2];
            i += 3;
        } else {
            hit |= body[i] == c;
            i += 1;
        }
    }
    (hit != negate).then_some(end + 1)
}

impl Loader for FsLoader {
    fn load(
        &mut self,
        from: &Source,
        pattern: &str,
    ) -> std::result::Result<Vec<Source>, LoadError> {
        let base = Path::new(&*from.name)
            .parent()
            .unwrap_or_else(|| Path::new(""));
        let full = base.join(pattern);
        let err = |path: &Path, source| LoadError {
            path: path.to_path_buf(),
            source,
        };
        let file_name = full.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = file_name.filter(|n| has_wildcard(n)) else {
            if has_wildcard(&full.to_string_lossy()) {
                return Err(err(
                    &full,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "wildcards are read in the file name only",
                    ),
                ));
            }
            return Self::read(&full).map(|s| vec![s]).map_err(|e| match e {
                Error::ImportRead { path, source } => err(&path, source),
                other => err(&full, std::io::Error::other(other.to_string())),
            });
        };
        let dir = full.parent().unwrap_or_else(|| Path::new("."));
        let pat: Vec<char> = name.chars().collect();
        let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    let n: Vec<char> = p
                        .file_name()
                        .map(|n| n.to_string_lossy().chars().collect())
                        .unwrap_or_default();
                    // As glob(3): a leading dot is matched only by a dot.
                    (n.first() != Some(&'.') || pat.first() == Some(&'.'))
                        && matches(&pat, &n)
                        && p.is_file()
                })
                .collect(),
            // A pattern in a directory that does not exist matches nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(dir, e)),
        };
        names.sort();
        names
            .iter()
            .map(|p| {
                Self::read(p).map_err(|e| match e {
                    Error::ImportRead { path, source } => err(&path, source),
                    other => err(p, std::io::Error::other(other.to_string())),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
