//! The Linux I/O shell: runs [`Router`](crate::Router)s on tokio.
//!
//! [`Vrrp::start`] takes the validated `[[vrrp]]` instances and, for each,
//! opens a raw socket for protocol 112 on its interface (multicast
//! 224.0.0.18, or the unicast peers), an AF_PACKET socket for gratuitous
//! ARP, shares one rtnetlink connection for the VIPs, starts the interface
//! and script trackers, and runs the instance's event loop. State changes
//! go to one notify queue for the whole process (in order, never two
//! commands at once). The daemon feeds pool health with
//! [`Vrrp::set_pool_health`] and reads [`Vrrp::status`] for `/status` and
//! `/metrics`. [`Vrrp::shutdown`] sends priority 0 from every master,
//! removes the VIPs, and waits for the notify queue.
//!
//! ```no_run
//! # async fn demo(instances: Vec<dnsha_vrrp::config::InstanceConfig>) -> Result<(), dnsha_vrrp::Error> {
//! let vrrp = dnsha_vrrp::shell::Vrrp::start(&instances).await?;
//! vrrp.set_pool_health("coredns", false); // track_pools = ["coredns"]
//! for s in vrrp.status() {
//!     println!("{} {} {}", s.name, s.state, s.effective_priority);
//! }
//! vrrp.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use instance::{AdvertSocket, Announcer};
use socket6::{NeighborAdvert, VrrpSocket6};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{pool_tracker, validate_all, InstanceConfig};
use crate::error::{Error, Result};
use crate::router::{Command, Router};

pub mod addresses;
mod command;
mod garp;
mod instance;
mod netlink;
mod notify;
mod socket;
mod socket6;
mod track;

pub use track::RiseFall;

use instance::Instance;
use netlink::{InterfaceInfo, Netlink};
use notify::Notifier;
use socket::{Destination, VrrpSocket};

/// Messages into an instance's loop.
#[derive(Debug)]
pub(crate) enum InstanceMsg {
    Router(Command),
    /// A changed configuration applied in place (reload), with the new
    /// notify program; the result goes back on the channel.
    Reconfigure(
        Box<crate::router::RouterConfig>,
        Option<String>,
        oneshot::Sender<Result<()>>,
    ),
    Shutdown(oneshot::Sender<()>),
    /// Stop for a restart: no priority 0, addresses left in place.
    HandOver(oneshot::Sender<()>),
}

/// A snapshot of one instance, for `/status` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// Instance name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// VRID.
    pub vrid: u8,
    /// VRRP version, 2 or 3.
    pub version: u8,
    /// Address family of the virtual addresses: `ipv4`.
    pub family: String,
    /// Our advertisement interval, in milliseconds.
    pub advert_int_ms: u64,
    /// The interval the master advertises as this instance counts with it
    /// (VRRPv3 backups learn it from the master), in milliseconds.
    pub master_advert_int_ms: u64,
    /// `MASTER`, `BACKUP`, `FAULT` or `STOP`.
    pub state: String,
    /// Configured priority.
    pub priority: u8,
    /// Priority after tracker weights.
    pub effective_priority: u8,
    /// Virtual addresses (`IP/prefix`).
    pub vips: Vec<String>,
    /// The current master's address, if known.
    pub master: Option<std::net::IpAddr>,
    /// State changes since start.
    pub transitions: u64,
    /// When the state last changed, in seconds since the Unix epoch.
    pub last_transition: Option<u64>,
    /// Valid adverts processed.
    pub adverts_received: u64,
    /// Adverts sent.
    pub adverts_sent: u64,
    /// Priority-0 adverts received.
    pub priority_zero_received: u64,
    /// Times this instance became master.
    pub became_master: u64,
    /// Dropped adverts by reason (only non-zero reasons).
    pub dropped: BTreeMap<String, u64>,
    /// Dropped adverts, all reasons.
    pub dropped_total: u64,
    /// Its sync group, if any.
    pub sync_group: Option<String>,
    /// In FAULT because of one of its own trackers (not its group's).
    pub own_fault: bool,
    /// It backs up a master that beats it (lost its election).
    pub lost_election: bool,
}

struct Handle {
    /// What the instance was started with (a reload compares against it).
    config: InstanceConfig,
    /// The address its adverts come from.
    primary: std::net::IpAddr,
    trackers: Vec<String>,
    tx: mpsc::UnboundedSender<InstanceMsg>,
    status: watch::Receiver<InstanceStatus>,
    task: JoinHandle<()>,
}

/// Every VRRP instance of a process. See the [module docs](self).
pub struct Vrrp {
    instances: Vec<Handle>,
    notifier: Option<Notifier>,
    notify_task: JoinHandle<()>,
    /// One task per sync group.
    groups: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Vrrp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vrrp")
            .field("instances", &self.status())
            .finish_non_exhaustive()
    }
}

impl Vrrp {
    /// Validates the instances and starts them on the current tokio runtime
    /// (root or `CAP_NET_RAW` + `CAP_NET_ADMIN` needed).
    pub async fn start(configs: &[InstanceConfig]) -> Result<Self> {
        Self::start_resuming(configs, &[]).await
    }

    /// As [`Vrrp::start`], the instances named in `resume` starting as
    /// master at once ([`Command::Resume`]): a restart's previous process
    /// handed them over ([`Vrrp::hand_over`]) a moment ago. An IPv6
    /// instance still waiting for its link-local address starts as usual.
    pub async fn start_resuming(configs: &[InstanceConfig], resume: &[String]) -> Result<Self> {
        let errors = validate_all(configs);
        if !errors.is_empty() {
            return Err(Error::Config { errors });
        }
        let netlink = Netlink::new()?;
        let (notifier, notify_task) = Notifier::spawn();
        let mut instances = Vec::new();
        for cfg in configs {
            match start_one(cfg, &netlink, &notifier, resume.contains(&cfg.name)) {
                Ok(h) => instances.push(h),
                Err(e) => {
                    let partial = Self {
                        instances,
                        notifier: Some(notifier),
                        notify_task,
                        groups: Vec::new(),
                    };
                    partial.shutdown().await;
                    return Err(e);
                }
            }
        }
        let groups = sync_groups(&instances);
        Ok(Self {
            instances,
            notifier: Some(notifier),
            notify_task,
            groups,
        })
    }

    /// Feeds a generic tracker (by its full name, e.g.
    /// [`pool_tracker`]`("coredns")`) to every instance that tracks it.
    pub fn set_tracker(&self, name: &str, up: bool) {
        for h in &self.instances {
            if h.trackers.iter().any(|t| t == name) {
                let _ = h.tx.send(InstanceMsg::Router(Command::TrackerChanged {
                    name: name.to_owned(),
                    up,
                }));
            }
        }
    }

    /// `track_pools` input: whether pool `pool` has a healthy backend and
    /// its listeners are up.
    pub fn set_pool_health(&self, pool: &str, up: bool) {
        self.set_tracker(&pool_tracker(pool), up);
    }

    /// A `track_pools` input that can be moved into another task: calling it
    /// has the effect of [`Self::set_pool_health`].
    pub fn pool_setter(&self) -> impl Fn(&str, bool) + Send + Sync + 'static {
        let targets: Vec<(Vec<String>, mpsc::UnboundedSender<InstanceMsg>)> = self
            .instances
            .iter()
            .map(|h| (h.trackers.clone(), h.tx.clone()))
            .collect();
        move |pool: &str, up: bool| {
            let name = pool_tracker(pool);
            for (trackers, tx) in &targets {
                if trackers.contains(&name) {
                    let _ = tx.send(InstanceMsg::Router(Command::TrackerChanged {
                        name: name.clone(),
                        up,
                    }));
                }
            }
        }
    }

    /// The configurations the instances run with, in order.
    pub fn configs(&self) -> Vec<InstanceConfig> {
        self.instances.iter().map(|h| h.config.clone()).collect()
    }

    /// Snapshots of every instance, in configuration order.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.instances
            .iter()
            .map(|h| h.status.borrow().clone())
            .collect()
    }

    /// A receiver that sees every status change of instance `name`.
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<InstanceStatus>> {
        self.instances
            .iter()
            .find(|h| h.status.borrow().name == name)
            .map(|h| h.status.clone())
    }

    /// Applies a reloaded `[[vrrp]]` list (validated first: a bad list
    /// changes nothing). An instance whose interface, VRID, version,
    /// unicast settings, tracked interfaces and scripts are unchanged is
    /// changed in place ([`Router::reconfigure`]): it keeps its state and
    /// VIPs, and one whose configuration is the same is not touched at all.
    /// Any other change restarts that instance; a removed instance stops
    /// (priority 0 from a master), a new one starts as backup.
    pub async fn apply(&mut self, configs: &[InstanceConfig]) -> Result<Applied> {
        let errors = validate_all(configs);
        if !errors.is_empty() {
            return Err(Error::Config { errors });
        }
        let netlink = Netlink::new()?;
        let mut old: Vec<Handle> = std::mem::take(&mut self.instances);
        let mut applied = Applied::default();
        let mut result = Ok(());
        for cfg in configs {
            let pos = old.iter().position(|h| h.config.name == cfg.name);
            let step = match pos.map(|i| old.swap_remove(i)) {
                None => self
                    .start_new(cfg, &netlink)
                    .inspect(|_| applied.started.push(cfg.name.clone())),
                Some(h) if h.config == *cfg => {
                    applied.unchanged.push(cfg.name.clone());
                    Ok(h)
                }
                Some(h) => match reconfigure(h, cfg).await {
                    Ok(h) => {
                        applied.changed.push(cfg.name.clone());
                        Ok(h)
                    }
                    Err(h) => {
                        stop_one(h).await;
                        applied.restarted.push(cfg.name.clone());
                        self.start_new(cfg, &netlink)
                    }
                },
            };
            match step {
                Ok(h) => self.instances.push(h),
                Err(e) => {
                    // Keep running what still runs; report what failed.
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_err() {
            self.instances.append(&mut old);
            return result.map(|()| applied);
        }
        for h in old {
            applied.stopped.push(h.config.name.clone());
            stop_one(h).await;
        }
        for g in self.groups.drain(..) {
            g.abort();
        }
        self.groups = sync_groups(&self.instances);
        info!(?applied, "VRRP configuration applied");
        Ok(applied)
    }

    fn start_new(&self, cfg: &InstanceConfig, netlink: &Netlink) -> Result<Handle> {
        let notifier = self.notifier.as_ref().ok_or_else(|| Error::Io {
            context: "vrrp reload after shutdown".into(),
            source: std::io::Error::other("stopped"),
        })?;
        start_one(cfg, netlink, notifier, false)
    }

    /// Stops every instance (priority 0 from masters, VIPs removed), then
    /// lets the notify queue finish (bounded by the notify timeout).
    pub async fn shutdown(self) {
        self.stop_all(InstanceMsg::Shutdown).await;
    }

    /// Stops every instance for a restart: masters send no priority 0 and
    /// leave their addresses, so the backups wait for the next process,
    /// which resumes them ([`Vrrp::start_resuming`]) within their
    /// Master_Down_Interval. Returns the names of the instances that were
    /// master.
    pub async fn hand_over(self) -> Vec<String> {
        let masters = self
            .status()
            .into_iter()
            .filter(|s| s.state == crate::State::Master.as_str())
            .map(|s| s.name)
            .collect();
        self.stop_all(InstanceMsg::HandOver).await;
        masters
    }

    async fn stop_all(mut self, msg: fn(oneshot::Sender<()>) -> InstanceMsg) {
        for g in self.groups.drain(..) {
            g.abort();
        }
        let mut acks = Vec::new();
        for h in &self.instances {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(msg(tx)).is_ok() {
                acks.push(rx);
            }
        }
        for ack in acks {
            let _ = ack.await;
        }
        for h in self.instances.drain(..) {
            drop(h.tx);
            let _ = h.task.await;
        }
        self.notifier = None;
        let deadline = notify::NOTIFY_TIMEOUT + Duration::from_secs(1);
        if tokio::time::timeout(deadline, &mut self.notify_task)
            .await
            .is_err()
        {
            warn!("notify queue still busy at shutdown");
            self.notify_task.abort();
        }
        info!("VRRP stopped");
    }
}

/// Starts one coordinating task per sync group of `instances`.
fn sync_groups(instances: &[Handle]) -> Vec<JoinHandle<()>> {
    let mut names: Vec<&String> = instances
        .iter()
        .filter_map(|h| h.config.sync_group.as_ref())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|group| {
            let members: Vec<(
                watch::Receiver<InstanceStatus>,
                mpsc::UnboundedSender<InstanceMsg>,
            )> = instances
                .iter()
                .filter(|h| h.config.sync_group.as_ref() == Some(group))
                .map(|h| (h.status.clone(), h.tx.clone()))
                .collect();
            tokio::spawn(run_group(crate::sync::fault_tracker(group), members))
        })
        .collect()
}

/// Feeds the members of one sync group what [`crate::sync::orders`] says,
/// each time one of them changes.
async fn run_group(
    tracker: String,
    members: Vec<(
        watch::Receiver<InstanceStatus>,
        mpsc::UnboundedSender<InstanceMsg>,
    )>,
) {
    let (wake_tx, mut wake) = mpsc::unbounded_channel::<()>();
    for (rx, _) in &members {
        let (mut rx, wake_tx) = (rx.clone(), wake_tx.clone());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if wake_tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    drop(wake_tx);
    let mut last: Vec<Option<crate::sync::Orders>> = vec![None; members.len()];
    loop {
        let view: Vec<crate::sync::Member> = members
            .iter()
            .map(|(rx, _)| {
                let s = rx.borrow();
                crate::sync::Member {
                    state: crate::State::parse(&s.state).unwrap_or(crate::State::Initialize),
                    own_fault: s.own_fault,
                    lost_election: s.lost_election,
                }
            })
            .collect();
        for (i, o) in crate::sync::orders(&view).into_iter().enumerate() {
            let (Some(prev), Some((_, tx))) = (last.get_mut(i), members.get(i)) else {
                continue;
            };
            let send = |cmd| {
                let _ = tx.send(InstanceMsg::Router(cmd));
            };
            if prev.map(|p| p.sync_fault) != Some(o.sync_fault) {
                send(Command::TrackerChanged {
                    name: tracker.clone(),
                    up: !o.sync_fault,
                });
            }
            if prev.map(|p| p.hold) != Some(o.hold) {
                send(Command::SyncHold(o.hold));
            }
            if o.follow_master {
                send(Command::SyncMaster);
            }
            *prev = Some(o);
        }
        if wake.recv().await.is_none() {
            return;
        }
    }
}

/// The IPv4 sockets of an instance: adverts from its primary address (or
/// `unicast_src_ip`), gratuitous ARP.
fn open_v4(
    cfg: &InstanceConfig,
    info: &InterfaceInfo,
) -> Result<(std::net::IpAddr, AdvertSocket, Option<Announcer>)> {
    let Some(primary) = cfg.unicast_src().or(info.primary_ip) else {
        return Err(Error::Interface {
            interface: cfg.interface.clone(),
            reason: "no IPv4 address to send adverts from (set unicast_src_ip)".into(),
        });
    };
    let peers = cfg.unicast_peers();
    let dst = if peers.is_empty() {
        Destination::Multicast
    } else {
        Destination::Unicast(peers)
    };
    let socket = VrrpSocket::open(&info.name, info.index, primary, dst)?;
    let announcer = match info.link {
        Some(link) => Some(Announcer::Arp(garp::Garp::open(&info.name, link)?)),
        None => {
            warn!(interface = %info.name, "no link-layer address: gratuitous ARP disabled");
            None
        }
    };
    Ok((primary.into(), AdvertSocket::V4(socket), announcer))
}

/// The IPv6 sockets of an instance: adverts from the interface's
/// link-local address to ff02::12, unsolicited neighbour advertisements.
fn open_v6(
    cfg: &InstanceConfig,
    info: &InterfaceInfo,
) -> Result<(std::net::IpAddr, AdvertSocket, Option<Announcer>)> {
    let Some(link_local) = info.link_local else {
        return Err(Error::Interface {
            interface: cfg.interface.clone(),
            reason: "no IPv6 link-local address to send adverts from".into(),
        });
    };
    let socket = VrrpSocket6::open(&info.name, info.index, link_local)?;
    let announcer = match info.link.and_then(|l| l.addr()) {
        Some(mac) => Some(Announcer::Neighbor(NeighborAdvert::open(
            &info.name, info.index, mac,
        )?)),
        None => {
            warn!(interface = %info.name, "no link-layer address: neighbour advertisements disabled");
            None
        }
    };
    Ok((link_local.into(), AdvertSocket::V6(socket), announcer))
}

/// What [`Vrrp::apply`] did, by instance name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Same configuration: not touched.
    pub unchanged: Vec<String>,
    /// Changed in place, state and VIPs kept.
    pub changed: Vec<String>,
    /// Stopped and started again (interface, VRID, version, unicast or
    /// tracker tasks changed).
    pub restarted: Vec<String>,
    /// New instances.
    pub started: Vec<String>,
    /// Removed instances, stopped.
    pub stopped: Vec<String>,
}

/// Whether `new` can be applied to the running `old` in place: what the
/// socket and the tracker tasks were set up with is the same.
fn in_place(old: &InstanceConfig, new: &InstanceConfig) -> bool {
    old.interface == new.interface
        && old.virtual_router_id == new.virtual_router_id
        && old.version == new.version
        && old.unicast_src_ip == new.unicast_src_ip
        && old.unicast_peer == new.unicast_peer
        && old.track_interface == new.track_interface
        && old.track_script == new.track_script
        && old.notify.is_some() == new.notify.is_some()
}

/// Applies `cfg` to the running instance `h` in place, when the two allow
/// it ([`in_place`]) and the router accepts it; `Err(h)` otherwise (the
/// caller restarts it).
async fn reconfigure(h: Handle, cfg: &InstanceConfig) -> std::result::Result<Handle, Handle> {
    if !in_place(&h.config, cfg) {
        return Err(h);
    }
    let Ok(router_cfg) = cfg.router_config_from(h.primary) else {
        return Err(h);
    };
    let trackers = router_cfg.trackers.iter().map(|t| t.name.clone()).collect();
    let (tx, rx) = oneshot::channel();
    let msg = InstanceMsg::Reconfigure(Box::new(router_cfg), cfg.notify.clone(), tx);
    if h.tx.send(msg).is_ok() && rx.await.is_ok_and(|r| r.is_ok()) {
        Ok(Handle {
            config: cfg.clone(),
            trackers,
            ..h
        })
    } else {
        Err(h)
    }
}

/// Stops one instance: priority 0 from a master, VIPs removed.
async fn stop_one(h: Handle) {
    let (tx, rx) = oneshot::channel();
    if h.tx.send(InstanceMsg::Shutdown(tx)).is_ok() {
        let _ = rx.await;
    }
    drop(h.tx);
    let _ = h.task.await;
}

fn start_one(
    cfg: &InstanceConfig,
    netlink: &Netlink,
    notifier: &Notifier,
    resume: bool,
) -> Result<Handle> {
    let info = InterfaceInfo::lookup(&cfg.interface)?;
    let trackers: Vec<String> = cfg.trackers().iter().map(|t| t.name.clone()).collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(waiting_status(cfg));
    // Trackers: the own interface, track_interface, track_script.
    let mut interfaces = vec![cfg.interface.clone()];
    for t in &cfg.track_interface {
        let name = t.parts().0.to_owned();
        if !interfaces.contains(&name) {
            interfaces.push(name);
        }
    }
    for ifname in interfaces {
        tokio::spawn(track::interface(netlink.clone(), ifname, tx.clone()));
    }
    for s in &cfg.track_script {
        tokio::spawn(track::script(s.clone(), tx.clone()));
    }
    let ipv6 = cfg.vips().first().is_some_and(|v| v.addr.is_ipv6());
    let (primary, task) = if ipv6 && info.link_local.is_none() {
        // The kernel gives an interface its link-local address when the
        // link comes up: until then the instance waits in FAULT.
        warn!(instance = %cfg.name, interface = %cfg.interface, "no IPv6 link-local address yet: waiting in FAULT");
        let pending = Pending {
            cfg: cfg.clone(),
            netlink: netlink.clone(),
            notifier: notifier.clone(),
        };
        let task = tokio::spawn(pending.wait_then_run(status_tx, rx));
        (std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), task)
    } else {
        let mut inst = build(cfg, &info, netlink, notifier, status_tx)?;
        inst.resume = resume;
        let primary = inst.router.config().primary_ip;
        info!(instance = %cfg.name, interface = %cfg.interface, vrid = cfg.virtual_router_id, %primary, "VRRP instance starting");
        (primary, tokio::spawn(inst.run(rx)))
    };
    Ok(Handle {
        config: cfg.clone(),
        primary,
        trackers,
        tx,
        status,
        task,
    })
}

/// The instance of `cfg` on `info`, its status published on `status`.
fn build(
    cfg: &InstanceConfig,
    info: &InterfaceInfo,
    netlink: &Netlink,
    notifier: &Notifier,
    status: watch::Sender<InstanceStatus>,
) -> Result<Instance> {
    let ipv6 = cfg.vips().first().is_some_and(|v| v.addr.is_ipv6());
    let (primary, socket, announcer) = if ipv6 {
        open_v6(cfg, info)?
    } else {
        open_v4(cfg, info)?
    };
    let router = Router::new(cfg.router_config_from(primary)?)?;
    let inst = Instance {
        name: cfg.name.clone(),
        interface: cfg.interface.clone(),
        ifindex: info.index,
        router,
        socket,
        announcer,
        netlink: netlink.clone(),
        notify: cfg.notify.clone().map(|p| (notifier.clone(), p)),
        status,
        transitions: 0,
        last_transition: None,
        sync_group: cfg.sync_group.clone(),
        resume: false,
    };
    inst.status.send_replace(inst.snapshot());
    Ok(inst)
}

/// What an instance reports before it runs: FAULT, by its own doing (its
/// sync group follows).
fn waiting_status(cfg: &InstanceConfig) -> InstanceStatus {
    let ipv6 = cfg.vips().first().is_some_and(|v| v.addr.is_ipv6());
    InstanceStatus {
        name: cfg.name.clone(),
        interface: cfg.interface.clone(),
        vrid: u8::try_from(cfg.virtual_router_id).unwrap_or(0),
        version: u8::try_from(cfg.version).unwrap_or(2),
        family: if ipv6 { "ipv6" } else { "ipv4" }.into(),
        state: "FAULT".into(),
        priority: u8::try_from(cfg.priority).unwrap_or(0),
        vips: cfg.vips().iter().map(ToString::to_string).collect(),
        sync_group: cfg.sync_group.clone(),
        own_fault: true,
        ..InstanceStatus::default()
    }
}

/// An IPv6 instance waiting for its interface's link-local address.
struct Pending {
    cfg: InstanceConfig,
    netlink: Netlink,
    notifier: Notifier,
}

impl Pending {
    /// How often the interface is looked at.
    const POLL: Duration = Duration::from_millis(200);

    /// Waits (answering a shutdown, keeping tracker changes for later, and
    /// refusing a change in place so that a reload restarts it), then runs
    /// the instance.
    async fn wait_then_run(
        self,
        status: watch::Sender<InstanceStatus>,
        mut rx: mpsc::UnboundedReceiver<InstanceMsg>,
    ) {
        let mut held = Vec::new();
        loop {
            match tokio::time::timeout(Self::POLL, rx.recv()).await {
                Ok(Some(InstanceMsg::Shutdown(ack) | InstanceMsg::HandOver(ack))) => {
                    let _ = ack.send(());
                    return;
                }
                Ok(None) => return,
                Ok(Some(InstanceMsg::Reconfigure(_, _, done))) => {
                    let _ = done.send(Err(Error::Interface {
                        interface: self.cfg.interface.clone(),
                        reason: "not started yet".into(),
                    }));
                }
                Ok(Some(InstanceMsg::Router(cmd))) => held.push(cmd),
                Err(_) => {}
            }
            let Ok(info) = InterfaceInfo::lookup(&self.cfg.interface) else {
                continue;
            };
            if info.link_local.is_none() {
                continue;
            }
            match build(
                &self.cfg,
                &info,
                &self.netlink,
                &self.notifier,
                status.clone(),
            ) {
                Ok(mut inst) => {
                    info!(instance = %self.cfg.name, "IPv6 link-local address up: VRRP instance starting");
                    for cmd in held {
                        inst.router.handle_command(std::time::Instant::now(), cmd);
                    }
                    inst.run(rx).await;
                }
                Err(e) => {
                    tracing::error!(instance = %self.cfg.name, error = %e, "VRRP instance cannot start")
                }
            }
            return;
        }
    }
}

impl Default for InstanceStatus {
    fn default() -> Self {
        Self {
            name: String::new(),
            interface: String::new(),
            vrid: 0,
            version: 2,
            family: "ipv4".into(),
            advert_int_ms: 0,
            master_advert_int_ms: 0,
            state: "STOP".into(),
            priority: 0,
            effective_priority: 0,
            vips: Vec::new(),
            master: None,
            transitions: 0,
            last_transition: None,
            adverts_received: 0,
            adverts_sent: 0,
            priority_zero_received: 0,
            became_master: 0,
            dropped: BTreeMap::new(),
            dropped_total: 0,
            sync_group: None,
            own_fault: false,
            lost_election: false,
        }
    }
}
