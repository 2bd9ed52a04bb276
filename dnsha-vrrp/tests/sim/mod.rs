//! A network of routers in simulated time, in the manner of quinn-proto's
//! `tests/util.rs`: every node is a sans-IO [`Router`], adverts travel with a
//! fixed latency, and time jumps from one deadline to the next.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dnsha_vrrp::{Command, Output, Reason, Router, RouterConfig, State, Vip};

pub(crate) const VIP: Vip = Vip {
    addr: std::net::IpAddr::V4(Ipv4Addr::new(192, 168, 1, 5)),
    prefix_len: 32,
};

/// A node: a router plus what the "kernel" would hold.
pub(crate) struct Node {
    pub(crate) router: Router,
    pub(crate) alive: bool,
    pub(crate) holds_vip: bool,
    pub(crate) transitions: Vec<(Duration, State, State, Reason)>,
    pub(crate) garps: Vec<Duration>,
    pub(crate) adverts_sent: usize,
}

struct InFlight {
    at: Instant,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

pub(crate) struct Net {
    pub(crate) t0: Instant,
    pub(crate) now: Instant,
    pub(crate) nodes: Vec<Node>,
    pub(crate) latency: Duration,
    /// Packets between these node groups are lost.
    pub(crate) partitioned: bool,
    /// Time during which more than one node held the VIP.
    pub(crate) dual_hold: Duration,
    in_flight: Vec<InFlight>,
}

pub(crate) fn config(last_octet: u8, priority: u8) -> RouterConfig {
    RouterConfig {
        vips: vec![VIP],
        auth: dnsha_vrrp::Auth::password("dnsvip"),
        ..RouterConfig::new(134, priority, Ipv4Addr::new(10, 0, 0, last_octet))
    }
}

impl Net {
    pub(crate) fn new(configs: Vec<RouterConfig>) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: t0,
            nodes: configs
                .into_iter()
                .map(|c| Node {
                    router: Router::new(c).expect("valid config"),
                    alive: false,
                    holds_vip: false,
                    transitions: Vec::new(),
                    garps: Vec::new(),
                    adverts_sent: 0,
                })
                .collect(),
            latency: Duration::from_millis(1),
            partitioned: false,
            dual_hold: Duration::ZERO,
            in_flight: Vec::new(),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub(crate) fn command(&mut self, i: usize, cmd: Command) {
        if matches!(cmd, Command::Start) {
            self.nodes[i].alive = true;
        }
        let now = self.now;
        self.nodes[i].router.handle_command(now, cmd);
        self.drain(i);
    }

    pub(crate) fn start(&mut self, i: usize) {
        self.command(i, Command::Start);
    }

    /// The process dies: no priority 0, its addresses vanish with it.
    pub(crate) fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.nodes[i].holds_vip = false;
        self.in_flight.retain(|p| p.from != i && p.to != i);
    }

    pub(crate) fn state(&self, i: usize) -> State {
        self.nodes[i].router.state()
    }

    pub(crate) fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive && self.state(*i) == State::Master)
            .collect()
    }

    pub(crate) fn holders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].holds_vip)
            .collect()
    }

    fn drain(&mut self, i: usize) {
        let now = self.now;
        let since = now - self.t0;
        while let Some(out) = self.nodes[i].router.poll_output() {
            match out {
                Output::SendAdvert(bytes) => {
                    self.nodes[i].adverts_sent += 1;
                    for to in 0..self.nodes.len() {
                        if to != i {
                            self.in_flight.push(InFlight {
                                at: now + self.latency,
                                from: i,
                                to,
                                bytes: bytes.encode(
                                    self.nodes[i].router.config().primary_ip,
                                    dnsha_vrrp::codec::VRRP_GROUP.into(),
                                ),
                            });
                        }
                    }
                }
                Output::AddVip(_) => self.nodes[i].holds_vip = true,
                Output::DelVip(_) => self.nodes[i].holds_vip = false,
                Output::GratuitousArp { .. } => self.nodes[i].garps.push(since),
                Output::Transition { from, to, reason } => {
                    self.nodes[i].transitions.push((since, from, to, reason))
                }
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.router.poll_timeout());
        let packets = self.in_flight.iter().map(|p| p.at);
        timers.chain(packets).min()
    }

    /// Advances to the next event (or `limit`), processes it; false if
    /// nothing happens before `limit`.
    pub(crate) fn step(&mut self, limit: Instant) -> bool {
        let next = match self.next_event() {
            Some(t) if t <= limit => t,
            _ => {
                self.advance_to(limit);
                return false;
            }
        };
        self.advance_to(next);
        let due: Vec<InFlight> = {
            let (due, rest) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|p| p.at <= next);
            self.in_flight = rest;
            due
        };
        for p in due {
            if !self.nodes[p.to].alive || self.partitioned {
                continue;
            }
            let src = self.nodes[p.from].router.config().primary_ip;
            self.nodes[p.to].router.handle_packet_to(
                next,
                src,
                dnsha_vrrp::codec::VRRP_GROUP.into(),
                255,
                &p.bytes,
            );
            self.drain(p.to);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                self.nodes[i].router.handle_timeout(next);
                self.drain(i);
            }
        }
        true
    }

    fn advance_to(&mut self, t: Instant) {
        if self.holders().len() > 1 && t > self.now {
            self.dual_hold += t - self.now;
        }
        self.now = t;
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }

    /// Runs until `pred` holds; returns the time it took, or None after `max`.
    pub(crate) fn run_until(
        &mut self,
        max: Duration,
        pred: impl Fn(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let limit = start + max;
        loop {
            if pred(self) {
                return Some(self.now - start);
            }
            if !self.step(limit) {
                return pred(self).then(|| self.now - start);
            }
        }
    }
}
