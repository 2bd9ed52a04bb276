//! Counters kept by a [`Router`](crate::Router).

use std::fmt;

/// Why a received advertisement was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// IP TTL was not 255 (the packet crossed a router, or was forged).
    Ttl,
    /// Shorter than the fixed header and authentication data.
    Truncated,
    /// Longer than any advertisement can be.
    TooLong,
    /// Not VRRP version 2.
    Version,
    /// Not an ADVERTISEMENT.
    Type,
    /// Checksum mismatch.
    Checksum,
    /// Address count and length disagree.
    CountMismatch,
    /// Authentication type not ours (or not supported).
    AuthType,
    /// Wrong simple password.
    Password,
    /// Advertisement interval not ours.
    Interval,
    /// Malformed IP header around the advertisement.
    IpHeader,
    /// Our own advertisement looped back to us.
    OwnAddress,
    /// In unicast mode, from an address that is not a `unicast_peer`.
    NotPeer,
    /// VRRPv3: a Max Adver Int of 0 (no master can advertise that fast).
    ZeroInterval,
    /// VRRPv3: addresses of the other family (IPv4-mapped addresses in an
    /// IPv6 advertisement).
    AddressFamily,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 15] = [
        Self::Ttl,
        Self::Truncated,
        Self::TooLong,
        Self::Version,
        Self::Type,
        Self::Checksum,
        Self::CountMismatch,
        Self::AuthType,
        Self::Password,
        Self::Interval,
        Self::IpHeader,
        Self::OwnAddress,
        Self::NotPeer,
        Self::ZeroInterval,
        Self::AddressFamily,
    ];

    /// A short snake_case name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ttl => "ttl",
            Self::Truncated => "truncated",
            Self::TooLong => "too_long",
            Self::Version => "version",
            Self::Type => "type",
            Self::Checksum => "checksum",
            Self::CountMismatch => "count_mismatch",
            Self::AuthType => "auth_type",
            Self::Password => "password",
            Self::Interval => "interval",
            Self::IpHeader => "ip_header",
            Self::OwnAddress => "own_address",
            Self::NotPeer => "not_peer",
            Self::ZeroInterval => "zero_interval",
            Self::AddressFamily => "address_family",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one VRRP instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid advertisements for our VRID that were processed.
    pub adverts_received: u64,
    /// Advertisements sent (priority 0 included).
    pub adverts_sent: u64,
    /// Priority-0 advertisements received.
    pub priority_zero_received: u64,
    /// Priority-0 advertisements sent.
    pub priority_zero_sent: u64,
    /// Times this instance became master.
    pub became_master: u64,
    /// Valid advertisements whose address list differs from ours (accepted
    /// and logged, as RFC 3768 section 7.1 allows).
    pub address_list_mismatch: u64,
    /// Valid packets for another VRID (normal when instances share a link).
    pub other_vrid: u64,
    /// Valid advertisements received while stopped or in FAULT.
    pub ignored: u64,
    /// Immediate re-advertisements held back (a lower-priority or
    /// priority-0 advert came again within one advert interval): a spoofed
    /// flood cannot turn into an advert storm.
    pub reasserts_held: u64,
    /// Gratuitous ARP bursts for a lower-priority master held back (one
    /// came already within the advert interval).
    pub lower_prio_garps_held: u64,
    /// Sync group orders to follow a master not taken, because by the time
    /// they arrived this router was no longer a free backup: held, in
    /// another state, or backing up a master that beats it.
    pub sync_master_ignored: u64,
    dropped: [u64; DropReason::ALL.len()],
}

impl Stats {
    /// Adverts dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Adverts dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Every drop counter with its reason.
    pub fn dropped_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.dropped(*r)))
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut s = Stats::default();
        s.count_drop(DropReason::OwnAddress);
        s.count_drop(DropReason::Ttl);
        s.count_drop(DropReason::Ttl);
        assert_eq!(s.dropped(DropReason::Ttl), 2);
        assert_eq!(s.dropped_total(), 3);
        assert_eq!(s.dropped_by_reason().count(), DropReason::ALL.len());
    }
}
