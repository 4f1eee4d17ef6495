//! The write path of a data-plane connection: a contiguous write (its payload on the stream
//! or in a staging slot), a scattered one (pieces, each to its own offset and checked against
//! its own crc32c), the block lock taken with a deadline, and the storing step.

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::{Conn, with_deadline};
use crate::datanode::conn_io::{Reply, no_staging, slot_error};
use crate::datanode::tier::Tier;
use crate::error::{Error, Result};
use crate::local::Staging;
use crate::proto as pb;
use crate::wire::frame::Frame;
use crate::wire::io;

impl<T: Tier> Conn<T> {
    /// A write: the payload follows the frame on the stream. `Err` only when the stream cannot
    /// be trusted any more; a refused write is an `Ok(Some(Failed))` reply. `Ok(None)`: the
    /// payload is in and a task of its own stores it and replies (a device write overlaps
    /// receiving the next request).
    pub(super) async fn write(
        &self,
        frame: &Frame,
        rd: &impl io::Socket,
        rbuf: &mut BytesMut,
        tx: &mpsc::Sender<Reply<T::Read>>,
        staging: Option<&Staging>,
    ) -> Result<Option<Reply<T::Read>>> {
        let id = frame.id;
        // Undecodable: the payload length is unknown, the stream cannot be resynchronised.
        let req: pb::WriteRequest = frame.decode_body("write request")?;
        let len = req.length as usize;
        if len as u64 > self.settings.block_size {
            return Err(Error::BadRange {
                offset: req.offset,
                length: len as u64,
                reason: format!(
                    "payload longer than a block ({} bytes)",
                    self.settings.block_size
                ),
            });
        }
        if !req.pieces.is_empty() {
            return self
                .write_scattered(&req, rd, rbuf, staging)
                .await
                .map(|r| {
                    Some(match r {
                        Ok(()) => Reply::Written { id },
                        Err(error) => Reply::Failed { id, error },
                    })
                });
        }
        if req.slot != 0 {
            // Nothing on the stream to skip: a refusal is just a reply.
            return Ok(match self.write_from_slot(&req, staging).await {
                Ok(Some(target)) => self.store(id, target, req.crc32c, tx).await,
                Ok(None) => Some(Reply::Written { id }),
                Err(error) => Some(Reply::Failed { id, error }),
            });
        }
        let deadline = self.settings.payload_timeout;
        let grant = self.grant_for(&req.grants, req.offset);
        let target = match self.admit(req.datanode, req.offset, len, grant, true) {
            Ok(_) if len == 0 => return Ok(Some(Reply::Written { id })),
            Ok(generation) => self.begin_write(req.offset, len, generation).await,
            Err(e) => Err(e),
        };
        let mut target = match target {
            Ok(target) => target,
            Err(error) => {
                with_deadline(deadline, async {
                    Ok(io::skip_payload(rd, rbuf, len).await?)
                })
                .await?;
                return Ok(Some(Reply::Failed { id, error }));
            }
        };
        // Dropping `target` on error marks the half-written range corrupt.
        with_deadline(deadline, async {
            Ok(io::read_payload(rd, rbuf, target.as_mut()).await?)
        })
        .await?;
        Ok(self.store(id, target, req.crc32c, tx).await)
    }

    /// The grant among `grants` for the block holding `offset`.
    fn grant_for<'g>(&self, grants: &'g [pb::Grant], offset: u64) -> Option<&'g pb::Grant> {
        let block = offset - offset % self.settings.block_size;
        grants.iter().find(|g| g.block == block)
    }

    /// Takes the lock of the block of an admitted `[offset, offset + len)` for a write of
    /// `generation`, waiting at most the payload timeout: the block may be locked by replies
    /// a slow client does not read.
    async fn begin_write(&self, offset: u64, len: usize, generation: u64) -> Result<T::Write> {
        let deadline = self.settings.payload_timeout;
        tokio::time::timeout(deadline, self.tier.begin_write(offset, len, generation))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    what: "waiting for the block's lock".into(),
                    after_ms: deadline.as_millis().try_into().unwrap_or(u64::MAX),
                })
            })
    }

    /// A scattered write (`pieces` set): each piece received, from the stream or the staging
    /// slot, checked and stored in turn; the first piece refused refuses the rest (their
    /// payload skipped), with pieces before it stored. The outer `Err` only when the stream
    /// cannot be trusted any more.
    async fn write_scattered(
        &self,
        req: &pb::WriteRequest,
        rd: &impl io::Socket,
        rbuf: &mut BytesMut,
        staging: Option<&Staging>,
    ) -> Result<Result<()>> {
        let len = req.length as usize;
        let deadline = self.settings.payload_timeout;
        let on_stream = req.slot == 0;
        // Payload bytes of refused pieces still on the stream.
        async fn skip(
            rd: &impl io::Socket,
            rbuf: &mut BytesMut,
            n: usize,
            on_stream: bool,
            deadline: std::time::Duration,
        ) -> Result<()> {
            if !on_stream {
                return Ok(());
            }
            with_deadline(deadline, async { Ok(io::skip_payload(rd, rbuf, n).await?) }).await
        }
        let pieces = match scatter(req) {
            Ok(pieces) => pieces,
            Err(error) => {
                skip(rd, rbuf, len, on_stream, deadline).await?;
                return Ok(Err(error));
            }
        };
        if !on_stream {
            let slot_ok = match staging {
                None => Err(no_staging()),
                Some(st) if req.slot > st.slots() || len > st.slot_size() => {
                    Err(slot_error(st, req.slot - 1, len))
                }
                Some(_) => Ok(()),
            };
            if let Err(error) = slot_ok {
                return Ok(Err(error));
            }
        }
        if let Err(error) = self.check_identity(req.datanode) {
            skip(rd, rbuf, len, on_stream, deadline).await?;
            return Ok(Err(error));
        }
        // Each grant checked once, however many pieces its block takes.
        let mut granted: Vec<(u64, u64)> = Vec::with_capacity(req.grants.len());
        for grant in &req.grants {
            if let Err(error) = self.admit(req.datanode, grant.block, 0, Some(grant), true) {
                skip(rd, rbuf, len, on_stream, deadline).await?;
                return Ok(Err(error));
            }
            granted.push((grant.block, grant.generation));
        }
        granted.sort_unstable();
        let bs = self.settings.block_size;
        let mut from = 0usize;
        for (i, &(rel, n, crc)) in pieces.iter().enumerate() {
            let offset = req.offset.saturating_add(u64::from(rel));
            let admitted = self.check_bounds(offset, n).and_then(|()| {
                let block = offset - offset % bs;
                granted
                    .binary_search_by_key(&block, |g| g.0)
                    .map(|i| granted[i].1)
                    .map_err(|_| Error::GrantRefused {
                        offset,
                        reason: "the request carries none for this piece's block".into(),
                    })
            });
            let target = match admitted {
                Ok(generation) => self.begin_write(offset, n, generation).await,
                Err(error) => Err(error),
            };
            let mut target = match target {
                Ok(target) => target,
                Err(error) => {
                    let rest: usize = pieces[i..].iter().map(|p| p.1).sum();
                    skip(rd, rbuf, rest, on_stream, deadline).await?;
                    return Ok(Err(error));
                }
            };
            if on_stream {
                // Dropping `target` on error marks the half-written range corrupt.
                with_deadline(deadline, async {
                    Ok(io::read_payload(rd, rbuf, target.as_mut()).await?)
                })
                .await?;
            } else if let Some(st) = staging
                && let Err(error) = st.copy_out_at(req.slot - 1, from, target.as_mut())
            {
                return Ok(Err(error));
            }
            if let Err(error) = self.tier.finish_write(target, crc).await {
                let rest: usize = pieces[i + 1..].iter().map(|p| p.1).sum();
                skip(rd, rbuf, rest, on_stream, deadline).await?;
                return Ok(Err(error));
            }
            from += n;
        }
        Ok(Ok(()))
    }

    /// Checks and stores a received write: inline (`Some(reply)`), or for a tier that waits
    /// for a device in a task of its own that sends the reply (`None`). The block stays
    /// locked until it is stored, so a later write to it waits.
    async fn store(
        &self,
        id: u64,
        target: T::Write,
        crc: u32,
        tx: &mpsc::Sender<Reply<T::Read>>,
    ) -> Option<Reply<T::Read>> {
        let tier = self.tier.clone();
        let work = async move {
            match tier.finish_write(target, crc).await {
                Ok(()) => Reply::Written { id },
                Err(error) => Reply::Failed { id, error },
            }
        };
        self.run_io(work, tx).await
    }

    /// A write whose payload is in a staging slot: copied from there into where the tier
    /// receives it, whose checksum pass (`finish_write`) then checks the copy (what the client
    /// put in the slot may change under us; what we stored may not). `None`: nothing to write.
    async fn write_from_slot(
        &self,
        req: &pb::WriteRequest,
        staging: Option<&Staging>,
    ) -> Result<Option<T::Write>> {
        let staging = staging.ok_or_else(no_staging)?;
        let len = req.length as usize;
        let slot = req.slot - 1;
        let grant = self.grant_for(&req.grants, req.offset);
        let generation = self.admit(req.datanode, req.offset, len, grant, true)?;
        if slot >= staging.slots() || len > staging.slot_size() {
            return Err(slot_error(staging, slot, len));
        }
        if len == 0 {
            return Ok(None);
        }
        let mut target = self.begin_write(req.offset, len, generation).await?;
        staging.copy_out(slot, target.as_mut())?;
        Ok(Some(target))
    }
}

/// A scattered write's pieces as (offset from the request's, length, crc32c), non-empty ones
/// only, refused unless they are whole triples adding up to the request's length.
fn scatter(req: &pb::WriteRequest) -> Result<Vec<(u32, usize, u32)>> {
    let bad = |reason: &str| Error::BadRange {
        offset: req.offset,
        length: u64::from(req.length),
        reason: reason.into(),
    };
    if !req.pieces.len().is_multiple_of(3) {
        return Err(bad(
            "scattered pieces are not whole (offset, length, crc32c) triples",
        ));
    }
    let pieces: Vec<(u32, usize, u32)> = req
        .pieces
        .chunks_exact(3)
        .map(|p| (p[0], p[1] as usize, p[2]))
        .filter(|p| p.1 > 0)
        .collect();
    let sum = pieces
        .iter()
        .try_fold(0u64, |sum, p| sum.checked_add(p.1 as u64));
    if sum != Some(u64::from(req.length)) {
        return Err(bad("scattered pieces do not add up to the payload"));
    }
    Ok(pieces)
}
