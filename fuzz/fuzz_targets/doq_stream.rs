//! The DoQ stream framing fed arbitrary streams: never panics; a stream it
//! accepts holds exactly the length its prefix says, at least a header,
//! and ID 0; and an accepted query framed back as an answer is read back
//! as the same message.
#![no_main]

use dnsha_proxy::wire::doq::{frame_answer, query_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = query_of(data) else {
        return;
    };
    assert_eq!(msg.len() + 2, data.len());
    assert_eq!(usize::from(u16::from_be_bytes([data[0], data[1]])), msg.len());
    assert!(msg.len() >= 12);
    assert_eq!(&msg[..2], &[0, 0]);
    let framed = frame_answer(msg).expect("a query fits a frame");
    assert_eq!(query_of(&framed), Ok(msg));
});
