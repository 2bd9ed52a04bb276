//! `dnsha check` tells the truth: over a corpus of configurations
//! (`tests/data/configs`), each bad one gets every error it holds, at its
//! line and column, in the words of the configuration; each good one
//! passes; and for every one, `check` passes exactly when `run` starts.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/configs");

/// A place to run the corpus: free addresses and a directory of files.
struct Env {
    dir: tempfile::TempDir,
    listen: String,
    admin: String,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), TestCa::new().cert_pem()).unwrap();
        std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
        Self {
            dir,
            listen: free_addr().to_string(),
            admin: free_addr().to_string(),
        }
    }

    /// The corpus file `name` with its placeholders filled in, written to
    /// this environment's directory.
    fn file(&self, name: &str) -> (PathBuf, String) {
        let text = std::fs::read_to_string(Path::new(CORPUS).join(name))
            .unwrap()
            .replace("{LISTEN}", &self.listen)
            .replace("{ADMIN}", &self.admin)
            .replace("{BACKEND}", "127.0.0.1:5399")
            .replace("{DIR}", &self.dir.path().display().to_string());
        let path = self.dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        (path, text)
    }
}

/// `dnsha check`: whether it passed, and its error lines with the file's
/// path written `FILE`.
fn check(path: &Path) -> (bool, Vec<String>) {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (
        out.status.success(),
        err.lines().map(str::to_string).collect(),
    )
}

/// `dnsha run` for a few seconds: whether it started (logged that it is
/// running and kept running), and what it printed.
fn run(path: &Path) -> (bool, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = || std::fs::read_to_string(log.path()).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (false, format!("exited {status}: {}", read()));
        }
        if read().contains("dnsha running") {
            std::thread::sleep(Duration::from_millis(300));
            let alive = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            let _ = child.wait();
            return (alive, read());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (false, format!("neither running nor exited: {}", read()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `# check: LINE:COL: message` lines of a corpus file, as `dnsha
/// check` prints them.
fn expected(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# check: "))
        .map(|l| format!("FILE:{l}"))
        .collect()
}

fn corpus(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    names
}

#[test]
fn every_error_of_a_bad_configuration_at_once_and_located() {
    init_tracing();
    let env = Env::new();
    let mut failures = Vec::new();
    for name in corpus("bad-") {
        let (path, text) = env.file(&name);
        let want = expected(&text);
        assert!(!want.is_empty(), "{name} has no `# check:` lines");
        let (ok, got) = check(&path);
        if ok || got != want {
            failures.push(format!(
                "{name}: check passed={ok}\n  want:\n    {}\n  got:\n    {}",
                want.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_passes_exactly_when_run_starts() {
    init_tracing();
    let env = Env::new();
    let mut failures = Vec::new();
    for name in corpus("") {
        let (path, _) = env.file(&name);
        let (checked, errors) = check(&path);
        let (started, log) = run(&path);
        if checked != started {
            failures.push(format!(
                "{name}: check passed={checked}, run started={started}\n{}\n{log}",
                errors.join("\n")
            ));
        }
        // A refusal names the same errors as check.
        if !started {
            for e in &errors {
                let e = e.replace("FILE", &path.display().to_string());
                if !log.contains(&e) {
                    failures.push(format!("{name}: run did not report {e}\n{log}"));
                }
            }
        }
        assert_eq!(name.starts_with("good-"), checked, "{name}: {errors:?}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
