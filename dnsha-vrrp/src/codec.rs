//! VRRPv2 advertisement codec (RFC 3768 section 5) and the small IPv4
//! framing the raw socket needs.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//! |   Auth Type   |   Adver Int   |          Checksum             |
//! |                         IP Address (1..n)                     |
//! |                     Authentication Data (1)                   |
//! |                     Authentication Data (2)                   |
//! ```
//!
//! [`Advertisement::decode`] checks everything a packet carries by itself
//! (length, version, type, count, checksum, known auth type);
//! [`Advertisement::verify`] then checks it against our configuration
//! (auth type, password, interval), as keepalived does.
//!
//! ```
//! use dnsha_vrrp::codec::{Advertisement, Auth};
//!
//! let adv = Advertisement {
//!     vrid: 134,
//!     priority: 100,
//!     advert_int: 1,
//!     auth: Auth::password("dnsvip"),
//!     addresses: vec!["192.168.1.5".parse().unwrap()],
//! };
//! let bytes = adv.to_bytes();
//! assert_eq!(Advertisement::decode(&bytes).unwrap(), adv);
//! ```

use std::net::Ipv4Addr;

use crate::stats::DropReason;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The IPv4 multicast group VRRP advertisements are sent to.
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only TTL an advertisement may be sent or received with.
pub const VRRP_TTL: u8 = 255;
/// The VRRP version this codec speaks.
pub const VERSION: u8 = 2;
/// The ADVERTISEMENT packet type.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Length of the authentication data, present whatever the auth type.
pub const AUTH_LEN: usize = 8;
/// Shortest advertisement (no address).
pub const MIN_LEN: usize = HEADER_LEN + AUTH_LEN;
/// Longest advertisement (255 addresses).
pub const MAX_LEN: usize = MIN_LEN + 4 * 255;
/// Auth type 0: no authentication.
pub const AUTH_TYPE_NONE: u8 = 0;
/// Auth type 1: simple text password.
pub const AUTH_TYPE_PASS: u8 = 1;
/// Auth type 2: IP authentication header (RFC 2338, not supported).
pub const AUTH_TYPE_AH: u8 = 2;

/// Why a packet was rejected: by [`Advertisement::decode`] (what the packet
/// carries by itself), [`Advertisement::verify`] (against our configuration)
/// or [`parse_ipv4`] (the IP header).
///
/// Each variant maps onto one [`DropReason`] through
/// [`DecodeError::drop_reason`], which is how the router counts dropped
/// advertisements.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the fixed part of the packet (or of the IP header).
    #[error("packet truncated: {len} bytes, need at least {min}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// More bytes than any VRRPv2 advertisement can hold.
    #[error("packet too long: {len} bytes, at most {max}")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// Largest possible advertisement.
        max: usize,
    },
    /// The version nibble is not 2 (VRRPv3 packets land here).
    #[error("unsupported VRRP version {version}")]
    Version {
        /// The version found.
        version: u8,
    },
    /// The type nibble is not 1 (ADVERTISEMENT).
    #[error("unknown VRRP packet type {kind}")]
    Type {
        /// The type found.
        kind: u8,
    },
    /// The checksum does not match the contents.
    #[error("bad checksum: packet says {found:#06x}, contents give {computed:#06x}")]
    Checksum {
        /// Checksum carried by the packet.
        found: u16,
        /// Checksum computed over the packet.
        computed: u16,
    },
    /// The address count does not match the packet length.
    #[error("address count {count} does not match length {len}")]
    CountMismatch {
        /// The count field.
        count: u8,
        /// The VRRP payload length.
        len: usize,
    },
    /// The authentication type is unknown, unsupported, or not ours.
    #[error("authentication type {found}, expected {expected}")]
    AuthType {
        /// Type we are configured for.
        expected: u8,
        /// Type carried by the packet.
        found: u8,
    },
    /// Simple-password authentication with the wrong password.
    #[error("authentication password mismatch")]
    Password,
    /// The advertisement interval is not ours.
    #[error("advertisement interval {found}s, ours is {expected}s")]
    Interval {
        /// Our interval in seconds.
        expected: u8,
        /// The packet's interval in seconds.
        found: u8,
    },
    /// The IP header is malformed or is not a VRRP packet.
    #[error("bad IPv4 header: {reason}")]
    IpHeader {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// VRRPv3: the Max Adver Int is 0.
    #[error("advertisement interval of 0 centiseconds")]
    ZeroInterval,
    /// VRRPv3: an IPv6 advertisement carries IPv4(-mapped) addresses.
    #[error("address {address} is not an IPv6 virtual address")]
    AddressFamily {
        /// The offending address.
        address: std::net::Ipv6Addr,
    },
}

impl DecodeError {
    /// The drop counter this rejection feeds.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            Self::Truncated { .. } => DropReason::Truncated,
            Self::TooLong { .. } => DropReason::TooLong,
            Self::Version { .. } => DropReason::Version,
            Self::Type { .. } => DropReason::Type,
            Self::Checksum { .. } => DropReason::Checksum,
            Self::CountMismatch { .. } => DropReason::CountMismatch,
            Self::AuthType { .. } => DropReason::AuthType,
            Self::Password => DropReason::Password,
            Self::Interval { .. } => DropReason::Interval,
            Self::IpHeader { .. } => DropReason::IpHeader,
            Self::ZeroInterval => DropReason::ZeroInterval,
            Self::AddressFamily { .. } => DropReason::AddressFamily,
        }
    }
}

/// Authentication of an advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Auth {
    /// Auth type 0; the authentication data is sent as zeros and ignored.
    #[default]
    None,
    /// Auth type 1 (keepalived `auth_type PASS`): the password, zero-padded
    /// to 8 octets.
    Password([u8; AUTH_LEN]),
}

impl Auth {
    /// A simple password; bytes past the eighth are cut, as keepalived does
    /// (the config layer rejects longer passwords before they get here).
    pub fn password(pass: &str) -> Self {
        let mut data = [0u8; AUTH_LEN];
        for (d, s) in data.iter_mut().zip(pass.as_bytes()) {
            *d = *s;
        }
        Self::Password(data)
    }

    /// The auth type octet.
    pub fn kind(&self) -> u8 {
        match self {
            Self::None => AUTH_TYPE_NONE,
            Self::Password(_) => AUTH_TYPE_PASS,
        }
    }

    fn data(&self) -> [u8; AUTH_LEN] {
        match self {
            Self::None => [0; AUTH_LEN],
            Self::Password(p) => *p,
        }
    }
}

/// A decoded VRRPv2 advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// Virtual router identifier (1..=255).
    pub vrid: u8,
    /// Sender's priority: 255 address owner, 0 master stopping.
    pub priority: u8,
    /// Advertisement interval in seconds.
    pub advert_int: u8,
    /// Authentication.
    pub auth: Auth,
    /// The virtual addresses (at most 255).
    pub addresses: Vec<Ipv4Addr>,
}

impl Advertisement {
    /// Decodes a VRRP payload (the bytes after the IP header).
    ///
    /// Checks, in order: enough bytes for the header, version 2, type 1,
    /// length against the address count, checksum, and a known auth type.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        check_header(buf, VERSION, MIN_LEN)?;
        let count = buf[3];
        if buf.len() < MIN_LEN {
            return Err(DecodeError::Truncated {
                len: buf.len(),
                min: MIN_LEN,
            });
        }
        if buf.len() > MAX_LEN {
            return Err(DecodeError::TooLong {
                len: buf.len(),
                max: MAX_LEN,
            });
        }
        if buf.len() != MIN_LEN + 4 * usize::from(count) {
            return Err(DecodeError::CountMismatch {
                count,
                len: buf.len(),
            });
        }
        verify_checksum(0, buf)?;
        let addr_end = HEADER_LEN + 4 * usize::from(count);
        let addresses = buf[HEADER_LEN..addr_end]
            .chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect();
        let mut auth_data = [0u8; AUTH_LEN];
        auth_data.copy_from_slice(&buf[addr_end..addr_end + AUTH_LEN]);
        let auth = match buf[4] {
            AUTH_TYPE_NONE => Auth::None,
            AUTH_TYPE_PASS => Auth::Password(auth_data),
            found => {
                return Err(DecodeError::AuthType {
                    expected: AUTH_TYPE_PASS,
                    found,
                })
            }
        };
        Ok(Self {
            vrid: buf[1],
            priority: buf[2],
            advert_int: buf[5],
            auth,
            addresses,
        })
    }

    /// Checks a decoded advertisement against our configuration: same auth
    /// type, same password, same interval (RFC 3768 section 7.1; keepalived
    /// drops interval mismatches too).
    pub fn verify(&self, auth: &Auth, advert_int: u8) -> Result<(), DecodeError> {
        if self.auth.kind() != auth.kind() {
            return Err(DecodeError::AuthType {
                expected: auth.kind(),
                found: self.auth.kind(),
            });
        }
        if let (Auth::Password(ours), Auth::Password(theirs)) = (auth, &self.auth) {
            if ours != theirs {
                return Err(DecodeError::Password);
            }
        }
        if self.advert_int != advert_int {
            return Err(DecodeError::Interval {
                expected: advert_int,
                found: self.advert_int,
            });
        }
        Ok(())
    }

    /// Length of the encoded advertisement.
    pub fn encoded_len(&self) -> usize {
        MIN_LEN + 4 * self.addresses.len().min(255)
    }

    /// Appends the encoded advertisement, checksum included, to `out`.
    /// Addresses past the 255th are not encoded (the count is one octet).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let addresses = &self.addresses[..self.addresses.len().min(255)];
        let count = u8::try_from(addresses.len()).unwrap_or(u8::MAX);
        out.extend_from_slice(&[
            (VERSION << 4) | TYPE_ADVERTISEMENT,
            self.vrid,
            self.priority,
            count,
            self.auth.kind(),
            self.advert_int,
            0,
            0,
        ]);
        for a in addresses {
            out.extend_from_slice(&a.octets());
        }
        out.extend_from_slice(&self.auth.data());
        let sum = checksum(&out[start..]).to_be_bytes();
        out[start + 6] = sum[0];
        out[start + 7] = sum[1];
    }

    /// The encoded advertisement.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

/// The checks both versions' headers share: at least [`HEADER_LEN`] bytes
/// (`min` is what the error reports as needed), the version nibble, and the
/// ADVERTISEMENT type.
pub(crate) fn check_header(buf: &[u8], version: u8, min: usize) -> Result<(), DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            len: buf.len(),
            min,
        });
    }
    let found = buf[0] >> 4;
    if found != version {
        return Err(DecodeError::Version { version: found });
    }
    let kind = buf[0] & 0x0f;
    if kind != TYPE_ADVERTISEMENT {
        return Err(DecodeError::Type { kind });
    }
    Ok(())
}

/// Checks the checksum of an advertisement (bytes 6–7) summed from `sum`
/// (a pseudo-header's sum for VRRPv3, 0 for VRRPv2); the error reports the
/// value the sender should have written.
pub(crate) fn verify_checksum(sum: u32, buf: &[u8]) -> Result<(), DecodeError> {
    if checksum_from(sum, buf) == 0 {
        return Ok(());
    }
    let found = u16::from_be_bytes([buf[6], buf[7]]);
    let mut copy = buf.to_vec();
    copy[6] = 0;
    copy[7] = 0;
    Err(DecodeError::Checksum {
        found,
        computed: checksum_from(sum, &copy),
    })
}

/// The Internet checksum (RFC 1071) of `data`: the one's complement of the
/// one's complement sum of its 16-bit words. Over a packet whose checksum
/// field is filled in correctly it yields 0.
pub fn checksum(data: &[u8]) -> u16 {
    checksum_from(0, data)
}

/// The Internet checksum of `data`, starting from `sum`, the one's
/// complement sum of words that come before it (a pseudo-header).
pub(crate) fn checksum_from(sum: u32, data: &[u8]) -> u16 {
    let mut sum = sum;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The fields of an IPv4 header the VRRP shell needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Meta {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live as received.
    pub ttl: u8,
    /// Protocol number.
    pub protocol: u8,
}

/// Splits a raw IPv4 datagram (as a raw socket delivers it) into its header
/// fields and its payload, trimmed to the header's total length.
pub fn parse_ipv4(packet: &[u8]) -> Result<(Ipv4Meta, &[u8]), DecodeError> {
    if packet.len() < 20 {
        return Err(DecodeError::Truncated {
            len: packet.len(),
            min: 20,
        });
    }
    if packet[0] >> 4 != 4 {
        return Err(DecodeError::IpHeader { reason: "not IPv4" });
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || ihl > packet.len() {
        return Err(DecodeError::IpHeader {
            reason: "bad header length",
        });
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    // Linux hands raw sockets the datagram as received; a total length
    // larger than what arrived means the datagram was cut.
    if total < ihl || total > packet.len() {
        return Err(DecodeError::IpHeader {
            reason: "total length does not match",
        });
    }
    let meta = Ipv4Meta {
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        ttl: packet[8],
        protocol: packet[9],
    };
    Ok((meta, &packet[ihl..total]))
}

/// Builds an IPv4 datagram around `payload` as keepalived sends VRRP: TOS
/// 0xc0 (network control), DF clear, the given TTL and protocol, header
/// checksum filled in. Used with `IP_HDRINCL` so the source address is ours
/// to choose.
pub fn build_ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    protocol: u8,
    id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(usize::from(total));
    out.extend_from_slice(&[0x45, 0xc0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0, 0, ttl, protocol, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let sum = checksum(&out).to_be_bytes();
    out[10] = sum[0];
    out[11] = sum[1];
    out.extend_from_slice(payload);
    out
}

pub mod v3;

#[cfg(test)]
mod tests;
