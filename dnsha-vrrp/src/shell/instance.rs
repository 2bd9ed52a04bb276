//! The event loop of one instance: socket, timers and commands in, router
//! outputs carried out.

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info_span, warn, Instrument};

use super::garp::Garp;
use super::netlink::Netlink;
use super::notify::{Notifier, NotifyJob};
use super::socket::{VrrpSocket, RECV_BUF};
use super::socket6::{NeighborAdvert, Received, VrrpSocket6};
use super::{InstanceMsg, InstanceStatus};
use crate::codec::{parse_ipv4, IPPROTO_VRRP};
use crate::router::{Command, Output, Router, State};
use crate::stats::DropReason;

/// The advert socket of an instance, by family.
#[derive(Debug)]
pub(crate) enum AdvertSocket {
    V4(VrrpSocket),
    V6(VrrpSocket6),
}

/// What one receive gave.
enum Got {
    /// A whole IPv4 datagram of this length (header included).
    V4(usize),
    /// An IPv6 advert with its addresses.
    V6(Received),
}

impl AdvertSocket {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<Got> {
        match self {
            Self::V4(s) => s.recv(buf).await.map(Got::V4),
            Self::V6(s) => s.recv(buf).await.map(Got::V6),
        }
    }

    fn send(&mut self, adv: &crate::router::Outgoing) {
        match self {
            Self::V4(s) => s.send(adv),
            Self::V6(s) => s.send(adv),
        }
    }
}

/// How an instance announces the addresses it takes: gratuitous ARP for
/// IPv4, unsolicited neighbour advertisements for IPv6.
#[derive(Debug)]
pub(crate) enum Announcer {
    Arp(Garp),
    Neighbor(NeighborAdvert),
}

pub(crate) struct Instance {
    pub(crate) name: String,
    pub(crate) interface: String,
    pub(crate) ifindex: u32,
    pub(crate) router: Router,
    pub(crate) socket: AdvertSocket,
    pub(crate) announcer: Option<Announcer>,
    pub(crate) netlink: Netlink,
    pub(crate) notify: Option<(Notifier, String)>,
    pub(crate) status: watch::Sender<InstanceStatus>,
    pub(crate) transitions: u64,
    /// Wall-clock time of the last state change, in seconds since the
    /// Unix epoch.
    pub(crate) last_transition: Option<u64>,
    pub(crate) sync_group: Option<String>,
    /// Start as master: the process before this one handed mastership
    /// over for a restart ([`Command::Resume`]).
    pub(crate) resume: bool,
}

impl Instance {
    pub(crate) fn snapshot(&self) -> InstanceStatus {
        let r = &self.router;
        let st = r.stats();
        InstanceStatus {
            name: self.name.clone(),
            interface: self.interface.clone(),
            vrid: r.config().vrid,
            version: r.config().version.number(),
            family: if r.config().primary_ip.is_ipv6() {
                "ipv6"
            } else {
                "ipv4"
            }
            .to_owned(),
            advert_int_ms: u64::try_from(r.advert_interval().as_millis()).unwrap_or(u64::MAX),
            master_advert_int_ms: u64::try_from(r.master_adver_interval().as_millis())
                .unwrap_or(u64::MAX),
            state: r.state().as_str().to_owned(),
            priority: r.base_priority(),
            effective_priority: r.effective_priority(),
            vips: r.config().vips.iter().map(ToString::to_string).collect(),
            master: r.current_master().map(|(ip, _)| ip),
            transitions: self.transitions,
            last_transition: self.last_transition,
            adverts_received: st.adverts_received,
            adverts_sent: st.adverts_sent,
            priority_zero_received: st.priority_zero_received,
            became_master: st.became_master,
            dropped: st
                .dropped_by_reason()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect::<BTreeMap<_, _>>(),
            dropped_total: st.dropped_total(),
            sync_group: self.sync_group.clone(),
            own_fault: r
                .fault_tracker()
                .is_some_and(|t| !crate::sync::is_group_tracker(&t)),
            lost_election: r.backs_up_a_better_master(),
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<InstanceMsg>) {
        let span = info_span!("vrrp", instance = %self.name, vrid = self.router.config().vrid);
        async move {
            if self.resume {
                // The addresses the previous process left are ours.
                self.router.handle_command(Instant::now(), Command::Resume);
            } else {
                // Addresses left behind by a previous run are not ours yet.
                for vip in self.router.config().vips.clone() {
                    if let Err(e) = self.netlink.del_vip(self.ifindex, vip).await {
                        warn!(error = %e, "removing stale VIP failed");
                    }
                }
                self.router.handle_command(Instant::now(), Command::Start);
            }
            let mut buf = vec![0u8; RECV_BUF];
            loop {
                self.apply_outputs().await;
                self.status.send_replace(self.snapshot());
                let deadline = self
                    .router
                    .poll_timeout()
                    .map(tokio::time::Instant::from_std);
                tokio::select! {
                    res = self.socket.recv(&mut buf) => match res {
                        Ok(Got::V4(n)) => self.on_datagram(&buf[..n]),
                        Ok(Got::V6(r)) => {
                            let payload = buf.get(..r.len).unwrap_or_default();
                            self.on_advert(r.src, r.dst, r.hop_limit, payload);
                        }
                        Err(e) => {
                            warn!(error = %e, "VRRP socket receive failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    },
                    msg = rx.recv() => match msg {
                        Some(InstanceMsg::Router(cmd)) => {
                            self.router.handle_command(Instant::now(), cmd);
                        }
                        Some(InstanceMsg::Reconfigure(cfg, notify, done)) => {
                            let r = self.router.reconfigure(Instant::now(), *cfg);
                            if r.is_ok() {
                                if let Some((notifier, _)) = self.notify.take() {
                                    self.notify = notify.map(|p| (notifier, p));
                                }
                            }
                            let _ = done.send(r);
                        }
                        Some(InstanceMsg::Shutdown(ack)) => {
                            self.stop(Some(ack)).await;
                            return;
                        }
                        Some(InstanceMsg::HandOver(ack)) => {
                            self.router.handle_command(Instant::now(), Command::HandOver);
                            self.apply_outputs().await;
                            self.status.send_replace(self.snapshot());
                            let _ = ack.send(());
                            return;
                        }
                        None => {
                            self.stop(None).await;
                            return;
                        }
                    },
                    () = sleep_until(deadline) => {
                        self.router.handle_timeout(Instant::now());
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    async fn stop(&mut self, ack: Option<oneshot::Sender<()>>) {
        self.router
            .handle_command(Instant::now(), Command::Shutdown);
        self.apply_outputs().await;
        self.status.send_replace(self.snapshot());
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }

    fn on_datagram(&mut self, datagram: &[u8]) {
        let (meta, payload) = match parse_ipv4(datagram) {
            Ok(v) => v,
            Err(e) => {
                debug!(error = %e, "malformed IP datagram");
                self.router.record_drop(DropReason::IpHeader);
                return;
            }
        };
        if meta.protocol != IPPROTO_VRRP {
            return;
        }
        self.on_advert(meta.src.into(), meta.dst.into(), meta.ttl, payload);
    }

    fn on_advert(&mut self, src: std::net::IpAddr, dst: std::net::IpAddr, ttl: u8, payload: &[u8]) {
        let now = Instant::now();
        if let Some(reason) = self.router.handle_packet_to(now, src, dst, ttl, payload) {
            if reason != DropReason::OwnAddress {
                debug!(%src, %reason, "dropped advert");
            }
        }
    }

    async fn apply_outputs(&mut self) {
        while let Some(out) = self.router.poll_output() {
            match out {
                Output::SendAdvert(adv) => self.socket.send(&adv),
                Output::AddVip(vip) => {
                    if let Err(e) = self.netlink.add_vip(self.ifindex, vip).await {
                        error!(error = %e, "adding VIP failed");
                    }
                }
                Output::DelVip(vip) => {
                    if let Err(e) = self.netlink.del_vip(self.ifindex, vip).await {
                        error!(error = %e, "removing VIP failed");
                    }
                }
                Output::GratuitousArp { addr, count } => match (&self.announcer, addr) {
                    (Some(Announcer::Arp(g)), std::net::IpAddr::V4(a)) => g.send(a, count),
                    (Some(Announcer::Neighbor(n)), std::net::IpAddr::V6(a)) => n.send(a, count),
                    (None, _) => {}
                    (_, other) => warn!(%other, "address of the other family not announced"),
                },
                Output::Transition { to, .. } => {
                    self.transitions += 1;
                    self.last_transition = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs());
                    if let Some((notifier, program)) = &self.notify {
                        notifier.push(NotifyJob {
                            program: program.clone(),
                            instance: self.name.clone(),
                            state: to.as_str(),
                            priority: self.router.effective_priority(),
                        });
                    }
                    if to == State::Master {
                        debug!("now master");
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
