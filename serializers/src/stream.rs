//! Records through the store's file streams: a [`RecordWriter`] encodes into a
//! [`FileWriter`](crail_store::FileWriter) buffer by buffer, a [`RecordReader`] decodes what a
//! [`FileReader`](crail_store::FileReader) or [`MultiReader`](crail_store::MultiReader)
//! returns, records borrowing the store's buffers.

use std::future::Future;

use bytes::Bytes;
use crail_store::{Buffer, FileReader, FileWriter, MultiReader, Stat};

use crate::{Decoder, Encoder, Record, Result, Serializer};

/// A source of chunks of one byte stream.
pub trait Chunks {
    /// One chunk.
    type Chunk: AsRef<[u8]>;
    /// The next chunk, `None` at the end.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Self::Chunk>>> + Send;
}

impl Chunks for FileReader {
    type Chunk = Buffer;
    async fn next_chunk(&mut self) -> Result<Option<Buffer>> {
        Ok(self.next_buffer().await?)
    }
}

impl Chunks for MultiReader {
    type Chunk = Buffer;
    async fn next_chunk(&mut self) -> Result<Option<Buffer>> {
        Ok(self.next_buffer().await?)
    }
}

/// Decodes the records of a stream of chunks.
#[derive(Debug)]
pub struct RecordReader<S: Chunks> {
    source: S,
    decoder: Decoder<S::Chunk>,
    ended: bool,
}

impl<S: Chunks> RecordReader<S> {
    /// Records of `serializer` from `source`.
    pub fn new(source: S, serializer: &Serializer) -> Self {
        Self {
            source,
            decoder: serializer.decoder(),
            ended: false,
        }
    }

    /// The next record, `None` at the end of the stream; an error if the stream ends inside
    /// a record or holds bytes that are not records.
    pub async fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        loop {
            if self.decoder.advance()? {
                return Ok(self.decoder.current());
            }
            if self.ended {
                return Ok(None);
            }
            match self.source.next_chunk().await? {
                Some(chunk) => self.decoder.push(chunk),
                None => {
                    self.ended = true;
                    self.decoder.finish()?;
                }
            }
        }
    }
}

/// Encodes records into a file, sending a buffer whenever `flush_at` bytes are ready.
#[derive(Debug)]
pub struct RecordWriter {
    writer: FileWriter,
    encoder: Encoder,
    flush_at: usize,
}

impl RecordWriter {
    /// Records of `serializer` into `writer`, in buffers of about `flush_at` bytes (the
    /// store's buffer size is a good choice).
    pub fn new(writer: FileWriter, serializer: &Serializer, flush_at: usize) -> Self {
        Self {
            writer,
            encoder: serializer.encoder(),
            flush_at: flush_at.max(4096),
        }
    }

    /// Appends one record.
    pub async fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.encoder.push(key, value)?;
        if self.encoder.ready() >= self.flush_at {
            let bytes = self.encoder.take();
            self.writer.write_buffer(Bytes::from(bytes)).await?;
        }
        Ok(())
    }

    /// Writes what is left and commits the file.
    pub async fn close(mut self) -> Result<Stat> {
        let rest = self.encoder.finish()?;
        if !rest.is_empty() {
            self.writer.write_buffer(Bytes::from(rest)).await?;
        }
        Ok(self.writer.close().await?)
    }
}
