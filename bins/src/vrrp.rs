//! The daemon's VRRP: `[[vrrp]]` sections read with dnsha-vrrp, instances
//! started next to the balancer, `track_pools` fed from the balancer's own
//! pools, status and metrics for the admin endpoint.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::Config;
use dnsha_core::ConfigError;
use dnsha_proxy::server::Server;
use dnsha_vrrp::config::{validate_all, Instance, InstanceConfig};
use dnsha_vrrp::shell::{Applied, InstanceStatus, Vrrp};
use tokio_util::sync::CancellationToken;

/// Where `key` of section `s` is written (the section's header when it is
/// not).
fn at_key(s: &dnsha_core::config::Section, key: Option<&str>) -> std::ops::Range<usize> {
    key.and_then(|k| s.keys.get(k))
        .cloned()
        .unwrap_or_else(|| s.span.clone())
}

/// A serde message about a `[[vrrp]]` table in the words of the
/// configuration: the key it names (if any) and the message without Rust
/// type names.
fn plain_message(message: &str) -> (Option<String>, String) {
    let message = message.trim();
    let key = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field `"))
        .map(str::to_string);
    let plain = message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("invalid type: ", "")
        .replace("integer", "number")
        .replace(", expected u8", ", expected a whole number from 0 to 255")
        .replace(", expected u16", ", expected a whole number from 0 to 65535")
        .replace(", expected u32", ", expected a whole number")
        .replace(", expected u64", ", expected a whole number")
        .replace(", expected i64", ", expected a whole number")
        .replace(", expected f64", ", expected a number")
        .replace(", expected a boolean", ", expected true or false")
        .replace(
            "data did not match any variant of untagged enum TrackInterface",
            "each track_interface entry is an interface name (\"eth0\") or { name = \"eth0\", weight = N }",
        )
        .replace(
            "data did not match any variant of untagged enum TrackPool",
            "each track_pools entry is a pool name or { name = \"pool\", weight = N }",
        );
    (key, plain)
}

/// `notify` and `track_script` programs given by path must exist and be
/// executable: `run` would otherwise start and fail at the first change.
fn script_problems(
    i: usize,
    ic: &InstanceConfig,
    section: &dnsha_core::config::Section,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if let Some(program) = &ic.notify {
        if let Some(why) = crate::files::not_executable(program, true) {
            errors.push(ConfigError::at(
                at_key(section, Some("notify")),
                format!("vrrp[{i}].notify: `{program}` {why}"),
            ));
        }
    }
    for (j, t) in ic.track_script.iter().enumerate() {
        // A shell line: its first word, when it is a path.
        let first = t.command.split_whitespace().next().unwrap_or("");
        if let Some(why) = crate::files::not_executable(first, false) {
            errors.push(ConfigError::at(
                at_key(section, Some("track_script")),
                format!("vrrp[{i}].track_script[{j}]: `{first}` {why}"),
            ));
        }
    }
    errors
}

/// How often tracked pools are looked at (health check transitions are
/// also pushed at once through the health monitor's subscription).
pub const TRACK_INTERVAL: Duration = Duration::from_millis(100);

/// Reads and validates the `[[vrrp]]` sections of `cfg`; every error is
/// located at its section (`vrrp[i].key: message`).
pub fn instances(cfg: &Config) -> Result<Vec<InstanceConfig>, Vec<ConfigError>> {
    instances_of(&cfg.vrrp, Some(cfg))
}

/// The instances of `sections`; `track_pools` names are checked against
/// `cfg`'s pools when there is a `cfg` (there is none when the rest of the
/// configuration has errors: the sections are still checked on their own).
pub fn instances_of(
    sections: &[dnsha_core::config::Section],
    cfg: Option<&Config>,
) -> Result<Vec<InstanceConfig>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        let value = toml::Value::Table(s.value.clone());
        match serde_path_to_error::deserialize::<_, InstanceConfig>(value) {
            Ok(ic) => out.push(ic),
            Err(e) => {
                // The path of the key at fault (`priority`,
                // `track_script[0].weight`), or none for the table itself.
                let path = e.path().to_string();
                let (named, message) = plain_message(e.inner().message());
                let key = match path.as_str() {
                    "." | "" => named,
                    p => p.split(['[', '.']).next().map(str::to_string),
                };
                let place = if matches!(path.as_str(), "." | "") {
                    format!("vrrp[{i}]")
                } else {
                    format!("vrrp[{i}].{path}")
                };
                errors.push(ConfigError::at(
                    at_key(s, key.as_deref()),
                    format!("{place}: {message}"),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for e in validate_all(&out) {
        // An error not placed at a section is shown at the first one.
        let section = match e.instance {
            Instance::Index(i) => sections.get(i),
            _ => None,
        };
        let key = e.field.split(['[', '.']).next().map(str::to_string);
        errors.push(ConfigError {
            span: section
                .or_else(|| sections.first())
                .map(|s| at_key(s, key.as_deref())),
            message: e.to_string(),
        });
    }
    for (i, ic) in out.iter().enumerate() {
        let Some(section) = sections.get(i) else {
            continue;
        };
        for t in &ic.track_pools {
            let (name, _) = t.parts();
            if cfg.is_some_and(|c| c.pool(name).is_none()) {
                errors.push(ConfigError::at(
                    at_key(section, Some("track_pools")),
                    format!("vrrp[{i}].track_pools: unknown pool `{name}`"),
                ));
            }
        }
        errors.extend(script_problems(i, ic, section));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The running VRRP instances and the task that feeds them pool health.
pub struct Running {
    vrrp: Vrrp,
    configs: Vec<InstanceConfig>,
    stop: CancellationToken,
    thread: VrrpThread,
}

/// A thread of its own, with a single-thread runtime, for the VRRP
/// instances: their advert and Master_Down timers never wait behind query
/// work or health checks on the main runtime (at `advert_int = 0.1` a late
/// advert is a spurious failover).
struct VrrpThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VrrpThread {
    fn spawn() -> std::io::Result<Self> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dnsha-vrrp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other("the vrrp thread ended at start"))??;
        Ok(Self {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for VrrpThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("vrrp", &self.vrrp).finish()
    }
}

/// Whether a tracked pool can serve: it exists, a backend is up, and the
/// listeners that use it are running.
fn pool_serves(server: &Server, name: &str) -> bool {
    server.pool_can_answer(name).is_ok()
}

/// Starts the instances (none: `Ok(None)`) and the pool tracker; those
/// named in `resume` start as master (a restart's previous process handed
/// them over).
pub async fn start(
    configs: Vec<InstanceConfig>,
    server: Arc<Server>,
    resume: Vec<String>,
) -> Result<Option<Running>, dnsha_vrrp::Error> {
    if configs.is_empty() {
        return Ok(None);
    }
    let thread = VrrpThread::spawn().map_err(|e| dnsha_vrrp::Error::Io {
        context: "vrrp thread".into(),
        source: e,
    })?;
    let cfgs = configs.clone();
    let vrrp = thread
        .handle
        .spawn(async move { Vrrp::start_resuming(&cfgs, &resume).await })
        .await
        .map_err(lost_thread)??;
    let stop = track_pools(&vrrp, &configs, server);
    Ok(Some(Running {
        vrrp,
        configs,
        stop,
        thread,
    }))
}

fn lost_thread(e: tokio::task::JoinError) -> dnsha_vrrp::Error {
    dnsha_vrrp::Error::Io {
        context: "vrrp thread".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Feeds the instances of `vrrp` the state of the pools `configs` track,
/// at once (before their first election) and then on every change, until
/// the returned token is cancelled.
fn track_pools(vrrp: &Vrrp, configs: &[InstanceConfig], server: Arc<Server>) -> CancellationToken {
    let tracked: BTreeSet<String> = configs
        .iter()
        .flat_map(|c| c.track_pools.iter().map(|t| t.parts().0.to_string()))
        .collect();
    for name in &tracked {
        vrrp.set_pool_health(name, pool_serves(&server, name));
    }
    let stop = CancellationToken::new();
    let token = stop.clone();
    let setter = vrrp.pool_setter();
    tokio::spawn(async move {
        let mut last: Vec<Option<bool>> = vec![None; tracked.len()];
        let mut tick = tokio::time::interval(TRACK_INTERVAL);
        // Health transitions wake the tracker at once; the tick covers
        // passive marking by traffic and listeners stopping.
        let mut events = server.health().subscribe();
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = tick.tick() => {}
                _ = events.recv() => {}
            }
            for (i, name) in tracked.iter().enumerate() {
                let up = pool_serves(&server, name);
                if last.get(i).copied().flatten() != Some(up) {
                    if last.get(i).copied().flatten().is_some() {
                        tracing::info!(pool = %name, up, "tracked pool changed");
                    }
                    setter(name, up);
                    if let Some(l) = last.get_mut(i) {
                        *l = Some(up);
                    }
                }
            }
        }
    });
    stop
}

impl Running {
    /// Applies a reloaded `[[vrrp]]` list on the instances' own thread (see
    /// `dnsha_vrrp::shell::Vrrp::apply`: unchanged instances are not
    /// touched, others change in place or restart), then feeds the pool
    /// states again to what now runs. On error, what still runs keeps
    /// running and is returned.
    pub async fn apply(
        self,
        configs: Vec<InstanceConfig>,
        server: Arc<Server>,
    ) -> (Option<Self>, Result<Applied, dnsha_vrrp::Error>) {
        let Self {
            vrrp, stop, thread, ..
        } = self;
        let cfgs = configs.clone();
        let joined = thread
            .handle
            .spawn(async move {
                let mut vrrp = vrrp;
                let r = vrrp.apply(&cfgs).await;
                (vrrp, r)
            })
            .await;
        let (vrrp, result) = match joined {
            Ok(v) => v,
            Err(e) => return (None, Err(lost_thread(e))),
        };
        stop.cancel();
        let configs = vrrp.configs();
        let stop = track_pools(&vrrp, &configs, server);
        let running = Self {
            vrrp,
            configs,
            stop,
            thread,
        };
        (Some(running), result)
    }

    /// The configuration the instances run with.
    pub fn configs(&self) -> &[InstanceConfig] {
        &self.configs
    }

    /// Instance snapshots for `/status`.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.vrrp.status()
    }

    /// Stops feeding the instances pool health (a restart: the listeners
    /// drain, which must not look like a fault).
    pub fn stop_tracking(&self) {
        self.stop.cancel();
    }

    /// For a restart: no priority 0, VIPs left for the next process;
    /// returns the instances that were master.
    pub async fn hand_over(self) -> Vec<String> {
        self.stop.cancel();
        let Self { vrrp, thread, .. } = self;
        let masters = thread
            .handle
            .spawn(vrrp.hand_over())
            .await
            .unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || drop(thread)).await;
        masters
    }

    /// Priority 0 from masters, VIPs removed, notify queue drained.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let Self { vrrp, thread, .. } = self;
        // On the instances' own runtime, which owns their sockets.
        let _ = thread.handle.spawn(vrrp.shutdown()).await;
        // Ends the thread (on a blocking thread: joining it here would
        // block the caller's runtime).
        let _ = tokio::task::spawn_blocking(move || drop(thread)).await;
    }
}

/// `/metrics` series of the instances.
pub fn prometheus(status: &[InstanceStatus]) -> String {
    let mut out = String::new();
    let states = ["MASTER", "BACKUP", "FAULT", "STOP"];
    let _ = writeln!(out, "# HELP dnsha_vrrp_state 1 for the instance's current state.\n# TYPE dnsha_vrrp_state gauge");
    for s in status {
        for st in states {
            let _ = writeln!(
                out,
                "dnsha_vrrp_state{{instance=\"{}\",state=\"{st}\"}} {}",
                s.name,
                u8::from(s.state == st)
            );
        }
    }
    type Pick = fn(&InstanceStatus) -> u64;
    let series: [(&str, &str, &str, Pick); 9] = [
        ("vrrp_version", "VRRP version (2 or 3).", "gauge", |s| {
            u64::from(s.version)
        }),
        (
            "vrrp_advert_interval_milliseconds",
            "The advertisement interval in use (the master's, as learned by a VRRPv3 backup), in milliseconds.",
            "gauge",
            |s| s.master_advert_int_ms,
        ),
        ("vrrp_priority", "Configured priority.", "gauge", |s| {
            u64::from(s.priority)
        }),
        (
            "vrrp_effective_priority",
            "Priority after tracker weights.",
            "gauge",
            |s| u64::from(s.effective_priority),
        ),
        ("vrrp_transitions_total", "State changes.", "counter", |s| {
            s.transitions
        }),
        (
            "vrrp_adverts_received_total",
            "Valid adverts received.",
            "counter",
            |s| s.adverts_received,
        ),
        ("vrrp_adverts_sent_total", "Adverts sent.", "counter", |s| {
            s.adverts_sent
        }),
        (
            "vrrp_became_master_total",
            "Times this node became master.",
            "counter",
            |s| s.became_master,
        ),
        (
            "vrrp_priority_zero_received_total",
            "Priority-0 adverts received.",
            "counter",
            |s| s.priority_zero_received,
        ),
    ];
    for (name, help, kind, pick) in series {
        let _ = writeln!(
            out,
            "# HELP dnsha_{name} {help}\n# TYPE dnsha_{name} {kind}"
        );
        for s in status {
            let _ = writeln!(out, "dnsha_{name}{{instance=\"{}\"}} {}", s.name, pick(s));
        }
    }
    let _ = writeln!(out, "# HELP dnsha_vrrp_dropped_total Adverts dropped, by reason.\n# TYPE dnsha_vrrp_dropped_total counter");
    for s in status {
        for (reason, n) in &s.dropped {
            let _ = writeln!(
                out,
                "dnsha_vrrp_dropped_total{{instance=\"{}\",reason=\"{reason}\"}} {n}",
                s.name
            );
        }
    }
    out
}
