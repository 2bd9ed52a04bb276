//! Every file a configuration names outside the TLS settings of listeners
//! and backends (which `dnsha_proxy::tls` resolves and checks): health
//! check CA files and access logs. Relative paths are taken from the
//! configuration file's directory, and each file is checked as the part
//! that uses it will open it, before anything starts: `dnsha check`, `dnsha
//! run` and a reload all refuse the same configurations.

use std::path::Path;

use dnsha_core::config::{Config, FileRole};
use dnsha_core::ConfigError;

/// Makes the relative health `tls_ca` paths of `cfg` relative to `base`.
pub fn resolve_relative(cfg: &mut Config, base: &Path) {
    let fix = |p: &mut std::path::PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for p in &mut cfg.pools {
        let checks = p.health.iter_mut().chain(p.backend_health.values_mut());
        for h in checks {
            if let Some(ca) = &mut h.tls_ca {
                fix(ca);
            }
        }
    }
    for f in &mut cfg.files {
        if f.role == FileRole::HealthTlsCa {
            fix(&mut f.path);
        }
    }
}

/// Every problem with the files of `cfg.files`, located where each is
/// named.
pub fn check(cfg: &Config) -> Vec<ConfigError> {
    cfg.files
        .iter()
        .filter_map(|f| {
            let problem = match f.role {
                FileRole::HealthTlsCa => dnsha_health::check::tls::check_ca_file(&f.path)
                    .err()
                    .map(|e| e.to_string()),
                FileRole::AccessLog => dnsha_proxy::accesslog::check_writable(&f.path)
                    .err()
                    .map(|why| format!("access_log `{}` {why}", f.path.display())),
                FileRole::Program => {
                    let program = f.path.to_string_lossy();
                    not_executable(&program, true).map(|why| format!("notify `{program}` {why}"))
                }
            };
            problem.map(|message| ConfigError::at(f.span.clone(), message))
        })
        .collect()
}

/// Why `program` cannot be run, if it cannot: a path must be an executable
/// file; a bare name must be found in `PATH` when `search` is set (a
/// command run directly), and is not looked for otherwise (a shell line's
/// first word may be a builtin).
pub fn not_executable(program: &str, search: bool) -> Option<String> {
    use nix::unistd::{access, AccessFlags};
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file()) && access(p, AccessFlags::X_OK).is_ok()
    };
    if program.is_empty() {
        return Some("is empty".into());
    }
    if program.contains('/') {
        let p = Path::new(program);
        return match std::fs::metadata(p) {
            Err(e) => Some(format!("cannot be run: {e}")),
            Ok(m) if !m.is_file() => Some("is not a file".into()),
            Ok(_) if !runnable(p) => Some("is not executable (chmod +x)".into()),
            Ok(_) => None,
        };
    }
    if !search {
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| runnable(&dir.join(program)));
    (!found).then(|| "is not found in PATH".into())
}
