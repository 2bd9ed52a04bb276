//! Who may use the admin endpoint: HTTP basic auth against `[admin] users`
//! (as HAProxy's `stats auth`), passwords kept as Argon2 hashes in the PHC
//! format (the `argon2` crate of RustCrypto; `dnsha hash-password` makes
//! them). The actions (`POST`) need a user; with `auth = "all"` every
//! request does. Without `users`, only a loopback client may act.

use std::net::IpAddr;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use dnsha_core::config::{AdminAuth, AdminConfig, AdminUser, ConfigError};

/// Why a request is refused before its credentials are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no usable credentials.
    Unauthorized,
    /// 403, with the reason.
    Forbidden(&'static str),
}

/// Whether a request needs a user under `auth` (`is_action`: a `POST`).
pub fn needs_user(auth: AdminAuth, is_action: bool) -> bool {
    is_action || auth == AdminAuth::All
}

/// The name and password of an `Authorization: Basic ...` header.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// What a request from `client` with the `Authorization` header `header`
/// needs, before any password is checked: `Ok(None)`, nothing;
/// `Ok(Some(..))`, these credentials checked ([`verify`]); or a refusal.
pub fn precheck(
    config: &AdminConfig,
    client: IpAddr,
    is_action: bool,
    header: Option<&str>,
) -> Result<Option<(String, String)>, Refusal> {
    if !needs_user(config.auth, is_action) {
        return Ok(None);
    }
    if config.users.is_empty() {
        return if client.to_canonical().is_loopback() {
            Ok(None)
        } else {
            Err(Refusal::Forbidden(
                "actions from another host need [admin] users (HTTP basic auth)",
            ))
        };
    }
    header
        .and_then(basic_credentials)
        .map(Some)
        .ok_or(Refusal::Unauthorized)
}

/// A hash to check a password against when the user does not exist, so
/// that the answer takes as long as for a user that does.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("dnsha decoy").unwrap_or_default())
}

/// Whether `password` is `name`'s. Slow on purpose (Argon2): call it off
/// the runtime's threads.
pub fn verify(users: &[AdminUser], name: &str, password: &str) -> bool {
    let user = users.iter().find(|u| u.name == name);
    let hash = user.map_or_else(|| decoy().to_string(), |u| u.hash.clone());
    let Ok(parsed) = PasswordHash::new(&hash) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && user.is_some()
}

/// An Argon2id hash of `password` with a random salt, in the PHC format.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// The `[admin] users` hashes that are not Argon2 PHC strings, as errors
/// at their place (so `dnsha check` finds them).
pub fn check_users(config: Option<&AdminConfig>) -> Vec<ConfigError> {
    let Some(config) = config else {
        return Vec::new();
    };
    config
        .users
        .iter()
        .filter_map(|u| {
            let why = match PasswordHash::new(&u.hash) {
                Err(e) => format!("admin user `{}`: not a PHC password hash: {e}", u.name),
                Ok(h) if !h.algorithm.as_str().starts_with("argon2") => format!(
                    "admin user `{}`: {} hashes are not supported; make one with `dnsha hash-password`",
                    u.name, h.algorithm
                ),
                Ok(h) if h.salt.is_none() || h.hash.is_none() => format!(
                    "admin user `{}`: the hash has no salt or no output; make one with `dnsha hash-password`",
                    u.name
                ),
                Ok(h) if argon2::Params::try_from(&h).is_err() => format!(
                    "admin user `{}`: the hash's Argon2 parameters are not valid",
                    u.name
                ),
                Ok(_) => return None,
            };
            Some(ConfigError::at(u.span.clone(), why))
        })
        .collect()
}

/// The client side: an `Authorization` header from `DNSHA_ADMIN_USER` and
/// `DNSHA_ADMIN_PASSWORD`, when both are set.
pub fn client_header() -> Option<String> {
    let user = std::env::var("DNSHA_ADMIN_USER").ok()?;
    let password = std::env::var("DNSHA_ADMIN_PASSWORD").ok()?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Some(format!("Basic {token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(users: &[(&str, &str)], auth: AdminAuth) -> AdminConfig {
        AdminConfig {
            listen: ([127, 0, 0, 1], 8088).into(),
            allow: Vec::new(),
            max_connections: 16,
            users: users
                .iter()
                .map(|(n, p)| AdminUser {
                    name: (*n).into(),
                    hash: hash_password(p).unwrap_or_default(),
                    span: 0..0,
                })
                .collect(),
            auth,
            refresh_ms: dnsha_core::config::DEFAULT_ADMIN_REFRESH_MS,
            tls: None,
        }
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let c = config(&[("admin", "s3cret")], AdminAuth::Actions);
        assert!(c.users[0].hash.starts_with("$argon2id$"));
        assert!(verify(&c.users, "admin", "s3cret"));
        assert!(!verify(&c.users, "admin", "S3cret"));
        assert!(!verify(&c.users, "nobody", "s3cret"));
        assert!(check_users(Some(&c)).is_empty());
        let mut bad = c.clone();
        bad.users[0].hash = "$1$abc$def".into();
        assert_eq!(check_users(Some(&bad)).len(), 1);
    }

    #[test]
    fn basic_credentials_are_read_strictly() {
        // "admin:pa:ss" (a colon in the password is allowed).
        assert_eq!(
            basic_credentials("Basic YWRtaW46cGE6c3M="),
            Some(("admin".into(), "pa:ss".into()))
        );
        assert_eq!(
            basic_credentials("basic YWRtaW46cGE6c3M=").map(|c| c.0),
            Some("admin".into())
        );
        assert_eq!(basic_credentials("Bearer YWRtaW46cGE6c3M="), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Basic YWRtaW4="), None); // no colon
    }

    #[test]
    fn actions_need_a_user_and_reads_only_with_auth_all() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let far = IpAddr::from([192, 0, 2, 7]);
        let none = config(&[], AdminAuth::Actions);
        assert_eq!(precheck(&none, far, false, None), Ok(None));
        assert_eq!(precheck(&none, lo, true, None), Ok(None));
        assert!(matches!(
            precheck(&none, far, true, None),
            Err(Refusal::Forbidden(_))
        ));
        let users = config(&[("admin", "x")], AdminAuth::Actions);
        assert_eq!(precheck(&users, far, false, None), Ok(None));
        assert_eq!(precheck(&users, lo, true, None), Err(Refusal::Unauthorized));
        assert_eq!(
            precheck(&users, lo, true, Some("Basic YWRtaW46eA==")),
            Ok(Some(("admin".into(), "x".into())))
        );
        let all = config(&[("admin", "x")], AdminAuth::All);
        assert_eq!(precheck(&all, lo, false, None), Err(Refusal::Unauthorized));
    }
}
