//! The writer: one thread owns the file; each decision waits for its record.
//!
//! Records queue on a bounded channel; the thread takes what has queued (up
//! to a batch), writes it with one `write`, and only then answers each
//! request, which acts only after that. A written record is in the
//! operating system's hands, so a crash of the process (SIGKILL included)
//! loses none that took effect; `close` (clean shutdown, SIGTERM) writes
//! what is queued and syncs the file to disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::AuditRecord;
use super::chain::{self, Link};

/// Records waiting to be written, at most: past it, deciders wait.
const QUEUE: usize = 4096;
/// Records written with one `write`, at most.
const BATCH: usize = 512;

/// Why a record could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The file cannot be opened, or its last record does not check out.
    #[error("cannot open the audit log `{path}`: {reason}")]
    Open { path: PathBuf, reason: String },
    /// A write failed (disk full, I/O error); nothing of it was kept.
    #[error("cannot write the audit log `{path}`: {reason}")]
    Write { path: PathBuf, reason: String },
    /// The log was closed (the server is stopping).
    #[error("the audit log is closed")]
    Closed,
}

/// Where a written record sits in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
}

enum Message {
    Record(
        Box<AuditRecord>,
        oneshot::Sender<Result<Receipt, AuditError>>,
    ),
    Close(oneshot::Sender<Link>),
}

/// The audit log's handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct AuditLog {
    /// `None`: records are discarded (benchmarks of what auditing costs).
    tx: Option<mpsc::Sender<Message>>,
    healthy: Arc<AtomicBool>,
}

impl AuditLog {
    /// Starts the writer: records go to the `audit` log target and, with a
    /// `file`, are appended to it, continuing its chain. A file whose last
    /// record was cut off by a crash loses that partial line (it never took
    /// effect); one whose last record does not match its own hash is
    /// refused (`agentctl audit verify` says where it breaks).
    pub fn open(file: Option<&Path>) -> Result<Self, AuditError> {
        let sink = file.map(Sink::open).transpose()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            link: sink.as_ref().map_or_else(Link::genesis, |s| s.link.clone()),
            sink,
            pending: Vec::new(),
            healthy: healthy.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Open {
                path: file.map(Path::to_owned).unwrap_or_default(),
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            tx: Some(tx),
            healthy,
        })
    }

    /// A log that records nothing: only for benchmarks that measure what
    /// auditing costs. Never serve with it.
    pub fn discard() -> Self {
        Self {
            tx: None,
            healthy: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Writes `record`; returns once it is written. An error means it was
    /// not: the decision must not take effect.
    pub async fn record(&self, record: AuditRecord) -> Result<Receipt, AuditError> {
        let Some(tx) = &self.tx else {
            return Ok(Receipt { seq: 0 });
        };
        let (done, written) = oneshot::channel();
        tx.send(Message::Record(Box::new(record), done))
            .await
            .map_err(|_| AuditError::Closed)?;
        written.await.map_err(|_| AuditError::Closed)?
    }

    /// False after a write failed, until one succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Writes every queued record, syncs the file and stops the writer;
    /// later records fail with [`AuditError::Closed`]. Returns where the
    /// chain ends (`None` if it was already closed).
    pub async fn close(&self) -> Option<Link> {
        let tx = self.tx.as_ref()?;
        let (done, closed) = oneshot::channel();
        tx.send(Message::Close(done)).await.ok()?;
        closed.await.ok()
    }
}

/// The file, and how much of it is whole records.
struct Sink {
    path: PathBuf,
    file: File,
    len: u64,
    link: Link,
}

impl Sink {
    fn open(path: &Path) -> Result<Self, AuditError> {
        let fail = |reason: String| AuditError::Open {
            path: path.to_owned(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| fail(e.to_string()))?;
        let (len, link) = recover(&mut file).map_err(fail)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            link,
        })
    }
}

/// Where the chain in `file` ends. A partial last line (a write cut off by
/// a crash) is cut away, with a warning.
fn recover(file: &mut File) -> Result<(u64, Link), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut want = 64 * 1024_u64;
    loop {
        let from = len.saturating_sub(want);
        let mut tail = Vec::new();
        // Read no further than `len`: some files never end (`/dev/full`).
        file.seek(SeekFrom::Start(from))
            .and_then(|_| (&*file).take(len - from).read_to_end(&mut tail))
            .map_err(|e| e.to_string())?;
        let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
            if from > 0 {
                want *= 2;
                continue;
            }
            // Not one whole line: only a cut-off first record.
            truncate(file, len, 0)?;
            return Ok((0, Link::genesis()));
        };
        let whole = from + end as u64 + 1;
        let start = match tail[..end].iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None if from > 0 => {
                want *= 2;
                continue;
            }
            None => 0,
        };
        let link = chain::link_of(&tail[start..end])
            .map_err(|e| format!("its last record does not check out ({e}); run `agentctl audit verify` on it, then move it aside"))?;
        truncate(file, len, whole)?;
        return Ok((whole, link));
    }
}

fn truncate(file: &File, len: u64, to: u64) -> Result<(), String> {
    if to < len {
        tracing::warn!(
            bytes = len - to,
            "the audit log ended in a partial record (a write cut off by a crash); removing it"
        );
        file.set_len(to).map_err(|e| e.to_string())?;
    }
    Ok(())
}

struct Writer {
    sink: Option<Sink>,
    /// The last record written.
    link: Link,
    /// Chained, not yet written.
    pending: Vec<Pending>,
    healthy: Arc<AtomicBool>,
}

struct Pending {
    line: Vec<u8>,
    link: Link,
    done: oneshot::Sender<Result<Receipt, AuditError>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut closing = None;
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            for message in batch.drain(..) {
                match message {
                    Message::Record(record, done) => self.queue(&record, done),
                    Message::Close(done) => closing = Some(done),
                }
            }
            self.write();
            if closing.is_some() {
                // Nothing new is taken; what was sent before is written.
                rx.close();
            }
        }
        self.write();
        if let Some(sink) = &self.sink
            && let Err(error) = sink.file.sync_all()
        {
            tracing::error!(path = %sink.path.display(), %error, "cannot sync the audit log");
        }
        if let Some(done) = closing {
            let _ = done.send(self.link.clone());
        }
    }

    /// Chains `record` after what is pending; written at the next `write`.
    fn queue(&mut self, record: &AuditRecord, done: oneshot::Sender<Result<Receipt, AuditError>>) {
        let last = self.pending.last().map_or(&self.link, |p| &p.link);
        match chain::encode(last, record) {
            Ok((line, link)) => self.pending.push(Pending { line, link, done }),
            Err(error) => {
                let _ = done.send(Err(AuditError::Write {
                    path: self.path(),
                    reason: format!("cannot encode the record: {error}"),
                }));
            }
        }
    }

    /// Writes what is pending with one `write`, then answers each request.
    fn write(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let Some(last) = pending.last() else { return };
        let result = match &mut self.sink {
            None => Ok(()),
            Some(sink) => {
                let mut bytes = Vec::with_capacity(pending.iter().map(|p| p.line.len() + 1).sum());
                for p in &pending {
                    bytes.extend_from_slice(&p.line);
                    bytes.push(b'\n');
                }
                match sink.file.write_all(&bytes) {
                    Ok(()) => {
                        sink.len += bytes.len() as u64;
                        Ok(())
                    }
                    Err(error) => {
                        // Keep the chain whole: drop whatever part landed.
                        let _ = sink.file.set_len(sink.len);
                        Err(error.to_string())
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                self.link = last.link.clone();
                self.healthy.store(true, Ordering::Relaxed);
                for p in pending {
                    tracing::info!(target: super::TARGET, "{}", String::from_utf8_lossy(&p.line));
                    let _ = p.done.send(Ok(Receipt { seq: p.link.seq }));
                }
            }
            Err(reason) => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(path = %self.path().display(), %reason, records = pending.len(), "cannot write the audit log; the decisions are refused");
                let error = AuditError::Write {
                    path: self.path(),
                    reason,
                };
                for p in pending {
                    let _ = p.done.send(Err(error.clone()));
                }
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.sink
            .as_ref()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tests::sample;
    use crate::audit::verify;

    fn verify_file(path: &Path) -> chain::VerifyReport {
        verify(std::io::BufReader::new(File::open(path).unwrap())).unwrap()
    }

    #[tokio::test]
    async fn concurrent_records_all_land_in_one_chain_that_continues_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/decisions.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..1000 {
            let log = log.clone();
            writes.spawn(async move { log.record(sample(n)).await.unwrap().seq });
        }
        let mut seqs = writes.join_all().await;
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        let end = log.close().await.unwrap();
        assert!(matches!(
            log.record(sample(0)).await,
            Err(AuditError::Closed)
        ));
        let report = verify_file(&path);
        assert_eq!((report.records, &report.last), (1000, &end));

        let log = AuditLog::open(Some(&path)).unwrap();
        assert_eq!(log.record(sample(1)).await.unwrap().seq, 1001);
        log.close().await.unwrap();
        assert_eq!(verify_file(&path).records, 1001);
    }

    #[tokio::test]
    async fn a_record_cut_off_by_a_crash_is_removed_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        for n in 0..3 {
            log.record(sample(n)).await.unwrap();
        }
        log.close().await.unwrap();
        let whole = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":4,\"prev\":\"sha")
            .unwrap();

        let log = AuditLog::open(Some(&path)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        assert_eq!(log.record(sample(3)).await.unwrap().seq, 4);
        log.close().await.unwrap();
        assert_eq!(verify_file(&path).records, 4);
    }

    #[tokio::test]
    async fn a_file_whose_last_record_was_edited_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        log.record(sample(1)).await.unwrap();
        log.close().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("user-1", "user-2")).unwrap();
        let error = AuditLog::open(Some(&path)).err().unwrap();
        assert!(
            matches!(&error, AuditError::Open { reason, .. } if reason.contains("audit verify")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_failed_write_refuses_its_decisions_and_keeps_nothing() {
        // Every write to /dev/full fails with "no space left on device".
        let log = AuditLog::open(Some(Path::new("/dev/full"))).unwrap();
        let error = log.record(sample(1)).await.unwrap_err();
        assert!(matches!(error, AuditError::Write { .. }), "{error}");
        assert!(!log.is_healthy());
        // Nothing was chained: the next record would still be the first.
        assert_eq!(log.close().await.unwrap(), Link::genesis());
    }
}
