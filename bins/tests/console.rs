//! The web console at the admin endpoint's `/`, in a real browser: Debian's
//! headless Chromium driven through chromedriver (WebDriver), against a
//! running dnsha with NSD backends. Screenshots go to `target/artifacts/`
//! (`DNSHA_ARTIFACTS` to change), which CI prints at the end.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use test_support::webdriver::{self, Browser};

/// The console reloads its figures this often in these tests.
const REFRESH_MS: u64 = 500;

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

/// Where screenshots go.
fn artifacts() -> PathBuf {
    std::env::var_os("DNSHA_ARTIFACTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts"),
        PathBuf::from,
    )
}

/// A pool of `ns1` and `ns2` with active checks every 200 ms, and the
/// admin keys `admin_extra`.
fn console_config(
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &[(&str, SocketAddr, u32)],
    admin_extra: &str,
) -> String {
    let health = "[pool.health]\ninterval_ms = 200\ntimeout_ms = 200\nfall = 1\nrise = 1\n";
    config(listen, admin, health, backends).replacen(
        &format!("listen = \"{admin}\"\n"),
        &format!("listen = \"{admin}\"\nrefresh_ms = {REFRESH_MS}\n{admin_extra}"),
        1,
    )
}

/// The state the page shows for backend `name` of pool `p` (`null` before
/// the row exists).
fn shown_state(name: &str) -> String {
    format!(
        "const r = document.querySelector('tr.backend[data-pool=\"p\"][data-backend=\"{name}\"] td.state .badge');\
         return r ? r.textContent : null;"
    )
}

/// Whether the page shows backend `name` of pool `p` in `state`.
fn state_is(name: &str, state: &str) -> String {
    format!(
        "const r = document.querySelector('tr.backend[data-pool=\"p\"][data-backend=\"{name}\"] td.state .badge');\
         return r !== null && r.textContent === '{state}';"
    )
}

/// One browser at a time: the tests of this file take turns (two headless
/// Chromiums at once are slow on a small machine).
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn browser() -> Option<(Browser, std::sync::MutexGuard<'static, ()>)> {
    if let Some(why) = webdriver::missing() {
        skip(&why);
        return None;
    }
    let turn = ONE_BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Some((Browser::start(1280, 1000).unwrap(), turn))
}

/// The page draws the pool, both backends up, the listeners and their
/// counters from /status, the last minute's figures and the chart.
fn first_look(b: &Browser) {
    let wait = Duration::from_secs(10);
    assert_eq!(b.wait_for(&shown_state("ns1"), wait).unwrap(), "up");
    assert_eq!(b.run(&shown_state("ns2")).unwrap(), "up");
    let listeners = b
        .run("return [...document.querySelectorAll('#listeners tbody tr')].map(r => r.dataset.listener);")
        .unwrap();
    assert_eq!(listeners, serde_json::json!(["udp", "tcp"]));
    let queries = b
        .run("return document.querySelector('#listeners tr[data-listener=\"udp\"] td:nth-child(6)').textContent;")
        .unwrap();
    // 40, and the one wait_udp sent.
    assert_eq!(queries, "41");
    // The last minute's rate and answer times, per listener and backend.
    let rates = b
        .run(
            "const q = (sel) => document.querySelector(sel).textContent;\
             return [q('#listeners tr[data-listener=\"udp\"] td.qps'), q('tr.backend[data-backend=\"ns1\"] td.qps'),\
                     q('#listeners tr[data-listener=\"udp\"] td:last-child')];",
        )
        .unwrap();
    let f = |i: usize| rates[i].as_str().unwrap().parse::<f64>().unwrap_or(0.0);
    assert!(f(0) > 0.0 && f(1) > 0.0, "{rates}");
    assert!(!rates[2].as_str().unwrap().starts_with('–'), "{rates}");
    assert!(b
        .run("return document.querySelector('.pool[data-pool=\"p\"] svg.chart') !== null;")
        .unwrap()
        .as_bool()
        .unwrap());
    // Marks this page load: a reload of the page would lose it.
    b.run("window.__loaded_once = true; return true;").unwrap();
}

/// A backend that goes down while the page is open shows as down within
/// a refresh of the health verdict, without a reload.
fn down_while_open(b: &Browser, admin: SocketAddr, n2: Nsd) {
    drop(n2);
    let down_at = Instant::now();
    let wait_down = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        (status(admin)["pools"][0]["backends"][1]["state"] == "down").then(Instant::now)
    });
    let down_at = wait_down.unwrap_or(down_at);
    assert_eq!(
        b.wait_for(&state_is("ns2", "down"), Duration::from_secs(5))
            .unwrap(),
        true
    );
    let lag = down_at.elapsed();
    assert!(
        lag <= Duration::from_millis(2 * REFRESH_MS + 500),
        "the page showed the backend down {lag:?} after /status did"
    );
    let health = b
        .run("return document.querySelector('tr.backend[data-backend=\"ns2\"] .health').textContent;")
        .unwrap();
    assert!(health.as_str().unwrap().contains("down"), "{health}");
    assert_eq!(
        b.run("return window.__loaded_once === true;").unwrap(),
        true
    );
}

/// Drain, enable and check with the buttons.
fn buttons(b: &Browser, admin: SocketAddr, d: &Dnsha) {
    // Drain ns1 with its button: /status says drain, the page too, and the
    // button turns into enable.
    b.click("tr.backend[data-backend=\"ns1\"] button[data-action=\"drain\"]")
        .unwrap();
    assert!((0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        status(admin)["pools"][0]["backends"][0]["state"] == "drain"
    }));
    assert_eq!(
        b.wait_for(&state_is("ns1", "drain"), Duration::from_secs(5))
            .unwrap(),
        true
    );
    assert!(
        d.log().contains("backend drained by the operator"),
        "{}",
        d.log()
    );
    b.screenshot(&artifacts().join("console-desktop.png"))
        .unwrap();
    b.click("tr.backend[data-backend=\"ns1\"] button[data-action=\"enable\"]")
        .unwrap();
    assert!((0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        status(admin)["pools"][0]["backends"][0]["state"] == "up"
    }));
    // "check" runs the health check now: ns2 is still down.
    b.click("tr.backend[data-backend=\"ns2\"] button[data-action=\"check\"]")
        .unwrap();
    let msg = b
        .wait_for(
            "const m = document.querySelector('#message').textContent; return m.startsWith('check') ? m : null;",
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        msg.as_str().unwrap().contains("check ns2 of p: done"),
        "{msg}"
    );
}

/// At a phone's width the page fits; the chart gets its first interval.
fn phone_and_chart(b: &Browser) {
    // Nothing wider than the screen but the tables, which scroll in
    // their own box.
    b.resize(390, 844).unwrap();
    std::thread::sleep(Duration::from_millis(2 * REFRESH_MS));
    let overflow = b
        .run("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .unwrap();
    assert_eq!(overflow, 0, "the page is wider than a phone");
    assert_eq!(b.run(&shown_state("ns1")).unwrap(), "up");
    // The chart has its first interval once the sampler took its second
    // sample (every 5 s).
    let points = b
        .wait_for(
            "const n = Number(document.querySelector('.pool[data-pool=\"p\"] svg.chart').dataset.points);\
             return n >= 1 ? n : null;",
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(points.as_u64().unwrap() >= 1);
    b.screenshot(&artifacts().join("console-phone.png"))
        .unwrap();
}

#[test]
fn the_console_shows_live_state_and_its_buttons_drain_and_enable() {
    init_tracing();
    let Some((b, _turn)) = browser() else {
        return;
    };
    let (n1, n2) = (Nsd::start(ip(1)), Nsd::start(ip(2)));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = console_config(
        listen,
        admin,
        &[("ns1", n1.addr(), 1), ("ns2", n2.addr(), 1)],
        "",
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    for _ in 0..40 {
        query_udp(listen, "www.example.test.", RecordType::A, T).unwrap();
    }
    b.goto(&format!("http://{admin}/")).unwrap();
    first_look(&b);
    down_while_open(&b, admin, n2);
    buttons(&b, admin, &d);
    phone_and_chart(&b);
}

#[test]
fn a_console_action_asks_for_a_user_and_uses_it() {
    init_tracing();
    let Some((b, _turn)) = browser() else {
        return;
    };
    let n1 = Nsd::start(ip(1));
    let (listen, admin) = (free_addr(), free_addr());
    let hash = dnsha::auth::hash_password("s3cret").unwrap();
    let cfg = console_config(
        listen,
        admin,
        &[("ns1", n1.addr(), 1)],
        &format!("users = [\"ops:{hash}\"]\n"),
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(listen);
    b.goto(&format!("http://{admin}/")).unwrap();
    assert_eq!(
        b.wait_for(&shown_state("ns1"), Duration::from_secs(10))
            .unwrap(),
        "up"
    );
    b.click("tr.backend[data-backend=\"ns1\"] button[data-action=\"drain\"]")
        .unwrap();
    // 401: the page asks for a user, nothing changed.
    b.wait_for(
        "return getComputedStyle(document.querySelector('#login')).display !== 'none';",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status(admin)["pools"][0]["backends"][0]["state"], "up");
    b.type_into("#user", "ops").unwrap();
    b.type_into("#password", "s3cret").unwrap();
    b.click("#login-go").unwrap();
    assert!((0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        status(admin)["pools"][0]["backends"][0]["state"] == "drain"
    }));
    assert!(
        d.log().contains(r#"admin action client=127.0.0.1"#)
            && d.log().contains(r#"user="ops" request=/backends/drain"#),
        "{}",
        d.log()
    );
}
