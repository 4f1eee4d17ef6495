//! A data connection's two tasks: the writer, which encodes queued requests (and their
//! payloads) onto the socket in batches, and the reader, which matches replies to their
//! waiters, receives read payloads into the callers' buffers and checks their crc32c, and
//! closes the connection when the datanode falls silent.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Closed, INLINE_PAYLOAD, MAX_REPLY_BODY, Out, Shared, Waiter};
use crate::error::Error;
use crate::proto as pb;
use crate::wire::frame;
use crate::wire::io::{self, Socket};
use crate::wire::kind::Kind;

pub(super) async fn write_requests(
    mut wr: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
) {
    let mut out = BytesMut::with_capacity(64 << 10);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Out::Read {
                    id,
                    datanode,
                    grant,
                    offset,
                    len,
                    slot,
                } => encode(
                    &mut out,
                    Kind::Read,
                    id,
                    &pb::ReadRequest {
                        offset,
                        length: len,
                        datanode,
                        slot,
                        grant: Some(grant),
                    },
                ),
                Out::Write {
                    id,
                    datanode,
                    grants,
                    offset,
                    crc,
                    len,
                    payload,
                    slot,
                    pieces,
                } => {
                    let header = pb::WriteRequest {
                        offset,
                        length: len,
                        crc32c: crc,
                        datanode,
                        slot,
                        pieces,
                        grants,
                    };
                    encode(&mut out, Kind::Write, id, &header);
                    if payload.len() <= INLINE_PAYLOAD {
                        out.extend_from_slice(&payload);
                    } else if let Err(e) = flush(&mut wr, &mut out)
                        .await
                        .and(wr.write_all(&payload).await)
                    {
                        shared.close(Closed::Lost(e.to_string()));
                        return;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = flush(&mut wr, &mut out).await {
            shared.close(Closed::Lost(e.to_string()));
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn encode<M: prost::Message>(out: &mut BytesMut, kind: Kind, id: u64, msg: &M) {
    // Request messages are a few fixed-size integers: far below any frame limit.
    let _ = frame::encode(out, kind, 0, id, msg, MAX_REPLY_BODY);
}

async fn flush(wr: &mut (impl AsyncWrite + Unpin), out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        wr.write_all(out).await?;
        out.clear();
    }
    // Over TLS, ciphertext the socket did not take yet leaves with the flush.
    wr.flush().await
}

pub(super) async fn read_replies<R: AsRef<S>, S: Socket>(
    rd: R,
    mut rbuf: BytesMut,
    shared: Arc<Shared>,
    silence: Duration,
    mut poll: io::BusyPoll,
) {
    let why = loop {
        match next_reply(rd.as_ref(), &mut rbuf, &shared, silence, &mut poll).await {
            Ok(true) => {}
            Ok(false) => break Closed::Lost("closed by the datanode".into()),
            Err(why) => break why,
        }
    };
    shared.close(why);
}

/// Handles one reply. `Ok(false)`: the datanode closed the connection.
async fn next_reply(
    rd: &impl Socket,
    rbuf: &mut BytesMut,
    shared: &Shared,
    silence: Duration,
    poll: &mut io::BusyPoll,
) -> std::result::Result<bool, Closed> {
    let frame = loop {
        match frame::decode(rbuf, MAX_REPLY_BODY) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(e) => return Err(Closed::Lost(format!("bad reply frame: {e}"))),
        }
        // Always bounded: a request registered while this read waits is covered too. Silence
        // with nothing outstanding is fine; with requests outstanding it kills the connection.
        let got = match tokio::time::timeout(silence, poll.read_some_upto(rd, rbuf, io::FRAME_READ))
            .await
        {
            Ok(got) => got,
            Err(_) if shared.table.lock().waiting.is_empty() => continue,
            Err(_) => return Err(Closed::Silent(silence)),
        };
        match got {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(Closed::Lost(e.to_string())),
        }
    };
    if frame.is_error() {
        if frame.id == 0 {
            return Err(match frame.decode_body::<pb::ErrorReply>("error reply") {
                Ok(reply) => Closed::Server(reply),
                Err(e) => Closed::Lost(e.to_string()),
            });
        }
        if let Some(waiter) = shared.take(frame.id) {
            waiter.fail(frame.into_error());
        }
        return Ok(true);
    }
    match Kind::from_u16(frame.kind) {
        Some(Kind::Write) => {
            match shared.take(frame.id) {
                Some(Waiter::Write(tx, _slot, len)) => {
                    let _ = tx.send(Ok(()));
                    if len <= io::BUSY_POLL_MAX_BYTES {
                        poll.arm();
                    }
                }
                Some(other) => other.fail(Error::malformed("reply", "a write reply to a read")),
                None => {}
            }
            Ok(true)
        }
        Some(Kind::Read) => {
            let reply: pb::ReadReply = frame
                .decode_body("read reply")
                .map_err(|e| Closed::Lost(e.to_string()))?;
            let len = reply.length as usize;
            match shared.take(frame.id) {
                Some(Waiter::Read {
                    mut buf,
                    at,
                    len: wanted,
                    offset,
                    tx,
                    slot,
                }) if wanted == len && reply.slot == slot.as_ref().map_or(0, |s| s.index + 1) => {
                    let dst = &mut buf.whole_mut()[at..at + len];
                    let staged = match (&slot, &shared.staging) {
                        (Some(slot), Some(staging)) => Some(staging.copy_out(slot.index, dst)),
                        _ => None,
                    };
                    drop(slot);
                    let result = match staged {
                        Some(Err(e)) => Err(e),
                        Some(Ok(())) => Ok(()),
                        None => {
                            tokio::time::timeout(silence, io::read_payload(rd, rbuf, dst))
                                .await
                                .map_err(|_| Closed::Silent(silence))?
                                .map_err(lost)?;
                            Ok(())
                        }
                    };
                    let result = result.and_then(|()| {
                        let crc = crate::crc::crc32c(dst);
                        if crc == reply.crc32c {
                            Ok(crc)
                        } else {
                            Err(Error::ChecksumMismatch {
                                location: format!("read from datanode {}", shared.addr),
                                offset,
                                expected: reply.crc32c,
                                actual: crc,
                            })
                        }
                    });
                    buf.set_len(at + len);
                    let _ = tx.send(result.map(|crc| (buf, crc)));
                    if len <= io::BUSY_POLL_MAX_BYTES {
                        poll.arm();
                    }
                }
                other => {
                    // The reply says where its payload went: on the stream (skipped here) or
                    // into a staging slot (nothing to skip).
                    if reply.slot == 0 {
                        tokio::time::timeout(silence, io::skip_payload(rd, rbuf, len))
                            .await
                            .map_err(|_| Closed::Silent(silence))?
                            .map_err(lost)?;
                    }
                    if let Some(waiter) = other {
                        waiter.fail(Error::malformed(
                            "read reply",
                            "length or staging slot differs from the request",
                        ));
                    }
                }
            }
            Ok(true)
        }
        _ => Err(Closed::Lost(format!(
            "unexpected reply kind {}",
            frame.kind
        ))),
    }
}

fn lost(e: std::io::Error) -> Closed {
    Closed::Lost(e.to_string())
}
