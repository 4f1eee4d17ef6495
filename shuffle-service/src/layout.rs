//! Where a shuffle lives in the store, and the records kept there.
//!
//! ```text
//! /crail-shuffle/<app>/<shuffle>/
//!     meta, meta.r1, meta.r2  what register was given (JSON), on up to three nodes
//!     g/<host>-<slot>         a writer group's file: every map that ran on that slot of that
//!                             node writes here, each partition into extents of its own, and
//!                             the maps' commit records (binary, see [`Commit::encode`])
//!     g/<host>-<slot>.r<k>    its k-th replica, on another node (shuffles registered with a
//!                             replication factor above 1): the same bytes at the same offsets
//!     maps/<map>/             the committed attempt of a map: a directory holding one empty
//!                             directory whose name says where the record lies
//!                             ([`RecordRef`]); renamed into place, which the namenode
//!                             refuses if the name exists: the first attempt to commit wins,
//!                             exactly once
//!     pending/                markers being built, and lost ones moved aside
//! ```
//!
//! A group file is an arena: the node's slots place each map's bytes for a partition in that
//! partition's open extent of the file, and start a new extent (twice the last, up to a
//! block, never across one) when it is full. A reducer reads each partition from each group in
//! a few long runs, and the store holds the shuffle's bytes plus at most one part-filled
//! extent per partition and group, whatever the number of maps.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The root of every shuffle in the store.
pub const ROOT: &str = "/crail-shuffle";

/// A shuffle: an application's name and its shuffle number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShuffleId {
    /// The application (a Spark application id, a Ray job): letters, digits, `.`, `_`, `-`.
    pub app: String,
    /// The shuffle's number in the application.
    pub shuffle: u32,
}

impl ShuffleId {
    /// A shuffle of `app`.
    pub fn new(app: impl Into<String>, shuffle: u32) -> Self {
        Self {
            app: app.into(),
            shuffle,
        }
    }

    /// Refuses app names that are not one plain path component.
    pub(crate) fn check(&self) -> Result<()> {
        let ok = !self.app.is_empty()
            && self.app.len() <= 200
            && !self.app.starts_with('.')
            && self
                .app
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid {
                id: self.clone(),
                problem: "an app name is 1 to 200 letters, digits, '.', '_' or '-', not starting with '.'".into(),
            })
        }
    }

    pub(crate) fn app_dir(app: &str) -> String {
        format!("{ROOT}/{app}")
    }

    pub(crate) fn dir(&self) -> String {
        format!("{ROOT}/{}/{}", self.app, self.shuffle)
    }

    /// Copy `copy` of the shuffle's metadata (0: `meta`; k: `meta.rk`, on another node).
    pub(crate) fn meta_copy(&self, copy: u32) -> String {
        match copy {
            0 => format!("{}/meta", self.dir()),
            k => format!("{}/meta.r{k}", self.dir()),
        }
    }

    /// Copy `copy` (0: the file itself, k: its k-th replica) of the group file of `slot` of
    /// the node `host`.
    pub(crate) fn group_file(&self, host: &str, slot: u32, copy: u32) -> String {
        match copy {
            0 => format!("{}/g/{host}-{slot}", self.dir()),
            k => format!("{}/g/{host}-{slot}.r{k}", self.dir()),
        }
    }

    /// Where commit markers are built before they are renamed into `maps/`.
    pub(crate) fn pending_dir(&self) -> String {
        format!("{}/pending", self.dir())
    }

    pub(crate) fn maps_dir(&self) -> String {
        format!("{}/maps", self.dir())
    }

    /// Map `map`'s commit marker: a directory whose one entry says where its record lies.
    pub(crate) fn commit(&self, map: u32) -> String {
        format!("{}/maps/{map}", self.dir())
    }
}

impl fmt::Display for ShuffleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.shuffle)
    }
}

/// What `register` was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Map tasks.
    pub maps: u32,
    /// Reduce partitions.
    pub partitions: u32,
    /// The record format's name (see `crail_serializers::Serializer::by_name`).
    pub serializer: String,
    /// Copies of every group file, each on another node (1: no replicas). With 2, losing one
    /// node's datanodes needs no map to run again.
    #[serde(default = "one")]
    pub replication: u32,
}

impl Meta {
    /// A shuffle of `maps` maps into `partitions` partitions of `serializer` records, one copy.
    pub fn new(maps: u32, partitions: u32, serializer: impl Into<String>) -> Self {
        Self {
            maps,
            partitions,
            serializer: serializer.into(),
            replication: 1,
        }
    }

    /// With `copies` copies of every group file.
    pub fn replication(mut self, copies: u32) -> Self {
        self.replication = copies;
        self
    }
}

fn one() -> u32 {
    1
}

/// Where a map's writer group is: the lending node, its slot, and how many copies its file
/// has (the file and `copies - 1` replicas, same offsets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupRef {
    /// The node's name in group file names (its address).
    pub host: String,
    /// The slot.
    pub slot: u32,
    /// Copies of the group file.
    pub copies: u32,
}

/// Where a map's commit record lies: its group and the record's bytes in the group file. The
/// name of the one entry of `maps/<map>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// The group whose file holds the record.
    pub group: GroupRef,
    /// Where the record starts in the group file.
    pub offset: u64,
    /// Its bytes.
    pub len: u64,
}

impl RecordRef {
    /// The entry's name: `<host>-<slot>-<copies>-<offset>-<len>`.
    pub fn name(&self) -> String {
        let g = &self.group;
        format!(
            "{}-{}-{}-{}-{}",
            g.host, g.slot, g.copies, self.offset, self.len
        )
    }

    /// Parses [`RecordRef::name`].
    pub fn parse(name: &str) -> Option<Self> {
        let mut parts = name.rsplitn(5, '-');
        let len = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let copies = parts.next()?.parse().ok()?;
        let slot = parts.next()?.parse().ok()?;
        let host = parts.next()?.to_owned();
        if host.is_empty() || copies == 0 {
            return None;
        }
        Some(Self {
            group: GroupRef { host, slot, copies },
            offset,
            len,
        })
    }
}

/// A run of a segment: `len` bytes at `offset` of its group file, with their crc32c. A run
/// lies inside one extent, so inside one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Where the bytes start in the group file.
    pub offset: u64,
    /// How many.
    pub len: u32,
    /// Their crc32c.
    pub crc: u32,
}

/// A map's output for one partition: its runs, in order (see [`Commit::runs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The partition.
    pub partition: u32,
    /// Bytes in all.
    pub len: u64,
    first: u32,
    count: u32,
}

/// The committed attempt of a map: its group and its non-empty segments by partition. Kept
/// compact (24 bytes per segment and 16 per run in memory), since a reader keeps every map's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The map.
    pub map: u32,
    /// The attempt that committed.
    pub attempt: u64,
    /// The run of the map's stage it belongs to (0 first): a commit of a later generation
    /// replaces an earlier one's (see [`crate::MapWriter::generation`]).
    pub generation: u32,
    /// The engine's checksum of the output, kept for whoever reads the commit (0 unless the
    /// engine gave one: see [`crate::MapWriter::set_checksum`]).
    pub checksum: u64,
    /// The group file its bytes are in.
    pub group: GroupRef,
    segments: Vec<Segment>,
    runs: Vec<Run>,
}

/// The first bytes of a commit record: its format.
const RECORD_MAGIC: &[u8; 4] = b"CSR2";

impl Commit {
    /// A commit of `map` by `attempt` (of generation 0) in `group`, of `segments`: per
    /// partition (ascending, each once) its runs in order.
    pub fn new(
        map: u32,
        attempt: u64,
        group: GroupRef,
        segments: impl IntoIterator<Item = (u32, Vec<Run>)>,
    ) -> Self {
        let mut commit = Self {
            map,
            attempt,
            generation: 0,
            checksum: 0,
            group,
            segments: Vec::new(),
            runs: Vec::new(),
        };
        for (partition, runs) in segments {
            if runs.is_empty() {
                continue;
            }
            commit.segments.push(Segment {
                partition,
                len: runs.iter().map(|r| u64::from(r.len)).sum(),
                first: commit.runs.len() as u32,
                count: runs.len() as u32,
            });
            commit.runs.extend(runs);
        }
        commit
    }

    /// The non-empty segments, by partition.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segments of `partitions`.
    pub fn segments_in(&self, partitions: &std::ops::Range<u32>) -> &[Segment] {
        &self.segments[self.segment_range(partitions)]
    }

    /// Where the segments of `partitions` are in [`Commit::segments`].
    pub fn segment_range(&self, partitions: &std::ops::Range<u32>) -> std::ops::Range<usize> {
        let segs = &self.segments;
        // A map that wrote every partition has partition p at index p: look there first (a
        // reader scans every map's commit per read; a binary search misses the cache at
        // each step).
        let start = partitions.start as usize;
        let from = match segs.get(start) {
            Some(s) if s.partition == partitions.start => start,
            _ => segs.partition_point(|s| s.partition < partitions.start),
        };
        let mut to = from;
        while to < segs.len() && to - from < 8 && segs[to].partition < partitions.end {
            to += 1;
        }
        if to < segs.len() && segs[to].partition < partitions.end {
            to = from + segs[from..].partition_point(|s| s.partition < partitions.end);
        }
        from..to
    }

    /// A segment's runs, in order.
    pub fn runs(&self, segment: &Segment) -> &[Run] {
        let first = segment.first as usize;
        self.runs
            .get(first..first + segment.count as usize)
            .unwrap_or_default()
    }

    /// The record's binary form: `CSR2`, the map (u32 LE), the attempt (u64 LE), the
    /// generation (u32 LE), the engine's checksum (u64 LE), the number of segments, then per segment (ascending partition) the partition's distance from the
    /// previous one, its number of runs and per run its offset (zigzag distance from the end
    /// of the run before), length and crc32c (u32 LE), all numbers but the fixed ones LEB128
    /// varints; last the crc32c of all of it (u32 LE). A one-run segment takes 10 to 16
    /// bytes; no path or name is repeated.
    pub fn encode(&self) -> Vec<u8> {
        use prost::encoding::encode_varint;
        let mut out = Vec::with_capacity(24 + self.segments.len() * 14);
        out.extend_from_slice(RECORD_MAGIC);
        out.extend_from_slice(&self.map.to_le_bytes());
        out.extend_from_slice(&self.attempt.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
        encode_varint(self.segments.len() as u64, &mut out);
        let (mut partition, mut end) = (0u32, 0u64);
        for seg in &self.segments {
            encode_varint(u64::from(seg.partition - partition), &mut out);
            partition = seg.partition;
            let runs = self.runs(seg);
            encode_varint(runs.len() as u64, &mut out);
            for run in runs {
                let delta = run.offset.wrapping_sub(end) as i64;
                encode_varint(((delta << 1) ^ (delta >> 63)) as u64, &mut out);
                encode_varint(u64::from(run.len), &mut out);
                out.extend_from_slice(&run.crc.to_le_bytes());
                end = run.offset + u64::from(run.len);
            }
        }
        let crc = crail_store::crc::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses [`Commit::encode`]'s form, checking its crc32c and that its partitions ascend
    /// below `partitions` and its runs are non-empty and inside any file.
    pub fn decode(raw: &[u8], group: GroupRef, partitions: u32) -> Result<Self, String> {
        use prost::encoding::decode_varint;
        let body_len = raw
            .len()
            .checked_sub(4)
            .ok_or_else(|| format!("{} bytes are no record", raw.len()))?;
        let (mut body, crc) = raw.split_at(body_len);
        let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "no checksum")?);
        if crail_store::crc::crc32c(body) != stored {
            return Err("the record fails its checksum".into());
        }
        let fixed = |body: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
            if body.len() < n {
                return Err("the record ends early".into());
            }
            let (head, rest) = body.split_at(n);
            *body = rest;
            Ok(head.to_vec())
        };
        let varint = |body: &mut &[u8]| -> Result<u64, String> {
            decode_varint(body).map_err(|_| "a bad number in the record".to_string())
        };
        if fixed(&mut body, 4)? != RECORD_MAGIC {
            return Err("not a commit record (wrong magic)".into());
        }
        let map = u32::from_le_bytes(fixed(&mut body, 4)?.try_into().unwrap_or_default());
        let attempt = u64::from_le_bytes(fixed(&mut body, 8)?.try_into().unwrap_or_default());
        let generation = u32::from_le_bytes(fixed(&mut body, 4)?.try_into().unwrap_or_default());
        let checksum = u64::from_le_bytes(fixed(&mut body, 8)?.try_into().unwrap_or_default());
        let count = varint(&mut body)?;
        // Each segment takes at least 7 bytes: a count past that is a lie.
        if count > body.len() as u64 {
            return Err(format!("{count} segments in {} bytes", body.len()));
        }
        let mut commit = Self {
            map,
            attempt,
            generation,
            checksum,
            group,
            segments: Vec::with_capacity(count as usize),
            runs: Vec::with_capacity(count as usize),
        };
        let (mut partition, mut end) = (0u64, 0u64);
        for i in 0..count {
            let delta = varint(&mut body)?;
            if i > 0 && delta == 0 {
                return Err(format!("partition {partition} twice"));
            }
            partition = partition.saturating_add(delta);
            if partition >= u64::from(partitions) {
                return Err(format!(
                    "partition {partition} of a shuffle of {partitions} partitions"
                ));
            }
            let runs = varint(&mut body)?;
            if runs == 0 || runs > body.len() as u64 {
                return Err(format!("partition {partition}: {runs} runs"));
            }
            let first = commit.runs.len() as u32;
            let mut len = 0u64;
            for _ in 0..runs {
                let zigzag = varint(&mut body)?;
                let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
                let offset = end.wrapping_add(delta as u64);
                let run_len = u32::try_from(varint(&mut body)?)
                    .map_err(|_| format!("partition {partition}: a run longer than 4 GiB"))?;
                let crc = u32::from_le_bytes(fixed(&mut body, 4)?.try_into().unwrap_or_default());
                end = offset
                    .checked_add(u64::from(run_len))
                    .filter(|_| run_len > 0)
                    .ok_or_else(|| format!("partition {partition}: a run past any file"))?;
                len += u64::from(run_len);
                commit.runs.push(Run {
                    offset,
                    len: run_len,
                    crc,
                });
            }
            commit.segments.push(Segment {
                partition: partition as u32,
                len,
                first,
                count: runs as u32,
            });
        }
        if !body.is_empty() {
            return Err(format!("{} bytes after the last segment", body.len()));
        }
        Ok(commit)
    }
}

pub(crate) fn parse<T: for<'a> Deserialize<'a>>(
    id: &ShuffleId,
    path: &str,
    raw: &[u8],
) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| Error::BadRecord {
        id: id.clone(),
        path: path.to_owned(),
        cause: e.to_string(),
    })
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of numbers and strings always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> GroupRef {
        GroupRef {
            host: "127.0.0.2".into(),
            slot: 3,
            copies: 2,
        }
    }

    fn run(offset: u64, len: u32) -> Run {
        Run {
            offset,
            len,
            crc: offset as u32 ^ len,
        }
    }

    #[test]
    fn records_round_trip_in_a_few_bytes_per_segment() {
        let segments: Vec<(u32, Vec<Run>)> = (0..1000u32)
            .filter(|p| p % 3 != 0)
            .map(|p| (p, vec![run(u64::from(p) * 4096 + (1 << 30), 500)]))
            .collect();
        let mut commit = Commit::new(
            7,
            99,
            group(),
            segments
                .into_iter()
                .chain([(1000, vec![run(5 << 20, 4096), run(1 << 20, 1 << 20)])]),
        );
        commit.generation = 3;
        commit.checksum = 0x0123_4567_89ab_cdef;
        let raw = commit.encode();
        let per_segment = raw.len() as f64 / commit.segments().len() as f64;
        assert!(per_segment <= 16.0, "{per_segment} bytes per segment");
        let back = Commit::decode(&raw, group(), 1001).unwrap();
        assert_eq!(back, commit);
        assert_eq!(back.generation, 3);
        assert_eq!(back.checksum, 0x0123_4567_89ab_cdef);
        assert_eq!(back.segments_in(&(1000..1001)).len(), 1);
        let last = back.segments_in(&(1000..1001))[0];
        assert_eq!(last.len, 4096 + (1 << 20));
        assert_eq!(back.runs(&last).len(), 2);
        assert_eq!(back.segments_in(&(0..3)).len(), 2);
        assert_eq!(back.segments_in(&(3..3)).len(), 0);
        assert_eq!(back.segments_in(&(0..1001)).len(), back.segments().len());
        assert_eq!(back.segments_in(&(2..500)).len(), 332);
        assert_eq!(back.segments_in(&(2000..3000)).len(), 0);
    }

    #[test]
    fn bad_records_are_refused_not_believed() {
        let raw = Commit::new(1, 1, group(), [(4, vec![run(10, 20)])]).encode();
        // Every truncation and every flipped byte is caught (the checksum or the parse).
        for cut in 0..raw.len() {
            assert!(
                Commit::decode(&raw[..cut], group(), 8).is_err(),
                "cut {cut}"
            );
        }
        for at in 0..raw.len() {
            let mut bad = raw.clone();
            bad[at] ^= 0x41;
            assert!(Commit::decode(&bad, group(), 8).is_err(), "byte {at}");
        }
        // A partition past the shuffle's.
        assert!(Commit::decode(&raw, group(), 4).is_err());
    }

    #[test]
    fn record_refs_name_their_place() {
        let r = RecordRef {
            group: group(),
            offset: 1 << 33,
            len: 77,
        };
        assert_eq!(RecordRef::parse(&r.name()), Some(r));
        assert_eq!(RecordRef::parse("x-1-0-2-3"), None);
        assert_eq!(RecordRef::parse("1-2-3"), None);
    }
}
