//! The command-line clients' side of the admin endpoint (`dnsha status`,
//! `dnsha backend`, `dnsha cache purge`): where it is ([`AdminTarget`],
//! plain HTTP or HTTPS), and one request to it over hyper's HTTP/1.1
//! client, through rustls for `https://`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::BackendTls;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};

/// How long one request may take, connection and TLS included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable naming a PEM file of the CA certificates that
/// an `https://` admin endpoint's certificate is checked against (the
/// system's roots without it).
pub const CA_ENV: &str = "DNSHA_ADMIN_CA";

/// An admin endpoint as `--admin` names it: `IP:PORT` (HTTP),
/// `http://HOST:PORT` or `https://HOST:PORT`, HOST a name or an IP
/// (`[v6]` in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTarget {
    /// Host name or IP address, without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
    /// HTTPS.
    pub tls: bool,
}

impl FromStr for AdminTarget {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            (false, s.strip_prefix("http://").unwrap_or(s))
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let bad = || format!("`{s}` is not ADDR:PORT, http://HOST:PORT or https://HOST:PORT");
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.contains(['/', '[', ']', ' ']) {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl fmt::Display for AdminTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https://" } else { "" };
        if self.host.contains(':') {
            write!(f, "{scheme}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}{}:{}", self.host, self.port)
        }
    }
}

/// Sends `METHOD path` (no body) to `admin` and returns the body of a 200
/// answer; any other status is an error carrying the status line. With
/// `DNSHA_ADMIN_USER` and `DNSHA_ADMIN_PASSWORD` set, as that user (HTTP
/// basic auth).
pub async fn request(admin: &AdminTarget, method: &str, path: &str) -> Result<String> {
    let target = admin.to_string();
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(admin, method, path))
        .await
        .map_err(|_| Error::Timeout { target })?
}

async fn exchange(admin: &AdminTarget, method: &str, path: &str) -> Result<String> {
    let target = admin.to_string();
    let tcp = tokio::net::TcpStream::connect((admin.host.as_str(), admin.port))
        .await
        .map_err(|source| Error::Connect {
            target: target.clone(),
            source,
        })?;
    if !admin.tls {
        return http(admin, tcp, method, path).await;
    }
    let tls = tls_config()?;
    let name = ServerName::try_from(admin.host.clone()).map_err(|_| Error::BadRequest {
        target: target.clone(),
    })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|source| Error::Exchange {
            target: target.clone(),
            source,
        })?;
    http(admin, stream, method, path).await
}

/// The client TLS settings: the CA of [`CA_ENV`] or the system's roots,
/// HTTP/1.1.
fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    let ca = std::env::var_os(CA_ENV).map(std::path::PathBuf::from);
    let tls = BackendTls {
        verify: true,
        name: None,
        ca,
        ca_span: None,
    };
    let roots = dnsha_proxy::tls::root_store(&tls).map_err(|source| Error::AdminTls { source })?;
    let mut config = rustls::ClientConfig::builder_with_provider(dnsha_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::AdminTls {
            source: dnsha_proxy::Error::Rustls {
                context: "admin client".into(),
                source,
            },
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One HTTP/1.1 exchange on `io`.
async fn http<T>(admin: &AdminTarget, io: T, method: &str, path: &str) -> Result<String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let target = admin.to_string();
    let http_err = |source| Error::Http {
        target: target.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_err)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, target.trim_start_matches("https://"));
    if let Some(h) = crate::auth::client_header() {
        req = req.header(hyper::header::AUTHORIZATION, h);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|_| Error::BadRequest {
            target: target.clone(),
        })?;
    let answer = sender.send_request(req).await.map_err(http_err)?;
    let status = answer.status();
    let body = answer.into_body().collect().await.map_err(http_err)?;
    let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    if status != hyper::StatusCode::OK {
        return Err(Error::HttpStatus {
            target,
            status_line: format!(
                "HTTP/1.1 {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
            body: body.trim().chars().take(512).collect(),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_as_operators_write_them() {
        let t: AdminTarget = "127.0.0.1:8088".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 8088, false));
        assert_eq!(t.to_string(), "127.0.0.1:8088");
        let t: AdminTarget = "https://lb1.example.net:8443/".parse().unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("lb1.example.net", 8443, true)
        );
        assert_eq!(t.to_string(), "https://lb1.example.net:8443");
        let t: AdminTarget = "http://[::1]:8088".parse().unwrap();
        assert_eq!((t.host.as_str(), t.tls), ("::1", false));
        assert_eq!(t.to_string(), "[::1]:8088");
        for bad in [
            "8088",
            "https://",
            "host:port",
            "ftp://x:1",
            "[::1]",
            "a b:1",
            ":80",
        ] {
            assert!(bad.parse::<AdminTarget>().is_err(), "{bad}");
        }
    }
}
