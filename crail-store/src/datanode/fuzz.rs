//! The data-plane request decoder driven by arbitrary bytes, for the fuzz target.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{Semaphore, mpsc};

use crate::local::Staging;
use crate::proto as pb;
use crate::wire::frame::{self};
use crate::wire::io::{self};
use crate::wire::kind::Kind;

use super::conn_io::{Reply, write_replies};
use super::server::*;

/// Feeds arbitrary bytes to a fresh DRAM datanode's request loop as if a same-host client
/// had sent them after attaching staging memory, and collects the replies. Must never panic or
/// hang, and every reply frame is whole. Used by the `datanode_requests` fuzz target; returns
/// the number of reply bytes.
pub fn fuzz_requests(data: &[u8]) -> usize {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return 0;
    };
    runtime.block_on(async {
        const BLOCK: u64 = 64 << 10;
        let (Ok(tier), Ok(staging)) = (
            super::tier::DramTier::new(4 * BLOCK, BLOCK),
            Staging::create(BLOCK, 2),
        ) else {
            return 0;
        };
        let conn = Conn {
            tier: Arc::new(tier),
            settings: Arc::new(Settings {
                secret: None,
                handshake_timeout: Duration::from_secs(1),
                payload_timeout: Duration::from_secs(1),
                block_size: BLOCK,
                max_connections: 1,
                max_handshakes: 1,
                identity: Arc::new(parking_lot::RwLock::new(super::Identity {
                    grants: crate::grant::GrantKey::derive(None, &[0; 32]),
                    registration: crate::types::Registration {
                        id: crate::types::DatanodeId(1),
                        incarnation: 0,
                        grant_salt: bytes::Bytes::new(),
                        adopted_blocks: 0,
                        lost_blocks: 0,
                    },
                })),
                // Random bytes cannot sign grants: checking them would keep the fuzzer out
                // of every read and write path.
                check_grants: false,
                gate: crate::wire::gate::Gate::default(),
                idle_timeout: std::time::Duration::ZERO,
                tls: None,
            }),
            tasks: Arc::new(Semaphore::new(REPLY_QUEUE)),
            checked: parking_lot::Mutex::default(),
        };
        let staging = Arc::new(staging);
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        let mut out = Vec::new();
        let writer = write_replies(&mut out, rx, Some(staging.clone()));
        let input = MemorySocket(parking_lot::Mutex::new(bytes::Bytes::copy_from_slice(data)));
        let reader = async {
            if let Err(error) = conn
                .read_requests(&input, BytesMut::new(), &tx, Some(&staging))
                .await
            {
                let _ = tx.send(Reply::Fatal(error)).await;
            }
            drop(tx);
        };
        tokio::join!(reader, writer);
        let mut replies = BytesMut::from(&out[..]);
        while let Ok(Some(frame)) = frame::decode(&mut replies, usize::MAX) {
            if frame.kind == Kind::Read as u16 && !frame.is_error() {
                // Inline read payloads follow their reply frames; staged ones are in a slot.
                let reply: pb::ReadReply = frame.decode_body("read reply").unwrap_or_default();
                if reply.slot == 0 {
                    let len = (reply.length as usize).min(replies.len());
                    let _ = replies.split_to(len);
                }
            }
        }
        assert!(replies.is_empty(), "a reply frame was cut short");
        out.len()
    })
}

/// Bytes to read, then end of stream: a socket for [`fuzz_requests`].
struct MemorySocket(parking_lot::Mutex<bytes::Bytes>);

impl io::Socket for MemorySocket {
    async fn readable(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn try_read(&self, dst: &mut [u8]) -> std::io::Result<usize> {
        let mut left = self.0.lock();
        let n = dst.len().min(left.len());
        dst[..n].copy_from_slice(&left.split_to(n));
        Ok(n)
    }

    fn try_read_buf<B: bytes::BufMut>(&self, dst: &mut B) -> std::io::Result<usize> {
        let mut left = self.0.lock();
        let n = dst.remaining_mut().min(left.len());
        dst.put_slice(&left.split_to(n));
        Ok(n)
    }

    fn try_io<R>(
        &self,
        _interest: tokio::io::Interest,
        f: impl FnOnce() -> std::io::Result<R>,
    ) -> std::io::Result<R> {
        f()
    }

    fn recv_now(&self, dst: &mut [u8]) -> std::io::Result<usize> {
        self.try_read(dst)
    }
}
