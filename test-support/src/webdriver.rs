//! A real browser for the web console's tests: Debian's `chromedriver`
//! driving headless `chromium` through W3C WebDriver (JSON over HTTP).
//!
//! No WebDriver crate (fantoccini, thirtyfour) is available to this
//! offline build, so this is the handful of WebDriver commands the tests
//! use — new session, navigate, find and click an element, type into it,
//! run a script, resize the window, take a screenshot — each one HTTP/1.1
//! request to chromedriver on loopback, on its own connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// Where Debian installs them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver`.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Why the browser cannot be used: `None` when both programs are there.
pub fn missing() -> Option<String> {
    [CHROMIUM, CHROMEDRIVER]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} not installed (Debian: chromium chromium-driver)"))
}

/// A chromedriver with one headless Chromium session; both end on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session
    /// with a `width`×`height` window.
    pub fn start(width: u32, height: u32) -> Result<Self, String> {
        let port = crate::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{CHROMEDRIVER}: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut b = Self {
            driver,
            addr,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        // chromedriver may accept a connection before it serves it (a
        // reset while it starts): the session is asked again for a while.
        let v = loop {
            match b.call("POST", "/session", Some(&caps)) {
                Ok(v) => break v,
                Err(e) if e.starts_with("chromedriver:") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        };
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {v}"))?
            .to_string();
        Ok(b)
    }

    /// One WebDriver command: its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| format!("chromedriver: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .map_err(|e| format!("chromedriver: {e}"))?;
        let (head, body) = read_answer(&mut s).map_err(|e| format!("chromedriver: {e}"))?;
        let body = body.as_str();
        let v: Value = serde_json::from_str(body)
            .map_err(|e| format!("{method} {path}: {e}: {head}\n{body}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{method} {path}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` (returns once the page has loaded).
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(&json!({ "url": url })),
        )
        .map(drop)
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub fn run(&self, script: &str) -> Result<Value, String> {
        let body = json!({ "script": script, "args": [] });
        self.call("POST", &self.session_path("/execute/sync"), Some(&body))
    }

    /// Runs `script` until it returns something other than `null` or
    /// `false`, at most `max`; that value.
    pub fn wait_for(&self, script: &str, max: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + max;
        loop {
            let v = self.run(script)?;
            if !(v.is_null() || v == Value::Bool(false)) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!("not within {max:?}: {script}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The element `css` selects (the first).
    pub fn find(&self, css: &str) -> Result<String, String> {
        let body = json!({ "using": "css selector", "value": css });
        let v = self.call("POST", &self.session_path("/element"), Some(&body))?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no element for {css}: {v}"))
    }

    /// Clicks the element `css` selects, as a user would (WebDriver's
    /// element click: scrolled into view, a real mouse event).
    pub fn click(&self, css: &str) -> Result<(), String> {
        let id = self.find(css)?;
        let path = self.session_path(&format!("/element/{id}/click"));
        self.call("POST", &path, Some(&json!({}))).map(drop)
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let id = self.find(css)?;
        let path = self.session_path(&format!("/element/{id}/value"));
        self.call("POST", &path, Some(&json!({ "text": text })))
            .map(drop)
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        let body = json!({ "width": width, "height": height });
        self.call("POST", &self.session_path("/window/rect"), Some(&body))
            .map(drop)
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let v = self.call("GET", &self.session_path("/screenshot"), None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// One HTTP/1.1 answer: chromedriver keeps the connection open despite
/// `Connection: close`, so its body is read by its `Content-Length`.
fn read_answer(s: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| std::io::Error::other(format!("no Content-Length in {head}")))?;
    let mut body = raw.split_off(end + 4);
    while body.len() < length {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    Ok((head, String::from_utf8_lossy(&body).into_owned()))
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &self.session_path(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
