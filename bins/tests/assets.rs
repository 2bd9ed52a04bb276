//! The man pages and shell completions the packages install, kept in
//! `bins/pkg/`, are what `dnsha::assets` generates from the clap
//! definitions and the README's key tables. After changing either, run
//! `DNSHA_BLESS=1 cargo test -p dnsha --test assets` and commit the files.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn the_packaged_man_pages_and_completions_are_generated_ones() {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg");
    let bless = std::env::var_os("DNSHA_BLESS").is_some();
    let mut stale = Vec::new();
    for a in dnsha::assets::all() {
        let path = pkg.join(&a.path);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &a.text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(a.text.as_str()) {
            stale.push(a.path);
        }
    }
    assert!(
        stale.is_empty(),
        "not what is generated: {stale:?}; run DNSHA_BLESS=1 cargo test -p dnsha --test assets"
    );
}

#[test]
fn the_pages_cover_every_command_and_every_documented_key() {
    let assets = dnsha::assets::all();
    let text = |p: &str| assets.iter().find(|a| a.path == p).unwrap().text.clone();
    for sub in ["run", "check", "demo", "status", "cache"] {
        assert!(text("man/dnsha.8").contains(sub), "{sub}");
        assert!(assets
            .iter()
            .any(|a| a.path == format!("man/dnsha-{sub}.8")));
        assert!(text("completions/dnsha.bash").contains(sub));
    }
    let conf = text("man/dnsha.toml.5");
    for key in [
        "forwarding",
        "adaptive_workers",
        "virtual_router_id",
        "interval_ms",
        "max_entries",
        "qname_suffix",
    ] {
        assert!(
            conf.contains(&format!("\\fB{key}\\fR")),
            "{key} missing from dnsha.toml(5)"
        );
    }
    for section in [
        ".SH [ADMIN]",
        ".SH [[LISTENER]]",
        ".SH [[VRRP]] KEYS",
        ".SH HEALTH CHECKS",
    ] {
        assert!(conf.contains(section), "{section}");
    }
}
