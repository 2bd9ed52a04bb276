//! DNS over streams (RFC 1035 §4.2.2, RFC 7766): each message is preceded
//! by its length in two bytes, big-endian.
//!
//! [`FrameDecoder`] reassembles messages from the bytes a stream delivers,
//! in whatever pieces they arrive; [`push_frame`] writes one. Both are
//! sans-IO: the TCP and DoT frontends, the stream upstreams and the health
//! checks read into [`FrameDecoder::read_buf`] with their own I/O and take
//! the messages out.
//!
//! ```
//! use dnsha_core::frame::{push_frame, FrameDecoder};
//!
//! let mut wire = Vec::new();
//! assert!(push_frame(&mut wire, b"abc"));
//! assert_eq!(wire, [0, 3, b'a', b'b', b'c']);
//!
//! let mut d = FrameDecoder::new();
//! d.push(&wire[..3]);
//! assert_eq!(d.next_message(), None);
//! assert!(d.partial());
//! d.push(&wire[3..]);
//! d.push(&[0]);
//! assert_eq!(d.next_message(), Some(b"abc".to_vec()));
//! assert!(d.partial());
//! d.push(&[0]);
//! assert_eq!(d.next_message(), Some(Vec::new())); // a zero length prefix
//! assert!(!d.partial());
//! ```

/// Room made at the end of the buffer before a read ([`FrameDecoder::read_buf`]).
const READ_RESERVE: usize = 4 * 1024;

/// Consumed bytes at the front of the buffer above which it is compacted.
pub const COMPACT_AT: usize = 16 * 1024;

/// Reassembly of length-prefixed DNS messages.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read the stream into (append only: bytes added at its
    /// end are decoded as if given to [`Self::push`]). Consumed bytes are
    /// dropped and room is made for a read of a few kilobytes first, so a
    /// driver calls this before every read (tokio's `read_buf` takes it as
    /// is).
    pub fn read_buf(&mut self) -> &mut Vec<u8> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < READ_RESERVE / 8 {
            self.buf.reserve(READ_RESERVE);
        }
        &mut self.buf
    }

    fn compact(&mut self) {
        if self.pos > 0 && (self.pos >= self.buf.len() || self.pos >= COMPACT_AT) {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.pos = 0;
        }
    }

    /// The next complete message (without its length prefix), if buffered. A
    /// zero length prefix yields an empty message.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.get(self.pos..)?;
        let [hi, lo, body @ ..] = rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let msg = body.get(..len)?.to_vec();
        self.pos += 2 + len;
        Some(msg)
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Bytes held in memory, consumed ones included (bounded by
    /// [`COMPACT_AT`] plus what is buffered).
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// True when bytes are buffered but do not yet form a complete message.
    pub fn partial(&self) -> bool {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest {
            [] => false,
            [_] => true,
            [hi, lo, body @ ..] => body.len() < usize::from(u16::from_be_bytes([*hi, *lo])),
        }
    }
}

/// Appends `msg` with its length prefix to `out`; messages over 65 535 bytes
/// cannot be framed and are skipped (returns false).
pub fn push_frame(out: &mut Vec<u8>, msg: &[u8]) -> bool {
    let Ok(len) = u16::try_from(msg.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    true
}

/// `msg` with its length prefix, or `None` when it is over 65 535 bytes.
pub fn framed(msg: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(msg.len() + 2);
    push_frame(&mut out, msg).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_pieces() {
        let q = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let mut bytes = Vec::new();
        push_frame(&mut bytes, &q);
        push_frame(&mut bytes, &q);
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(m) = d.next_message() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![q.to_vec(), q.to_vec()]);
        assert!(!d.partial());
        assert_eq!(d.buffered(), 0);
        d.push(&[0xff, 0xff, 1]);
        assert!(d.partial());
        assert_eq!(d.next_message(), None);
    }

    #[test]
    fn compacts() {
        let mut d = FrameDecoder::new();
        for _ in 0..10_000 {
            d.push(&[0, 3, 1, 2, 3]);
            assert_eq!(d.next_message(), Some(vec![1, 2, 3]));
        }
        assert!(d.held() <= COMPACT_AT + 5);
    }

    #[test]
    fn read_buf_appends() {
        let mut d = FrameDecoder::new();
        d.read_buf().extend_from_slice(&[0, 2, 7]);
        assert!(d.partial());
        d.read_buf().push(8);
        assert_eq!(d.next_message(), Some(vec![7, 8]));
    }

    #[test]
    fn oversized_messages_are_not_framed() {
        let mut out = Vec::new();
        assert!(!push_frame(&mut out, &vec![0; 65_536]));
        assert!(out.is_empty());
        assert!(framed(&[0; 65_535]).is_some());
        assert!(framed(&[0; 65_536]).is_none());
    }
}
