//! The small tokenizer the importers share, and the brace-block tree that
//! keepalived and nginx write their configurations in.
//!
//! No maintained crate reads these formats (the registry has no parser for
//! nginx, HAProxy or keepalived files that keeps line numbers; the
//! `nftables` crate drives the `nft` program), so this is ours: words,
//! quoted strings, comments, `{`, `}` and `;`, each with its line, then
//! statements nested in blocks. Everything here is pure: files come in as
//! [`Source`] values, and `include` directives go through a [`Loader`], so
//! the tests need no files.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Blocks nested deeper than this are refused: the readers recurse over
/// blocks, and no real configuration comes close.
pub(crate) const MAX_DEPTH: usize = 64;

/// Includes nested deeper than this are refused (a loop that goes through
/// a new name each time, or a configuration no one could read).
pub(crate) const MAX_INCLUDE_DEPTH: usize = 16;

/// A line of an input file, as messages and comments show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    /// The file's name as given (or as an include resolved it).
    pub(crate) file: Arc<str>,
    /// 1-based line number.
    pub(crate) line: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

impl Loc {
    /// A located error at this line.
    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
        Error::ImportSyntax {
            file: self.file.to_string(),
            line: self.line,
            message: message.into(),
        }
    }
}

/// Something of an input that is not carried over, or carried over
/// differently, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Warning {
    /// Where.
    pub(crate) loc: Loc,
    /// What, and what to do instead.
    pub(crate) message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.loc, self.message)
    }
}

/// An input file's text.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The name shown in messages.
    pub(crate) name: Arc<str>,
    /// What tells two names of one file apart (its canonical path), for
    /// include loops.
    pub(crate) id: PathBuf,
    /// The text.
    pub(crate) text: String,
}

impl Source {
    /// A source whose identity is its name (tests, standard input).
    #[cfg(test)]
    pub(crate) fn new(name: &str, text: &str) -> Self {
        Self {
            name: name.into(),
            id: PathBuf::from(name),
            text: text.to_string(),
        }
    }

    /// Line `line` of this file.
    pub(crate) fn at(&self, line: u32) -> Loc {
        Loc {
            file: Arc::clone(&self.name),
            line,
        }
    }
}

/// Why an included file cannot be read.
#[derive(Debug)]
pub(crate) struct LoadError {
    /// The file.
    pub(crate) path: PathBuf,
    /// The system error.
    pub(crate) source: std::io::Error,
}

/// Reads the files an `include` names.
pub(crate) trait Loader {
    /// The files `pattern` names, written in `from`: a path relative to
    /// `from`'s directory or absolute, with `*`, `?` and `[...]` allowed in
    /// its last component (matches in name order; none is no error). A
    /// pattern without wildcards names one file, which must exist.
    fn load(&mut self, from: &Source, pattern: &str)
        -> std::result::Result<Vec<Source>, LoadError>;
}

/// The files being included, outermost first: an include of one of them
/// is a loop.
#[derive(Debug, Default)]
pub(crate) struct IncludeStack {
    files: Vec<(PathBuf, Arc<str>)>,
}

impl IncludeStack {
    /// A stack holding the top file `src`.
    pub(crate) fn new(src: &Source) -> Self {
        Self {
            files: vec![(src.id.clone(), Arc::clone(&src.name))],
        }
    }

    /// The sources `pattern` names at `loc` (written in `from`), after
    /// checking they do not loop; with a warning when a pattern matches
    /// nothing.
    pub(crate) fn resolve(
        &self,
        loader: &mut dyn Loader,
        from: &Source,
        pattern: &str,
        loc: &Loc,
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<Source>> {
        if self.files.len() > MAX_INCLUDE_DEPTH {
            return Err(loc.error(format!(
                "include `{pattern}`: includes nested deeper than {MAX_INCLUDE_DEPTH}"
            )));
        }
        let found = loader
            .load(from, pattern)
            .map_err(|e| Error::ImportInclude {
                file: loc.file.to_string(),
                line: loc.line,
                path: e.path,
                source: e.source,
            })?;
        if found.is_empty() {
            warnings.push(Warning {
                loc: loc.clone(),
                message: format!("include `{pattern}` matches no file: nothing included"),
            });
        }
        for s in &found {
            if self.files.iter().any(|(id, _)| *id == s.id) {
                let mut chain: Vec<String> =
                    self.files.iter().map(|(_, n)| n.to_string()).collect();
                chain.push(s.name.to_string());
                return Err(loc.error(format!("include loop: {}", chain.join(" -> "))));
            }
        }
        Ok(found)
    }

    /// This stack with `src` included.
    pub(crate) fn with(&self, src: &Source) -> Self {
        let mut files = self.files.clone();
        files.push((src.id.clone(), Arc::clone(&src.name)));
        Self { files }
    }
}

/// How a format writes its words.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// `{` and `}` are tokens of their own.
    pub(crate) braces: bool,
    /// `;` is a token of its own.
    pub(crate) semicolons: bool,
    /// `,` is a token of its own.
    pub(crate) commas: bool,
    /// `!` starts a comment (keepalived), as `#` does everywhere.
    pub(crate) bang_comments: bool,
    /// `'...'` quotes, besides `"..."`.
    pub(crate) single_quotes: bool,
    /// A backslash takes the next character literally.
    pub(crate) escapes: bool,
}

/// nginx: `;`-terminated statements, both quotes, backslash escapes.
pub(crate) const NGINX: Dialect = Dialect {
    braces: true,
    semicolons: true,
    commas: false,
    bang_comments: false,
    single_quotes: true,
    escapes: true,
};

/// keepalived: one statement per line, `#` and `!` comments.
pub(crate) const KEEPALIVED: Dialect = Dialect {
    braces: true,
    semicolons: false,
    commas: false,
    bang_comments: true,
    single_quotes: false,
    escapes: false,
};

/// HAProxy: one statement per line, no blocks.
pub(crate) const HAPROXY: Dialect = Dialect {
    braces: false,
    semicolons: false,
    commas: false,
    bang_comments: false,
    single_quotes: true,
    escapes: true,
};

/// nftables: `;` or a new line ends a statement, `{ a, b }` sets inline.
pub(crate) const NFTABLES: Dialect = Dialect {
    braces: true,
    semicolons: true,
    commas: true,
    bang_comments: false,
    single_quotes: false,
    escapes: false,
};

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A word, or a quoted string without its quotes.
    Word(String),
    /// `{`
    Open,
    /// `}`
    Close,
    /// `;`
    Semi,
    /// `,`
    Comma,
    /// The end of a line.
    Newline,
}

/// A token and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The token.
    pub(crate) tok: Tok,
    /// Its 1-based line.
    pub(crate) line: u32,
}

/// The tokens of `src` in dialect `d`; an unterminated quote is an error
/// at the line it opens.
pub(crate) fn lex(src: &Source, d: Dialect) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = src.text.chars().peekable();
    let mut line: u32 = 1;
    let special = |c: char| {
        (d.braces && (c == '{' || c == '}')) || (d.semicolons && c == ';') || (d.commas && c == ',')
    };
    while let Some(c) = chars.next() {
        let tok = match c {
            '\n' => Tok::Newline,
            c if c.is_ascii_whitespace() => continue,
            '#' => {
                skip_line(&mut chars);
                continue;
            }
            '!' if d.bang_comments => {
                skip_line(&mut chars);
                continue;
            }
            '{' if d.braces => Tok::Open,
            '}' if d.braces => Tok::Close,
            ';' if d.semicolons => Tok::Semi,
            ',' if d.commas => Tok::Comma,
            '"' | '\'' if c == '"' || d.single_quotes => {
                let start = line;
                let mut word = String::new();
                let mut closed = false;
                while let Some(q) = chars.next() {
                    match q {
                        q if q == c => {
                            closed = true;
                            break;
                        }
                        '\\' if d.escapes => {
                            if let Some(n) = chars.next() {
                                if n == '\n' {
                                    line += 1;
                                }
                                word.push(n);
                            }
                        }
                        '\n' => {
                            line += 1;
                            word.push('\n');
                        }
                        q => word.push(q),
                    }
                }
                if !closed {
                    return Err(src.at(start).error(format!("unterminated {c}quote{c}")));
                }
                out.push(Token {
                    tok: Tok::Word(word),
                    line: start,
                });
                continue;
            }
            c => {
                let mut word = String::new();
                let mut next = Some(c);
                while let Some(w) = next {
                    if w == '\\' && d.escapes {
                        match chars.next() {
                            Some('\n') | None => break,
                            Some(n) => word.push(n),
                        }
                    } else {
                        word.push(w);
                    }
                    next = chars.next_if(|n| !n.is_ascii_whitespace() && !special(*n));
                }
                Tok::Word(word)
            }
        };
        let newline = tok == Tok::Newline;
        out.push(Token { tok, line });
        if newline {
            line += 1;
        }
    }
    Ok(out)
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| *c != '\n').is_some() {}
}

/// What ends a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ends {
    /// `;` (nginx); new lines are white space.
    Semicolon,
    /// The end of the line (keepalived, HAProxy).
    Newline,
}

/// A statement: its words and, when it opens one, its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stmt {
    /// The directive and its arguments.
    pub(crate) words: Vec<String>,
    /// Where it starts.
    pub(crate) loc: Loc,
    /// The statements of its `{ ... }` block.
    pub(crate) block: Option<Vec<Self>>,
}

impl Stmt {
    /// The directive.
    pub(crate) fn name(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// Its arguments.
    pub(crate) fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or(&[])
    }

    /// Argument `i` (0 is the first after the directive), or a located
    /// error naming what is missing.
    pub(crate) fn arg(&self, i: usize, what: &str) -> Result<&str> {
        self.args()
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| self.loc.error(format!("{}: missing {what}", self.name())))
    }

    /// The statements of its block (none for a plain statement).
    pub(crate) fn children(&self) -> &[Self] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The directive and its arguments as written, for messages.
    pub(crate) fn text(&self) -> String {
        self.words.join(" ")
    }
}

struct Frame {
    stmts: Vec<Stmt>,
    head: Vec<String>,
    loc: Loc,
}

/// The statements of `src`, nested in their blocks; unbalanced braces,
/// and statements an nginx file does not end with `;`, are errors at
/// their line.
pub(crate) fn parse(src: &Source, d: Dialect, ends: Ends) -> Result<Vec<Stmt>> {
    let tokens = lex(src, d)?;
    let mut stack = vec![Frame {
        stmts: Vec::new(),
        head: Vec::new(),
        loc: src.at(1),
    }];
    let mut words: Vec<String> = Vec::new();
    let mut first = 0;
    for t in tokens {
        match t.tok {
            Tok::Word(w) => {
                if words.is_empty() {
                    first = t.line;
                }
                words.push(w);
            }
            Tok::Comma => words.push(",".into()),
            Tok::Semi if ends == Ends::Semicolon => {
                if words.is_empty() {
                    return Err(src.at(t.line).error("unexpected `;`"));
                }
                push(&mut stack, std::mem::take(&mut words), src.at(first), None);
            }
            Tok::Semi => words.push(";".into()),
            Tok::Newline => {
                if ends == Ends::Newline && !words.is_empty() {
                    push(&mut stack, std::mem::take(&mut words), src.at(first), None);
                }
            }
            Tok::Open => {
                let (head, loc) = if words.is_empty() {
                    // keepalived lets `{` stand on the line after its
                    // keyword.
                    let last = stack
                        .last_mut()
                        .and_then(|f| f.stmts.pop_if(|s| s.block.is_none()));
                    match last {
                        Some(s) if ends == Ends::Newline => (s.words, s.loc),
                        _ => return Err(src.at(t.line).error("unexpected `{`")),
                    }
                } else {
                    (std::mem::take(&mut words), src.at(first))
                };
                if stack.len() > MAX_DEPTH {
                    return Err(src
                        .at(t.line)
                        .error(format!("blocks nested deeper than {MAX_DEPTH}")));
                }
                stack.push(Frame {
                    stmts: Vec::new(),
                    head,
                    loc,
                });
            }
            Tok::Close => {
                if !words.is_empty() {
                    if ends == Ends::Semicolon {
                        return Err(src.at(t.line).error(format!(
                            "unexpected `}}`: `{}` is missing its `;`",
                            words.join(" ")
                        )));
                    }
                    push(&mut stack, std::mem::take(&mut words), src.at(first), None);
                }
                if stack.len() < 2 {
                    return Err(src
                        .at(t.line)
                        .error("unbalanced braces: `}` closes no block"));
                }
                if let Some(frame) = stack.pop() {
                    push(&mut stack, frame.head, frame.loc, Some(frame.stmts));
                }
            }
        }
    }
    if !words.is_empty() {
        if ends == Ends::Semicolon {
            return Err(src.at(first).error(format!(
                "unexpected end of file: `{}` is missing its `;`",
                words.join(" ")
            )));
        }
        push(&mut stack, words, src.at(first), None);
    }
    if stack.len() > 1 {
        if let Some(open) = stack.last() {
            return Err(open.loc.error(format!(
                "unbalanced braces: the block of `{}` is never closed",
                open.head.join(" ")
            )));
        }
    }
    Ok(stack.pop().map(|f| f.stmts).unwrap_or_default())
}

fn push(stack: &mut [Frame], words: Vec<String>, loc: Loc, block: Option<Vec<Stmt>>) {
    if let Some(frame) = stack.last_mut() {
        frame.stmts.push(Stmt { words, loc, block });
    }
}

/// The statements of `src` with every `include FILE` replaced by the
/// statements of the files it names (at any depth of blocks), read
/// through `loader`; loops are errors at the include that closes them.
pub(crate) fn parse_with_includes(
    src: &Source,
    d: Dialect,
    ends: Ends,
    loader: &mut dyn Loader,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Stmt>> {
    expand_file(src, d, ends, loader, &IncludeStack::new(src), warnings)
}

fn expand_file(
    src: &Source,
    d: Dialect,
    ends: Ends,
    loader: &mut dyn Loader,
    stack: &IncludeStack,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Stmt>> {
    let stmts = parse(src, d, ends)?;
    let mut ctx = Expand {
        src,
        d,
        ends,
        loader,
        stack,
        warnings,
    };
    ctx.stmts(stmts)
}

struct Expand<'a> {
    src: &'a Source,
    d: Dialect,
    ends: Ends,
    loader: &'a mut dyn Loader,
    stack: &'a IncludeStack,
    warnings: &'a mut Vec<Warning>,
}

impl Expand<'_> {
    fn stmts(&mut self, stmts: Vec<Stmt>) -> Result<Vec<Stmt>> {
        let mut out = Vec::with_capacity(stmts.len());
        for s in stmts {
            if s.name() == "include" && s.block.is_none() {
                let pattern = s.arg(0, "file name")?;
                if s.args().len() > 1 {
                    return Err(s.loc.error("include takes one file name"));
                }
                let found =
                    self.stack
                        .resolve(self.loader, self.src, pattern, &s.loc, self.warnings)?;
                for inc in found {
                    let inner = self.stack.with(&inc);
                    out.extend(expand_file(
                        &inc,
                        self.d,
                        self.ends,
                        self.loader,
                        &inner,
                        self.warnings,
                    )?);
                }
                continue;
            }
            let block = match s.block {
                Some(b) => Some(self.stmts(b)?),
                None => None,
            };
            out.push(Stmt { block, ..s });
        }
        Ok(out)
    }
}

/// A [`Loader`] over names and texts, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct MapLoader {
    /// File name → text.
    pub(crate) files: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
impl Loader for MapLoader {
    fn load(
        &mut self,
        _from: &Source,
        pattern: &str,
    ) -> std::result::Result<Vec<Source>, LoadError> {
        if let Some(prefix) = pattern.strip_suffix('*') {
            return Ok(self
                .files
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(n, t)| Source::new(n, t))
                .collect());
        }
        match self.files.get(pattern) {
            Some(t) => Ok(vec![Source::new(pattern, t)]),
            None => Err(LoadError {
                path: PathBuf::from(pattern),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }),
        }
    }
}

#[cfg(test)]
#[path = "syntax_tests.rs"]
mod tests;
