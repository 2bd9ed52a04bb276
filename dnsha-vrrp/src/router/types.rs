//! The values going in and out of a [`Router`](super::Router): its
//! configuration, states, commands and outputs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::codec::v3::{Addresses, AdvertisementV3, PseudoHeader};
use crate::codec::{Advertisement, Auth};

/// The VRRP version an instance speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: whole-second intervals, optional simple password (the
    /// default, as keepalived's).
    #[default]
    V2,
    /// RFC 5798: centisecond intervals, no authentication, the checksum
    /// over the IP pseudo-header, the master's interval learned by backups.
    V3,
}

impl Version {
    /// `2` or `3`.
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

/// An advertisement to send: encoded per destination, since VRRPv3's
/// checksum covers the source and destination addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The version to encode.
    pub version: Version,
    /// Virtual router identifier.
    pub vrid: u8,
    /// Advertised priority (0 when the master stops).
    pub priority: u8,
    /// Advertisement interval in centiseconds.
    pub interval_cs: u16,
    /// VRRPv2 authentication.
    pub auth: Auth,
    /// The virtual addresses (all of the family of the router's address).
    pub addresses: Vec<IpAddr>,
}

impl Outgoing {
    /// The VRRP payload (no IP header) sent from `src` to `dst`: VRRPv2
    /// (IPv4 only), or VRRPv3 over the family of `src` and `dst` (only
    /// the addresses of that family are listed).
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let v4 = || -> Vec<Ipv4Addr> {
            self.addresses
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect()
        };
        match (self.version, src, dst) {
            (Version::V3, IpAddr::V6(src), IpAddr::V6(dst)) => AdvertisementV3 {
                vrid: self.vrid,
                priority: self.priority,
                interval_cs: self.interval_cs,
                addresses: Addresses::V6(
                    self.addresses
                        .iter()
                        .filter_map(|a| match a {
                            IpAddr::V6(a) => Some(*a),
                            IpAddr::V4(_) => None,
                        })
                        .collect(),
                ),
            }
            .to_bytes(&PseudoHeader::V6 { src, dst }),
            (Version::V3, src, dst) => AdvertisementV3 {
                vrid: self.vrid,
                priority: self.priority,
                interval_cs: self.interval_cs,
                addresses: Addresses::V4(v4()),
            }
            .to_bytes(&PseudoHeader::V4 {
                src: to_v4(src),
                dst: to_v4(dst),
            }),
            (Version::V2, _, _) => Advertisement {
                vrid: self.vrid,
                priority: self.priority,
                advert_int: u8::try_from(self.interval_cs / 100).unwrap_or(u8::MAX),
                auth: self.auth,
                addresses: v4(),
            }
            .to_bytes(),
        }
    }
}

/// An IPv4 address as itself, an IPv6 one as unspecified (mixed families
/// are refused by the configuration before they reach here).
fn to_v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

/// A virtual address with the prefix length it is added with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (32 unless configured).
    pub prefix_len: u8,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Gratuitous ARP timing, as keepalived's `garp_master_*` and
/// `garp_lower_prio_*` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarpConfig {
    /// Delay before the second burst after becoming master (0 = none).
    pub delay: Duration,
    /// ARPs per address in each burst on becoming master.
    pub repeat: u32,
    /// Period of refresh bursts while master (`None` = off).
    pub refresh: Option<Duration>,
    /// ARPs per address in each refresh burst.
    pub refresh_repeat: u32,
    /// Delay before the second burst after a master heard a lower-priority
    /// master (0 = none).
    pub lower_prio_delay: Duration,
    /// ARPs per address in each burst when a master hears a lower-priority
    /// master (0 = none).
    pub lower_prio_repeat: u32,
}

impl Default for GarpConfig {
    /// keepalived's defaults: 5 ARPs now, 5 more after 5 s, no refresh;
    /// the same for a lower-priority master.
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(5),
            repeat: 5,
            refresh: None,
            refresh_repeat: 1,
            lower_prio_delay: Duration::from_secs(5),
            lower_prio_repeat: 5,
        }
    }
}

/// A tracked condition and how it affects the priority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerSpec {
    /// Name used in [`Command::TrackerChanged`].
    pub name: String,
    /// keepalived semantics: negative weights are added while the tracker is
    /// down, positive weights while it is up, and weight 0 puts the instance
    /// in FAULT while it is down.
    pub weight: i32,
}

/// Everything a [`Router`] needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// Virtual router identifier, 1..=255.
    pub vrid: u8,
    /// Base priority, 1..=255 (255 = address owner).
    pub priority: u8,
    /// The VRRP version.
    pub version: Version,
    /// Advertisement interval in centiseconds: whole seconds from 1 to 255
    /// s for VRRPv2 (100..=25500), 1..=4095 (0.01 s to 40.95 s) for VRRPv3.
    pub advert_int_cs: u16,
    /// Authentication sent and required.
    pub auth: Auth,
    /// Virtual addresses, in the order they are advertised and added.
    pub vips: Vec<Vip>,
    /// Our source address, used to break priority ties.
    pub primary_ip: IpAddr,
    /// Whether a higher-priority backup preempts a lower-priority master.
    pub preempt: bool,
    /// How long after start (or after first seeing a lower-priority master)
    /// preemption waits.
    pub preempt_delay: Duration,
    /// Gratuitous ARP timing.
    pub garp: GarpConfig,
    /// Trackers and their weights; all start up.
    pub trackers: Vec<TrackerSpec>,
    /// Unicast mode: adverts are accepted from these addresses only (empty:
    /// multicast, any source on the link).
    pub peers: Vec<IpAddr>,
}

impl RouterConfig {
    /// A config with keepalived's defaults: advert_int 1 s, no auth, no VIP,
    /// preempt on, no delay, default GARP timing, no tracker.
    pub fn new(vrid: u8, priority: u8, primary_ip: impl Into<IpAddr>) -> Self {
        let primary_ip = primary_ip.into();
        Self {
            vrid,
            priority,
            version: Version::V2,
            advert_int_cs: 100,
            auth: Auth::None,
            vips: Vec::new(),
            primary_ip,
            preempt: true,
            preempt_delay: Duration::ZERO,
            garp: GarpConfig::default(),
            trackers: Vec::new(),
            peers: Vec::new(),
        }
    }
}

/// The states of RFC 3768 plus keepalived's FAULT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or shut down.
    Initialize,
    /// Listening for the master.
    Backup,
    /// Holding the VIPs and advertising.
    Master,
    /// A tracker with weight 0 is down: no VIP, no advert.
    Fault,
}

impl State {
    /// The state [`State::as_str`] names, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Initialize, Self::Backup, Self::Master, Self::Fault]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    /// The upper-case name keepalived uses in notify arguments.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "STOP",
            Self::Backup => "BACKUP",
            Self::Master => "MASTER",
            Self::Fault => "FAULT",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// [`Command::Start`] with a priority below 255.
    Startup,
    /// [`Command::Start`] as address owner (priority 255).
    AddressOwner,
    /// The Master_Down_Timer fired; `priority_zero` if it was shortened to
    /// Skew_Time by a stopping master.
    MasterDown {
        /// A priority-0 advertisement preceded the expiry.
        priority_zero: bool,
    },
    /// A better master advertised.
    HigherPriority {
        /// Its address.
        from: IpAddr,
        /// Its priority.
        priority: u8,
    },
    /// A weight-0 tracker went down.
    Fault {
        /// The tracker.
        tracker: String,
    },
    /// The last failing weight-0 tracker came back.
    FaultCleared,
    /// [`Command::Shutdown`].
    Shutdown,
    /// [`Command::Resume`]: the previous process was master a moment ago.
    Resumed,
    /// [`Command::HandOver`]: stopped for a restart, addresses left in
    /// place for the next process.
    HandedOver,
    /// Its sync group moved: another member became master
    /// ([`Command::SyncMaster`]) or lost its election
    /// ([`Command::SyncHold`]).
    SyncGroup,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Startup => f.write_str("startup"),
            Self::AddressOwner => f.write_str("address owner"),
            Self::MasterDown {
                priority_zero: false,
            } => f.write_str("master down timer expired"),
            Self::MasterDown {
                priority_zero: true,
            } => f.write_str("master stopped (priority 0)"),
            Self::HigherPriority { from, priority } => {
                write!(f, "advert from {from} with priority {priority}")
            }
            Self::Fault { tracker } => write!(f, "tracker {tracker} down"),
            Self::FaultCleared => f.write_str("fault cleared"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Resumed => f.write_str("resumed after a restart"),
            Self::HandedOver => f.write_str("handed over for a restart"),
            Self::SyncGroup => f.write_str("sync group"),
        }
    }
}

/// Inputs other than packets and time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Leave Initialize: become master if owner, else backup.
    Start,
    /// Give up mastership with a priority-0 advert and go to Initialize.
    Shutdown,
    /// Start as master at once, advertising and announcing the addresses:
    /// the process that ran before this one (a restart) was master a
    /// moment ago, and the backups have not taken over. Without a failing
    /// weight-0 tracker; otherwise as [`Command::Start`]. A better master
    /// heard afterwards wins as usual.
    Resume,
    /// Stop for a restart: no priority-0 advert and the addresses stay, so
    /// the backups keep waiting for the next process, which resumes
    /// ([`Command::Resume`]) within their Master_Down_Interval.
    HandOver,
    /// A tracker changed; unknown names are ignored (and logged).
    TrackerChanged {
        /// Tracker name as in [`TrackerSpec::name`].
        name: String,
        /// Whether it is now healthy.
        up: bool,
    },
    /// Sync group: another member backs up a master with a higher priority
    /// than its own (it lost its election). While held, a master resigns
    /// (priority 0, to BACKUP) and a backup does not preempt a
    /// lower-priority master, so the group's addresses stay together on
    /// one node.
    SyncHold(bool),
    /// Sync group: another member became master; a backup that is not held,
    /// not in FAULT and not backing up a master that beats it follows at
    /// once (the last check makes a stale order harmless).
    SyncMaster,
}

/// What the router wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this advertisement with TTL 255 to 224.0.0.18 or the unicast
    /// peers ([`Outgoing::encode`] gives the bytes for each destination).
    SendAdvert(Outgoing),
    /// Add this address to the interface.
    AddVip(Vip),
    /// Remove this address from the interface.
    DelVip(Vip),
    /// Send `count` gratuitous ARPs for this address.
    GratuitousArp {
        /// The address to announce (gratuitous ARP for IPv4, unsolicited
        /// neighbour advertisement for IPv6).
        addr: IpAddr,
        /// How many.
        count: u32,
    },
    /// The state changed.
    Transition {
        /// Old state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
    },
}
