//! DNS over QUIC framing (RFC 9250 §4.2), sans-IO: on each bidirectional
//! stream the client sends one query as a 2-byte length and the message,
//! then ends the stream; the server answers the same way. The message ID
//! is 0 on the wire (a stream names the query), and anything else is a
//! connection error.
//!
//! The server side (the DoQ frontend) reads with [`query_of`] and writes
//! with [`frame_answer`]; the client side (`transport = "doq"` backends and
//! their health checks) writes with [`frame_query`], which keeps the
//! caller's ID aside, and reads with [`answer_of`], which puts it back.

/// Bytes of a DNS header.
const HEADER_LEN: usize = 12;

/// DOQ_NO_ERROR: closing without an error.
pub const NO_ERROR: u32 = 0x0;
/// DOQ_INTERNAL_ERROR.
pub const INTERNAL_ERROR: u32 = 0x1;
/// DOQ_PROTOCOL_ERROR: the peer broke the framing (a non-zero ID, a
/// length that is not the stream's, a message too short).
pub const PROTOCOL_ERROR: u32 = 0x2;
/// DOQ_REQUEST_CANCELLED: a stream given up (the query is dropped).
pub const REQUEST_CANCELLED: u32 = 0x3;
/// DOQ_EXCESSIVE_LOAD: closing a client that asks too much.
pub const EXCESSIVE_LOAD: u32 = 0x4;

/// The largest stream a query may take: the prefix and a 64 KiB message.
pub const MAX_STREAM: usize = 2 + 65_535;

/// Why a query stream is refused: each is a DOQ_PROTOCOL_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Fewer than two bytes: no length.
    NoLength,
    /// The length says one size, the stream holds another.
    LengthMismatch {
        /// What the prefix says.
        said: usize,
        /// What followed it.
        got: usize,
    },
    /// Shorter than a DNS header.
    TooShort,
    /// The message ID is not 0.
    NonZeroId,
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoLength => f.write_str("stream without a length prefix"),
            Self::LengthMismatch { said, got } => {
                write!(f, "length prefix says {said} bytes, the stream has {got}")
            }
            Self::TooShort => f.write_str("message shorter than a DNS header"),
            Self::NonZeroId => f.write_str("message ID is not 0"),
        }
    }
}

/// The query a whole stream holds, checked.
///
/// ```
/// use dnsha_core::doq::{query_of, FramingError};
/// let mut stream = vec![0, 12];
/// stream.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
/// assert_eq!(query_of(&stream).unwrap().len(), 12);
/// stream[3] = 7; // ID 7
/// assert_eq!(query_of(&stream), Err(FramingError::NonZeroId));
/// ```
pub fn query_of(stream: &[u8]) -> Result<&[u8], FramingError> {
    message_of(stream)
}

/// The message a whole stream holds: its length as the prefix says, at
/// least a header, ID 0.
fn message_of(stream: &[u8]) -> Result<&[u8], FramingError> {
    let (len, msg) = match stream {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => return Err(FramingError::NoLength),
    };
    if len != msg.len() {
        return Err(FramingError::LengthMismatch {
            said: len,
            got: msg.len(),
        });
    }
    if msg.len() < HEADER_LEN {
        return Err(FramingError::TooShort);
    }
    if msg[..2] != [0, 0] {
        return Err(FramingError::NonZeroId);
    }
    Ok(msg)
}

/// An answer as a stream carries it: the length, then `answer` with its
/// ID set to 0. `None` for an answer too large to frame.
pub fn frame_answer(answer: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(answer.len()).ok()?;
    let mut out = Vec::with_capacity(answer.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(answer);
    if let Some(id) = out.get_mut(2..4) {
        id.copy_from_slice(&[0, 0]);
    }
    Some(out)
}

/// A query as a client writes it on a new stream: the length, then `query`
/// with its ID set to 0. Returns the frame and the ID `query` carried, for
/// [`answer_of`] to put back. `None` for a message shorter than a header or
/// too large to frame.
///
/// ```
/// use dnsha_core::doq::{answer_of, frame_query};
/// let query = [0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// let (frame, id) = frame_query(&query).unwrap();
/// assert_eq!((&frame[..4], id), (&[0, 12, 0, 0][..], 0x1234));
/// // The server answers with ID 0; the caller gets its ID back.
/// let mut answer = frame.clone();
/// answer[4] |= 0x80; // QR
/// assert_eq!(&answer_of(&answer, id).unwrap()[..2], &[0x12, 0x34]);
/// ```
pub fn frame_query(query: &[u8]) -> Option<(Vec<u8>, u16)> {
    if query.len() < HEADER_LEN {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    frame_answer(query).map(|f| (f, id))
}

/// The answer a whole response stream holds, checked as RFC 9250 §4.2.1
/// asks of a client (length prefix matching the stream, at least a header,
/// ID 0), with `id` (the query's ID before [`frame_query`]) written back.
pub fn answer_of(stream: &[u8], id: u16) -> Result<Vec<u8>, FramingError> {
    let mut answer = message_of(stream)?.to_vec();
    if let Some(b) = answer.get_mut(..2) {
        b.copy_from_slice(&id.to_be_bytes());
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(msg: &[u8]) -> Vec<u8> {
        let mut s = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
        s.extend_from_slice(msg);
        s
    }

    #[test]
    fn streams_are_checked_as_rfc_9250_says() {
        let q = [
            0u8, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 0, 0, 1, 0, 1,
        ];
        assert_eq!(query_of(&stream(&q)), Ok(&q[..]));
        assert_eq!(query_of(&[]), Err(FramingError::NoLength));
        assert_eq!(query_of(&[0]), Err(FramingError::NoLength));
        let mut long = stream(&q);
        long.push(0);
        assert_eq!(
            query_of(&long),
            Err(FramingError::LengthMismatch { said: 21, got: 22 })
        );
        assert_eq!(
            query_of(&long[..10]),
            Err(FramingError::LengthMismatch { said: 21, got: 8 })
        );
        assert_eq!(query_of(&stream(&q[..5])), Err(FramingError::TooShort));
        let mut with_id = q;
        with_id[1] = 1;
        assert_eq!(query_of(&stream(&with_id)), Err(FramingError::NonZeroId));
    }

    #[test]
    fn answers_go_out_with_id_zero_and_their_length() {
        let a = [0x12u8, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        let f = frame_answer(&a).unwrap();
        assert_eq!(&f[..4], &[0, 12, 0, 0]);
        assert_eq!(&f[4..], &a[2..]);
        assert!(frame_answer(&vec![0; 70_000]).is_none());
    }

    #[test]
    fn client_queries_go_out_with_id_zero_and_answers_get_it_back() {
        let q = [
            0xabu8, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 0, 0, 1, 0, 1,
        ];
        let (f, id) = frame_query(&q).unwrap();
        assert_eq!(id, 0xabcd);
        assert_eq!(&f[..4], &[0, 21, 0, 0]);
        assert_eq!(&f[4..], &q[2..]);
        // What the server reads is a valid DoQ query.
        assert!(query_of(&f).is_ok());
        assert!(frame_query(&q[..11]).is_none());
        assert!(frame_query(&vec![0; 70_000]).is_none());

        let mut a = q;
        a[0] = 0;
        a[1] = 0;
        a[2] |= 0x80;
        let restored = answer_of(&stream(&a), id).unwrap();
        assert_eq!(&restored[..2], &[0xab, 0xcd]);
        assert_eq!(&restored[2..], &a[2..]);
        // A non-zero ID, a wrong length, a short message: framing errors.
        let mut bad = a;
        bad[1] = 9;
        assert_eq!(answer_of(&stream(&bad), id), Err(FramingError::NonZeroId));
        let mut long = stream(&a);
        long.push(0);
        assert!(matches!(
            answer_of(&long, id),
            Err(FramingError::LengthMismatch { .. })
        ));
        assert_eq!(answer_of(&stream(&a[..4]), id), Err(FramingError::TooShort));
        assert_eq!(answer_of(&[], id), Err(FramingError::NoLength));
    }
}
