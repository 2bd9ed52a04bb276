//! VRRPv3 advertisements (RFC 5798 section 5), for IPv4 and IPv6.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                       IPvX Address(es)                        |
//! ```
//!
//! Unlike VRRPv2 there is no authentication, the interval is 12 bits of
//! centiseconds (0.01 s to 40.95 s), and the checksum covers the IP
//! pseudo-header, so decoding and encoding need the packet's source and
//! destination addresses ([`PseudoHeader`]).
//!
//! ```
//! use dnsha_vrrp::codec::v3::{Addresses, AdvertisementV3, PseudoHeader};
//!
//! let ip = PseudoHeader::v6("fe80::1".parse().unwrap());
//! let adv = AdvertisementV3 {
//!     vrid: 135,
//!     priority: 100,
//!     interval_cs: 10,
//!     addresses: Addresses::V6(vec!["2001:db8::5".parse().unwrap()]),
//! };
//! let bytes = adv.to_bytes(&ip);
//! assert_eq!(AdvertisementV3::decode(&bytes, &ip).unwrap(), adv);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    check_header, checksum_from, verify_checksum, DecodeError, HEADER_LEN, IPPROTO_VRRP,
    TYPE_ADVERTISEMENT, VRRP_GROUP,
};

/// The version this module speaks.
pub const VERSION_3: u8 = 3;
/// The IPv6 link-local multicast group of VRRP (RFC 5798 section 5.1.2.2).
pub const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Largest Max Adver Int: 12 bits of centiseconds (40.95 s).
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

/// The virtual addresses of an advertisement: all of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addresses {
    /// IPv4 addresses (an advertisement sent over IPv4).
    V4(Vec<Ipv4Addr>),
    /// IPv6 addresses (an advertisement sent over IPv6).
    V6(Vec<Ipv6Addr>),
}

impl Addresses {
    /// How many there are.
    pub fn len(&self) -> usize {
        match self {
            Self::V4(a) => a.len(),
            Self::V6(a) => a.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every address, as `IpAddr`.
    pub fn to_ip_addrs(&self) -> Vec<IpAddr> {
        match self {
            Self::V4(a) => a.iter().copied().map(IpAddr::V4).collect(),
            Self::V6(a) => a.iter().copied().map(IpAddr::V6).collect(),
        }
    }
}

/// The addresses of the IP header around an advertisement, which its
/// checksum covers (RFC 5798 section 5.2.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoHeader {
    /// Over IPv4.
    V4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination: the VRRP group, or a unicast peer.
        dst: Ipv4Addr,
    },
    /// Over IPv6.
    V6 {
        /// Source: the interface's link-local address.
        src: Ipv6Addr,
        /// Destination: ff02::12, or a unicast peer.
        dst: Ipv6Addr,
    },
}

impl PseudoHeader {
    /// From `src` to the IPv4 VRRP group 224.0.0.18.
    pub fn v4(src: Ipv4Addr) -> Self {
        Self::V4 {
            src,
            dst: VRRP_GROUP,
        }
    }

    /// From `src` to the IPv6 VRRP group ff02::12.
    pub fn v6(src: Ipv6Addr) -> Self {
        Self::V6 {
            src,
            dst: VRRP_GROUP_V6,
        }
    }

    /// Bytes per address of this family.
    fn address_len(&self) -> usize {
        match self {
            Self::V4 { .. } => 4,
            Self::V6 { .. } => 16,
        }
    }

    /// The one's complement sum of the pseudo-header for a VRRP payload of
    /// `len` bytes.
    fn sum(&self, len: usize) -> u32 {
        let mut bytes = Vec::with_capacity(40);
        match self {
            Self::V4 { src, dst } => {
                bytes.extend_from_slice(&src.octets());
                bytes.extend_from_slice(&dst.octets());
                bytes.extend_from_slice(&[0, IPPROTO_VRRP]);
                bytes.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            }
            Self::V6 { src, dst } => {
                bytes.extend_from_slice(&src.octets());
                bytes.extend_from_slice(&dst.octets());
                bytes.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
                bytes.extend_from_slice(&[0, 0, 0, IPPROTO_VRRP]);
            }
        }
        bytes
            .chunks_exact(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum()
    }
}

/// A decoded VRRPv3 advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisementV3 {
    /// Virtual router identifier (1..=255).
    pub vrid: u8,
    /// Sender's priority: 255 address owner, 0 master stopping.
    pub priority: u8,
    /// Max Adver Int in centiseconds (1..=4095).
    pub interval_cs: u16,
    /// The virtual addresses (at most 255, of the packet's family).
    pub addresses: Addresses,
}

impl AdvertisementV3 {
    /// Decodes a VRRPv3 payload (the bytes after the IP header) received
    /// with the addresses of `ip`.
    ///
    /// Checks, in order: enough bytes for the header, version 3, type 1,
    /// length against the address count and family, checksum over the
    /// pseudo-header, a non-zero interval, and (IPv6) no IPv4-mapped
    /// address.
    pub fn decode(buf: &[u8], ip: &PseudoHeader) -> Result<Self, DecodeError> {
        check_header(buf, VERSION_3, HEADER_LEN)?;
        let alen = ip.address_len();
        let max = HEADER_LEN + 255 * alen;
        if buf.len() > max {
            return Err(DecodeError::TooLong {
                len: buf.len(),
                max,
            });
        }
        let count = buf[3];
        if buf.len() != HEADER_LEN + alen * usize::from(count) {
            return Err(DecodeError::CountMismatch {
                count,
                len: buf.len(),
            });
        }
        verify_checksum(ip.sum(buf.len()), buf)?;
        let interval_cs = u16::from_be_bytes([buf[4] & 0x0f, buf[5]]);
        if interval_cs == 0 {
            return Err(DecodeError::ZeroInterval);
        }
        let body = &buf[HEADER_LEN..];
        let addresses = match ip {
            PseudoHeader::V4 { .. } => Addresses::V4(
                body.chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect(),
            ),
            PseudoHeader::V6 { .. } => {
                let mut out = Vec::with_capacity(usize::from(count));
                for c in body.chunks_exact(16) {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(c);
                    let address = Ipv6Addr::from(o);
                    if address.to_ipv4_mapped().is_some() {
                        return Err(DecodeError::AddressFamily { address });
                    }
                    out.push(address);
                }
                Addresses::V6(out)
            }
        };
        Ok(Self {
            vrid: buf[1],
            priority: buf[2],
            interval_cs,
            addresses,
        })
    }

    /// Length of the encoded advertisement.
    pub fn encoded_len(&self) -> usize {
        let alen = match self.addresses {
            Addresses::V4(_) => 4,
            Addresses::V6(_) => 16,
        };
        HEADER_LEN + alen * self.addresses.len().min(255)
    }

    /// Appends the encoded advertisement to `out`, its checksum computed
    /// for the addresses of `ip`. Addresses past the 255th are not encoded,
    /// and the interval is kept within 1..=4095 centiseconds.
    pub fn encode(&self, ip: &PseudoHeader, out: &mut Vec<u8>) {
        let start = out.len();
        let count = u8::try_from(self.addresses.len().min(255)).unwrap_or(u8::MAX);
        let interval = self.interval_cs.clamp(1, MAX_INTERVAL_CS).to_be_bytes();
        out.extend_from_slice(&[
            (VERSION_3 << 4) | TYPE_ADVERTISEMENT,
            self.vrid,
            self.priority,
            count,
            interval[0],
            interval[1],
            0,
            0,
        ]);
        match &self.addresses {
            Addresses::V4(a) => a
                .iter()
                .take(255)
                .for_each(|a| out.extend_from_slice(&a.octets())),
            Addresses::V6(a) => a
                .iter()
                .take(255)
                .for_each(|a| out.extend_from_slice(&a.octets())),
        }
        let len = out.len() - start;
        let sum = checksum_from(ip.sum(len), &out[start..]).to_be_bytes();
        out[start + 6] = sum[0];
        out[start + 7] = sum[1];
    }

    /// The encoded advertisement.
    pub fn to_bytes(&self, ip: &PseudoHeader) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(ip, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
