//! The README documents every configuration key and command-line flag the
//! code takes, and no key the code does not: the key lists come from the
//! configuration reader itself (`Config::keys`), from dnsha-vrrp's own
//! definitions and from the command-line parser.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use clap::CommandFactory;
use dnsha_core::config::Config;

const README: &str = include_str!("../../README.md");

/// Sections of the README whose tables document configuration keys.
const KEY_SECTIONS: &[&str] = &[
    "### Top-level keys: the process",
    "### `[admin]`",
    "### `[[listener]]`",
    "### `[[pool]]` and `[[pool.backend]]`",
    "### `[pool.cache]`: the packet cache",
    "### `[[rule]]`: routing and query rules",
    "### `[[limit]]`: per-client rate limits",
    "### `[[dynamic_block]]`: blocks set by the traffic itself",
    "## Health checks",
    "### `[[vrrp]]` keys",
    "### `[[anycast]]` keys",
    "## DNS over TLS and HTTPS",
];

/// The keys in the first cell of the tables of [`KEY_SECTIONS`]: cells
/// made only of backticked names (`` `tls_cert`, `tls_key` ``).
fn documented_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let (mut in_section, mut in_code) = (false, false);
    for line in README.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.starts_with('#') {
            in_section = KEY_SECTIONS.contains(&line.trim());
            continue;
        }
        let Some(cell) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
            continue;
        };
        if !in_section {
            continue;
        }
        // `key`, `a`, `b`, or `backend `key`` (a backend's key).
        let cell = cell.trim();
        let cell = cell.strip_prefix("backend ").unwrap_or(cell);
        let names: Option<Vec<&str>> = cell
            .split(", ")
            .map(|n| {
                n.strip_prefix('`')?.strip_suffix('`').filter(|n| {
                    n.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
            })
            .collect();
        keys.extend(names.into_iter().flatten().map(str::to_string));
    }
    keys
}

/// The field names a serde type with `deny_unknown_fields` takes, from its
/// own error for a key it does not.
fn serde_fields<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
    let mut t = toml::Table::new();
    t.insert("zz_not_a_key".into(), toml::Value::Integer(1));
    let e = T::deserialize(toml::Value::Table(t))
        .unwrap_err()
        .to_string();
    let list = e
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("{e}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn code_keys() -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = Config::keys()
        .into_values()
        .flatten()
        .map(str::to_string)
        .collect();
    keys.extend(serde_fields::<dnsha_vrrp::config::InstanceConfig>());
    keys.extend(serde_fields::<dnsha_vrrp::config::TrackScript>());
    keys
}

#[test]
fn every_key_in_the_code_is_documented_and_every_documented_key_exists() {
    let (code, docs) = (code_keys(), documented_keys());
    assert!(code.len() > 60, "{code:?}");
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let unknown: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "keys the README does not document: {undocumented:?}\n\
         keys the README documents that the code does not take: {unknown:?}"
    );
}

#[test]
fn every_command_line_flag_is_documented() {
    let cli = dnsha::cli::Cli::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands() {
        let name = format!("dnsha {}", sub.get_name());
        if !README.contains(&name) {
            missing.push(name.clone());
        }
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                if !README.contains(&format!("--{long}")) {
                    missing.push(format!("{name} --{long}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}

#[test]
fn the_readme_installs_what_ci_installs() {
    let ci = include_str!("../../.ci/run");
    let words = |s: &str| -> BTreeSet<String> {
        s.split_whitespace()
            .filter(|w| !w.starts_with('-') && *w != "\\")
            .map(str::to_string)
            .collect()
    };
    let ci_line = ci
        .split("apt-get install")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap();
    let readme_line = README
        .lines()
        .find(|l| l.starts_with("`apt-get install "))
        .unwrap()
        .trim_matches('`')
        .trim_start_matches("apt-get install");
    assert_eq!(words(ci_line), words(readme_line));
}
