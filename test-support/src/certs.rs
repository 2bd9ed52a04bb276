//! Certificates made at test time with rcgen, so none is ever committed: a
//! test CA, server certificates it signs (valid, or expired), written as PEM
//! files a configuration can name.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

/// A certificate authority for one test.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// PEM files of a server certificate, as written by [`TestCa::write`].
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Full chain: the server certificate, then the CA's.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
    /// The CA certificate alone, for a client to trust.
    pub ca: PathBuf,
}

fn rc(e: rcgen::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl TestCa {
    /// A new CA ("dnsha test CA", ECDSA P-256). Panics if rcgen fails.
    pub fn new() -> Self {
        Self::try_new().unwrap_or_else(|e| panic!("cannot make a test CA: {e}"))
    }

    /// Like [`TestCa::new`], returning the error.
    pub fn try_new() -> io::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "dnsha test CA");
        let key = KeyPair::generate().map_err(rc)?;
        let cert = params.self_signed(&key).map_err(rc)?;
        Ok(Self { cert, key })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (host names or IP addresses) signed
    /// by this CA: `(full chain PEM, key PEM)`. With `expired`, its validity
    /// ended in 2020.
    pub fn issue(&self, names: &[&str], expired: bool) -> io::Result<(String, String)> {
        let names: Vec<String> = names.iter().map(|s| (*s).to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(rc)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().map_err(rc)?;
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(rc)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert.pem()),
            key.serialize_pem(),
        ))
    }

    /// Issues a certificate for `names` and writes `STEM.crt` (full chain),
    /// `STEM.key` and `ca.crt` in `dir`.
    pub fn write(&self, dir: &Path, stem: &str, names: &[&str]) -> CertFiles {
        self.try_write(dir, stem, names, false)
            .unwrap_or_else(|e| panic!("cannot write test certificate {stem}: {e}"))
    }

    /// Like [`TestCa::write`], for an expired certificate when `expired`,
    /// returning the error.
    pub fn try_write(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        expired: bool,
    ) -> io::Result<CertFiles> {
        let (chain, key) = self.issue(names, expired)?;
        let files = CertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            ca: dir.join("ca.crt"),
        };
        fs::write(&files.cert, chain)?;
        fs::write(&files.key, key)?;
        fs::write(&files.ca, self.cert_pem())?;
        Ok(files)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn writes_chain_key_and_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let f = ca.write(dir.path(), "server", &["dns.test", "127.0.0.1"]);
        let chain = fs::read_to_string(&f.cert).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(fs::read_to_string(&f.key).unwrap().contains("PRIVATE KEY"));
        assert_eq!(fs::read_to_string(&f.ca).unwrap(), ca.cert_pem());
    }
}
