//! A stored answer: what an answer may be kept for, where its TTLs are, and
//! how a hit is written for the client asking.

use dnsha_core::config::CacheConfig;
use dnsha_core::Millis;
use hickory_proto::op::{Header, MessageType, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::wire::dns::HEADER_LEN;

/// Largest answer kept: bigger ones (rare, TCP-only) are not stored, so a
/// full cache holds at most `max_entries` × this.
pub const MAX_STORED: usize = 16_384;

/// Why an answer was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// TC=1: a truncated answer is never served from the cache.
    Truncated,
    /// A TTL of 0, or below the cache's `min_ttl`.
    ShortTtl,
    /// An NXDOMAIN or NODATA answer without an SOA record to take its TTL
    /// from (RFC 2308), or negative caching is off.
    Negative,
    /// SERVFAIL or REFUSED while `servfail_ttl` is 0, or another error code.
    Rcode,
    /// Larger than [`MAX_STORED`], or not exactly one well-formed message.
    Malformed,
}

/// An answer ready to be stored: its bytes and what ages in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The answer as the backend sent it (ID and name case of the query
    /// that fetched it; both are rewritten for each client).
    pub(super) bytes: Box<[u8]>,
    /// Offsets of every record's TTL (OPT excluded) and the TTL there.
    pub(super) ttls: Box<[(u16, u32)]>,
    /// How long it is fresh, in seconds.
    pub(super) lifetime: u32,
    /// When it was stored.
    pub(super) inserted: Millis,
}

/// RFC 2181 §8: a TTL with the top bit set counts as 0.
fn ttl_of(t: u32) -> u32 {
    if t > i32::MAX as u32 {
        0
    } else {
        t
    }
}

impl Entry {
    /// Whether `answer` (to a query keyed with a question name of
    /// `qname_len` wire bytes) may be stored under `cfg`, and for how long.
    pub(super) fn analyse(
        answer: &[u8],
        qname_len: usize,
        cfg: &CacheConfig,
        now: Millis,
    ) -> Result<Self, NotStored> {
        if answer.len() > MAX_STORED {
            return Err(NotStored::Malformed);
        }
        let header =
            Header::read(&mut BinDecoder::new(answer)).map_err(|_| NotStored::Malformed)?;
        if header.message_type() != MessageType::Response || header.query_count() != 1 {
            return Err(NotStored::Malformed);
        }
        if header.truncated() {
            return Err(NotStored::Truncated);
        }
        // The question must be written out as the key's: same length, no
        // compression (it is overwritten with each client's casing).
        let qend = HEADER_LEN + qname_len + 4;
        if super::key::name_len(answer).ok() != Some(qname_len) || answer.len() < qend {
            return Err(NotStored::Malformed);
        }
        let mut dec = BinDecoder::new(answer);
        dec.read_slice(qend).map_err(|_| NotStored::Malformed)?;
        let records = walk(&mut dec, &header).ok_or(NotStored::Malformed)?;
        if !dec.is_empty() {
            return Err(NotStored::Malformed);
        }
        let lifetime = lifetime(&header, &records, cfg)?;
        Ok(Self {
            bytes: answer.into(),
            ttls: records.ttls.into_boxed_slice(),
            lifetime,
            inserted: now,
        })
    }

    /// Memory it holds, about.
    pub(super) fn size(&self) -> usize {
        self.bytes.len() + self.ttls.len() * 8 + size_of::<Self>()
    }

    /// Writes the answer for a client whose query (same question, case
    /// aside) is already in `out[..]` at offset 0: everything but the ID
    /// and the question, so the client's ID and name casing stay. TTLs are
    /// aged by the time spent here, or all set to `stale_ttl` when `stale`.
    /// `out` must hold `self.bytes.len()` bytes.
    pub(super) fn write_over(
        &self,
        out: &mut [u8],
        qname_len: usize,
        now: Millis,
        stale: Option<u32>,
    ) {
        let qend = HEADER_LEN + qname_len + 4;
        let n = self.bytes.len();
        out[2..HEADER_LEN].copy_from_slice(&self.bytes[2..HEADER_LEN]);
        out[qend..n].copy_from_slice(&self.bytes[qend..]);
        let age = u32::try_from(now.0.saturating_sub(self.inserted.0) / 1000).unwrap_or(u32::MAX);
        for &(at, ttl) in self.ttls.iter() {
            let at = usize::from(at);
            let v = stale.unwrap_or_else(|| ttl.saturating_sub(age));
            out[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
    }

    /// Whether the question of the stored answer is the query's: the same
    /// name (ASCII case aside), type and class.
    pub(super) fn same_question(&self, query: &[u8], qname_len: usize) -> bool {
        let qend = HEADER_LEN + qname_len + 4;
        match (
            self.bytes.get(HEADER_LEN..qend),
            query.get(HEADER_LEN..qend),
        ) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }

    /// The question name in lower case, as text (for purges).
    pub(super) fn qname_wire(&self) -> &[u8] {
        let len = super::key::name_len(&self.bytes).unwrap_or(0);
        self.bytes
            .get(HEADER_LEN..HEADER_LEN + len)
            .unwrap_or_default()
    }

    /// The question type.
    pub(super) fn qtype(&self) -> u16 {
        let at = HEADER_LEN + self.qname_wire().len();
        match self.bytes.get(at..at + 2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => 0,
        }
    }
}

/// What the records of an answer say about its TTLs.
#[derive(Debug, Default)]
struct Records {
    ttls: Vec<(u16, u32)>,
    /// Smallest TTL of the records, OPT, SIG and TSIG aside.
    min_ttl: Option<u32>,
    /// min(TTL, MINIMUM) of the first SOA in the authority section.
    soa: Option<u32>,
}

/// Reads every record after the question; `None` when one does not parse.
fn walk(dec: &mut BinDecoder<'_>, header: &Header) -> Option<Records> {
    /// SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM end every SOA's data.
    const SOA_TAIL: usize = 20;
    let answers = u32::from(header.answer_count());
    let authority = u32::from(header.name_server_count());
    let total = answers + authority + u32::from(header.additional_count());
    let mut r = Records::default();
    for i in 0..total {
        Name::read(dec).ok()?;
        let rtype = RecordType::from(dec.read_u16().ok()?.unverified());
        dec.read_u16().ok()?;
        let at = u16::try_from(dec.index()).ok()?;
        let ttl = ttl_of(dec.read_u32().ok()?.unverified());
        let len = dec.read_u16().ok()?.unverified();
        let data = dec.read_slice(usize::from(len)).ok()?.unverified();
        if rtype == RecordType::OPT {
            continue;
        }
        r.ttls.push((at, ttl));
        if matches!(rtype, RecordType::SIG | RecordType::TSIG) {
            continue;
        }
        r.min_ttl = Some(r.min_ttl.map_or(ttl, |m| m.min(ttl)));
        let in_authority = (answers..answers + authority).contains(&i);
        if rtype == RecordType::SOA && in_authority && r.soa.is_none() {
            let tail = data
                .len()
                .checked_sub(4)
                .filter(|_| data.len() >= SOA_TAIL)?;
            let minimum = u32::from_be_bytes(data.get(tail..)?.try_into().ok()?);
            r.soa = Some(ttl.min(ttl_of(minimum)));
        }
    }
    Some(r)
}

/// How long an answer stays fresh, by its response code and records.
fn lifetime(header: &Header, r: &Records, cfg: &CacheConfig) -> Result<u32, NotStored> {
    let positive = |ttl: u32| {
        if ttl == 0 || ttl < cfg.min_ttl {
            Err(NotStored::ShortTtl)
        } else {
            Ok(ttl.min(cfg.max_ttl))
        }
    };
    match header.response_code() {
        ResponseCode::NoError if header.answer_count() > 0 => positive(r.min_ttl.unwrap_or(0)),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            if cfg.max_negative_ttl == 0 {
                return Err(NotStored::Negative);
            }
            match r.soa {
                Some(ttl) => positive(ttl.min(cfg.max_negative_ttl)),
                None => Err(NotStored::Negative),
            }
        }
        ResponseCode::ServFail | ResponseCode::Refused if cfg.servfail_ttl > 0 => {
            Ok(cfg.servfail_ttl)
        }
        _ => Err(NotStored::Rcode),
    }
}
