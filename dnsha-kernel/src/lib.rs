//! dnsha's kernel fast path: listeners whose packets never reach dnsha.
//!
//! For a listener with `forwarding = "kernel"`, dnsha programs an nftables
//! table of its own (`inet dnsha`) that DNATs each new flow to one of the
//! pool's **healthy** backends, in proportion to their weights, and
//! masquerades it so the answer comes back through the balancer; the
//! host's own queries (the `output` hook) are balanced too. dnsha's health
//! checks drive the table: when a backend goes down or comes back, its
//! maps and rules are replaced in one transaction, and the conntrack
//! entries of flows sent to a backend that went down are deleted, so the
//! next packet of a client that reuses its source port is balanced again.
//!
//! [`plan`] computes what the table should hold without touching the
//! kernel; [`nft`] turns that into netlink batches; [`KernelPath`] commits
//! them and reads the counters. Netlink is spoken by the `nlink` crate
//! (typed nftables and conntrack messages, pure Rust, no `nft` process).

pub mod error;
pub mod nft;
pub mod plan;

use std::collections::HashMap;
use std::net::IpAddr;

use nlink::netlink::netfilter::{ConntrackFilter, IpProtocol};
use nlink::netlink::nftables::{Family, ObjectState};
use nlink::netlink::{Connection, Netfilter, Nftables};

pub use error::{Error, Result};
use plan::{Layout, Plan, Proto};

/// Packets and bytes the kernel sent one way for one backend of one
/// listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes (IP headers included).
    pub bytes: u64,
}

impl Count {
    fn add(self, other: Self) -> Self {
        Self {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// What the kernel counted for one backend of one listener since dnsha
/// started (across reloads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendCounters {
    /// The listener.
    pub listener: String,
    /// The backend.
    pub backend: String,
    /// Queries sent to it.
    pub queries: Count,
    /// Answers from it.
    pub answers: Count,
}

/// The kernel side of the kernel listeners: the table, kept as the
/// current [`Layout`] and [`Plan`] say.
pub struct KernelPath {
    nft: Connection<Nftables>,
    ct: Connection<Netfilter>,
    layout: Layout,
    plan: Plan,
    /// Counts of tables replaced by a reload, by (listener, backend).
    carried: HashMap<(String, String), (Count, Count)>,
}

impl std::fmt::Debug for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPath")
            .field("layout", &self.layout)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl KernelPath {
    /// Installs the table for `layout` routing as `plan`, replacing one a
    /// previous run left. Fails with [`Error::Permission`] without
    /// CAP_NET_ADMIN.
    pub async fn start(layout: Layout, plan: Plan) -> Result<Self> {
        let nft = Connection::<Nftables>::new().map_err(Error::netlink("nftables socket"))?;
        let ct = Connection::<Netfilter>::new().map_err(Error::netlink("conntrack socket"))?;
        let mut path = Self {
            nft,
            ct,
            layout: Layout::default(),
            plan: Plan::default(),
            carried: HashMap::new(),
        };
        // A table another live dnsha keeps is not ours to replace: both
        // would rewrite it. One a dead process left is.
        if let Some(pid) = path.table_owner().await? {
            if pid != std::process::id() && is_dnsha(pid) {
                return Err(Error::Busy { pid });
            }
        }
        path.install(layout, plan).await?;
        Ok(path)
    }

    /// The layout installed.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The plan installed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Replaces the whole table (a reload changed the listeners or their
    /// backends), keeping the counts of backends that stay.
    pub async fn install(&mut self, layout: Layout, plan: Plan) -> Result<()> {
        if !self.layout.listeners.is_empty() {
            if let Ok(counts) = self.counters().await {
                self.carried = counts
                    .into_iter()
                    .map(|c| ((c.listener, c.backend), (c.queries, c.answers)))
                    .collect();
            }
        }
        let exists = self.table_owner().await?.is_some();
        let tx = nft::install(
            self.nft.transaction(),
            &layout,
            &plan,
            exists,
            std::process::id(),
        )?;
        tx.commit(&self.nft)
            .await
            .map_err(Error::netlink("installing the nftables table inet dnsha"))?;
        let old_plan = std::mem::take(&mut self.plan);
        let old_layout = std::mem::replace(&mut self.layout, layout);
        self.plan = plan;
        // Flows the old table sent to backends this one does not use, and
        // flows left to the userspace listeners, are balanced again.
        for (i, (l, backends)) in old_layout.listeners.iter().enumerate() {
            for (b, backend) in backends.iter().enumerate() {
                let kept = self
                    .layout
                    .listeners
                    .iter()
                    .enumerate()
                    .any(|(j, (l2, b2))| {
                        l2.addr == l.addr
                            && l2.proto == l.proto
                            && b2
                                .iter()
                                .position(|x| x.addr == backend.addr)
                                .is_some_and(|k| self.plan.uses(j, k))
                    });
                if old_plan.uses(i, b) && !kept {
                    self.forget(l.proto, l.addr, Some(backend.addr)).await;
                }
            }
        }
        for (i, (l, _)) in self.layout.listeners.clone().iter().enumerate() {
            if self.plan.serves(i) && l.proto == Proto::Udp {
                self.forget(l.proto, l.addr, None).await;
            }
        }
        Ok(())
    }

    /// Puts the table back if someone removed it (`nft flush ruleset`, as
    /// the nftables service runs at every restart, or a hand-made
    /// `delete table`): true when it did. A table another live dnsha took
    /// meanwhile is left to it, as an error.
    pub async fn ensure(&mut self) -> Result<bool> {
        match self.table_owner().await? {
            Some(pid) if pid == std::process::id() => Ok(false),
            Some(pid) if is_dnsha(pid) => Err(Error::Busy { pid }),
            _ => {
                let (layout, plan) = (self.layout.clone(), self.plan.clone());
                self.install(layout, plan).await?;
                Ok(true)
            }
        }
    }

    /// Routes as `plan` says (same layout), in one transaction, then
    /// deletes the flows of backends it no longer uses. Returns how many
    /// conntrack entries were deleted.
    pub async fn update(&mut self, plan: Plan) -> Result<usize> {
        if plan == self.plan {
            return Ok(0);
        }
        let tx = nft::update(self.nft.transaction(), &self.layout, &plan)?;
        tx.commit(&self.nft)
            .await
            .map_err(Error::netlink("updating the nftables maps of inet dnsha"))?;
        let old = std::mem::replace(&mut self.plan, plan);
        let mut deleted = 0;
        for (i, b) in old.dropped_in(&self.plan) {
            let Some((l, backends)) = self.layout.listeners.get(i) else {
                continue;
            };
            let Some(backend) = backends.get(b) else {
                continue;
            };
            let (proto, addr, to) = (l.proto, l.addr, backend.addr);
            deleted += self.forget(proto, addr, Some(to)).await;
        }
        for i in old.resumed_in(&self.plan) {
            if let Some((l, _)) = self.layout.listeners.get(i) {
                if l.proto == Proto::Udp {
                    let (proto, addr) = (l.proto, l.addr);
                    deleted += self.forget(proto, addr, None).await;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes the conntrack entries of flows to listener `addr` that were
    /// sent to backend `to`, or (`None`) that the host answered itself (the
    /// userspace listener's). A TCP connection whose entry goes is reset
    /// by its backend at its next packet: it was dead anyway.
    async fn forget(
        &self,
        proto: Proto,
        addr: std::net::SocketAddr,
        to: Option<std::net::SocketAddr>,
    ) -> usize {
        let mut filter = ConntrackFilter::new()
            .proto(match proto {
                Proto::Udp => IpProtocol::Udp,
                Proto::Tcp => IpProtocol::Tcp,
            })
            .orig_dst(addr.ip())
            .orig_dst_port(addr.port());
        filter = match to {
            Some(b) => filter.reply_src(b.ip()).reply_src_port(b.port()),
            None => filter.reply_src(addr.ip()).reply_src_port(addr.port()),
        };
        match self.ct.del_conntrack_matching(&filter).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(
                        listener = %addr,
                        backend = %to.map_or_else(|| "userspace".to_string(), |b| b.to_string()),
                        deleted = n,
                        "conntrack entries deleted: their next packet is balanced again"
                    );
                }
                n
            }
            Err(e) => {
                tracing::warn!(listener = %addr, error = %e, "cannot delete conntrack entries");
                0
            }
        }
    }

    /// The counts of every backend of every listener, including what
    /// tables replaced by reloads counted.
    pub async fn counters(&self) -> Result<Vec<BackendCounters>> {
        let objects = self
            .nft
            .list_objects_in(nft::TABLE, Family::Inet)
            .await
            .map_err(Error::netlink("reading the counters of inet dnsha"))?;
        let counts: HashMap<String, Count> = objects
            .into_iter()
            .filter_map(|o| match o.state {
                ObjectState::Counter { packets, bytes, .. } => {
                    Some((o.name, Count { packets, bytes }))
                }
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for (i, (l, backends)) in self.layout.listeners.iter().enumerate() {
            for (b, backend) in backends.iter().enumerate() {
                let read = |answers| {
                    counts
                        .get(&nft::counter_name(i, b, answers))
                        .copied()
                        .unwrap_or_default()
                };
                let (q0, a0) = self
                    .carried
                    .get(&(l.name.clone(), backend.name.clone()))
                    .copied()
                    .unwrap_or_default();
                out.push(BackendCounters {
                    listener: l.name.clone(),
                    backend: backend.name.clone(),
                    queries: q0.add(read(false)),
                    answers: a0.add(read(true)),
                });
            }
        }
        Ok(out)
    }

    /// `None` without a table; else the process its comment names (0 when
    /// it names none).
    async fn table_owner(&self) -> Result<Option<u32>> {
        let tables = self
            .nft
            .list_tables_in(Family::Inet)
            .await
            .map_err(Error::netlink("listing nftables tables"))?;
        Ok(tables
            .iter()
            .find(|t| t.name == nft::TABLE)
            .map(|t| t.comment.as_deref().and_then(nft::owner_of).unwrap_or(0)))
    }

    /// Removes the table (at exit: nothing stays behind to route packets
    /// to a dnsha that is gone).
    pub async fn remove(&mut self) -> Result<()> {
        if self.table_owner().await?.is_none() {
            return Ok(());
        }
        nft::remove(self.nft.transaction())
            .commit(&self.nft)
            .await
            .map_err(Error::netlink("removing the nftables table inet dnsha"))?;
        self.layout = Layout::default();
        self.plan = Plan::default();
        Ok(())
    }
}

/// Whether process `pid` runs and is a dnsha.
fn is_dnsha(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "dnsha")
}

/// Whether the kernel forwards IPv4 (or IPv6, for `v6`) packets: a kernel
/// listener's clients on other hosts need it. `None` when it cannot be read.
pub fn forwarding_enabled(ip: IpAddr) -> Option<bool> {
    let path = match ip {
        IpAddr::V4(_) => "/proc/sys/net/ipv4/ip_forward",
        IpAddr::V6(_) => "/proc/sys/net/ipv6/conf/all/forwarding",
    };
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim() != "0")
}
