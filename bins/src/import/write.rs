//! The [`Plan`] as dnsha TOML: values quoted by the `toml` crate (never
//! pasted into the text), every section under a comment naming where it
//! came from, and the pool's shared health keys in `[pool.health]`.

use std::fmt::Write as _;

use super::plan::{Keys, Listener, Origin, Plan, Policy, Pool};
use super::syntax::Warning;

/// What the header says about the inputs.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// `(kind, file)` of every input.
    pub(crate) inputs: Vec<(&'static str, String)>,
}

/// The configuration text, and where each section starts in it.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    /// The TOML.
    pub(crate) text: String,
    /// Each section's first byte and where it came from, in order: an
    /// error dnsha finds in the text is an error of that source.
    pub(crate) places: Vec<(usize, Origin)>,
}

impl Rendered {
    /// The origin of the section holding byte `at`.
    pub(crate) fn origin_at(&self, at: usize) -> Option<&Origin> {
        self.places
            .iter()
            .take_while(|(start, _)| *start <= at)
            .last()
            .map(|(_, o)| o)
    }
}

/// The configuration text.
pub(crate) fn render(plan: &Plan, header: &Header) -> Rendered {
    let mut places = Vec::new();
    let mut out = String::new();
    comment(
        &mut out,
        "dnsha configuration written by `dnsha import` from:",
    );
    for (kind, file) in &header.inputs {
        comment(&mut out, &format!("  {kind}: {file}"));
    }
    comment(
        &mut out,
        "Check it with `dnsha check --config FILE` on the node it is for.",
    );
    warnings(&mut out, &plan.warnings);
    if let Some(a) = &plan.admin {
        section(
            &mut out,
            &mut places,
            "[admin]",
            std::slice::from_ref(&a.origin),
            &a.notes,
            &a.keys,
        );
    }
    for l in &plan.listeners {
        listener(&mut out, &mut places, l);
    }
    for p in &plan.pools {
        pool(&mut out, &mut places, p);
    }
    for v in &plan.vrrp {
        let mut keys: Keys = vec![("name", toml::Value::String(v.name.clone()))];
        keys.extend(v.keys.iter().cloned());
        section(
            &mut out,
            &mut places,
            "[[vrrp]]",
            std::slice::from_ref(&v.origin),
            &v.notes,
            &keys,
        );
    }
    Rendered { text: out, places }
}

fn warnings(out: &mut String, list: &[Warning]) {
    if list.is_empty() {
        return;
    }
    comment(
        out,
        &format!(
            "Not carried over, or carried over differently ({} warning{}, also printed on stderr):",
            list.len(),
            if list.len() == 1 { "" } else { "s" }
        ),
    );
    for w in list {
        comment(out, &format!("  {}: {}", w.loc, w.message));
    }
}

fn listener(out: &mut String, places: &mut Vec<(usize, Origin)>, l: &Listener) {
    let mut keys: Keys = vec![
        ("name", toml::Value::String(l.name.clone())),
        ("protocol", toml::Value::String(l.proto.as_str().into())),
        ("listen", toml::Value::String(l.listen.to_string())),
        ("pool", toml::Value::String(l.pool.clone())),
    ];
    keys.extend(l.keys.iter().cloned());
    section(
        out,
        places,
        "[[listener]]",
        std::slice::from_ref(&l.origin),
        &l.notes,
        &keys,
    );
}

fn pool(out: &mut String, places: &mut Vec<(usize, Origin)>, p: &Pool) {
    let policy = match p.policy {
        Policy::Rr => "rr",
        Policy::Wrr => "wrr",
        Policy::Lc => "lc",
        Policy::First => "first",
        Policy::ChashClient => "chash",
    };
    let mut keys: Keys = vec![
        ("name", toml::Value::String(p.name.clone())),
        ("policy", toml::Value::String(policy.into())),
    ];
    if p.policy == Policy::ChashClient {
        keys.push(("hash_key", toml::Value::String("client".into())));
    }
    keys.extend(p.keys.iter().cloned());
    section(out, places, "[[pool]]", &p.origins, &p.notes, &keys);
    let (shared, own) = split_health(p);
    if let Some(shared) = &shared {
        table(out, "[pool.health]", shared);
    }
    for (b, health) in p.backends.iter().zip(own) {
        let mut keys: Keys = vec![
            ("name", toml::Value::String(b.name.clone())),
            ("address", toml::Value::String(b.address.to_string())),
        ];
        if b.weight != 1 {
            keys.push(("weight", toml::Value::Integer(i64::from(b.weight))));
        }
        keys.extend(b.keys.iter().cloned());
        table(out, "[[pool.backend]]", &keys);
        if let Some(h) = health.filter(|h| !h.is_empty()) {
            table(out, "[pool.backend.health]", &h);
        }
    }
}

/// The health keys every backend shares (the pool's table), and each
/// backend's own. A backend without a check gets `check = "none"` when
/// others have one.
fn split_health(p: &Pool) -> (Option<Keys>, Vec<Option<Keys>>) {
    let checks: Vec<Keys> = p
        .backends
        .iter()
        .map(|b| {
            b.health
                .clone()
                .unwrap_or_else(|| vec![("check", toml::Value::String("none".into()))])
        })
        .collect();
    if p.backends.iter().all(|b| b.health.is_none()) {
        return (None, vec![None; p.backends.len()]);
    }
    let first = checks.first().cloned().unwrap_or_default();
    let shared: Keys = first
        .into_iter()
        .filter(|kv| checks.iter().all(|c| c.contains(kv)))
        .collect();
    let own = checks
        .into_iter()
        .map(|c| Some(c.into_iter().filter(|kv| !shared.contains(kv)).collect()))
        .collect();
    (Some(shared), own)
}

fn section(
    out: &mut String,
    places: &mut Vec<(usize, Origin)>,
    header: &str,
    origins: &[Origin],
    notes: &[String],
    keys: &Keys,
) {
    out.push('\n');
    if let Some(o) = origins.first() {
        places.push((out.len(), o.clone()));
    }
    for (i, o) in origins.iter().enumerate() {
        let lead = if i == 0 { "from" } else { "and" };
        comment(out, &format!("{lead} {} {}", o.loc, o.what));
    }
    for n in notes {
        comment(out, n);
    }
    table(out, header, keys);
}

fn table(out: &mut String, header: &str, keys: &Keys) {
    out.push_str(header);
    out.push('\n');
    for (k, v) in keys {
        // Keys are this module's own words; values go through the toml
        // crate, which quotes and escapes them.
        let _ = writeln!(out, "{k} = {v}");
    }
}

/// `# text`, one comment line per line of `text`, with control characters
/// shown as escapes: a file name or an instance name from an input can
/// never end the comment and start a key.
fn comment(out: &mut String, text: &str) {
    for line in text.split('\n') {
        out.push('#');
        if !line.is_empty() {
            out.push(' ');
        }
        for c in line.chars() {
            if c.is_control() && c != '\t' {
                let _ = write!(out, "{}", c.escape_unicode());
            } else {
                out.push(c);
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::super::plan::{s, Backend, Proto};
    use super::super::syntax::Loc;
    use super::*;

    fn origin(what: &str) -> Origin {
        Origin::new(
            &Loc {
                file: Arc::from("x.conf"),
                line: 7,
            },
            what,
        )
    }

    #[test]
    fn untrusted_names_are_quoted_and_comments_cannot_be_escaped() {
        let mut plan = Plan::default();
        let mut p = Pool::new("p\"\n[admin]", origin("upstream a\nlisten = 1"));
        let mut b = Backend::at(SocketAddr::from(([10, 0, 0, 1], 53)));
        b.health = Some(vec![
            ("check", s("tcp")),
            ("timeout_ms", toml::Value::Integer(3000)),
        ]);
        p.backends.push(b);
        let mut b = Backend::at(SocketAddr::from(([10, 0, 0, 2], 53)));
        b.health = Some(vec![
            ("check", s("tcp")),
            ("timeout_ms", toml::Value::Integer(2000)),
        ]);
        p.backends.push(b);
        let name = plan.add_pool(p);
        plan.add_listener(Listener {
            name: "l".into(),
            proto: Proto::Udp,
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            pool: name,
            keys: Vec::new(),
            origin: origin("server"),
            notes: vec!["two\rlines".into()],
        });
        let rendered = render(
            &plan,
            &Header {
                inputs: vec![("nginx", "x.conf".into())],
            },
        );
        let at = rendered.text.find("[[pool]]").unwrap();
        assert_eq!(
            rendered.origin_at(at).unwrap().what,
            "upstream a\nlisten = 1"
        );
        assert_eq!(rendered.origin_at(5), None);
        let text = rendered.text;
        let doc: toml::Table = text.parse().unwrap();
        assert!(!doc.contains_key("admin"), "{text}");
        assert_eq!(doc["pool"][0]["name"].as_str(), Some("p\"\n[admin]"));
        assert_eq!(doc["pool"][0]["health"]["check"].as_str(), Some("tcp"));
        assert_eq!(
            doc["pool"][0]["backend"][0]["health"]["timeout_ms"].as_integer(),
            Some(3000)
        );
        assert_eq!(
            doc["pool"][0]["backend"][1]["health"]["timeout_ms"].as_integer(),
            Some(2000)
        );
        assert!(
            text.contains("# from x.conf:7 upstream a\n# listen = 1\n"),
            "{text}"
        );
        assert!(text.contains("# two\\u{d}lines\n"), "{text}");
    }
}
