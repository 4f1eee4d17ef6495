//! Frames: a fixed 16-byte little-endian header, then the body.
//!
//! ```text
//! 0       4       6       8               16
//! | len   | kind  | flags | request id    | body (len bytes) ...
//! ```
//!
//! `len` counts body bytes only and is checked against the receiver's limit before anything is
//! buffered, so a hostile length cannot make the receiver allocate. Replies carry the id of the
//! request they answer, so many requests can be in flight on one connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::error::{Error, Result};
use crate::proto as pb;
use crate::wire::kind::Kind;

/// Bytes before the body.
pub const HEADER_LEN: usize = 16;

/// The frame answers a request (it carries the request's id).
pub const FLAG_RESPONSE: u16 = 1;
/// The body is an error: the store's `ErrorReply`, or a node service's `Failure`.
pub const FLAG_ERROR: u16 = 2;
/// A file descriptor was sent with the frame's first byte (`SCM_RIGHTS`, Unix sockets only).
pub const FLAG_FD: u16 = 4;
/// The most a frame's announced length makes the reader reserve at once (64 KiB).
const RESERVE_STEP: usize = 64 << 10;

const KNOWN_FLAGS: u16 = FLAG_RESPONSE | FLAG_ERROR | FLAG_FD;

/// One decoded frame. The body is a view into the receive buffer, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message kind (numbers 1 to 127 are the store's, 128 and up the node services').
    pub kind: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// The request id (a reply carries its request's).
    pub id: u64,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// Whether the body is an error.
    pub fn is_error(&self) -> bool {
        self.flags & FLAG_ERROR != 0
    }

    /// Decodes the body as `M`, naming `what` in the error.
    pub(crate) fn decode_body<M: prost::Message + Default>(&self, what: &str) -> Result<M> {
        M::decode(self.body.clone()).map_err(|e| Error::malformed(what, e))
    }

    /// The error an error frame carries.
    pub(crate) fn into_error(self) -> Error {
        match self.decode_body::<pb::ErrorReply>("error reply") {
            Ok(reply) => Error::from_reply(reply),
            Err(e) => e,
        }
    }
}

/// Takes one whole frame off the front of `buf`, or returns `None` when more bytes are needed
/// (after reserving room for the rest of the frame). A length over `max_body` or unknown flag
/// bits are errors: the stream cannot be trusted after them.
pub fn decode(buf: &mut BytesMut, max_body: usize) -> Result<Option<Frame>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut header = &buf[..HEADER_LEN];
    let len = header.get_u32_le();
    let kind = header.get_u16_le();
    let flags = header.get_u16_le();
    let id = header.get_u64_le();
    let body_len = len as usize;
    if body_len > max_body {
        return Err(Error::FrameTooLarge {
            len: u64::from(len),
            max: max_body as u64,
        });
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::malformed(
            "frame header",
            format!("unknown flag bits {flags:#06x}"),
        ));
    }
    let total = HEADER_LEN + body_len;
    if buf.len() < total {
        // Room for the next step of the body only: memory follows the bytes that arrive,
        // not the length a peer announces.
        buf.reserve((total - buf.len()).min(RESERVE_STEP));
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let body = buf.split_to(body_len).freeze();
    Ok(Some(Frame {
        kind,
        flags,
        id,
        body,
    }))
}

/// Appends a frame with `msg` as its body. Nothing is written if the body would exceed
/// `max_body`.
pub(crate) fn encode<M: prost::Message>(
    out: &mut BytesMut,
    kind: Kind,
    flags: u16,
    id: u64,
    msg: &M,
    max_body: usize,
) -> Result<()> {
    encode_kind(out, kind as u16, flags, id, msg, max_body)
}

/// [`encode`] with a raw kind number (the node services' kinds are not the store's).
pub fn encode_kind<M: prost::Message>(
    out: &mut BytesMut,
    kind: u16,
    flags: u16,
    id: u64,
    msg: &M,
    max_body: usize,
) -> Result<()> {
    let len = msg.encoded_len();
    if len > max_body {
        return Err(Error::FrameTooLarge {
            len: len as u64,
            max: max_body as u64,
        });
    }
    out.reserve(HEADER_LEN + len);
    put_header(out, kind, flags, id, len);
    // Cannot fail: the buffer was reserved for `len` bytes above.
    msg.encode_raw(out);
    Ok(())
}

/// Appends an error frame answering request `id` (0 when it answers no request). The reply is
/// kept under 64 KiB whatever the error holds: long text is cut, long block lists trimmed.
pub(crate) fn encode_error(out: &mut BytesMut, id: u64, error: &Error) {
    use crate::error::clipped;
    let mut reply = error.to_reply();
    for text in [
        &mut reply.message,
        &mut reply.path,
        &mut reply.other_path,
        &mut reply.detail,
    ] {
        *text = clipped(text, 4096);
    }
    reply.blocks.truncate(2048);
    reply.datanodes.truncate(2048);
    let len = reply.encoded_len();
    out.reserve(HEADER_LEN + len);
    put_header(out, Kind::Error as u16, FLAG_RESPONSE | FLAG_ERROR, id, len);
    reply.encode_raw(out);
}

/// Appends a header announcing a body of `len` bytes (which the caller sends next).
pub fn put_header(out: &mut BytesMut, kind: u16, flags: u16, id: u64, len: usize) {
    // Lengths are bounded by max_body (itself a u32 in every config), so this never truncates.
    out.put_u32_le(u32::try_from(len).unwrap_or(u32::MAX));
    out.put_u16_le(kind);
    out.put_u16_le(flags);
    out.put_u64_le(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lookup(path: &str) -> pb::LookupRequest {
        pb::LookupRequest {
            path: Bytes::copy_from_slice(path.as_bytes()),
            hold: false,
        }
    }

    #[test]
    fn round_trips_a_pipeline_of_frames() {
        let mut buf = BytesMut::new();
        for id in 0..10u64 {
            encode(
                &mut buf,
                Kind::Lookup,
                0,
                id,
                &lookup(&format!("/f{id}")),
                1024,
            )
            .unwrap();
        }
        for id in 0..10u64 {
            let frame = decode(&mut buf, 1024).unwrap().unwrap();
            assert_eq!((frame.kind, frame.id), (Kind::Lookup as u16, id));
            let req: pb::LookupRequest = frame.decode_body("lookup").unwrap();
            assert_eq!(req.path, format!("/f{id}").as_bytes());
        }
        assert!(decode(&mut buf, 1024).unwrap().is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_for_partial_frames() {
        let mut whole = BytesMut::new();
        encode(&mut whole, Kind::Lookup, 0, 7, &lookup("/partial"), 1024).unwrap();
        let mut buf = BytesMut::new();
        for byte in &whole[..whole.len() - 1] {
            buf.put_u8(*byte);
            assert!(decode(&mut buf, 1024).unwrap().is_none());
        }
        buf.put_u8(whole[whole.len() - 1]);
        assert_eq!(decode(&mut buf, 1024).unwrap().unwrap().id, 7);
    }

    #[test]
    fn refuses_oversized_lengths_before_buffering() {
        let mut buf = BytesMut::new();
        put_header(&mut buf, Kind::Lookup as u16, 0, 1, u32::MAX as usize);
        let err = decode(&mut buf, 1 << 20).unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { len, max } if len == u64::from(u32::MAX) && max == 1 << 20)
        );
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn refuses_unknown_flags() {
        let mut buf = BytesMut::new();
        put_header(&mut buf, Kind::Lookup as u16, 0x80, 1, 0);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn encode_refuses_bodies_over_the_limit_and_writes_nothing() {
        let mut buf = BytesMut::new();
        let err = encode(&mut buf, Kind::Lookup, 0, 1, &lookup(&"x".repeat(100)), 10);
        assert!(matches!(err, Err(Error::FrameTooLarge { .. })));
        assert!(buf.is_empty());
    }

    #[test]
    fn error_frames_stay_small_whatever_the_error_holds() {
        let huge = Error::LostBlocks {
            path: "/p".repeat(1 << 20),
            blocks: (0..1 << 20).collect(),
            datanodes: vec![1],
        };
        let mut buf = BytesMut::new();
        encode_error(&mut buf, 1, &huge);
        assert!(buf.len() < 64 << 10, "{}", buf.len());
        let path = Error::invalid_path(&[0xff; 1 << 20], crate::path::PathProblem::NotUtf8);
        assert!(path.to_string().len() < 2048);
    }

    #[test]
    fn error_frames_carry_typed_errors() {
        let mut buf = BytesMut::new();
        encode_error(&mut buf, 5, &Error::NotFound { path: "/x".into() });
        let frame = decode(&mut buf, 1024).unwrap().unwrap();
        assert!(frame.is_error());
        assert!(matches!(frame.into_error(), Error::NotFound { path } if path == "/x"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode(&mut buf, 64) {
                let _ = frame.decode_body::<pb::CreateRequest>("create");
                let _ = frame.into_error();
            }
        }
    }
}
