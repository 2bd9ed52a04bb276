//! The tolerant first pass: the TOML document (parsed by `toml_edit`, which
//! keeps the location of every key and value) read table by table and key by
//! key into the raw shapes of [`super::raw`]. A wrong type, an unknown value
//! or key and a missing key are each one [`ConfigError`] at the key or value,
//! in the words of the configuration, and reading goes on: every such error
//! of a file is reported at once, with the value errors that typed
//! validation finds after it.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml_edit::{Item, TableLike, Value};

use crate::error::ConfigError;

/// What a reading found: the errors, in any order (sorted by location at
/// the end), and the keys each kind of table takes (for the documentation
/// test and `dnsha check`'s hints).
#[derive(Debug, Default)]
pub(super) struct Errors {
    pub(super) list: Vec<ConfigError>,
    pub(super) keys: std::collections::BTreeMap<String, Vec<&'static str>>,
}

impl Errors {
    pub(super) fn push(&mut self, e: ConfigError) {
        self.list.push(e);
    }
}

/// A table read elsewhere (a `[[vrrp]]` section): where it starts and
/// where each of its keys is.
#[derive(Debug)]
pub(super) struct Located {
    pub(super) span: Range<usize>,
    pub(super) keys: std::collections::BTreeMap<String, Range<usize>>,
}

/// `command = "shell line"` or `command = ["/path/prog", "arg"]`.
#[derive(Debug, Clone)]
pub(super) enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
}

/// How a value is described in a message: `the string "two"`.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {:?}", s.value()),
        Value::Integer(i) => format!("the number {}", i.value()),
        Value::Float(f) => format!("the number {}", f.value()),
        Value::Boolean(b) => format!("{}", b.value()),
        Value::Datetime(d) => format!("the date {}", d.value()),
        Value::Array(_) => "a list".into(),
        Value::InlineTable(_) => "a table".into(),
    }
}

fn describe_item(i: &Item) -> String {
    match i {
        Item::Value(v) => describe(v),
        Item::Table(_) => "a table".into(),
        Item::ArrayOfTables(_) => "a list of tables".into(),
        Item::None => "nothing".into(),
    }
}

/// One table of the document (`[admin]`, one `[[listener]]`, an inline
/// table…), read key by key. Every key asked for is remembered, so
/// [`Table::finish`] can name the keys that exist when it reports one that
/// does not.
pub(super) struct Table<'a> {
    table: &'a dyn TableLike,
    /// The table's header (or the inline table itself), for errors about the
    /// table as a whole.
    span: Range<usize>,
    /// How messages name it: `[[listener]]`, `[pool.health]`.
    what: String,
    asked: Vec<&'static str>,
    /// The keys among `asked` that hold tables (documented as headings).
    subtables: Vec<&'static str>,
}

impl<'a> Table<'a> {
    /// The document's top level.
    pub(super) fn root(doc: &'a toml_edit::ImDocument<&'a str>) -> Self {
        Self {
            table: doc.as_table(),
            span: 0..0,
            what: "the top level".into(),
            asked: Vec::new(),
            subtables: Vec::new(),
        }
    }

    fn of(item: &'a Item, span: Range<usize>, what: String) -> Option<Self> {
        Some(Self {
            table: item.as_table_like()?,
            span,
            what,
            asked: Vec::new(),
            subtables: Vec::new(),
        })
    }

    /// Where the table starts.
    pub(super) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// How messages name the table.
    pub(super) fn what(&self) -> &str {
        &self.what
    }

    /// The location of `key`'s name (or of the table when it has no
    /// location).
    pub(super) fn key_span(&self, key: &str) -> Range<usize> {
        self.table
            .key(key)
            .and_then(toml_edit::Key::span)
            .unwrap_or_else(|| self.span.clone())
    }

    /// The item under `key`, with the location of its value.
    fn item(&mut self, key: &'static str) -> Option<(&'a Item, Range<usize>)> {
        self.asked.push(key);
        let item = self.table.get(key)?;
        let span = item.span().unwrap_or_else(|| self.key_span(key));
        Some((item, span))
    }

    fn wrong(&self, errs: &mut Errors, key: &str, span: Range<usize>, want: &str, got: &Item) {
        errs.push(ConfigError::at(
            span,
            format!("{key}: expected {want}, got {}", describe_item(got)),
        ));
    }

    /// A whole number of 0 or more.
    pub(super) fn u64(&mut self, errs: &mut Errors, key: &'static str) -> Option<Spanned<u64>> {
        let (item, span) = self.item(key)?;
        match item.as_integer() {
            Some(n) => match u64::try_from(n) {
                Ok(n) => Some(Spanned::new(span, n)),
                Err(_) => {
                    errs.push(ConfigError::at(
                        span,
                        format!("{key}: expected a whole number of 0 or more, got {n}"),
                    ));
                    None
                }
            },
            None => {
                self.wrong(errs, key, span, "a whole number", item);
                None
            }
        }
    }

    /// A whole number up to 4294967295.
    pub(super) fn u32(&mut self, errs: &mut Errors, key: &'static str) -> Option<Spanned<u32>> {
        let v = self.u64(errs, key)?;
        match u32::try_from(*v.get_ref()) {
            Ok(n) => Some(Spanned::new(v.span(), n)),
            Err(_) => {
                errs.push(ConfigError::at(
                    v.span(),
                    format!(
                        "{key}: expected a whole number up to {}, got {}",
                        u32::MAX,
                        v.get_ref()
                    ),
                ));
                None
            }
        }
    }

    /// A number, whole or decimal.
    pub(super) fn f64(&mut self, errs: &mut Errors, key: &'static str) -> Option<Spanned<f64>> {
        let (item, span) = self.item(key)?;
        let n = match item.as_value() {
            Some(Value::Float(f)) => Some(*f.value()),
            #[allow(clippy::cast_precision_loss)]
            Some(Value::Integer(i)) => Some(*i.value() as f64),
            _ => None,
        };
        match n {
            Some(n) => Some(Spanned::new(span, n)),
            None => {
                self.wrong(errs, key, span, "a number", item);
                None
            }
        }
    }

    /// `true` or `false`.
    pub(super) fn bool(&mut self, errs: &mut Errors, key: &'static str) -> Option<Spanned<bool>> {
        let (item, span) = self.item(key)?;
        match item.as_bool() {
            Some(b) => Some(Spanned::new(span, b)),
            None => {
                self.wrong(errs, key, span, "true or false", item);
                None
            }
        }
    }

    /// A string.
    pub(super) fn string(
        &mut self,
        errs: &mut Errors,
        key: &'static str,
    ) -> Option<Spanned<String>> {
        let (item, span) = self.item(key)?;
        match item.as_str() {
            Some(s) => Some(Spanned::new(span, s.to_string())),
            None => {
                self.wrong(errs, key, span, "a string in quotes", item);
                None
            }
        }
    }

    /// A string that must be there: its absence is an error at the table.
    pub(super) fn required(
        &mut self,
        errs: &mut Errors,
        key: &'static str,
    ) -> Option<Spanned<String>> {
        let present = self.table.contains_key(key);
        let v = self.string(errs, key);
        if !present {
            errs.push(ConfigError::at(
                self.span(),
                format!("{} has no `{key}` (required)", self.what),
            ));
        }
        v
    }

    /// A list of strings; each item of another type is one error.
    pub(super) fn strings(
        &mut self,
        errs: &mut Errors,
        key: &'static str,
    ) -> Option<Vec<Spanned<String>>> {
        self.spanned_strings(errs, key).map(Spanned::into_inner)
    }

    /// As [`Self::strings`], with the location of the whole list (for an
    /// error about the list, such as its being empty).
    pub(super) fn spanned_strings(
        &mut self,
        errs: &mut Errors,
        key: &'static str,
    ) -> Option<Spanned<Vec<Spanned<String>>>> {
        let (item, span) = self.item(key)?;
        let Some(list) = item.as_array() else {
            self.wrong(errs, key, span, "a list of strings", item);
            return None;
        };
        let mut out = Vec::new();
        for v in list {
            let at = v.span().unwrap_or_else(|| span.clone());
            match v.as_str() {
                Some(s) => out.push(Spanned::new(at, s.to_string())),
                None => errs.push(ConfigError::at(
                    at,
                    format!("{key}: expected a string in quotes, got {}", describe(v)),
                )),
            }
        }
        Some(Spanned::new(span, out))
    }

    /// One of a fixed set of words, read by `T`'s serde names: `policy =
    /// "random"` is `policy: unknown value "random", expected one of `rr`,
    /// `wrr`, `lc`, `first``.
    pub(super) fn choice<T: DeserializeOwned>(
        &mut self,
        errs: &mut Errors,
        key: &'static str,
    ) -> Option<Spanned<T>> {
        let s = self.string(errs, key)?;
        let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s.get_ref());
        match T::deserialize(de) {
            Ok(v) => Some(Spanned::new(s.span(), v)),
            Err(e) => {
                let text = e.to_string();
                let allowed = text
                    .split_once("expected ")
                    .map_or(text.as_str(), |(_, rest)| rest);
                errs.push(ConfigError::at(
                    s.span(),
                    format!("{key}: unknown value {:?}, expected {allowed}", s.get_ref()),
                ));
                None
            }
        }
    }

    /// A sub-table (`[pool.health]` or an inline `health = { ... }`).
    pub(super) fn table(&mut self, errs: &mut Errors, key: &'static str) -> Option<Self> {
        self.subtables.push(key);
        let (item, span) = self.item(key)?;
        let what = format!("[{}.{key}]", self.what.trim_matches(['[', ']']));
        match Table::of(item, span.clone(), what) {
            Some(t) => Some(t),
            None => {
                self.wrong(errs, key, span, "a table", item);
                None
            }
        }
    }

    /// A list of tables (`[[pool]]`, or a list of inline tables).
    pub(super) fn tables(&mut self, errs: &mut Errors, key: &'static str) -> Vec<Self> {
        self.subtables.push(key);
        let Some((item, span)) = self.item(key) else {
            return Vec::new();
        };
        let parent = self.what.trim_matches(['[', ']']);
        let what = if parent.contains(' ') {
            format!("[[{key}]]")
        } else {
            format!("[[{parent}.{key}]]")
        };
        match item {
            Item::ArrayOfTables(a) => a
                .iter()
                .map(|t| Table {
                    table: t,
                    span: t.span().unwrap_or_else(|| span.clone()),
                    what: what.clone(),
                    asked: Vec::new(),
                    subtables: Vec::new(),
                })
                .collect(),
            Item::Value(Value::Array(a)) => {
                let mut out = Vec::new();
                for v in a {
                    let at = v.span().unwrap_or_else(|| span.clone());
                    match v.as_inline_table() {
                        Some(t) => out.push(Table {
                            table: t,
                            span: at,
                            what: what.clone(),
                            asked: Vec::new(),
                            subtables: Vec::new(),
                        }),
                        None => errs.push(ConfigError::at(
                            at,
                            format!("{key}: expected a table, got {}", describe(v)),
                        )),
                    }
                }
                out
            }
            other => {
                self.wrong(errs, key, span, "a list of tables", other);
                Vec::new()
            }
        }
    }

    /// Counts `key`, read as a table or list of tables, among the table's
    /// keys (documented in the key table, not as a heading of its own: the
    /// combinators of a rule).
    pub(super) fn key_not_heading(&mut self, key: &str) {
        self.subtables.retain(|k| *k != key);
    }

    /// Whether `key` is written in the table.
    pub(super) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The table as an opaque section (its keys read elsewhere): where it
    /// starts and where each key is. Nothing is reported as unknown.
    pub(super) fn section(self) -> Located {
        let keys = self
            .table
            .iter()
            .map(|(k, _)| (k.to_string(), self.key_span(k)))
            .collect();
        Located {
            span: self.span,
            keys,
        }
    }

    /// `command = "shell line"` or `command = ["/path/prog", "arg"]`.
    pub(super) fn command(
        &mut self,
        errs: &mut Errors,
        key: &'static str,
    ) -> Option<Spanned<RawCommand>> {
        let (item, span) = self.item(key)?;
        if let Some(s) = item.as_str() {
            return Some(Spanned::new(span, RawCommand::Shell(s.to_string())));
        }
        let argv = item.as_array().and_then(|a| {
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        match argv {
            Some(argv) => Some(Spanned::new(span, RawCommand::Argv(argv))),
            None => {
                self.wrong(
                    errs,
                    key,
                    span,
                    "a shell line in quotes or a list of strings [\"/path/program\", \"arg\"]",
                    item,
                );
                None
            }
        }
    }

    /// Reports every key of the table that was never asked for, naming the
    /// keys the table takes.
    pub(super) fn finish(self, errs: &mut Errors) {
        let known = errs.keys.entry(self.what.clone()).or_default();
        for k in &self.asked {
            if !known.contains(k) && !self.subtables.contains(k) {
                known.push(k);
            }
        }
        for (key, _) in self.table.iter() {
            if self.asked.contains(&key) {
                continue;
            }
            let hint = match closest(key, &self.asked) {
                Some(k) => format!("did you mean `{k}`?"),
                None => format!(
                    "the keys there are {}",
                    self.asked
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            errs.push(ConfigError::at(
                self.key_span(key),
                format!("unknown key `{key}` in {}; {hint}", self.what),
            ));
        }
    }
}

/// The known key `key` is most likely a misspelling of: at most two
/// letters added, dropped or changed (and fewer than half of them).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2 && *d * 2 < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let change = prev[j] + usize::from(ca != cb);
            cur[j + 1] = change.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses `source` into a document that keeps locations; a syntax error
/// (which ends the reading: nothing after it can be trusted) is the one
/// error.
pub(super) fn document(source: &str) -> Result<toml_edit::ImDocument<&str>, ConfigError> {
    toml_edit::ImDocument::parse(source).map_err(|e| ConfigError {
        span: e.span(),
        message: format!("not valid TOML: {}", e.message().trim()),
    })
}
