//! The reduce side: a partition range's records, as they come, sorted, or combined.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use crail_serializers::{Decoder, Error as RecordError, Fixed, Framing, Record, Serializer};
use crail_shuffle::PartitionReader;

use crate::{Result, Shuffle};

/// Group files read at once, by default.
const PREFETCH: usize = 4;

/// A caller's combining function: folds `value` into `acc`, the value so far of `key`.
pub type Combiner = Box<dyn FnMut(&[u8], &mut Vec<u8>, &[u8]) + Send>;

/// Which maps' output a read takes.
#[derive(Debug, Clone)]
enum Maps {
    All,
    Range(Range<u32>),
    Attempts(Vec<(u32, u64)>),
}

/// How to read: which maps, sorted or not, combined or not. From [`Shuffle::reader`].
pub struct ReadOptions {
    shuffle: Shuffle,
    partitions: Range<u32>,
    maps: Maps,
    sorter: Option<String>,
    combiner: Option<Combiner>,
    prefetch: usize,
}

impl std::fmt::Debug for ReadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOptions")
            .field("shuffle", self.shuffle.id())
            .field("partitions", &self.partitions)
            .field("maps", &self.maps)
            .field("sorter", &self.sorter)
            .field("combined", &self.combiner.is_some())
            .finish()
    }
}

impl ReadOptions {
    pub(crate) fn new(shuffle: Shuffle, partitions: Range<u32>) -> Self {
        Self {
            shuffle,
            partitions,
            maps: Maps::All,
            sorter: None,
            combiner: None,
            prefetch: PREFETCH,
        }
    }

    /// Only the output of maps `maps`.
    pub fn maps(mut self, maps: Range<u32>) -> Self {
        self.maps = Maps::Range(maps);
        self
    }

    /// Only the output of these (map, attempt) pairs, each as committed by that attempt: the
    /// map statuses the engine's scheduler holds (maps it knows to have nothing for these
    /// partitions may be left out). A map committed by another attempt fails the read as a
    /// fetch failure naming it ([`crate::Error::lost_maps`]); replaces [`ReadOptions::maps`].
    pub fn attempts(mut self, attempts: Vec<(u32, u64)>) -> Self {
        self.maps = Maps::Attempts(attempts);
        self
    }

    /// Records in key order, sorted by the sorter `name` names (`radix`, `radsort`,
    /// `comparison`; see [`crail_sorters::by_name`]). The whole range is gathered in memory
    /// first. Records with equal keys keep the order they were read in.
    pub fn sorted(mut self, name: &str) -> Self {
        self.sorter = Some(name.to_owned());
        self
    }

    /// Records with equal keys folded into one by `combine(key, acc, value)`, which folds
    /// `value` into `acc` (starting from the key's first value). Sorts first (by `radix`
    /// unless [`ReadOptions::sorted`] names another), so equal keys are adjacent.
    pub fn combine(
        mut self,
        combine: impl FnMut(&[u8], &mut Vec<u8>, &[u8]) + Send + 'static,
    ) -> Self {
        self.combiner = Some(Box::new(combine));
        self
    }

    /// Group files fetched at once (default 4).
    pub fn prefetch(mut self, files: usize) -> Self {
        self.prefetch = files.max(1);
        self
    }

    /// Starts the read. Sorted and combined reads fetch the whole range before the first
    /// record is returned.
    pub async fn open(self) -> Result<Records> {
        // The options are taken apart first: the combiner need not be Sync, so no borrow
        // of them may cross an await.
        let Self {
            shuffle,
            partitions,
            maps,
            sorter,
            combiner,
            prefetch,
        } = self;
        let sorter = match (sorter, &combiner) {
            (Some(name), _) => Some(name),
            (None, Some(_)) => Some("radix".to_owned()),
            (None, None) => None,
        };
        let mut stream = Stream::start(&shuffle, partitions, maps, prefetch).await?;
        let Some(sorter) = sorter else {
            return Ok(Records {
                source: Source::Stream(stream),
                combined: None,
            });
        };
        let sorter = crail_sorters::by_name(&sorter)?;
        let mut sorted = Vec::new();
        let unframed = stream
            .sorted(&*sorter, &mut sorted, &mut Vec::new())
            .await?;
        let mut decoder = unframed.decoder();
        decoder.push(Bytes::from(sorted));
        Ok(Records {
            source: Source::Sorted(decoder),
            combined: combiner.map(|combine| Combined {
                combine,
                key: Vec::new(),
                value: Vec::new(),
                out_key: Vec::new(),
                out_value: Vec::new(),
                holding: false,
            }),
        })
    }

    /// Every record of the range in key order (by the sorter [`ReadOptions::sorted`] names,
    /// else `radix`), as the serializer encodes them without frames: for an engine that writes
    /// a sorted run out whole. Ignores [`ReadOptions::combine`].
    pub async fn read_sorted(self) -> Result<Vec<u8>> {
        let mut sorted = Vec::new();
        self.read_sorted_into(&mut sorted, &mut Vec::new()).await?;
        Ok(sorted)
    }

    /// As [`ReadOptions::read_sorted`], into `out` (its contents replaced), using `scratch` as
    /// room to sort in: a task that keeps both for the next range writes into memory it has
    /// touched already instead of fresh pages (which the kernel must clear first).
    pub async fn read_sorted_into(self, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Result<()> {
        let (mut stream, sorter) = self.start_sorted().await?;
        stream.sorted(&*sorter, out, scratch).await?;
        Ok(())
    }

    /// As [`ReadOptions::read_sorted_into`], into memory the caller manages (aligned for
    /// `O_DIRECT`, registered with a NIC, ...): the sorted records go to the start of `out`,
    /// and their length is returned. `out` and `scratch` must each hold the range's bytes
    /// ([`Error::Records`](crate::Error::Records) with the size needed otherwise).
    pub async fn read_sorted_to(self, out: &mut [u8], scratch: &mut [u8]) -> Result<usize> {
        let (mut stream, sorter) = self.start_sorted().await?;
        if let Some(format) = stream.stored_fixed()? {
            return stream.sorted_fixed(&*sorter, &format, out, scratch).await;
        }
        let mut all = Vec::new();
        stream.sorted(&*sorter, &mut all, &mut Vec::new()).await?;
        match out.get_mut(..all.len()) {
            Some(to) => {
                to.copy_from_slice(&all);
                Ok(all.len())
            }
            None => Err(RecordError::BufferSize {
                what: "an output",
                len: out.len(),
                need: all.len(),
            }
            .into()),
        }
    }

    /// Starts a sorted read (ignoring the combiner): the stream and the sorter.
    async fn start_sorted(self) -> Result<(Stream, Box<dyn crail_sorters::Sorter>)> {
        let sorter = crail_sorters::by_name(self.sorter.as_deref().unwrap_or("radix"))?;
        let Self {
            shuffle,
            partitions,
            maps,
            prefetch,
            ..
        } = self;
        let stream = Stream::start(&shuffle, partitions, maps, prefetch).await?;
        Ok((stream, sorter))
    }
}

/// A reduce task's records. Read with [`Records::next_record`]: each record borrows the
/// stream until the next call.
pub struct Records {
    source: Source,
    combined: Option<Combined>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("sorted", &matches!(self.source, Source::Sorted(_)))
            .field("combined", &self.combined.is_some())
            .finish()
    }
}

enum Source {
    Stream(Stream),
    Sorted(Decoder<Bytes>),
}

/// The state of a combined read: the key being folded and its value so far, and the record
/// last handed out.
struct Combined {
    combine: Combiner,
    key: Vec<u8>,
    value: Vec<u8>,
    out_key: Vec<u8>,
    out_value: Vec<u8>,
    holding: bool,
}

impl Records {
    /// The next record, or `None` at the end of the range. A malformed or truncated record
    /// is [`crate::Error::Records`]; a map output that cannot be read is
    /// [`crate::Error::Shuffle`] (naming the maps to run again).
    pub async fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        match (&mut self.source, &mut self.combined) {
            (Source::Stream(stream), _) => stream.next_record().await,
            (Source::Sorted(decoder), None) => Ok(if decoder.advance()? {
                decoder.current()
            } else {
                decoder.finish()?;
                None
            }),
            (Source::Sorted(decoder), Some(c)) => {
                loop {
                    if !decoder.advance()? {
                        decoder.finish()?;
                        if !c.holding {
                            return Ok(None);
                        }
                        c.holding = false;
                        std::mem::swap(&mut c.out_key, &mut c.key);
                        std::mem::swap(&mut c.out_value, &mut c.value);
                        break;
                    }
                    let Some(record) = decoder.current() else {
                        continue;
                    };
                    if c.holding && record.key == c.key.as_slice() {
                        (c.combine)(record.key, &mut c.value, record.value);
                        continue;
                    }
                    let emit = c.holding;
                    std::mem::swap(&mut c.out_key, &mut c.key);
                    std::mem::swap(&mut c.out_value, &mut c.value);
                    c.key.clear();
                    c.key.extend_from_slice(record.key);
                    c.value.clear();
                    c.value.extend_from_slice(record.value);
                    c.holding = true;
                    if emit {
                        break;
                    }
                }
                Ok(Some(Record {
                    key: &c.out_key,
                    value: &c.out_value,
                }))
            }
        }
    }
}

/// Records as their chunks arrive. A map's segment of a partition comes in order, but
/// segments of different group files interleave, so each (partition, map) has its decoder.
struct Stream {
    reader: PartitionReader,
    serializer: Serializer,
    decoders: HashMap<(u32, u32), Decoder<Bytes>>,
    current: Option<(u32, u32)>,
}

impl Stream {
    async fn start(
        shuffle: &Shuffle,
        partitions: Range<u32>,
        maps: Maps,
        prefetch: usize,
    ) -> Result<Self> {
        let client = shuffle.crail().shuffle_client();
        let reader = match maps {
            Maps::All => {
                client
                    .read(shuffle.id(), partitions, None, prefetch)
                    .await?
            }
            Maps::Range(maps) => {
                client
                    .read(shuffle.id(), partitions, Some(maps), prefetch)
                    .await?
            }
            Maps::Attempts(attempts) => {
                client
                    .read_attempts(shuffle.id(), partitions, &attempts, prefetch)
                    .await?
            }
        };
        Ok(Self {
            reader,
            serializer: shuffle.serializer().clone(),
            decoders: HashMap::new(),
            current: None,
        })
    }

    async fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        loop {
            if let Some(key) = self.current
                && let Some(decoder) = self.decoders.get_mut(&key)
                && decoder.advance()?
            {
                // Borrowed again to hand the record out past the loop.
                return Ok(self.decoders.get(&key).and_then(Decoder::current));
            }
            match self.reader.next_chunk().await? {
                Some(chunk) => {
                    let key = (chunk.partition, chunk.map);
                    self.decoders
                        .entry(key)
                        .or_insert_with(|| self.serializer.decoder())
                        .push(chunk.data);
                    self.current = Some(key);
                }
                None => {
                    for decoder in self.decoders.values_mut() {
                        decoder.finish()?;
                    }
                    self.decoders.clear();
                    self.current = None;
                    return Ok(None);
                }
            }
        }
    }

    /// The fixed-length format of the shuffle's records when they are stored unframed (their
    /// sorted bytes are then exactly the bytes read).
    fn stored_fixed(&self) -> Result<Option<Fixed>> {
        match (
            self.serializer.format().fixed_lens(),
            self.serializer.framing(),
        ) {
            (Some((key, value)), Framing::None) => Ok(Some(Fixed::new(key, value)?)),
            _ => Ok(None),
        }
    }

    /// Every record of the range sorted by `sorter`, unframed, into `all` (its memory reused:
    /// grown when short, never written twice), with `scratch` as room to sort in (grown when
    /// short); returns the unframed serializer that reads them.
    async fn sorted(
        &mut self,
        sorter: &dyn crail_sorters::Sorter,
        all: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<Serializer> {
        let unframed = Serializer::by_name(&self.serializer.format().name())?;
        if let Some(format) = self.stored_fixed()? {
            let need = usize::try_from(self.reader.bytes()).unwrap_or(usize::MAX);
            for buf in [&mut *all, &mut *scratch] {
                if buf.len() < need {
                    buf.resize(need, 0);
                }
            }
            let n = self.sorted_fixed(sorter, &format, all, scratch).await?;
            all.truncate(n);
            return Ok(unframed);
        }
        all.clear();
        let format = unframed.format();
        while let Some(record) = self.next_record().await? {
            format.encode(record.key, record.value, all)?;
        }
        *all = crail_sorters::sort_encoded(sorter, all, &unframed)?;
        Ok(unframed)
    }

    /// Fixed-length records as stored, sorted into the start of `out` (whole chunks copied as
    /// they are) with `scratch` as room to sort in; returns their bytes. Both must hold
    /// [`PartitionReader::bytes`](crail_shuffle::PartitionReader::bytes).
    async fn sorted_fixed(
        &mut self,
        sorter: &dyn crail_sorters::Sorter,
        format: &Fixed,
        out: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<usize> {
        let need = usize::try_from(self.reader.bytes()).unwrap_or(usize::MAX);
        for (what, len) in [
            ("an output", out.len()),
            ("a scratch buffer", scratch.len()),
        ] {
            if len < need {
                return Err(RecordError::BufferSize { what, len, need }.into());
            }
        }
        let record = format.record_len();
        let mut n = 0;
        let mut put = |bytes: &[u8]| match out
            .get_mut(n..n + bytes.len())
            .filter(|_| n + bytes.len() <= need)
        {
            Some(to) => {
                to.copy_from_slice(bytes);
                n += bytes.len();
                Ok(())
            }
            // More than the committed lengths (all `scratch` is sure to hold): refused.
            None => Err(RecordError::BufferSize {
                what: "an output",
                len: need,
                need: n + bytes.len(),
            }),
        };
        let mut tails: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
        while let Some(chunk) = self.reader.next_chunk().await? {
            // A segment comes in pieces that may split a record: the part of it in one piece
            // waits in the segment's tail for the rest.
            let tail = tails.entry((chunk.partition, chunk.map)).or_default();
            let mut data = &chunk.data[..];
            if !tail.is_empty() {
                let missing = (record - tail.len()).min(data.len());
                tail.extend_from_slice(&data[..missing]);
                data = &data[missing..];
                if tail.len() < record {
                    continue;
                }
                put(tail)?;
                tail.clear();
            }
            let whole = data.len() - data.len() % record;
            put(&data[..whole])?;
            tail.extend_from_slice(&data[whole..]);
        }
        if let Some(tail) = tails.values().find(|t| !t.is_empty()) {
            return Err(RecordError::Truncated {
                offset: n as u64,
                have: tail.len() as u64,
            }
            .into());
        }
        crail_sorters::sort_fixed_in_place(sorter, &mut out[..n], &mut scratch[..n], format)?;
        Ok(n)
    }
}
