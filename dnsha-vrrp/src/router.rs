//! The sans-IO VRRPv2 state machine (RFC 3768 section 6).
//!
//! A [`Router`] owns no socket, no clock and no task. The I/O shell (or a
//! test) feeds it packets, commands and the current time, asks it for its
//! next deadline with [`Router::poll_timeout`], and drains what it wants done
//! with [`Router::poll_output`]:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use dnsha_vrrp::{Command, Output, Router, RouterConfig, State};
//!
//! let me: std::net::Ipv4Addr = "10.0.0.1".parse().unwrap();
//! let mut r = Router::new(RouterConfig::new(134, 100, me)).unwrap();
//! let t0 = Instant::now();
//! r.handle_command(t0, Command::Start);
//! assert_eq!(r.state(), State::Backup);
//! // Nobody advertises: Master_Down_Interval = 3 s + (256-100)/256 s later we are master.
//! let deadline = r.poll_timeout().unwrap();
//! assert_eq!(deadline - t0, Duration::from_secs(3) + Duration::from_micros(609_375));
//! r.handle_timeout(deadline);
//! assert_eq!(r.state(), State::Master);
//! while let Some(out) = r.poll_output() {
//!     if let Output::SendAdvert(adv) = out {
//!         assert_eq!(adv.priority, 100);
//!         let bytes = adv.encode(me.into(), dnsha_vrrp::codec::VRRP_GROUP.into());
//!         assert_eq!(bytes[2], 100);
//!     }
//! }
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tracing::{debug, info, trace, warn};

use crate::codec::v3::MAX_INTERVAL_CS;
use crate::codec::v3::{AdvertisementV3, PseudoHeader};
use crate::codec::Auth;
use crate::codec::{Advertisement, VRRP_GROUP, VRRP_TTL};
use crate::config::error::{ConfigError, Instance};
use crate::error::{Error, Result};
use crate::stats::{DropReason, Stats};

/// Priority of the address owner.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a stopping master advertises.
pub const PRIORITY_STOP: u8 = 0;

/// The timers, each armed or not.
#[derive(Clone, Copy, Debug, Default)]
struct Timers {
    advert: Option<Instant>,
    master_down: Option<Instant>,
    garp_delay: Option<Instant>,
    garp_refresh: Option<Instant>,
    /// The second burst after a lower-priority master was heard.
    garp_lower_prio: Option<Instant>,
}

impl Timers {
    fn earliest(&self) -> Option<Instant> {
        [
            self.advert,
            self.master_down,
            self.garp_delay,
            self.garp_refresh,
            self.garp_lower_prio,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Immediate re-advertisements a master sends per advert interval, at most.
pub const REASSERTS_PER_INTERVAL: u8 = 3;

/// One VRRP instance as a pure state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Router {
    cfg: RouterConfig,
    state: State,
    /// Between Start and Shutdown.
    running: bool,
    tracker_up: Vec<bool>,
    effective: u8,
    timers: Timers,
    /// Preemption is held back until this instant.
    preempt_after: Option<Instant>,
    /// The running Master_Down_Timer was set to Skew_Time by a priority 0.
    priority_zero_seen: bool,
    master: Option<(IpAddr, u8)>,
    /// Held by its sync group ([`Command::SyncHold`]).
    held: bool,
    /// Master_Adver_Interval: ours, or (VRRPv3) the one the master
    /// advertises, learned while backup (RFC 5798 section 6.4.2).
    master_adver_interval: Duration,
    /// Immediate answers to lower-priority or priority-0 adverts in the
    /// current advert interval (its start, and how many): at most
    /// [`REASSERTS_PER_INTERVAL`].
    reasserts: Option<(Instant, u8)>,
    /// The last gratuitous ARP burst answering a lower-priority master: at
    /// most one per advert interval.
    lower_prio_garp_at: Option<Instant>,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl Router {
    /// A router in Initialize; checks the config's ranges.
    pub fn new(cfg: RouterConfig) -> Result<Self> {
        validate(&cfg)?;
        let tracker_up = vec![true; cfg.trackers.len()];
        let cfg_interval = cfg.advert_int_cs;
        let mut r = Self {
            cfg,
            state: State::Initialize,
            running: false,
            tracker_up,
            effective: 0,
            timers: Timers::default(),
            preempt_after: None,
            priority_zero_seen: false,
            master: None,
            held: false,
            master_adver_interval: interval_of(cfg_interval),
            reasserts: None,
            lower_prio_garp_at: None,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        };
        r.effective = r.compute_priority();
        Ok(r)
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Configured priority.
    pub fn base_priority(&self) -> u8 {
        self.cfg.priority
    }

    /// Priority after tracker weights, the one advertised.
    pub fn effective_priority(&self) -> u8 {
        self.effective
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The master last heard from while backup (address, priority), if any.
    pub fn current_master(&self) -> Option<(IpAddr, u8)> {
        match self.state {
            State::Master => Some((self.cfg.primary_ip, self.effective)),
            State::Backup => self.master,
            _ => None,
        }
    }

    /// Whether any weight-0 tracker is down.
    pub fn in_fault(&self) -> bool {
        self.cfg
            .trackers
            .iter()
            .zip(&self.tracker_up)
            .any(|(t, up)| t.weight == 0 && !up)
    }

    /// Skew_Time, with the effective priority: (256 − priority) / 256 s for
    /// VRRPv2, ((256 − priority) × Master_Adver_Interval) / 256 for VRRPv3.
    pub fn skew_time(&self) -> Duration {
        match self.cfg.version {
            Version::V2 => skew_time(self.effective),
            Version::V3 => self.master_adver_interval * (256 - u32::from(self.effective)) / 256,
        }
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time (for
    /// VRRPv2 the master's interval is ours: a different one is dropped).
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// Our Advertisement_Interval.
    pub fn advert_interval(&self) -> Duration {
        interval_of(self.cfg.advert_int_cs)
    }

    /// The master's advertisement interval as this router counts with it.
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// The next instant [`Router::handle_timeout`] must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Handles a command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Start => self.start(now),
            Command::Shutdown => self.shutdown(),
            Command::Resume => self.resume(now),
            Command::HandOver => self.hand_over(),
            Command::TrackerChanged { name, up } => self.tracker_changed(now, &name, up),
            Command::SyncHold(held) => self.sync_hold(now, held),
            Command::SyncMaster => {
                // The order was computed from the group's view of this
                // router, which may be a moment old: a backup that has since
                // heard a master that beats it would only be preempted back
                // (or split the group), so it stays.
                if self.running
                    && self.state == State::Backup
                    && !self.held
                    && !self.backs_up_a_better_master()
                {
                    self.become_master(now, Reason::SyncGroup);
                } else {
                    self.stats.sync_master_ignored += 1;
                }
            }
        }
    }

    /// Whether this router backs up a master that beats it (higher
    /// priority, or equal priority and a higher address): it lost its
    /// election, and its sync group must not keep addresses on this node.
    pub fn backs_up_a_better_master(&self) -> bool {
        self.state == State::Backup
            && self
                .master
                .is_some_and(|(ip, p)| (p, ip) > (self.effective, self.cfg.primary_ip))
    }

    /// The weight-0 tracker that keeps this router in FAULT, if any.
    pub fn fault_tracker(&self) -> Option<String> {
        self.failing_fault_tracker()
    }

    fn sync_hold(&mut self, now: Instant, held: bool) {
        self.held = held;
        if held && self.running && self.state == State::Master {
            self.leave_master();
            self.send_advert(PRIORITY_STOP);
            self.timers.master_down = Some(now + self.master_down_interval());
            self.priority_zero_seen = false;
            self.transition(State::Backup, Reason::SyncGroup);
        }
    }

    /// Applies a changed configuration in place (a reload): same VRID and
    /// version, anything else may change. State, timers and the master
    /// heard are kept, so an unchanged instance neither flaps nor sends an
    /// extra advert. A master removes the VIPs it no longer has and adds
    /// (with gratuitous ARPs) the new ones, and advertises at once when its
    /// priority or addresses changed: a new priority that loses the
    /// election hands the VIP over the RFC way (the backup, preempting,
    /// takes over). Trackers keep their state by name; new ones start up.
    pub fn reconfigure(&mut self, now: Instant, cfg: RouterConfig) -> Result<()> {
        validate(&cfg)?;
        if cfg.vrid != self.cfg.vrid || cfg.version != self.cfg.version {
            return Err(Error::Config {
                errors: vec![ConfigError::new(
                    Instance::Unplaced,
                    "virtual_router_id",
                    "a new VRID or version is a new instance, not a change in place",
                )],
            });
        }
        let old_vips = std::mem::take(&mut self.cfg.vips);
        let old_priority = self.effective;
        self.tracker_up = cfg
            .trackers
            .iter()
            .map(|t| {
                self.cfg
                    .trackers
                    .iter()
                    .zip(&self.tracker_up)
                    .find(|(old, _)| old.name == t.name)
                    .is_none_or(|(_, up)| *up)
            })
            .collect();
        let interval_changed = cfg.advert_int_cs != self.cfg.advert_int_cs;
        self.cfg = cfg;
        self.effective = self.compute_priority();
        if !self.running {
            return Ok(());
        }
        let vips_changed = old_vips != self.cfg.vips;
        match (self.state, self.failing_fault_tracker()) {
            (State::Fault, None) => self.enter_backup_or_owner(now, Reason::FaultCleared),
            (State::Fault, Some(_)) => {}
            (_, Some(tracker)) => {
                if self.state == State::Master {
                    for vip in &old_vips {
                        self.outputs.push_back(Output::DelVip(*vip));
                    }
                    self.leave_master_timers();
                    self.send_advert(PRIORITY_STOP);
                }
                self.timers = Timers::default();
                self.transition(State::Fault, Reason::Fault { tracker });
            }
            (State::Master, None) => {
                if vips_changed {
                    for vip in old_vips.iter().filter(|v| !self.cfg.vips.contains(v)) {
                        self.outputs.push_back(Output::DelVip(*vip));
                    }
                    let added: Vec<Vip> = self
                        .cfg
                        .vips
                        .iter()
                        .filter(|v| !old_vips.contains(v))
                        .copied()
                        .collect();
                    for vip in &added {
                        self.outputs.push_back(Output::AddVip(*vip));
                    }
                    for vip in added {
                        self.outputs.push_back(Output::GratuitousArp {
                            addr: vip.addr,
                            count: self.cfg.garp.repeat,
                        });
                    }
                }
                if vips_changed || old_priority != self.effective || interval_changed {
                    self.master_adver_interval = self.advert_interval();
                    self.send_advert(self.effective);
                    self.timers.advert = Some(now + self.advert_interval());
                }
            }
            (State::Backup, None) if self.master.is_none() => {
                // No master heard yet: count with the new interval.
                self.master_adver_interval = self.advert_interval();
            }
            _ => {}
        }
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if due(self.timers.master_down, now) {
            self.timers.master_down = None;
            if self.state == State::Backup {
                let priority_zero = std::mem::take(&mut self.priority_zero_seen);
                self.become_master(now, Reason::MasterDown { priority_zero });
            }
        }
        if due(self.timers.advert, now) {
            self.send_advert(self.effective);
            self.timers.advert = Some(now + self.advert_interval());
        }
        if due(self.timers.garp_delay, now) {
            self.timers.garp_delay = None;
            self.garp(self.cfg.garp.repeat);
        }
        if due(self.timers.garp_refresh, now) {
            self.garp(self.cfg.garp.refresh_repeat);
            self.timers.garp_refresh = self.cfg.garp.refresh.map(|p| now + p);
        }
        if due(self.timers.garp_lower_prio, now) {
            self.timers.garp_lower_prio = None;
            self.garp(self.cfg.garp.lower_prio_repeat);
        }
    }

    /// Handles a received VRRP payload (the bytes after the IP header), with
    /// the IP source address and TTL it arrived with, sent to the VRRP
    /// group. See [`Router::handle_packet_to`].
    pub fn handle_packet(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        ttl: u8,
        bytes: &[u8],
    ) -> Option<DropReason> {
        self.handle_packet_to(now, src.into(), VRRP_GROUP.into(), ttl, bytes)
    }

    /// Handles a received VRRP payload sent from `src` to `dst` (the group,
    /// or our address in unicast mode: VRRPv3's checksum covers both).
    ///
    /// Returns the reason it was dropped, if it was; drops are also counted
    /// in [`Router::stats`] and never change the state.
    pub fn handle_packet_to(
        &mut self,
        now: Instant,
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
        bytes: &[u8],
    ) -> Option<DropReason> {
        let adv = match self.check(src, dst, ttl, bytes) {
            Ok(Some(adv)) => adv,
            Ok(None) => return None,
            Err(reason) => {
                self.stats.count_drop(reason);
                debug!(vrid = self.cfg.vrid, %src, %reason, "advert dropped");
                return Some(reason);
            }
        };
        if !self.running || matches!(self.state, State::Fault | State::Initialize) {
            self.stats.ignored += 1;
            return None;
        }
        self.stats.adverts_received += 1;
        if adv.priority == PRIORITY_STOP {
            self.stats.priority_zero_received += 1;
        }
        if !self.same_addresses(&adv.addresses) {
            self.stats.address_list_mismatch += 1;
            debug!(vrid = self.cfg.vrid, %src, "advert address list differs from ours");
        }
        match self.state {
            State::Backup => self.backup_rx(now, src, &adv),
            State::Master => self.master_rx(now, src, &adv),
            State::Initialize | State::Fault => {}
        }
        None
    }

    /// Counts a drop the caller detected before the VRRP payload (a
    /// malformed IP header, say).
    pub fn record_drop(&mut self, reason: DropReason) {
        self.stats.count_drop(reason);
    }

    /// Validation shared by every state: Ok(None) for another VRID.
    fn check(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
        bytes: &[u8],
    ) -> std::result::Result<Option<Heard>, DropReason> {
        if ttl != VRRP_TTL {
            return Err(DropReason::Ttl);
        }
        let adv = match self.cfg.version {
            Version::V2 => {
                let adv = Advertisement::decode(bytes).map_err(|e| e.drop_reason())?;
                if adv.vrid != self.cfg.vrid {
                    self.stats.other_vrid += 1;
                    return Ok(None);
                }
                let secs = u8::try_from(self.cfg.advert_int_cs / 100).unwrap_or(u8::MAX);
                adv.verify(&self.cfg.auth, secs)
                    .map_err(|e| e.drop_reason())?;
                if !src.is_ipv4() {
                    return Err(DropReason::AddressFamily);
                }
                Heard {
                    priority: adv.priority,
                    interval: interval_of(u16::from(adv.advert_int) * 100),
                    addresses: adv.addresses.into_iter().map(IpAddr::from).collect(),
                }
            }
            Version::V3 => {
                let ip = match (src, dst) {
                    (IpAddr::V4(src), IpAddr::V4(dst)) => PseudoHeader::V4 { src, dst },
                    (IpAddr::V6(src), IpAddr::V6(dst)) => PseudoHeader::V6 { src, dst },
                    _ => return Err(DropReason::AddressFamily),
                };
                // An advert of the other family than ours is not for us.
                if src.is_ipv4() != self.cfg.primary_ip.is_ipv4() {
                    return Err(DropReason::AddressFamily);
                }
                let adv = AdvertisementV3::decode(bytes, &ip).map_err(|e| e.drop_reason())?;
                if adv.vrid != self.cfg.vrid {
                    self.stats.other_vrid += 1;
                    return Ok(None);
                }
                Heard {
                    priority: adv.priority,
                    interval: interval_of(adv.interval_cs),
                    addresses: adv.addresses.to_ip_addrs(),
                }
            }
        };
        if src == self.cfg.primary_ip {
            return Err(DropReason::OwnAddress);
        }
        if !self.cfg.peers.is_empty() && !self.cfg.peers.contains(&src) {
            return Err(DropReason::NotPeer);
        }
        Ok(Some(adv))
    }

    fn backup_rx(&mut self, now: Instant, src: IpAddr, adv: &Heard) {
        if adv.priority == PRIORITY_STOP {
            trace!(vrid = self.cfg.vrid, %src, "master stopping, waiting Skew_Time");
            self.timers.master_down = Some(now + self.skew_time());
            self.priority_zero_seen = true;
            self.master = None;
            return;
        }
        let lower = adv.priority < self.effective;
        let accept = if !self.cfg.preempt || !lower || self.held {
            self.preempt_after = None;
            true
        } else if self.cfg.preempt_delay > Duration::ZERO {
            // Hold preemption back: keep treating the lower master as master
            // until the delay has passed.
            let after = *self
                .preempt_after
                .get_or_insert(now + self.cfg.preempt_delay);
            now < after
        } else {
            false
        };
        if accept {
            self.learn_interval(adv);
            self.timers.master_down = Some(now + self.master_down_interval());
            self.priority_zero_seen = false;
            self.master = Some((src, adv.priority));
        } else {
            trace!(vrid = self.cfg.vrid, %src, priority = adv.priority, "lower-priority master ignored, preempting");
        }
    }

    fn master_rx(&mut self, now: Instant, src: IpAddr, adv: &Heard) {
        if adv.priority == PRIORITY_STOP {
            // Another router gave up: make sure everyone knows who is master.
            self.reassert(now);
            return;
        }
        let theirs = (adv.priority, src);
        let ours = (self.effective, self.cfg.primary_ip);
        if theirs > ours {
            self.leave_master();
            self.learn_interval(adv);
            self.timers.master_down = Some(now + self.master_down_interval());
            self.master = Some((src, adv.priority));
            self.transition(
                State::Backup,
                Reason::HigherPriority {
                    from: src,
                    priority: adv.priority,
                },
            );
        } else {
            // A lower-priority router thinks it is master (split brain, or it
            // just started): answer at once so it steps down, and announce
            // the VIPs again, as keepalived does.
            debug!(vrid = self.cfg.vrid, %src, priority = adv.priority, "lower-priority master seen, re-asserting");
            self.reassert(now);
            self.lower_prio_garp(now);
        }
    }

    /// Gratuitous ARPs for a lower-priority master (equal priority and a
    /// lower address included), as keepalived 2.2's
    /// `vrrp_state_master_rx` sends them: `lower_prio_repeat` per VIP now,
    /// as many again after `lower_prio_delay` (0: none). After a partition
    /// heals, hosts that the other side's ARPs pointed at it learn our MAC
    /// again. Unlike keepalived, at most one burst per advert interval: a
    /// spoofed flood of adverts is not amplified into an ARP storm.
    fn lower_prio_garp(&mut self, now: Instant) {
        let repeat = self.cfg.garp.lower_prio_repeat;
        if repeat == 0 {
            return;
        }
        let interval = self.advert_interval();
        if self
            .lower_prio_garp_at
            .is_some_and(|last| now < last + interval)
        {
            self.stats.lower_prio_garps_held += 1;
            return;
        }
        self.lower_prio_garp_at = Some(now);
        self.garp(repeat);
        let delay = self.cfg.garp.lower_prio_delay;
        if delay > Duration::ZERO {
            self.timers.garp_lower_prio = Some(now + delay);
        }
    }

    /// VRRPv3: counts with the interval the master advertises (VRRPv2
    /// drops adverts whose interval is not ours, so nothing changes).
    fn learn_interval(&mut self, adv: &Heard) {
        if self.cfg.version == Version::V3 && adv.interval != self.master_adver_interval {
            debug!(
                vrid = self.cfg.vrid,
                ms = adv.interval.as_millis(),
                "master's advertisement interval learned"
            );
            self.master_adver_interval = adv.interval;
        }
    }

    /// Advertises at once (and restarts the advert timer), at most
    /// [`REASSERTS_PER_INTERVAL`] times per advert interval: a spoofed flood
    /// of lower-priority or priority-0 adverts gets a few answers per
    /// interval, not one each (the regular advert follows anyway).
    fn reassert(&mut self, now: Instant) {
        let interval = self.advert_interval();
        let (start, count) = match self.reasserts {
            Some((start, count)) if now < start + interval => (start, count),
            _ => (now, 0),
        };
        if count >= REASSERTS_PER_INTERVAL {
            self.stats.reasserts_held += 1;
            return;
        }
        self.reasserts = Some((start, count + 1));
        self.send_advert(self.effective);
        self.timers.advert = Some(now + interval);
    }

    fn start(&mut self, now: Instant) {
        if self.running {
            return;
        }
        self.running = true;
        if self.cfg.preempt_delay > Duration::ZERO {
            self.preempt_after = Some(now + self.cfg.preempt_delay);
        }
        if let Some(tracker) = self.failing_fault_tracker() {
            self.transition(State::Fault, Reason::Fault { tracker });
        } else {
            self.enter_backup_or_owner(now, Reason::Startup);
        }
    }

    fn enter_backup_or_owner(&mut self, now: Instant, reason: Reason) {
        if self.cfg.priority == PRIORITY_OWNER {
            let reason = if reason == Reason::Startup {
                Reason::AddressOwner
            } else {
                reason
            };
            self.become_master(now, reason);
        } else {
            // No master heard yet: count with our own interval.
            self.master_adver_interval = self.advert_interval();
            self.timers.master_down = Some(now + self.master_down_interval());
            self.priority_zero_seen = false;
            self.master = None;
            self.transition(State::Backup, reason);
        }
    }

    fn resume(&mut self, now: Instant) {
        if self.running {
            return;
        }
        if self.failing_fault_tracker().is_some() {
            return self.start(now);
        }
        self.running = true;
        self.become_master(now, Reason::Resumed);
    }

    fn hand_over(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        self.timers = Timers::default();
        self.transition(State::Initialize, Reason::HandedOver);
    }

    fn shutdown(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        if self.state == State::Master {
            self.leave_master();
            self.send_advert(PRIORITY_STOP);
        }
        self.timers = Timers::default();
        self.transition(State::Initialize, Reason::Shutdown);
    }

    fn tracker_changed(&mut self, now: Instant, name: &str, up: bool) {
        let mut known = false;
        for (spec, state) in self.cfg.trackers.iter().zip(self.tracker_up.iter_mut()) {
            if spec.name == name {
                *state = up;
                known = true;
            }
        }
        if !known {
            warn!(
                vrid = self.cfg.vrid,
                tracker = name,
                "unknown tracker ignored"
            );
            return;
        }
        let old = self.effective;
        self.effective = self.compute_priority();
        if old != self.effective {
            info!(
                vrid = self.cfg.vrid,
                tracker = name,
                up,
                from = old,
                to = self.effective,
                "effective priority changed"
            );
        }
        if !self.running {
            return;
        }
        match (self.state, self.failing_fault_tracker()) {
            (State::Fault, None) => self.enter_backup_or_owner(now, Reason::FaultCleared),
            (State::Fault, Some(_)) => {}
            (_, Some(tracker)) => {
                if self.state == State::Master {
                    self.leave_master();
                    self.send_advert(PRIORITY_STOP);
                }
                self.timers = Timers::default();
                self.transition(State::Fault, Reason::Fault { tracker });
            }
            (State::Master, None) if old != self.effective => {
                // Tell the backups now rather than at the next interval.
                self.send_advert(self.effective);
                self.timers.advert = Some(now + self.advert_interval());
            }
            _ => {}
        }
    }

    fn failing_fault_tracker(&self) -> Option<String> {
        self.cfg
            .trackers
            .iter()
            .zip(&self.tracker_up)
            .find(|(t, up)| t.weight == 0 && !**up)
            .map(|(t, _)| t.name.clone())
    }

    /// keepalived's rule: base + Σ(negative weights of down trackers) +
    /// Σ(positive weights of up trackers), clamped to 1..=254; the address
    /// owner ignores weights.
    fn compute_priority(&self) -> u8 {
        if self.cfg.priority == PRIORITY_OWNER {
            return PRIORITY_OWNER;
        }
        let delta: i64 = self
            .cfg
            .trackers
            .iter()
            .zip(&self.tracker_up)
            .map(|(t, up)| match (t.weight.signum(), up) {
                (1, true) | (-1, false) => i64::from(t.weight),
                _ => 0,
            })
            .sum();
        let p = (i64::from(self.cfg.priority) + delta).clamp(1, 254);
        u8::try_from(p).unwrap_or(1)
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.timers.master_down = None;
        self.master = None;
        self.master_adver_interval = self.advert_interval();
        self.lower_prio_garp_at = None;
        self.transition(State::Master, reason);
        self.stats.became_master += 1;
        for vip in &self.cfg.vips {
            self.outputs.push_back(Output::AddVip(*vip));
        }
        self.send_advert(self.effective);
        self.garp(self.cfg.garp.repeat);
        self.timers.advert = Some(now + self.advert_interval());
        self.timers.garp_delay =
            (self.cfg.garp.delay > Duration::ZERO).then(|| now + self.cfg.garp.delay);
        self.timers.garp_refresh = self.cfg.garp.refresh.map(|p| now + p);
    }

    /// Drops the VIPs and master timers (the caller sets the next state).
    fn leave_master(&mut self) {
        self.leave_master_timers();
        for vip in &self.cfg.vips {
            self.outputs.push_back(Output::DelVip(*vip));
        }
    }

    fn leave_master_timers(&mut self) {
        self.timers.advert = None;
        self.timers.garp_delay = None;
        self.timers.garp_refresh = None;
        self.timers.garp_lower_prio = None;
    }

    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        if from == to {
            return;
        }
        info!(vrid = self.cfg.vrid, %from, %to, %reason, priority = self.effective, "VRRP transition");
        self.state = to;
        self.outputs
            .push_back(Output::Transition { from, to, reason });
    }

    fn send_advert(&mut self, priority: u8) {
        let adv = Outgoing {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: self.cfg.advert_int_cs,
            auth: self.cfg.auth,
            addresses: self.cfg.vips.iter().map(|v| v.addr).collect(),
        };
        self.stats.adverts_sent += 1;
        if priority == PRIORITY_STOP {
            self.stats.priority_zero_sent += 1;
        }
        self.outputs.push_back(Output::SendAdvert(adv));
    }

    fn garp(&mut self, count: u32) {
        if count == 0 {
            return;
        }
        for vip in &self.cfg.vips {
            self.outputs.push_back(Output::GratuitousArp {
                addr: vip.addr,
                count,
            });
        }
    }

    fn same_addresses(&self, addrs: &[IpAddr]) -> bool {
        addrs.len() == self.cfg.vips.len() && self.cfg.vips.iter().all(|v| addrs.contains(&v.addr))
    }
}

/// The ranges and combinations a [`RouterConfig`] must respect.
fn validate(cfg: &RouterConfig) -> Result<()> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: &str| {
        errors.push(ConfigError::new(Instance::Unplaced, field, message));
    };
    if cfg.vrid == 0 {
        bad("virtual_router_id", "must be 1..255");
    }
    if cfg.priority == 0 {
        bad("priority", "must be 1..255");
    }
    match cfg.version {
        Version::V2
            if cfg.advert_int_cs == 0
                || !cfg.advert_int_cs.is_multiple_of(100)
                || cfg.advert_int_cs > 25_500 =>
        {
            bad("advert_int", "must be whole seconds, 1..255, for VRRPv2");
        }
        Version::V3 if cfg.advert_int_cs == 0 || cfg.advert_int_cs > MAX_INTERVAL_CS => {
            bad("advert_int", "must be 0.01..40.95 seconds for VRRPv3");
        }
        Version::V3 if cfg.auth != Auth::None => {
            bad("auth_pass", "VRRPv3 has no authentication");
        }
        _ => {}
    }
    if cfg.vips.len() > 255 {
        bad("virtual_ipaddress", "at most 255 addresses");
    }
    if !errors.is_empty() {
        return Err(Error::Config { errors });
    }
    Ok(())
}

/// An advertisement as the state machine needs it, from either version.
struct Heard {
    priority: u8,
    /// The interval it advertises.
    interval: Duration,
    addresses: Vec<IpAddr>,
}

/// A duration of `cs` centiseconds.
fn interval_of(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// Skew_Time for a priority: (256 − priority) / 256 s, exactly, in nanoseconds.
pub fn skew_time(priority: u8) -> Duration {
    Duration::from_nanos((256 - u64::from(priority)) * 3_906_250)
}

fn due(t: Option<Instant>, now: Instant) -> bool {
    t.is_some_and(|t| t <= now)
}

mod types;

pub use types::{
    Command, GarpConfig, Outgoing, Output, Reason, RouterConfig, State, TrackerSpec, Version, Vip,
};

#[cfg(test)]
mod tests;
