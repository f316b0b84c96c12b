//! Bounded capture of a guest's stdout and stderr.
//!
//! Writes never fail and never block: the first `limit` bytes are kept, the
//! rest are counted and dropped. (wasmtime-wasi's memory pipe errors when full,
//! which makes Rust's `println!` panic: a chatty plugin would trap.) The buffer
//! is shared with the host so it can be logged even after a timeout drops the
//! store.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much a write may hand over at once; any amount is accepted.
const WRITE_BUDGET: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    limit: usize,
    dropped: u64,
}

/// One captured stream.
#[derive(Debug, Clone)]
pub(crate) struct Capture(Arc<Mutex<Buffer>>);

impl Capture {
    pub(crate) fn new(limit: usize) -> Self {
        Self(Arc::new(Mutex::new(Buffer {
            bytes: Vec::new(),
            limit,
            dropped: 0,
        })))
    }

    fn append(&self, data: &[u8]) {
        let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = buffer.limit.saturating_sub(buffer.bytes.len());
        let kept = data.len().min(room);
        buffer.bytes.extend_from_slice(&data[..kept]);
        buffer.dropped += (data.len() - kept) as u64;
    }

    /// What was kept (lossy UTF-8) and how many bytes were written in all.
    pub(crate) fn contents(&self) -> (String, u64) {
        let buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let total = buffer.bytes.len() as u64 + buffer.dropped;
        (String::from_utf8_lossy(&buffer.bytes).into_owned(), total)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut capture = Capture::new(5);
        capture.write(Bytes::from_static(b"hel")).unwrap();
        capture.write(Bytes::from_static(b"lo world")).unwrap();
        assert_eq!(capture.check_write().unwrap(), WRITE_BUDGET);
        assert_eq!(capture.contents(), ("hello".to_owned(), 11));
    }
}
