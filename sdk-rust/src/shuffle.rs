//! A shuffle of the application, and the map side: records in, a map status out.

use std::ops::Range;

use crail_serializers::{Encoder, Serializer};
use crail_shuffle::{MapWriter, Meta, ShuffleId};

use crate::records::ReadOptions;
use crate::{Crail, Error, Result};

/// Bytes a partition's encoder gathers before they go to the store.
const FLUSH_AT: usize = 1 << 20;

/// A registered shuffle: [`Shuffle::map_writer`] for map tasks, [`Shuffle::reader`] for
/// reduce tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shuffle {
    crail: Crail,
    id: ShuffleId,
    meta: Meta,
    serializer: Serializer,
}

impl Shuffle {
    pub(crate) fn new(crail: Crail, id: ShuffleId, meta: Meta, serializer: Serializer) -> Self {
        Self {
            crail,
            id,
            meta,
            serializer,
        }
    }

    /// The shuffle's identity (application, number).
    pub fn id(&self) -> &ShuffleId {
        &self.id
    }

    /// Map tasks.
    pub fn maps(&self) -> u32 {
        self.meta.maps
    }

    /// Reduce partitions.
    pub fn partitions(&self) -> u32 {
        self.meta.partitions
    }

    /// The record format.
    pub fn serializer(&self) -> &Serializer {
        &self.serializer
    }

    /// The output of attempt `attempt` of map `map`, written through this node's shuffle
    /// service (waits while every writer slot of the shuffle on the node is busy). Only the
    /// first attempt of a map to commit counts.
    pub async fn map_writer(&self, map: u32, attempt: u64) -> Result<MapOutput> {
        let writer = self
            .crail
            .shuffle_client()
            .map_writer(&self.id, map, attempt)
            .await?;
        Ok(MapOutput {
            id: self.id.clone(),
            writer,
            serializer: self.serializer.clone(),
            encoders: (0..self.meta.partitions).map(|_| None).collect(),
        })
    }

    /// A reduce task's read of `partitions` (from every map unless narrowed with
    /// [`ReadOptions::maps`]); [`ReadOptions::open`] starts it.
    pub fn reader(&self, partitions: Range<u32>) -> ReadOptions {
        ReadOptions::new(self.clone(), partitions)
    }

    /// The raw chunks of `partitions` from every map, bytes as stored (whole records of the
    /// serializer unless a map's segment passed 64 MiB), for engines that decode them
    /// themselves (the Python SDK hands them out without a copy).
    pub async fn read_chunks(
        &self,
        partitions: Range<u32>,
    ) -> Result<crail_shuffle::PartitionReader> {
        Ok(self
            .crail
            .shuffle_client()
            .read(&self.id, partitions, None, 4)
            .await?)
    }

    /// The committed attempt of map `map`, with its bytes per partition
    /// ([`crail_shuffle::Error::NotCommitted`] if none is).
    pub async fn map_status(&self, map: u32) -> Result<MapStatus> {
        let commits = self
            .crail
            .shuffle_client()
            .commits(&self.id, Some(map..map.saturating_add(1)))
            .await?;
        let commit = commits
            .first()
            .ok_or_else(|| crail_shuffle::Error::NotCommitted {
                id: self.id.clone(),
                maps: vec![map],
            })?;
        Ok(self.status_of(commit))
    }

    fn status_of(&self, c: &crail_shuffle::Commit) -> MapStatus {
        MapStatus {
            map: c.map,
            attempt: c.attempt,
            bytes: crail_shuffle::lengths(c, self.meta.partitions),
            checksum: c.checksum,
        }
    }

    /// The committed maps so far, with their bytes per partition.
    pub async fn map_statuses(&self) -> Result<Vec<MapStatus>> {
        let commits = self.crail.shuffle_client().commits(&self.id, None).await?;
        Ok(commits.iter().map(|c| self.status_of(c)).collect())
    }

    pub(crate) fn crail(&self) -> &Crail {
        &self.crail
    }
}

/// What a committed map wrote: the shuffle's map status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapStatus {
    /// The map.
    pub map: u32,
    /// The attempt that committed.
    pub attempt: u64,
    /// Bytes it wrote to each partition (encoded, as stored).
    pub bytes: Vec<u64>,
    /// The engine's checksum of the output, as it gave it ([`MapOutput::set_checksum`]; 0 if
    /// it gave none).
    pub checksum: u64,
}

/// A map task's output: records per partition, encoded by the shuffle's serializer and sent
/// to the store in batches. Nothing is visible to readers before [`MapOutput::commit`];
/// dropping it uncommitted (or [`MapOutput::abort`]) leaves nothing behind.
#[derive(Debug)]
pub struct MapOutput {
    id: ShuffleId,
    writer: MapWriter,
    serializer: Serializer,
    /// Per partition, made at its first record.
    encoders: Vec<Option<Encoder>>,
}

impl MapOutput {
    /// Appends one record to `partition`.
    pub async fn write(&mut self, partition: u32, key: &[u8], value: &[u8]) -> Result<()> {
        let encoder = self.encoder(partition)?;
        encoder.push(key, value)?;
        if encoder.ready() >= FLUSH_AT {
            let bytes = encoder.take();
            self.writer.write(partition, &bytes).await?;
        }
        Ok(())
    }

    /// Appends bytes already encoded by the shuffle's serializer (whole records, or whole
    /// frames for a framed one) to `partition`, after the records written before.
    pub async fn write_serialized(&mut self, partition: u32, bytes: &[u8]) -> Result<()> {
        let pending = match self.encoder(partition)? {
            e if e.ready() > 0 => Some(e.finish()?),
            _ => None,
        };
        if let Some(pending) = pending {
            self.writer.write(partition, &pending).await?;
        }
        Ok(self.writer.write(partition, bytes).await?)
    }

    /// Sends what is left and commits the map: its output becomes readable, whole, once.
    /// Another attempt of the map's generation that committed first is an error
    /// ([`crail_shuffle::Error::AlreadyCommitted`]; [`Shuffle::map_status`] has its status), as
    /// is a later generation's commit ([`crail_shuffle::Error::Superseded`]).
    pub async fn commit(mut self) -> Result<MapStatus> {
        let partitions = self.writer.partitions();
        for p in 0..partitions {
            let rest = match self.encoders.get_mut(p as usize) {
                Some(Some(e)) => e.finish()?,
                _ => continue,
            };
            if !rest.is_empty() {
                self.writer.write(p, &rest).await?;
            }
        }
        let commit = self.writer.commit().await?;
        Ok(MapStatus {
            map: commit.map,
            attempt: commit.attempt,
            bytes: crail_shuffle::lengths(&commit, partitions),
            checksum: commit.checksum,
        })
    }

    /// Makes this output one of generation `generation`, the run of the map's stage it
    /// belongs to (0 unless set): see [`crail_shuffle::MapWriter::generation`].
    pub fn generation(mut self, generation: u32) -> Self {
        self.writer = self.writer.generation(generation);
        self
    }

    /// Keeps the engine's own checksum of the output with the commit (see
    /// [`crail_shuffle::MapWriter::set_checksum`]).
    pub fn set_checksum(&mut self, checksum: u64) {
        self.writer.set_checksum(checksum);
    }

    /// Gives up the map's output.
    pub async fn abort(self) {
        self.writer.abort().await;
    }

    fn encoder(&mut self, partition: u32) -> Result<&mut Encoder> {
        let partitions = self.encoders.len() as u32;
        match self.encoders.get_mut(partition as usize) {
            Some(slot) => Ok(slot.get_or_insert_with(|| self.serializer.encoder())),
            None => Err(Error::Shuffle(crail_shuffle::Error::PartitionOutOfRange {
                id: self.id.clone(),
                partition,
                partitions,
            })),
        }
    }
}
