//! The daemon's `[[anycast]]` sections: each one's addresses are on its
//! interface (where BIRD's `direct` protocol sees them and exports them
//! over BGP) exactly while its [`Announcer`] says so, fed every
//! `interval_ms`, and at once on a health change, with whether the tracked
//! pools can answer. A stop withdraws first ([`Running::withdraw_all`]);
//! the daemon then waits `drain_ms` before it stops its listeners.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dnsha_core::anycast::{Announcer, State, Transition};
use dnsha_core::config::AnycastConfig;
use dnsha_core::Millis;
use dnsha_proxy::server::Server;
use dnsha_vrrp::shell::addresses::Addresses;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// How long a `notify` program may run before it is killed.
const NOTIFY_LIMIT: Duration = Duration::from_secs(30);

/// One section in `/status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AnycastStatus {
    /// Section name.
    pub name: String,
    /// `announced` or `withdrawn`.
    pub state: String,
    /// Its addresses.
    pub addresses: Vec<String>,
    /// The interface they go on.
    pub interface: String,
    /// Why it is in this state.
    pub reason: String,
    /// State changes since start.
    pub transitions: u64,
    /// When the state last changed, in seconds since the Unix epoch.
    pub last_transition: Option<u64>,
}

/// The sections' status, shared with the admin endpoint.
pub type AnycastSlot = Arc<Mutex<BTreeMap<String, AnycastStatus>>>;

/// What the daemon asks of a running section.
enum Command {
    /// Withdraw for good (a stop); answered once the addresses are gone.
    Withdraw(oneshot::Sender<bool>),
}

struct Section {
    config: AnycastConfig,
    commands: mpsc::UnboundedSender<Command>,
    /// Cancelled when a reload removes or changes the section.
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The running sections.
pub struct Running {
    sections: Vec<Section>,
    server: Arc<Server>,
    slot: AnycastSlot,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .sections
            .iter()
            .map(|s| s.config.name.as_str())
            .collect();
        f.debug_struct("Running").field("sections", &names).finish()
    }
}

impl Running {
    /// Starts `configs`, each withdrawn (a crash may have left its
    /// addresses behind) unless `resume` (a restart's previous process
    /// left them announced: they stay, and the first failing look
    /// withdraws them).
    pub fn start(
        configs: &[AnycastConfig],
        server: Arc<Server>,
        slot: AnycastSlot,
        resume: bool,
    ) -> Result<Self, Error> {
        let mut r = Self {
            sections: Vec::new(),
            server,
            slot,
        };
        for c in configs {
            let s = r.start_one(c, resume)?;
            r.sections.push(s);
        }
        Ok(r)
    }

    fn start_one(&self, config: &AnycastConfig, resume: bool) -> Result<Section, Error> {
        let err = |source| Error::Anycast {
            name: config.name.clone(),
            source,
        };
        let index = Addresses::index(&config.interface).map_err(err)?;
        let addresses = Addresses::new().map_err(err)?;
        if let Some(sock) = &config.bird_socket {
            if let Some(why) = bird_unreachable(sock) {
                tracing::warn!(anycast = %config.name, "{why}: the addresses are managed, and BIRD picks them up when it runs");
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let held = resume
            && config
                .addresses
                .iter()
                .all(|n| Addresses::holds(&config.interface, n.addr()).unwrap_or(false));
        let announcer = if held {
            Announcer::announced(config.rise, config.hold_down_ms)
        } else {
            Announcer::new(config.rise, config.hold_down_ms)
        };
        let mut status = initial_status(config);
        if held {
            status.state = "announced".into();
            status.reason = "kept from the previous process (restart)".into();
        }
        let worker = Worker {
            config: config.clone(),
            index,
            addresses,
            announcer,
            server: Arc::clone(&self.server),
            slot: Arc::clone(&self.slot),
            status,
        };
        let task = tokio::spawn(worker.run(rx, stop.clone()));
        Ok(Section {
            config: config.clone(),
            commands: tx,
            stop,
            task,
        })
    }

    /// Applies a reloaded list: unchanged sections go on as they are;
    /// removed or changed ones are withdrawn and stopped (a changed one
    /// starts again, withdrawn, and announces after its `rise`).
    pub async fn reload(&mut self, configs: &[AnycastConfig]) -> Result<(), Error> {
        let old = std::mem::take(&mut self.sections);
        let mut kept = Vec::new();
        for s in old {
            if configs.contains(&s.config) {
                kept.push(s);
            } else {
                tracing::info!(anycast = %s.config.name, "anycast section changed or removed by reload");
                withdraw(&s).await;
                s.stop.cancel();
                let _ = s.task.await;
                self.slot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&s.config.name);
            }
        }
        self.sections = kept;
        for c in configs {
            if !self.sections.iter().any(|s| &s.config == c) {
                let s = self.start_one(c, false)?;
                self.sections.push(s);
            }
        }
        Ok(())
    }

    /// Withdraws every section for good (a stop) and returns how long the
    /// daemon should wait before it stops its listeners: the longest
    /// `drain_ms` of the sections that were announced.
    pub async fn withdraw_all(&mut self) -> Duration {
        let mut drain = 0;
        for s in &self.sections {
            if withdraw(s).await {
                drain = drain.max(s.config.drain_ms);
            }
        }
        Duration::from_millis(drain)
    }

    /// Stops the tasks: after [`Self::withdraw_all`] for a stop, or alone
    /// for a restart (the addresses stay for the next process).
    pub async fn shutdown(self) {
        for s in self.sections {
            s.stop.cancel();
            let _ = s.task.await;
        }
    }
}

/// Asks `s` to withdraw for good; whether it was announced.
async fn withdraw(s: &Section) -> bool {
    let (tx, rx) = oneshot::channel();
    if s.commands.send(Command::Withdraw(tx)).is_err() {
        return false;
    }
    rx.await.unwrap_or(false)
}

fn initial_status(c: &AnycastConfig) -> AnycastStatus {
    AnycastStatus {
        name: c.name.clone(),
        state: "withdrawn".into(),
        addresses: c.addresses.iter().map(ToString::to_string).collect(),
        interface: c.interface.clone(),
        reason: format!("starting: {} healthy check(s) needed", c.rise),
        transitions: 0,
        last_transition: None,
    }
}

/// Why BIRD's control socket at `path` cannot be reached, if it cannot.
pub fn bird_unreachable(path: &std::path::Path) -> Option<String> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "BIRD is not running at {} ({e}): nothing announces the anycast addresses",
            path.display()
        )),
    }
}

/// Whether the pools `c` tracks can answer: each exists, has a backend up
/// (not drained), and the listeners using it run.
fn verdict(server: &Server, c: &AnycastConfig) -> Result<(), String> {
    c.track_pools.iter().try_for_each(|name| {
        server.pool_can_answer(name).map_err(|why| match why {
            dnsha_proxy::server::PoolUnable::Gone => format!("pool {name} {why}"),
            _ => format!("pool {name}: {why}"),
        })
    })
}

/// One section's task.
struct Worker {
    config: AnycastConfig,
    index: u32,
    addresses: Addresses,
    announcer: Announcer,
    server: Arc<Server>,
    slot: AnycastSlot,
    status: AnycastStatus,
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        self.publish();
        self.reconcile().await;
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events = self.server.health().subscribe();
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    self.release_local().await;
                    return;
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Withdraw(done)) => {
                        let was = self.announcer.state() == State::Announced;
                        if was {
                            self.keep_local().await;
                        }
                        if let Some(t) = self.announcer.stop() {
                            self.apply(t).await;
                        }
                        let _ = done.send(was);
                    }
                    None => {
                        self.release_local().await;
                        return;
                    }
                },
                _ = tick.tick() => self.look().await,
                // A health transition: a failing pool withdraws at once.
                _ = events.recv() => {
                    if self.announcer.state() == State::Announced {
                        self.look_failures_only().await;
                    }
                }
            }
        }
    }

    /// One regular look.
    async fn look(&mut self) {
        let v = verdict(&self.server, &self.config);
        if let Some(t) = self.announcer.observe(Millis::now(), v) {
            self.apply(t).await;
        } else {
            // Someone else removed or added an address: put it right.
            self.reconcile().await;
        }
    }

    /// A look between ticks that only acts on a failure (a success does
    /// not count toward `rise` off the beat).
    async fn look_failures_only(&mut self) {
        if let Err(why) = verdict(&self.server, &self.config) {
            if let Some(t) = self.announcer.observe(Millis::now(), Err(why)) {
                self.apply(t).await;
            }
        }
    }

    async fn apply(&mut self, t: Transition) {
        self.reconcile().await;
        match t.to {
            State::Announced => {
                tracing::info!(anycast = %self.config.name, reason = %t.reason, "anycast announced");
            }
            State::Withdrawn => {
                tracing::warn!(anycast = %self.config.name, reason = %t.reason, "anycast withdrawn");
            }
        }
        self.status.state = match t.to {
            State::Announced => "announced",
            State::Withdrawn => "withdrawn",
        }
        .into();
        self.status.reason = t.reason.clone();
        self.status.transitions += 1;
        self.status.last_transition = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        self.publish();
        if let Some(program) = &self.config.notify {
            notify(program, &self.config.name, t.to.as_str(), &t.reason);
        }
    }

    /// Before a stop's withdraw: the addresses stay delivered to the
    /// listeners (a local route each) after they leave the interface, for
    /// the queries the routers still send while they converge (BIRD sees
    /// the address go at once; the router drops the path a few
    /// milliseconds later). [`Self::release_local`] removes them once the
    /// drain is over.
    async fn keep_local(&self) {
        for net in &self.config.addresses {
            if let Err(e) = self
                .addresses
                .keep_local(self.index, net.addr(), net.prefix_len())
                .await
            {
                tracing::warn!(anycast = %self.config.name, address = %net, error = %e, "cannot keep the address local while draining");
            }
        }
    }

    /// Removes what [`Self::keep_local`] added (nothing to remove is fine).
    async fn release_local(&self) {
        for net in &self.config.addresses {
            if let Err(e) = self
                .addresses
                .release_local(self.index, net.addr(), net.prefix_len())
                .await
            {
                tracing::warn!(anycast = %self.config.name, address = %net, error = %e, "local route of a withdrawn address not removed");
            }
        }
    }

    /// Puts the interface in line with the state: every address on it
    /// while announced, none while withdrawn.
    async fn reconcile(&self) {
        let want = self.announcer.state() == State::Announced;
        for net in &self.config.addresses {
            let addr: IpAddr = net.addr();
            let holds = Addresses::holds(&self.config.interface, addr).unwrap_or(!want);
            let r = match (want, holds) {
                (true, false) => self.addresses.add(self.index, addr, net.prefix_len()).await,
                (false, true) => self.addresses.del(self.index, addr, net.prefix_len()).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::error!(anycast = %self.config.name, address = %net, error = %e, "anycast address not changed");
            }
        }
    }

    fn publish(&self) {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.config.name.clone(), self.status.clone());
    }
}

/// Runs `program NAME STATE REASON` without waiting (killed after
/// [`NOTIFY_LIMIT`]); a failure is logged.
fn notify(program: &str, name: &str, state: &str, reason: &str) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args([name, state, reason]).kill_on_drop(true);
    let (program, name) = (program.to_string(), name.to_string());
    tokio::spawn(async move {
        let status = match cmd.spawn() {
            Ok(mut child) => tokio::time::timeout(NOTIFY_LIMIT, child.wait()).await,
            Err(e) => {
                tracing::warn!(anycast = %name, program = %program, error = %e, "anycast notify did not start");
                return;
            }
        };
        match status {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => {
                tracing::warn!(anycast = %name, program = %program, status = %s, "anycast notify failed")
            }
            Ok(Err(e)) => {
                tracing::warn!(anycast = %name, program = %program, error = %e, "anycast notify failed")
            }
            Err(_) => {
                tracing::warn!(anycast = %name, program = %program, "anycast notify killed after 30 s")
            }
        }
    });
}

/// `/metrics` families of the sections.
pub fn prometheus(slot: &AnycastSlot) -> String {
    use std::fmt::Write as _;
    let st = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if st.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP dnsha_anycast_announced 1 while the section's addresses are announced.\n# TYPE dnsha_anycast_announced gauge"
    );
    for s in st.values() {
        let _ = writeln!(
            out,
            "dnsha_anycast_announced{{anycast=\"{}\"}} {}",
            label(&s.name),
            u8::from(s.state == "announced")
        );
    }
    let _ = writeln!(
        out,
        "# HELP dnsha_anycast_transitions_total Announces and withdraws since start.\n# TYPE dnsha_anycast_transitions_total counter"
    );
    for s in st.values() {
        let _ = writeln!(
            out,
            "dnsha_anycast_transitions_total{{anycast=\"{}\"}} {}",
            label(&s.name),
            s.transitions
        );
    }
    out
}

/// `v` as a Prometheus label value (backslash, quote and newline escaped).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
