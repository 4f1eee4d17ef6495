//! The service framing driven by arbitrary bytes, for the `service_frames` fuzz target.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::endpoint::Stream;
use crate::framed::{FrameReader, KIND_OPEN};
use crate::proto;

/// Feeds `data`, as a peer's bytes after the handshake, through a service connection's frame
/// reader (a real Unix socket pair), decoding an `Open` and any failure the frames carry, as
/// both sides do. Must never panic or hang.
pub fn fuzz_frames(data: &[u8]) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let Ok((ours, mut theirs)) = tokio::net::UnixStream::pair() else {
            return;
        };
        let (rd, _wr) = Stream::Unix(ours).split();
        let feed = async {
            let _ = theirs.write_all(data).await;
            let _ = theirs.shutdown().await;
        };
        let read = async {
            let mut frames = FrameReader::new(rd, BytesMut::new(), false);
            while let Ok((frame, _)) = frames.next().await {
                if frame.kind == KIND_OPEN {
                    let _ = <proto::Open as prost::Message>::decode(frame.body.clone());
                }
                if frame.is_error() {
                    let failure: Option<proto::Failure> =
                        prost::Message::decode(frame.body.clone()).ok();
                    if let Some(f) = failure {
                        let _ = crate::Failure::from_proto(f).to_string();
                    }
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            tokio::join!(feed, read)
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    #[test]
    fn frames_of_any_bytes_are_read_without_panics() {
        let mut open = BytesMut::new();
        crail_store::wire::frame::put_header(&mut open, 128, 0, 0, 3);
        open.extend_from_slice(&[0x0a, 0x01, b'a']);
        super::fuzz_frames(&open);
        super::fuzz_frames(b"not frames at all, and cut short");
        super::fuzz_frames(&[]);
    }
}
