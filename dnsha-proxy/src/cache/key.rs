//! The cache key of a query, read from its wire bytes without allocating.

use std::hash::{BuildHasher, Hasher};

use crate::wire::dns::HEADER_LEN;

/// EDNS option codes the key treats apart.
const OPT_COOKIE: u16 = 10;
const OPT_ECS: u16 = 8;
/// RR type of the EDNS pseudo-record.
const TYPE_OPT: u16 = 41;

/// What identifies a query's answer in a cache: two independent 64-bit
/// hashes of everything the answer depends on (the question with the name
/// in lower case, the RD, CD and AD bits, EDNS presence, version, the DO
/// bit, the payload size class and every option but cookies), and the UDP
/// size the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub(super) hash: u64,
    pub(super) check: u64,
    /// Wire length of the question name.
    pub(super) qname_len: usize,
    /// Largest answer the client takes over UDP: 512 without EDNS, else
    /// its advertised payload size (at least 512).
    pub udp_size: u16,
}

impl Key {
    /// The largest answer to send this client over UDP on a listener whose
    /// `max_udp_size` is `listener_max`; a larger one is cut to TC=1.
    pub fn udp_limit(&self, listener_max: usize) -> usize {
        usize::from(self.udp_size).min(listener_max)
    }
}

/// Why a query has no key: its answer is never cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncacheable {
    /// It carries an EDNS Client Subnet option and the cache is not keyed
    /// on it (`ecs = false`).
    Ecs,
    /// Records besides one OPT (a TSIG signature, say), or bytes that do
    /// not parse.
    Records,
}

/// The payload size class of the key: answers fetched for a client that
/// takes 1232 bytes or more serve each other; smaller ones apart.
fn size_class(payload: Option<u16>) -> u8 {
    match payload {
        None => 0,
        Some(p) if p < 1232 => 1,
        Some(_) => 2,
    }
}

/// Reads a query (validated by admission: one question, a name written out
/// in full) and hashes it with the cache's two keyed hashers. `ecs` says
/// whether an ECS option is keyed (else the query is uncacheable).
pub(super) fn key_of<S: BuildHasher>(
    msg: &[u8],
    hashers: &(S, S),
    ecs: bool,
) -> Result<Key, Uncacheable> {
    let bad = Uncacheable::Records;
    let header = msg.get(..HEADER_LEN).ok_or(bad)?;
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return Err(bad);
    }
    let qname_len = name_len(msg)?;
    let qend = HEADER_LEN + qname_len + 4;
    let question = msg.get(HEADER_LEN + qname_len..qend).ok_or(bad)?;
    // RD, then CD and AD.
    let flags = (header[2] & 0x01) | ((header[3] & 0x30) << 1);
    let (mut h1, mut h2) = (hashers.0.build_hasher(), hashers.1.build_hasher());
    let mut feed = |bytes: &[u8]| {
        h1.write(bytes);
        h2.write(bytes);
    };
    let mut pos = HEADER_LEN;
    while let Some(&len) = msg.get(pos) {
        let len = usize::from(len);
        let label = msg.get(pos + 1..pos + 1 + len).ok_or(bad)?;
        // A label at a time, lower-cased on the stack.
        let mut lower = [0u8; 64];
        let dest = lower.get_mut(..=len).ok_or(bad)?;
        dest[0] = len as u8;
        for (d, s) in dest[1..].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        feed(dest);
        pos += 1 + len;
        if len == 0 {
            break;
        }
    }
    feed(question);
    let rest = msg.get(qend..).ok_or(bad)?;
    let payload = if count(10) == 1 {
        let opt = Opt::read(rest)?;
        // The DO bit and the EDNS version.
        feed(&[
            flags | 0x80,
            size_class(Some(opt.payload)),
            opt.version,
            opt.flags_hi & 0x80,
        ]);
        let mut options = opt.options;
        while !options.is_empty() {
            let code = u16::from_be_bytes([options[0], *options.get(1).ok_or(bad)?]);
            let len = usize::from(u16::from_be_bytes([
                *options.get(2).ok_or(bad)?,
                *options.get(3).ok_or(bad)?,
            ]));
            let whole = options.get(..4 + len).ok_or(bad)?;
            match code {
                OPT_COOKIE => {}
                OPT_ECS if !ecs => return Err(Uncacheable::Ecs),
                _ => feed(whole),
            }
            options = &options[4 + len..];
        }
        Some(opt.payload)
    } else {
        if !rest.is_empty() {
            return Err(bad);
        }
        feed(&[flags, size_class(None)]);
        None
    };
    Ok(Key {
        hash: h1.finish(),
        check: h2.finish(),
        qname_len,
        udp_size: payload.map_or(512, |p| p.max(512)),
    })
}

/// The OPT record that ends a query.
struct Opt<'a> {
    payload: u16,
    version: u8,
    flags_hi: u8,
    options: &'a [u8],
}

impl<'a> Opt<'a> {
    /// `rest` must be exactly one OPT record with the root name.
    fn read(rest: &'a [u8]) -> Result<Self, Uncacheable> {
        let bad = Uncacheable::Records;
        let fixed = rest.get(..11).ok_or(bad)?;
        if fixed[0] != 0 || u16::from_be_bytes([fixed[1], fixed[2]]) != TYPE_OPT {
            return Err(bad);
        }
        let rdlen = usize::from(u16::from_be_bytes([fixed[9], fixed[10]]));
        let options = rest.get(11..).filter(|o| o.len() == rdlen).ok_or(bad)?;
        Ok(Self {
            payload: u16::from_be_bytes([fixed[3], fixed[4]]),
            version: fixed[6],
            flags_hi: fixed[7],
            options,
        })
    }
}

/// Wire length of the uncompressed name at offset 12 (labels of 1–63
/// bytes, 255 bytes at most).
pub(super) fn name_len(msg: &[u8]) -> Result<usize, Uncacheable> {
    let mut i = HEADER_LEN;
    loop {
        let len = usize::from(*msg.get(i).ok_or(Uncacheable::Records)?);
        if len == 0 {
            let total = i + 1 - HEADER_LEN;
            return if total <= 255 {
                Ok(total)
            } else {
                Err(Uncacheable::Records)
            };
        }
        if len > 63 {
            return Err(Uncacheable::Records);
        }
        i += 1 + len;
    }
}
