//! Access log: one line per query, written off the hot path.
//!
//! The data path sends a [`LogRecord`] over a bounded channel; a writer task
//! formats and writes it. When the writer lags the record is dropped and
//! counted, never waited for. [`AccessLog::reopen`] makes the writer reopen
//! its file (SIGUSR1, for logrotate).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dnsha_core::config::{AccessLogTarget, LogFormat, Protocol};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::metrics::{inc, ListenerMetrics};

/// One query as the access log records it. The time it arrived is worked
/// out when it is logged (now minus its duration), so the data path keeps
/// the monotonic clock alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Client address.
    pub client: SocketAddr,
    /// Backend that answered (or was last tried), if any.
    pub backend: Option<SocketAddr>,
    /// The listener's protocol (shown as `UDP`, `TCP`, `DoT`, `DoH`).
    pub protocol: Protocol,
    /// Response code sent to the client (`NOERROR`, `SERVFAIL`, ...), or `-`
    /// when nothing was sent.
    pub rcode: String,
    /// Time from query to answer.
    pub duration: Duration,
    /// Query name.
    pub qname: String,
    /// Query type.
    pub qtype: String,
}

enum Msg {
    Record(SystemTime, LogRecord),
    Reopen,
}

/// Handle to a listener's access log.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<ListenerMetrics>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl AccessLog {
    /// Starts the writer task (needs a Tokio runtime).
    pub fn start(
        target: AccessLogTarget,
        format: LogFormat,
        metrics: Arc<ListenerMetrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(writer(target, format, rx));
        Self { tx, metrics }
    }

    /// Queues a record; drops and counts it when the writer lags.
    pub fn log(&self, record: LogRecord) {
        let now = SystemTime::now();
        let time = now.checked_sub(record.duration).unwrap_or(now);
        if self.tx.try_send(Msg::Record(time, record)).is_err() {
            inc(&self.metrics.log_dropped);
        }
    }

    /// Asks the writer to reopen its file.
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }
}

enum Sink {
    Stderr(tokio::io::Stderr),
    File(PathBuf, Option<tokio::fs::File>),
}

/// Permissions of a new access log file: client addresses and names are
/// personal data, not for every local user.
pub const LOG_FILE_MODE: u32 = 0o640;

/// Opens (or creates, mode [`LOG_FILE_MODE`]) the log file for appending;
/// never through a symbolic link, which someone who can write to the log
/// directory could point at another file for the daemon to write into.
/// Whether the access log at `path` can be opened as the writer will open
/// it (appended to, created 0640 when missing, never through a symlink),
/// without creating it: its directory exists and is writable, and the file,
/// if there, is a regular file this process may write. The loader calls
/// this, so `dnsha check` reports what `dnsha run` would otherwise only
/// warn about.
pub fn check_writable(path: &std::path::Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("`{}` is not a directory", dir.display())),
        Err(e) => return Err(format!("directory `{}`: {e}", dir.display())),
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            Err("is a symbolic link (access logs are never opened through one)".into())
        }
        Ok(m) if !m.is_file() => Err("is not a regular file".into()),
        Ok(_) => access(path, AccessFlags::W_OK).map_err(|e| format!("cannot be written: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
                .map_err(|e| format!("cannot be created in `{}`: {e}", dir.display()))
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn open(path: &PathBuf) -> Option<tokio::fs::File> {
    match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .await
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open access log");
            None
        }
    }
}

async fn writer(target: AccessLogTarget, format: LogFormat, mut rx: mpsc::Receiver<Msg>) {
    let mut sink = match target {
        AccessLogTarget::Stderr => Sink::Stderr(tokio::io::stderr()),
        AccessLogTarget::File(p) => {
            let f = open(&p).await;
            Sink::File(p, f)
        }
    };
    let mut line = String::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Reopen => {
                if let Sink::File(p, f) = &mut sink {
                    if let Some(old) = f.as_mut() {
                        let _ = old.flush().await;
                    }
                    *f = open(p).await;
                }
            }
            Msg::Record(t, r) => {
                line.clear();
                format_record(&r, t, format, &mut line);
                // batch what is already queued
                while line.len() < 64 * 1024 {
                    match rx.try_recv() {
                        Ok(Msg::Record(t, r)) => format_record(&r, t, format, &mut line),
                        Ok(Msg::Reopen) => {
                            if let Sink::File(p, f) = &mut sink {
                                if let Some(old) = f.as_mut() {
                                    let _ = old.write_all(line.as_bytes()).await;
                                    let _ = old.flush().await;
                                }
                                line.clear();
                                *f = open(p).await;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let res = match &mut sink {
                    Sink::Stderr(s) => s.write_all(line.as_bytes()).await,
                    Sink::File(_, Some(f)) => f.write_all(line.as_bytes()).await,
                    Sink::File(_, None) => Ok(()),
                };
                if let Err(e) = res {
                    tracing::warn!(error = %e, "access log write failed");
                }
            }
        }
    }
}

/// How the access log names a protocol: `UDP`, `TCP` (the passthrough
/// too), `DoT`, `DoH`, `DoQ`.
pub fn protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        Protocol::Tcp | Protocol::TcpPassthrough => "TCP",
        Protocol::Dot => "DoT",
        Protocol::Doh => "DoH",
        Protocol::Doq => "DoQ",
        Protocol::Doh3 => "DoH3",
    }
}

/// Formats one record, of a query that arrived at `time`, as a line (with
/// its newline).
pub fn format_record(r: &LogRecord, time: SystemTime, format: LogFormat, out: &mut String) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    let backend = r.backend.map_or_else(|| "-".to_string(), |b| b.to_string());
    let dur = r.duration.as_secs_f64();
    match format {
        LogFormat::Text => {
            let _ = writeln!(
                out,
                "{} {} {} {} {} {:.3} {} {}",
                time_local(secs),
                r.client,
                backend,
                protocol_label(r.protocol),
                r.rcode,
                dur,
                r.qname,
                r.qtype
            );
        }
        LogFormat::Json => {
            let v = serde_json::json!({
                "time": rfc3339(secs, millis),
                "client": r.client.to_string(),
                "backend": r.backend.map(|b| b.to_string()),
                "protocol": protocol_label(r.protocol),
                "rcode": r.rcode,
                "duration": (dur * 1000.0).round() / 1000.0,
                "qname": r.qname,
                "qtype": r.qtype,
            });
            let _ = writeln!(out, "{v}");
        }
    }
}

/// Civil date (year, month, day) of a day count since 1970-01-01.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn split(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil(days);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// nginx's `$time_local` (in UTC): `14/Jan/2025:14:40:35 +0000`.
fn time_local(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, hh, mm, ss) = split(secs);
    let mon = MONTHS.get(m.saturating_sub(1) as usize).unwrap_or(&"Jan");
    format!("{d:02}/{mon}/{y}:{hh:02}:{mm:02}:{ss:02} +0000")
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let (y, m, d, hh, mm, ss) = split(secs);
    format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_736_865_635_250)
    }

    fn record() -> LogRecord {
        LogRecord {
            client: "192.168.3.1:40000".parse().unwrap(),
            backend: Some("192.168.1.2:53".parse().unwrap()),
            protocol: Protocol::Udp,
            rcode: "NOERROR".into(),
            duration: Duration::from_millis(31),
            qname: "www.example.test.".into(),
            qtype: "A".into(),
        }
    }

    #[test]
    fn text_line_like_nginx_basic() {
        let mut s = String::new();
        format_record(&record(), time(), LogFormat::Text, &mut s);
        assert_eq!(
            s,
            "14/Jan/2025:14:40:35 +0000 192.168.3.1:40000 192.168.1.2:53 UDP NOERROR 0.031 www.example.test. A\n"
        );
    }

    #[test]
    fn json_line() {
        let mut s = String::new();
        let mut r = record();
        r.backend = None;
        format_record(&r, time(), LogFormat::Json, &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["time"], "2025-01-14T14:40:35.250Z");
        assert_eq!(v["backend"], serde_json::Value::Null);
        assert_eq!(v["qtype"], "A");
        assert_eq!(v["duration"], 0.031);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[tokio::test]
    async fn files_are_private_and_never_opened_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dns.log");
        let f = open(&path).await;
        assert!(f.is_some());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !LOG_FILE_MODE, 0, "mode {mode:o}");
        // A link planted where the log goes: not followed.
        let target = dir.path().join("victim");
        std::fs::write(&target, "untouched").unwrap();
        let link = dir.path().join("linked.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open(&link).await.is_none());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    }
}
