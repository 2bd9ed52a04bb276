//! The error type of `dnsha-core`.

use std::ops::Range;

/// Errors produced by `dnsha-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has one or more errors; each carries its location.
    #[error("{} configuration error(s)", errors.len())]
    Config {
        /// Every error found, in source order.
        errors: Vec<ConfigError>,
    },
    /// A domain name in a rule that does not parse.
    #[error("bad domain name {name:?}")]
    BadName {
        /// The name as written.
        name: String,
        /// Why it does not parse.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// A network in a rule that does not parse.
    #[error("bad network {text:?} (CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an address)")]
    BadNetwork {
        /// The network as written.
        text: String,
        /// Why it does not parse.
        #[source]
        source: ipnet::AddrParseError,
    },
    /// A network written with host bits set (`10.1.2.3/8`).
    #[error("network {text:?} has host bits set: did you mean {network}?")]
    HostBitsSet {
        /// The network as written.
        text: String,
        /// The network it would be.
        network: String,
    },
    /// A pool was asked for a backend and none is available.
    #[error("pool {pool}: no backend available")]
    NoBackend {
        /// Name of the pool.
        pool: String,
    },
}

/// One configuration error, with the byte range of the offending text when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Byte range in the source text.
    pub span: Option<Range<usize>>,
    /// What is wrong, in words an operator understands.
    pub message: String,
}

impl ConfigError {
    /// An error located at `span`.
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            message: message.into(),
        }
    }

    /// Renders `FILE:LINE:COL: message` (line and column are 1-based).
    pub fn render(&self, file: &str, source: &str) -> String {
        match &self.span {
            Some(span) => {
                let (line, col) = line_col(source, span.start);
                format!("{file}:{line}:{col}: {}", self.message)
            }
            None => format!("{file}: {}", self.message),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
        assert_eq!(line_col(src, 1000), (3, 1));
    }

    #[test]
    fn render_has_file_line_col() {
        let src = "x\nname = 3\n";
        let e = ConfigError::at(2..6, "bad");
        assert_eq!(e.render("f.toml", src), "f.toml:2:1: bad");
    }
}
