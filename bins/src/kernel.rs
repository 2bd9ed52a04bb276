//! Listeners with `forwarding = "kernel"`: the daemon side of
//! `dnsha-kernel`. Installs the table once the userspace listeners are
//! bound (they answer while no backend is healthy, and before the table
//! exists), keeps its maps as the pools' health changes (woken by health
//! transitions, and every [`TRACK_INTERVAL`] for passive marking), reads
//! its counters for `/status` and `/metrics`, replaces it on reload and
//! removes it at exit.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dnsha_core::config::{Config, Forwarding, Protocol};
use dnsha_kernel::plan::{BackendSpec, Layout, ListenerSpec, Plan, Proto};
use dnsha_kernel::{BackendCounters, KernelPath};
use dnsha_proxy::server::Server;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// How often the tracker looks at backend states between health events.
const TRACK_INTERVAL: Duration = Duration::from_millis(100);

/// How often the counters are read.
const COUNTERS_INTERVAL: Duration = Duration::from_secs(1);

/// The kernel path's state as `/status` shows it (`"kernel"`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelStatus {
    /// The kernel listeners.
    pub listeners: Vec<ListenerStatus>,
    /// Map updates committed since start.
    pub updates: u64,
    /// Conntrack entries deleted (flows of backends that went down).
    pub conntrack_deleted: u64,
    /// The last error talking to the kernel, if the last attempt failed.
    pub last_error: Option<String>,
}

/// One kernel listener.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    /// Its name.
    pub name: String,
    /// `udp` or `tcp`.
    pub protocol: &'static str,
    /// The address it matches.
    pub address: String,
    /// Its pool.
    pub pool: String,
    /// Whether the kernel forwards it (false: no healthy backend, the
    /// userspace listener answers).
    pub forwarding: bool,
    /// Its pool's backends.
    pub backends: Vec<BackendStatus>,
}

/// One backend of a kernel listener.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Its name.
    pub name: String,
    /// Where packets go.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// Slots of the map it holds (0: not in the map).
    pub slots: usize,
    /// Query packets the kernel sent it.
    pub query_packets: u64,
    /// Their bytes.
    pub query_bytes: u64,
    /// Answer packets it sent back.
    pub answer_packets: u64,
    /// Their bytes.
    pub answer_bytes: u64,
}

/// The status shared with the admin endpoint.
pub type KernelSlot = Arc<Mutex<Option<KernelStatus>>>;

/// The listeners of `cfg` the kernel forwards, with their pools' backends.
pub fn layout_of(cfg: &Config) -> Layout {
    let listeners = cfg
        .listeners
        .iter()
        .filter(|l| l.forwarding == Forwarding::Kernel)
        .filter_map(|l| {
            let proto = match l.protocol {
                Protocol::Udp => Proto::Udp,
                Protocol::Tcp => Proto::Tcp,
                _ => return None,
            };
            let pool = cfg.pools.iter().find(|p| p.name == l.pool)?;
            let backends = pool
                .backends
                .iter()
                .map(|b| BackendSpec {
                    name: b.name.clone(),
                    addr: b.address,
                    weight: b.weight,
                })
                .collect();
            let spec = ListenerSpec {
                name: l.name.clone(),
                proto,
                addr: l.listen,
                pool: l.pool.clone(),
            };
            Some((spec, backends))
        })
        .collect();
    Layout { listeners }
}

/// The plan the pools' current health gives `layout`.
fn plan_now(server: &Server, layout: &Layout) -> Plan {
    let pools = server.pools();
    layout.plan(|l, b| {
        pools.iter().find(|p| p.name() == l.pool).is_some_and(|p| {
            p.snapshot()
                .backends()
                .iter()
                .any(|x| x.name() == b.name && x.serves())
        })
    })
}

/// Refuses a kernel listener whose clients on other hosts could not be
/// forwarded: the message names the sysctl.
fn check_forwarding(layout: &Layout) -> Result<(), Error> {
    // A loopback listener's clients are on the host: nothing is forwarded.
    for (l, _) in layout
        .listeners
        .iter()
        .filter(|(l, _)| !l.addr.ip().is_loopback())
    {
        if dnsha_kernel::forwarding_enabled(l.addr.ip()) == Some(false) {
            return Err(Error::ForwardingOff {
                listener: l.name.clone(),
                sysctl: if l.addr.is_ipv4() {
                    "net.ipv4.ip_forward"
                } else {
                    "net.ipv6.conf.all.forwarding"
                },
            });
        }
    }
    Ok(())
}

/// The running kernel path.
#[derive(Debug)]
pub struct Running {
    path: Arc<tokio::sync::Mutex<KernelPath>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Installs the table for the kernel listeners of `cfg` (none: `Ok(None)`)
/// and starts keeping it.
pub async fn start(
    cfg: &Config,
    server: Arc<Server>,
    slot: KernelSlot,
) -> Result<Option<Running>, Error> {
    let layout = layout_of(cfg);
    if layout.listeners.is_empty() {
        return Ok(None);
    }
    check_forwarding(&layout)?;
    let plan = plan_now(&server, &layout);
    let path = KernelPath::start(layout, plan).await?;
    tracing::info!(
        listeners = path.layout().listeners.len(),
        "kernel forwarding: nftables table inet dnsha installed"
    );
    let path = Arc::new(tokio::sync::Mutex::new(path));
    let stop = CancellationToken::new();
    let task = tokio::spawn(track(Arc::clone(&path), server, slot, stop.clone()));
    Ok(Some(Running { path, stop, task }))
}

impl Running {
    /// Applies a reloaded configuration: a new layout replaces the table
    /// (counts of backends that stay are kept); none removes it.
    pub async fn reload(&self, cfg: &Config, server: &Server) -> Result<bool, Error> {
        let layout = layout_of(cfg);
        let mut path = self.path.lock().await;
        if layout == *path.layout() {
            return Ok(true);
        }
        if layout.listeners.is_empty() {
            return Ok(false);
        }
        check_forwarding(&layout)?;
        let plan = plan_now(server, &layout);
        path.install(layout, plan).await?;
        tracing::info!("kernel forwarding: table replaced by the reload");
        Ok(true)
    }

    /// Stops keeping the table and leaves it in place: a restart's next
    /// process takes it over (replacing it in one transaction), and the
    /// kernel forwards meanwhile.
    pub async fn leave(self) {
        self.stop.cancel();
        let _ = self.task.await;
        tracing::info!("kernel forwarding: table inet dnsha left for the next process");
    }

    /// Stops keeping the table and removes it.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
        let mut path = self.path.lock().await;
        match path.remove().await {
            Ok(()) => tracing::info!("kernel forwarding: table inet dnsha removed"),
            Err(e) => tracing::error!(error = %e, "cannot remove the table inet dnsha"),
        }
    }
}

/// Keeps the maps as health says and the status fresh, until `stop`.
async fn track(
    path: Arc<tokio::sync::Mutex<KernelPath>>,
    server: Arc<Server>,
    slot: KernelSlot,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(TRACK_INTERVAL);
    let mut events = server.health().subscribe();
    let mut status = KernelStatus::default();
    let mut last_read = tokio::time::Instant::now() - COUNTERS_INTERVAL;
    let mut counters: Vec<BackendCounters> = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
            _ = events.recv() => {}
        }
        let mut path = path.lock().await;
        let plan = plan_now(&server, path.layout());
        if plan != *path.plan() {
            match path.update(plan).await {
                Ok(deleted) => {
                    status.updates += 1;
                    status.conntrack_deleted += deleted as u64;
                    status.last_error = None;
                    tracing::info!(
                        deleted,
                        "kernel forwarding: maps updated for a health change"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "kernel forwarding: cannot update the maps");
                    status.last_error = Some(e.to_string());
                }
            }
        }
        if last_read.elapsed() >= COUNTERS_INTERVAL {
            last_read = tokio::time::Instant::now();
            match path.ensure().await {
                Ok(true) => tracing::warn!(
                    "kernel forwarding: the table inet dnsha had been removed (nft flush ruleset?); installed again"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "kernel forwarding: cannot put the table back");
                    status.last_error = Some(e.to_string());
                }
            }
            match path.counters().await {
                Ok(c) => counters = c,
                Err(e) => status.last_error = Some(e.to_string()),
            }
        }
        status.listeners = listeners_status(path.layout(), path.plan(), &counters);
        drop(path);
        if let Ok(mut s) = slot.lock() {
            *s = Some(status.clone());
        }
    }
}

fn listeners_status(
    layout: &Layout,
    plan: &Plan,
    counters: &[BackendCounters],
) -> Vec<ListenerStatus> {
    layout
        .listeners
        .iter()
        .enumerate()
        .map(|(i, (l, backends))| ListenerStatus {
            name: l.name.clone(),
            protocol: l.proto.as_str(),
            address: l.addr.to_string(),
            pool: l.pool.clone(),
            forwarding: plan.serves(i),
            backends: backends
                .iter()
                .enumerate()
                .map(|(b, backend)| {
                    let c = counters
                        .iter()
                        .find(|c| c.listener == l.name && c.backend == backend.name)
                        .cloned()
                        .unwrap_or_default();
                    BackendStatus {
                        name: backend.name.clone(),
                        address: backend.addr.to_string(),
                        weight: backend.weight,
                        slots: plan.slots(i).iter().filter(|s| **s == b).count(),
                        query_packets: c.queries.packets,
                        query_bytes: c.queries.bytes,
                        answer_packets: c.answers.packets,
                        answer_bytes: c.answers.bytes,
                    }
                })
                .collect(),
        })
        .collect()
}

/// The kernel path's series for `/metrics`.
pub fn prometheus(status: Option<&KernelStatus>) -> String {
    let Some(status) = status else {
        return String::new();
    };
    let mut out = String::new();
    type Pick = fn(&BackendStatus) -> u64;
    let series: [(&str, &str, &str, Pick); 5] = [
        (
            "kernel_query_packets_total",
            "Query packets the kernel forwarded to the backend.",
            "counter",
            |b| b.query_packets,
        ),
        (
            "kernel_query_bytes_total",
            "Bytes of those packets.",
            "counter",
            |b| b.query_bytes,
        ),
        (
            "kernel_answer_packets_total",
            "Answer packets from the backend the kernel forwarded back.",
            "counter",
            |b| b.answer_packets,
        ),
        (
            "kernel_answer_bytes_total",
            "Bytes of those packets.",
            "counter",
            |b| b.answer_bytes,
        ),
        (
            "kernel_backend_slots",
            "Slots of the listener's map the backend holds (0: not in the map).",
            "gauge",
            |b| b.slots as u64,
        ),
    ];
    for (name, help, kind, pick) in series {
        let _ = writeln!(
            out,
            "# HELP dnsha_{name} {help}\n# TYPE dnsha_{name} {kind}"
        );
        for l in &status.listeners {
            for b in &l.backends {
                let _ = writeln!(
                    out,
                    "dnsha_{name}{{listener=\"{}\",backend=\"{}\"}} {}",
                    l.name,
                    b.name,
                    pick(b)
                );
            }
        }
    }
    let _ = writeln!(out, "# HELP dnsha_kernel_listener_forwarding 1 while the kernel forwards the listener (0: no healthy backend, userspace answers).\n# TYPE dnsha_kernel_listener_forwarding gauge");
    for l in &status.listeners {
        let _ = writeln!(
            out,
            "dnsha_kernel_listener_forwarding{{listener=\"{}\"}} {}",
            l.name,
            u8::from(l.forwarding)
        );
    }
    let _ = writeln!(out, "# HELP dnsha_kernel_map_updates_total Map updates committed for health changes.\n# TYPE dnsha_kernel_map_updates_total counter\ndnsha_kernel_map_updates_total {}", status.updates);
    let _ = writeln!(out, "# HELP dnsha_kernel_conntrack_deleted_total Conntrack entries of flows to a backend that went down, deleted.\n# TYPE dnsha_kernel_conntrack_deleted_total counter\ndnsha_kernel_conntrack_deleted_total {}", status.conntrack_deleted);
    out
}
