//! Tokio `AsyncRead`/`AsyncWrite` adapters over the direct streams.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::{FileReader, FileWriter, MultiReader};
use crate::buffer::Buffer;
use crate::error::{Error, Result};
use crate::types::Stat;
/// A source of buffers the async adapter can drive.
pub(crate) trait BufferSource: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Result<Option<Buffer>>> + Send;
}

impl BufferSource for FileReader {
    fn next(&mut self) -> impl Future<Output = Result<Option<Buffer>>> + Send {
        self.next_buffer()
    }
}

impl BufferSource for MultiReader {
    fn next(&mut self) -> impl Future<Output = Result<Option<Buffer>>> + Send {
        self.next_buffer()
    }
}

/// A tokio [`AsyncRead`] over a [`FileReader`] or [`MultiReader`]. A task keeps the reader's
/// requests in flight while the consumer copies out of the current buffer.
#[derive(Debug)]
pub struct AsyncBufferReader {
    rx: mpsc::Receiver<Result<Buffer>>,
    current: Option<Buffer>,
    at: usize,
    /// Once the stream failed, every later read fails too (never a clean, short EOF).
    failed: Option<String>,
}

impl AsyncBufferReader {
    pub(super) fn new<S: BufferSource>(mut source: S) -> Self {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let next = source.next().await;
                let end = !matches!(next, Ok(Some(_)));
                let item = match next {
                    Ok(Some(buf)) => Ok(buf),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                if tx.send(item).await.is_err() || end {
                    break;
                }
            }
        });
        Self {
            rx,
            current: None,
            at: 0,
            failed: None,
        }
    }
}

impl AsyncRead for AsyncBufferReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(why) = &self.failed {
                return Poll::Ready(Err(std::io::Error::other(why.clone())));
            }
            if let Some(buf) = &self.current
                && self.at < buf.len()
            {
                let n = (buf.len() - self.at).min(out.remaining());
                out.put_slice(&buf[self.at..self.at + n]);
                self.at += n;
                return Poll::Ready(Ok(()));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(buf)) => {
                    self.current = Some(buf);
                    self.at = 0;
                }
                Some(Err(e)) => self.failed = Some(e.to_string()),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[derive(Debug)]
enum Command {
    Data(Buffer),
    Flush(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<Stat>>),
}

/// A tokio [`AsyncWrite`] over a [`FileWriter`]: `flush` waits for every write, `shutdown`
/// commits the file. A task owns the writer and keeps its requests in flight. Dropped without
/// `shutdown`, the write is aborted.
#[derive(Debug)]
pub struct AsyncFileWriter {
    tx: Option<tokio_util::sync::PollSender<Command>>,
    current: Option<Buffer>,
    pool: crate::buffer::BufferPool,
    waiting: Option<Waiting>,
    closed: Option<Stat>,
}

#[derive(Debug)]
enum Waiting {
    Flush(oneshot::Receiver<Result<()>>),
    Close(oneshot::Receiver<Result<Stat>>),
}

impl AsyncFileWriter {
    pub(super) fn new(mut writer: FileWriter) -> Self {
        let pool = writer.store.buffers().clone();
        let (tx, mut rx) = mpsc::channel::<Command>(2);
        tokio::spawn(async move {
            let mut error: Option<String> = None;
            while let Some(command) = rx.recv().await {
                match command {
                    Command::Data(buf) => {
                        if error.is_none()
                            && let Err(e) = writer.write_buffer(buf.freeze()).await
                        {
                            error = Some(e.to_string());
                        }
                    }
                    Command::Flush(done) => {
                        let result = match &error {
                            Some(e) => Err(Error::Io {
                                cause: std::io::Error::other(e.clone()),
                            }),
                            None => writer.flush().await,
                        };
                        let _ = done.send(result);
                    }
                    Command::Close(done) => {
                        let result = match &error {
                            Some(e) => Err(Error::Io {
                                cause: std::io::Error::other(e.clone()),
                            }),
                            None => writer.close().await,
                        };
                        let _ = done.send(result);
                        return;
                    }
                }
            }
            // Dropped without shutdown: abort.
            let _ = writer.abort().await;
        });
        Self {
            tx: Some(tokio_util::sync::PollSender::new(tx)),
            current: None,
            pool,
            waiting: None,
            closed: None,
        }
    }

    /// The file's stat after a successful `shutdown`.
    pub fn stat(&self) -> Option<&Stat> {
        self.closed.as_ref()
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, command: Command) -> Poll<std::io::Result<()>> {
        let Some(tx) = &mut self.tx else {
            return Poll::Ready(Err(std::io::Error::other("writer is closed")));
        };
        ready!(tx.poll_reserve(cx)).map_err(|_| std::io::Error::other("writer task is gone"))?;
        tx.send_item(command)
            .map_err(|_| std::io::Error::other("writer task is gone"))?;
        Poll::Ready(Ok(()))
    }

    fn poll_push_current(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.current.as_ref().is_some_and(|b| !b.is_empty()) {
            let Some(tx) = &mut self.tx else {
                return Poll::Ready(Err(std::io::Error::other("writer is closed")));
            };
            ready!(tx.poll_reserve(cx))
                .map_err(|_| std::io::Error::other("writer task is gone"))?;
            if let Some(buf) = self.current.take() {
                tx.send_item(Command::Data(buf))
                    .map_err(|_| std::io::Error::other("writer task is gone"))?;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for AsyncFileWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.current.as_ref().is_some_and(|b| b.remaining() == 0) {
            ready!(self.poll_push_current(cx))?;
        }
        let pool = self.pool.clone();
        let buf = self.current.get_or_insert_with(|| pool.get());
        Poll::Ready(Ok(buf.extend_from_slice(data)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(Waiting::Flush(rx)) = &mut self.waiting {
                let result = ready!(Pin::new(rx).poll(cx));
                self.waiting = None;
                return Poll::Ready(match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(std::io::Error::other(e)),
                    Err(_) => Err(std::io::Error::other("writer task is gone")),
                });
            }
            ready!(self.poll_push_current(cx))?;
            let (done, rx) = oneshot::channel();
            ready!(self.poll_send(cx, Command::Flush(done)))?;
            self.waiting = Some(Waiting::Flush(rx));
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.closed.is_some() {
                return Poll::Ready(Ok(()));
            }
            if let Some(Waiting::Close(rx)) = &mut self.waiting {
                let result = ready!(Pin::new(rx).poll(cx));
                self.waiting = None;
                self.tx = None;
                return Poll::Ready(match result {
                    Ok(Ok(stat)) => {
                        self.closed = Some(stat);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(std::io::Error::other(e)),
                    Err(_) => Err(std::io::Error::other("writer task is gone")),
                });
            }
            ready!(self.poll_push_current(cx))?;
            let (done, rx) = oneshot::channel();
            ready!(self.poll_send(cx, Command::Close(done)))?;
            self.waiting = Some(Waiting::Close(rx));
        }
    }
}
