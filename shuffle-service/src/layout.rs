//! Where a shuffle lives in the store, and the two records kept there.
//!
//! ```text
//! /crail-shuffle/<app>/<shuffle>/
//!     meta                  what register was given (JSON)
//!     p<partition>/         one directory per reduce partition
//!         <host>-<slot>     a writer group's file: every map that ran on that slot appends here
//!         <host>-<slot>.r<k> its k-th replica, on another node (shuffles registered with a
//!                           replication factor above 1): the same bytes at the same offsets
//!     maps/<map>            the committed attempt of a map and its segments (JSON); made by a
//!                           rename, which the namenode refuses if the name exists: the first
//!                           attempt to commit wins, exactly once
//!     maps/<map>.r<k>       copies of it on the replicas' nodes (replicated shuffles)
//! ```

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

    /// A writer group's file of `partition`, relative to [`ShuffleId::dir`] (as segments
    /// name it).
    pub(crate) fn group_file(partition: u32, host: &str, slot: u32) -> String {
        format!("p{partition}/{host}-{slot}")
    }

    /// Copy `copy` of a group file (0: the file itself), relative like the file.
    pub(crate) fn copy_file(file: &str, copy: u32) -> String {
        if copy == 0 {
            file.to_owned()
        } else {
            format!("{file}.r{copy}")
        }
    }

    pub(crate) fn maps_dir(&self) -> String {
        format!("{}/maps", self.dir())
    }

    pub(crate) fn commit(&self, map: u32) -> String {
        format!("{}/maps/{map}", self.dir())
    }

    /// Copy `copy` of a map's commit record (0: the record itself, made by the winning
    /// rename; k: a replica on another node, written after it).
    pub(crate) fn commit_copy(&self, map: u32, copy: u32) -> String {
        match copy {
            0 => self.commit(map),
            k => format!("{}/maps/{map}.r{k}", self.dir()),
        }
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

/// A map's output for one partition: `len` bytes at `offset` of a group file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The partition.
    pub partition: u32,
    /// The group file, relative to the shuffle's directory (`p3/127.0.0.2-0`).
    pub file: String,
    /// Where the map's bytes start in it.
    pub offset: u64,
    /// How many.
    pub len: u64,
    /// Their crc32c.
    pub crc: u32,
    /// Copies written: the file and `copies - 1` replicas (`<file>.r<k>`), same offsets.
    #[serde(default = "one")]
    pub copies: u32,
    /// A segment its writer sent in more than [`PIECE`] bytes: its bytes in pieces, each with
    /// its crc32c (together `len` bytes whose crc32c is `crc`), so a reader checks and hands
    /// out one piece at a time. Empty: the segment is one piece (at most [`PIECE`] plus one
    /// of its writer's sends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<Piece>,
}

/// Segments longer than this are recorded in pieces of about this many bytes (each ends where
/// one of the writer's sends ended: at most this plus a block).
pub const PIECE: u64 = 4 << 20;

/// A run of a segment's bytes with its own crc32c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Bytes.
    pub len: u64,
    /// Their crc32c.
    pub crc: u32,
}

impl Segment {
    /// What makes the record unreadable as written, if anything: a range past the largest
    /// offset, or pieces that do not add up to the segment.
    pub(crate) fn inconsistency(&self) -> Option<String> {
        if self.offset.checked_add(self.len).is_none() {
            return Some(format!(
                "{} bytes at {} run past any file",
                self.len, self.offset
            ));
        }
        if self.pieces.is_empty() {
            return None;
        }
        let sum = self
            .pieces
            .iter()
            .try_fold(0u64, |sum, p| sum.checked_add(p.len));
        match sum {
            Some(sum) if sum == self.len => None,
            _ => Some(format!(
                "its pieces do not add up to its {} bytes",
                self.len
            )),
        }
    }

    /// The pieces a reader checks one at a time: (offset in the file, length, crc32c).
    pub fn checked_pieces(&self) -> Vec<(u64, u64, u32)> {
        if self.pieces.is_empty() {
            return vec![(self.offset, self.len, self.crc)];
        }
        let mut at = self.offset;
        self.pieces
            .iter()
            .map(|p| {
                at += p.len;
                (at - p.len, p.len, p.crc)
            })
            .collect()
    }
}

/// The committed attempt of a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The map.
    pub map: u32,
    /// The attempt that committed.
    pub attempt: u64,
    /// Its non-empty segments, by partition.
    pub segments: Vec<Segment>,
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

    fn segment(len: u64, pieces: &[u64]) -> Segment {
        Segment {
            partition: 3,
            file: "p3/127.0.0.2-0".into(),
            offset: 4096,
            len,
            crc: 0,
            copies: 1,
            pieces: pieces.iter().map(|&len| Piece { len, crc: 0 }).collect(),
        }
    }

    #[test]
    fn pieces_that_do_not_make_their_segment_are_found_before_any_read() {
        assert_eq!(segment(10, &[]).inconsistency(), None);
        assert_eq!(segment(10, &[4, 6]).inconsistency(), None);
        assert_eq!(
            segment(10, &[4, 6]).checked_pieces(),
            vec![(4096, 4, 0), (4100, 6, 0)]
        );
        assert!(segment(10, &[4, 7]).inconsistency().is_some());
        assert!(segment(10, &[4, u64::MAX]).inconsistency().is_some());
        let mut past = segment(10, &[]);
        past.offset = u64::MAX - 3;
        assert!(past.inconsistency().is_some());
    }
}
