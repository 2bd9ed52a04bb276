//! Top-level keys about the process itself: the user it switches to after
//! binding its sockets, the capabilities it keeps, the log format.

use std::ops::Range;

use toml::Spanned;

use super::read::{Errors, Table};
use super::{LogFormat, Validator};

/// A capability `dnsha run` may keep after it switches user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Bind ports below 1024 (a listener added by a reload).
    NetBindService,
    /// Addresses, routes, nftables, conntrack (VRRP, the kernel path).
    NetAdmin,
    /// Raw and packet sockets (VRRP adverts, gratuitous ARP).
    NetRaw,
}

impl Capability {
    /// Every capability the key takes.
    pub const ALL: [Self; 3] = [Self::NetBindService, Self::NetAdmin, Self::NetRaw];

    /// Its name as in capabilities(7) and systemd units.
    pub fn name(self) -> &'static str {
        match self {
            Self::NetBindService => "CAP_NET_BIND_SERVICE",
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::NetRaw => "CAP_NET_RAW",
        }
    }

    /// Its number in capabilities(7).
    pub fn number(self) -> u32 {
        match self {
            Self::NetBindService => 10,
            Self::NetAdmin => 12,
            Self::NetRaw => 13,
        }
    }

    /// The capability named `name` (`CAP_NET_RAW`, or `net_raw`, any case).
    pub fn parse(name: &str) -> Option<Self> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        Self::ALL.into_iter().find(|c| &c.name()[4..] == bare)
    }
}

/// A user or group name, with where it is written (so that a name the
/// system does not know is reported at its place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountName {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Range<usize>,
}

/// The top-level process keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessConfig {
    /// `user`: started as root, switch to this user once every socket is
    /// bound.
    pub user: Option<AccountName>,
    /// `group`: the group to switch to (default: the user's own).
    pub group: Option<AccountName>,
    /// `keep_capabilities`: kept after the switch besides those the
    /// configuration needs.
    pub keep_capabilities: Vec<Capability>,
    /// `log_format`: how `dnsha run` writes its own log lines on stderr
    /// (the same two formats as access logs).
    pub log_format: LogFormat,
}

/// The keys as written.
#[derive(Debug, Default)]
pub(super) struct RawProcess {
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    keep_capabilities: Option<Vec<Spanned<String>>>,
    log_format: Option<Spanned<LogFormat>>,
}

/// Reads the top-level process keys.
pub(super) fn raw(root: &mut Table<'_>, errs: &mut Errors) -> RawProcess {
    RawProcess {
        user: root.string(errs, "user"),
        group: root.string(errs, "group"),
        keep_capabilities: root.strings(errs, "keep_capabilities"),
        log_format: root.choice(errs, "log_format"),
    }
}

/// A user or group name as `useradd` accepts it.
fn valid_account(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
}

impl Validator {
    pub(super) fn process(&mut self, raw: &RawProcess) -> ProcessConfig {
        let mut account = |what: &str, v: &Option<Spanned<String>>| {
            let v = v.as_ref()?;
            if valid_account(v.get_ref()) {
                Some(AccountName {
                    name: v.get_ref().clone(),
                    span: v.span(),
                })
            } else {
                self.err(
                    v.span(),
                    format!("{what} {:?} is not a valid {what} name", v.get_ref()),
                );
                None
            }
        };
        let user = account("user", &raw.user);
        let group = account("group", &raw.group);
        if raw.user.is_none() {
            if let Some(g) = &raw.group {
                self.err(g.span(), "`group` needs `user`: set the user to switch to");
            }
            if let Some(k) = raw.keep_capabilities.as_ref().and_then(|k| k.first()) {
                self.err(
                    k.span(),
                    "`keep_capabilities` applies when dnsha switches `user`: set the user",
                );
            }
        }
        let mut keep = Vec::new();
        for c in raw.keep_capabilities.iter().flatten() {
            match Capability::parse(c.get_ref()) {
                Some(cap) if !keep.contains(&cap) => keep.push(cap),
                Some(_) => {}
                None => self.err(
                    c.span(),
                    format!(
                        "keep_capabilities: unknown capability {:?}, expected CAP_NET_BIND_SERVICE, \
                         CAP_NET_ADMIN or CAP_NET_RAW",
                        c.get_ref()
                    ),
                ),
            }
        }
        keep.sort();
        ProcessConfig {
            user,
            group,
            keep_capabilities: keep,
            log_format: raw
                .log_format
                .as_ref()
                .map_or(LogFormat::Text, |f| *f.get_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str =
        "[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"127.0.0.1:5353\"\n\
                        pool = \"p\"\n[[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b\"\n\
                        address = \"127.0.0.1:53\"\n";

    fn errors(top: &str) -> Vec<String> {
        let src = format!("{top}\n{BASE}");
        Config::parse(&src)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.render("f", &src))
            .collect()
    }

    #[test]
    fn the_process_keys_are_read() {
        let src = format!(
            "user = \"dnsha\"\ngroup = \"dnsha\"\nkeep_capabilities = [\"net_bind_service\", \
             \"CAP_NET_ADMIN\", \"CAP_NET_BIND_SERVICE\"]\nlog_format = \"json\"\n{BASE}"
        );
        let p = Config::parse(&src).map(|c| c.process).unwrap_or_default();
        assert_eq!(p.user.map(|u| u.name).as_deref(), Some("dnsha"));
        assert_eq!(
            p.group.map(|u| (u.name, u.span)),
            Some(("dnsha".into(), 23..30))
        );
        assert_eq!(
            p.keep_capabilities,
            [Capability::NetBindService, Capability::NetAdmin]
        );
        assert_eq!(p.log_format, LogFormat::Json);
        let none = Config::parse(BASE).map(|c| c.process).unwrap_or_default();
        assert_eq!(none, ProcessConfig::default());
    }

    #[test]
    fn bad_process_keys_are_errors_at_their_place() {
        assert_eq!(
            errors("user = \"\"\nkeep_capabilities = [\"CAP_SYS_ADMIN\"]"),
            [
                "f:1:8: user \"\" is not a valid user name",
                "f:2:22: keep_capabilities: unknown capability \"CAP_SYS_ADMIN\", expected \
                 CAP_NET_BIND_SERVICE, CAP_NET_ADMIN or CAP_NET_RAW"
            ]
        );
        assert_eq!(
            errors("group = \"dnsha\"\nkeep_capabilities = [\"CAP_NET_RAW\"]"),
            [
                "f:1:9: `group` needs `user`: set the user to switch to",
                "f:2:22: `keep_capabilities` applies when dnsha switches `user`: set the user"
            ]
        );
        assert_eq!(
            errors("log_format = \"xml\""),
            ["f:1:14: log_format: unknown value \"xml\", expected `text` or `json`"]
        );
    }
}
