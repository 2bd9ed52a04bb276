//! What the packages install beside the binary, generated rather than
//! written by hand: `dnsha(8)` (and a page per subcommand) from the clap
//! definitions with `clap_mangen`, `dnsha.toml(5)` from the README's key
//! tables (so the two never disagree), and shell completions with
//! `clap_complete`. The generated files are kept in `bins/pkg/`;
//! `bins/tests/assets.rs` fails when they are not what this module makes.

use clap::CommandFactory;

/// The README, whose key tables make `dnsha.toml(5)`.
const README: &str = include_str!("../../README.md");

/// One generated file: its path under `bins/pkg/` and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Path relative to `bins/pkg/`.
    pub path: String,
    /// Contents.
    pub text: String,
}

/// Every generated file.
pub fn all() -> Vec<Asset> {
    let mut out = man_pages();
    out.push(Asset {
        path: "man/dnsha.toml.5".into(),
        text: config_page(README),
    });
    out.extend(completions());
    out
}

/// `dnsha(8)` and `dnsha-SUBCOMMAND(8)`.
fn man_pages() -> Vec<Asset> {
    let cmd = crate::cli::Cli::command().name("dnsha");
    let mut out = Vec::new();
    let mut render = |name: String, cmd: clap::Command| {
        let mut buf = Vec::new();
        // Rendering into a Vec cannot fail.
        let _ = clap_mangen::Man::new(cmd).section("8").render(&mut buf);
        out.push(Asset {
            path: format!("man/{name}.8"),
            text: String::from_utf8_lossy(&buf).into_owned(),
        });
    };
    render("dnsha".into(), cmd.clone());
    for sub in cmd.get_subcommands() {
        let name = format!("dnsha-{}", sub.get_name());
        render(name.clone(), sub.clone().name(name));
    }
    out
}

/// Completions for bash, zsh and fish, where each shell looks for them.
fn completions() -> Vec<Asset> {
    use clap_complete::Shell;
    [
        (Shell::Bash, "completions/dnsha.bash"),
        (Shell::Zsh, "completions/_dnsha"),
        (Shell::Fish, "completions/dnsha.fish"),
    ]
    .into_iter()
    .map(|(shell, path)| {
        let mut cmd = crate::cli::Cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "dnsha", &mut buf);
        Asset {
            path: path.into(),
            text: String::from_utf8_lossy(&buf).into_owned(),
        }
    })
    .collect()
}

/// `dnsha.toml(5)`: every README table whose first column is `key`, under
/// the heading it sits in.
pub fn config_page(readme: &str) -> String {
    let mut out = String::from(
        ".TH DNSHA.TOML 5 \"\" \"dnsha\" \"File Formats\"\n\
         .SH NAME\n\
         dnsha.toml \\- configuration of the dnsha DNS load balancer\n\
         .SH SYNOPSIS\n\
         /etc/dnsha/dnsha.toml\n\
         .SH DESCRIPTION\n\
         A TOML file: an optional \\fB[admin]\\fR table, \\fB[[listener]]\\fR and \
         \\fB[[pool]]\\fR sections (each pool with \\fB[[pool.backend]]\\fR entries and \
         optional \\fB[pool.health]\\fR and \\fB[pool.cache]\\fR tables), and optional \
         \\fB[[rule]]\\fR, \\fB[[limit]]\\fR, \\fB[[dynamic_block]]\\fR and \\fB[[vrrp]]\\fR \
         sections. \\fBdnsha check \\-\\-config\\fR \\fIFILE\\fR reports every error at its \
         line and column. The keys follow, section by section, as the README gives them.\n",
    );
    let mut heading = String::new();
    let mut printed = String::new();
    let mut columns = 0;
    for line in readme.lines() {
        if let Some(h) = line
            .strip_prefix("### ")
            .or_else(|| line.strip_prefix("## "))
        {
            heading = h.trim().to_string();
            columns = 0;
            continue;
        }
        if !line.starts_with('|') {
            columns = 0;
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(str::trim)
            .collect();
        if columns == 0 {
            // A table's header row: only key tables are taken.
            if cells.first() == Some(&"key") {
                columns = cells.len();
                if printed != heading {
                    out.push_str(&format!(
                        ".SH {}\n",
                        roff_text(&heading.replace('`', "").to_uppercase())
                    ));
                    printed.clone_from(&heading);
                }
            } else {
                columns = usize::MAX;
            }
            continue;
        }
        let separator = line.chars().all(|ch| matches!(ch, '-' | ':' | '|' | ' '));
        if columns == usize::MAX || separator {
            continue;
        }
        let (key, default, meaning) = match cells.as_slice() {
            [key, default, rest @ ..] if columns == 3 => (*key, Some(*default), rest.join(" | ")),
            [key, rest @ ..] => (*key, None, rest.join(" | ")),
            [] => continue,
        };
        out.push_str(".TP\n");
        out.push_str(&roff_text(key));
        if let Some(d) = default {
            out.push_str(&format!(" (default: {})", roff_text(d)));
        }
        out.push('\n');
        out.push_str(&roff_text(&meaning));
        out.push('\n');
    }
    out.push_str(".SH SEE ALSO\n\\fBdnsha\\fR(8)\n");
    out
}

/// Markdown inline text as roff: `code` (and ``code with ` in it``) in
/// bold, `<br>` as a space, roff's own characters escaped, no line starting
/// with a control character.
fn roff_text(md: &str) -> String {
    let mut out = String::new();
    let text = md.replace("<br>", " ").replace("\\|", "|");
    // Outside ``...``, single backticks toggle bold; inside, they are text.
    for (i, part) in text.split("``").enumerate() {
        let literal = i % 2 == 1;
        if literal {
            out.push_str("\\fB");
        }
        let mut bold = false;
        for ch in part.chars() {
            match ch {
                '`' if !literal => {
                    out.push_str(if bold { "\\fR" } else { "\\fB" });
                    bold = !bold;
                }
                '\\' => out.push_str("\\e"),
                '-' => out.push_str("\\-"),
                _ => out.push(ch),
            }
        }
        if bold || literal {
            out.push_str("\\fR");
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_table_becomes_tagged_paragraphs_under_its_heading() {
        let md = "## Intro\n\n| a | b |\n|---|---|\n| x | y |\n\n### `[admin]`\n\nText.\n\n\
                  | key | default | meaning |\n|---|---|---|\n| `listen` | required | `IP:PORT`, see -x |\n\
                  | `allow` | loopback | a \\| b<br>c |\n";
        let page = config_page(md);
        assert!(page.contains(".SH [ADMIN]\n"), "{page}");
        assert!(
            page.contains(".TP\n\\fBlisten\\fR (default: required)\n\\fBIP:PORT\\fR, see \\-x\n"),
            "{page}"
        );
        assert!(
            page.contains(".TP\n\\fBallow\\fR (default: loopback)\na | b c\n"),
            "{page}"
        );
        assert!(
            !page.contains("| x |"),
            "a table without keys is left out: {page}"
        );
    }

    #[test]
    fn roff_control_characters_are_escaped() {
        assert_eq!(roff_text(".hidden"), "\\&.hidden");
        assert_eq!(roff_text("a\\b"), "a\\eb");
        assert_eq!(roff_text("``x `y` z``"), "\\fBx `y` z\\fR");
    }
}
