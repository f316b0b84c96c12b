//! The writer: each decision's record is appended, in chain order, before
//! the decision is answered.
//!
//! The record is serialized by the request's own task; under a lock it is
//! chained to the one before and appended with one `write`, straight from
//! that task: no hand-off to another thread, whose wake-ups cost more than
//! the write (measured: docs/performance.md). A written record is in the
//! operating system's hands, so a crash of the process loses none that took
//! effect; `close` (clean shutdown, SIGTERM) syncs the file to disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::AuditRecord;
use super::chain::{self, Link, MAX_LINE, Serialized};

/// A write in progress for longer than this is a stalled disk: decisions
/// that arrive meanwhile are refused rather than queued behind it.
const STALLED_AFTER: Duration = Duration::from_secs(5);
/// How long after a failed write the log reports itself unhealthy, unless a
/// write has succeeded since: long enough to take the instance out of
/// rotation, short enough that traffic comes back to try again.
const UNHEALTHY_FOR: Duration = Duration::from_secs(30);

/// Why a record could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The file cannot be opened, is in use, or its last record does not
    /// check out.
    #[error("cannot open the audit log `{path}`: {reason}")]
    Open { path: PathBuf, reason: String },
    /// A write failed (disk full, I/O error); nothing of it was kept.
    #[error("cannot write the audit log `{path}`: {reason}")]
    Write { path: PathBuf, reason: String },
    /// Records would go nowhere: no file, and the `audit` log target off.
    #[error(
        "audit records would go nowhere: give an audit file, or enable the `audit` log target at `info` (RUST_LOG)"
    )]
    Nowhere,
    /// A write has been in progress for too long (a stalled disk).
    #[error("the audit log's current write has taken over {0:?}: the disk stalls")]
    Stalled(Duration),
    /// The log was closed (the server is stopping).
    #[error("the audit log is closed")]
    Closed,
}

/// Where a written record sits in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
}

/// Where records are appended: a file, or (in tests) something that fails
/// when told to.
pub(crate) trait Medium: Send {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
    fn sync(&mut self) -> std::io::Result<()>;
}

impl Medium for File {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

/// The audit log's handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct AuditLog {
    /// `None`: records are discarded (benchmarks of what auditing costs).
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// `None`: records go to the log target only.
    path: Option<PathBuf>,
    state: tokio::sync::Mutex<State>,
    started: Instant,
    /// When the last write failed, if none has succeeded since: in
    /// milliseconds since `started`, plus one (0: none).
    failed_at: AtomicU64,
    /// When the write in progress began, the same way (0: none).
    writing_since: AtomicU64,
    stalled_after: Duration,
}

struct State {
    medium: Option<Box<dyn Medium>>,
    /// Bytes of whole records in the file.
    len: u64,
    /// The last record written.
    link: Link,
    /// Set when a failed write could not be undone: the file no longer
    /// ends in a whole record, and nothing more is appended to it.
    broken: Option<String>,
    closed: bool,
}

impl AuditLog {
    /// Opens the log: records go to the `audit` log target and, with a
    /// `file`, are appended to it, continuing its chain. The file is locked
    /// for this process: one writer per file. A partial last line (a write
    /// cut off by a crash) is cut away, as it never took effect; a file
    /// whose last line is not a record, or whose last record does not match
    /// its own hash, is refused (`agentctl audit verify` says where it
    /// breaks). Without a file the `audit` target must be enabled.
    pub fn open(file: Option<&Path>) -> Result<Self, AuditError> {
        let (medium, len, link) = match file {
            Some(path) => {
                let (file, len, link) = open_file(path).map_err(|reason| AuditError::Open {
                    path: path.to_owned(),
                    reason,
                })?;
                (Some(Box::new(file) as Box<dyn Medium>), len, link)
            }
            None if tracing::enabled!(target: super::TARGET, tracing::Level::INFO) => {
                (None, 0, Link::genesis())
            }
            None => return Err(AuditError::Nowhere),
        };
        Ok(Self::with(file.map(Path::to_owned), medium, len, link))
    }

    fn with(path: Option<PathBuf>, medium: Option<Box<dyn Medium>>, len: u64, link: Link) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                path,
                state: tokio::sync::Mutex::new(State {
                    medium,
                    len,
                    link,
                    broken: None,
                    closed: false,
                }),
                started: Instant::now(),
                failed_at: AtomicU64::new(0),
                writing_since: AtomicU64::new(0),
                stalled_after: STALLED_AFTER,
            })),
        }
    }

    /// A log that records nothing: only for benchmarks that measure what
    /// auditing costs. Never serve with it.
    pub fn discard() -> Self {
        Self { inner: None }
    }

    /// Writes `record`; returns once it is written. An error means it was
    /// not: the decision must not take effect.
    pub async fn record(&self, record: &AuditRecord) -> Result<Receipt, AuditError> {
        let Some(inner) = &self.inner else {
            return Ok(Receipt { seq: 0 });
        };
        let serialized = Serialized::new(record).map_err(|e| inner.write_error(e.to_string()))?;
        // No timer per decision (a timeout on every lock cost about 8 % of
        // the load benchmark's throughput): a stalled write is seen from its
        // start time instead.
        let mut state = match inner.state.try_lock() {
            Ok(state) => state,
            Err(_) if inner.stalled() => return Err(AuditError::Stalled(inner.stalled_after)),
            Err(_) => inner.state.lock().await,
        };
        if state.closed {
            return Err(AuditError::Closed);
        }
        if let Some(reason) = &state.broken {
            // Still failing: keep `/ready` saying so until a restart.
            inner.failed_at.store(inner.millis(), Ordering::Relaxed);
            return Err(inner.write_error(reason.clone()));
        }
        let (line, link) = chain::encode(&state.link, &serialized);
        let len = state.len;
        inner.writing_since.store(inner.millis(), Ordering::Relaxed);
        let appended = state.medium.as_mut().map_or(Ok(()), |m| m.append(&line));
        inner.writing_since.store(0, Ordering::Relaxed);
        if let Err(error) = appended
            && let Some(medium) = &mut state.medium
        {
            // Keep the chain whole: cut away whatever part landed.
            let mut reason = error.to_string();
            if let Err(undo) = medium.truncate(len) {
                reason = format!(
                    "{reason}; then cannot cut the partial record away ({undo}): restart Orbit to recover the file"
                );
                state.broken = Some(reason.clone());
            }
            inner.failed_at.store(inner.millis(), Ordering::Relaxed);
            drop(state);
            tracing::error!(path = %inner.path_text(), %reason, "cannot write the audit log; the decision is refused");
            return Err(inner.write_error(reason));
        }
        state.len += line.len() as u64;
        state.link = link;
        let seq = state.link.seq;
        // Emitted under the lock, so the target's copy keeps chain order.
        if let Ok(text) = std::str::from_utf8(&line) {
            tracing::info!(target: super::TARGET, "{}", text.trim_end());
        }
        inner.failed_at.store(0, Ordering::Relaxed);
        drop(state);
        Ok(Receipt { seq })
    }

    /// False from a failed write until one succeeds, or for
    /// [`UNHEALTHY_FOR`] after it, whichever comes first.
    pub fn is_healthy(&self) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let failed_at = inner.failed_at.load(Ordering::Relaxed);
        failed_at == 0 || inner.millis() > failed_at + UNHEALTHY_FOR.as_millis() as u64
    }

    /// Syncs the file and closes the log: later records fail with
    /// [`AuditError::Closed`]. Returns where the chain ends; `None` if it
    /// was already closed, or a write stalls (then nothing is synced and
    /// the log stays open).
    pub async fn close(&self) -> Option<Link> {
        let inner = self.inner.as_ref()?;
        let mut state = tokio::time::timeout(inner.stalled_after, inner.state.lock())
            .await
            .ok()?;
        if std::mem::replace(&mut state.closed, true) {
            return None;
        }
        if let Some(medium) = &mut state.medium
            && let Err(error) = medium.sync()
        {
            tracing::error!(path = %inner.path_text(), %error, "cannot sync the audit log");
        }
        Some(state.link.clone())
    }
}

impl Inner {
    fn millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn stalled(&self) -> bool {
        let since = self.writing_since.load(Ordering::Relaxed);
        since != 0 && self.millis() > since + self.stalled_after.as_millis() as u64
    }

    fn path_text(&self) -> String {
        self.path.as_ref().map_or_else(
            || "(log target only)".to_owned(),
            |p| p.display().to_string(),
        )
    }

    fn write_error(&self, reason: String) -> AuditError {
        AuditError::Write {
            path: PathBuf::from(self.path_text()),
            reason,
        }
    }
}

/// Opens, locks and recovers the file: its length in whole records, and
/// where its chain ends.
fn open_file(path: &Path) -> Result<(File, u64, Link), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => {
            "another process (another Orbit on the same data directory?) is writing it".to_owned()
        }
        std::fs::TryLockError::Error(e) => format!("cannot lock it: {e}"),
    })?;
    let (len, link) = recover(&mut file)?;
    Ok((file, len, link))
}

/// Where the chain in `file` ends. A partial last line (a write cut off by
/// a crash) is cut away, with a warning; anything else that is not a
/// record is refused, never cut.
fn recover(file: &mut File) -> Result<(u64, Link), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    // A record's line and a partial one after it fit in twice the longest.
    let from = len.saturating_sub(2 * MAX_LINE as u64 + 2);
    let mut tail = Vec::new();
    // Read no further than `len`: some files never end (`/dev/full`).
    file.seek(SeekFrom::Start(from))
        .and_then(|_| (&*file).take(len - from).read_to_end(&mut tail))
        .map_err(|e| e.to_string())?;
    let whole = tail
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let torn = &tail[whole..];
    if !torn.is_empty() {
        const START: &[u8] = b"{\"seq\":";
        let is_record = torn.len() <= MAX_LINE
            && (torn.starts_with(START) || START.starts_with(torn))
            && (from == 0 || whole > 0);
        if !is_record {
            return Err("it does not end in an audit record: is it the right file?".to_owned());
        }
        tracing::warn!(
            bytes = torn.len(),
            "the audit log ended in a partial record (a write cut off by a crash); removing it"
        );
        file.set_len(from + whole as u64)
            .map_err(|e| e.to_string())?;
    }
    if whole == 0 {
        if from > 0 {
            return Err(
                "its last line is longer than any record: is it the right file?".to_owned(),
            );
        }
        return Ok((0, Link::genesis()));
    }
    let last = &tail[..whole - 1];
    let start = last
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    if start == 0 && from > 0 {
        return Err("its last line is longer than any record: is it the right file?".to_owned());
    }
    let link = chain::link_of(&last[start..]).map_err(|e| {
        format!(
            "its last record does not check out ({e}); run `agentctl audit verify` on it, keep it, and move it aside"
        )
    })?;
    Ok((from + whole as u64, link))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

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
            writes.spawn(async move { log.record(&sample(n)).await.unwrap().seq });
        }
        let mut seqs = writes.join_all().await;
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        let end = log.close().await.unwrap();
        assert_eq!(log.close().await, None);
        assert!(matches!(
            log.record(&sample(0)).await,
            Err(AuditError::Closed)
        ));
        let report = verify_file(&path);
        assert_eq!((report.records, &report.last), (1000, &end));
        drop(log);

        let log = AuditLog::open(Some(&path)).unwrap();
        assert_eq!(log.record(&sample(1)).await.unwrap().seq, 1001);
        log.close().await.unwrap();
        assert_eq!(verify_file(&path).records, 1001);
    }

    #[tokio::test]
    async fn one_file_has_one_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let _first = AuditLog::open(Some(&path)).unwrap();
        let error = AuditLog::open(Some(&path)).err().unwrap();
        assert!(error.to_string().contains("another process"), "{error}");
    }

    #[tokio::test]
    async fn a_record_cut_off_by_a_crash_is_removed_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        for n in 0..3 {
            log.record(&sample(n)).await.unwrap();
        }
        log.close().await.unwrap();
        drop(log);
        let whole = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":4,\"prev\":\"sha")
            .unwrap();

        let log = AuditLog::open(Some(&path)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        assert_eq!(log.record(&sample(3)).await.unwrap().seq, 4);
        log.close().await.unwrap();
        assert_eq!(verify_file(&path).records, 4);
    }

    #[tokio::test]
    async fn a_file_that_is_not_an_audit_log_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "just some notes",
            "a line\nand a second without its newline",
        ] {
            let path = dir.path().join("notes.txt");
            std::fs::write(&path, text).unwrap();
            let error = AuditLog::open(Some(&path)).err().unwrap();
            assert!(error.to_string().contains("right file"), "{error}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
    }

    #[tokio::test]
    async fn a_file_whose_last_record_was_edited_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        log.record(&sample(1)).await.unwrap();
        log.close().await.unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("user-1", "user-2")).unwrap();
        let error = AuditLog::open(Some(&path)).err().unwrap();
        assert!(
            matches!(&error, AuditError::Open { reason, .. } if reason.contains("audit verify")),
            "{error}"
        );
    }

    #[test]
    fn without_a_file_the_log_target_must_be_on() {
        // No subscriber in this test: the `audit` target goes nowhere.
        assert!(matches!(AuditLog::open(None), Err(AuditError::Nowhere)));
    }

    /// A medium with room for `room` more bytes: a write past it lands in
    /// part, then fails, as on a full disk.
    #[derive(Clone, Default)]
    struct Disk {
        bytes: Arc<Mutex<Vec<u8>>>,
        room: Arc<AtomicUsize>,
        truncate_fails: bool,
    }

    impl Medium for Disk {
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            let room = self.room.load(Ordering::Relaxed);
            let landed = bytes.len().min(room);
            self.bytes
                .lock()
                .unwrap()
                .extend_from_slice(&bytes[..landed]);
            self.room.store(room - landed, Ordering::Relaxed);
            if landed < bytes.len() {
                return Err(std::io::Error::other("no space left on device"));
            }
            Ok(())
        }

        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            if self.truncate_fails {
                return Err(std::io::Error::other("input/output error"));
            }
            self.bytes.lock().unwrap().truncate(len as usize);
            Ok(())
        }

        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_on(disk: &Disk) -> AuditLog {
        AuditLog::with(
            Some("disk".into()),
            Some(Box::new(disk.clone())),
            0,
            Link::genesis(),
        )
    }

    #[tokio::test]
    async fn a_full_disk_refuses_the_decision_keeps_the_chain_whole_and_recovers() {
        let disk = Disk::default();
        disk.room.store(1_000_000, Ordering::Relaxed);
        let log = log_on(&disk);
        log.record(&sample(1)).await.unwrap();
        let before = disk.bytes.lock().unwrap().clone();

        // Room for half a record: part of it lands, then the write fails.
        disk.room.store(100, Ordering::Relaxed);
        let error = log.record(&sample(2)).await.unwrap_err();
        assert!(matches!(error, AuditError::Write { .. }), "{error}");
        assert!(!log.is_healthy());
        assert_eq!(
            *disk.bytes.lock().unwrap(),
            before,
            "the partial record stays"
        );

        // Space is freed: the next record follows the last one written.
        disk.room.store(1_000_000, Ordering::Relaxed);
        assert_eq!(log.record(&sample(3)).await.unwrap().seq, 2);
        assert!(log.is_healthy());
        let report = verify(disk.bytes.lock().unwrap().as_slice()).unwrap();
        assert_eq!(report.records, 2);
    }

    /// A medium whose writes hang until released, as a stalled disk's do.
    struct Stalling(std::sync::mpsc::Receiver<()>);

    impl Medium for Stalling {
        fn append(&mut self, _: &[u8]) -> std::io::Result<()> {
            let _ = self.0.recv();
            Ok(())
        }
        fn truncate(&mut self, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decisions_arriving_while_a_write_stalls_are_refused_not_queued() {
        let (release, stalled) = std::sync::mpsc::channel();
        let mut log = AuditLog::with(
            Some("disk".into()),
            Some(Box::new(Stalling(stalled))),
            0,
            Link::genesis(),
        );
        let inner = log.inner.as_mut().and_then(Arc::get_mut).unwrap();
        inner.stalled_after = Duration::from_millis(200);
        let first = tokio::spawn({
            let log = log.clone();
            async move { log.record(&sample(1)).await }
        });
        // Until the bound passes, a second decision waits its turn; after
        // it, a third is refused at once.
        let inner = log.inner.clone().unwrap();
        while inner.writing_since.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let log = log.clone();
            async move { log.record(&sample(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(
            log.record(&sample(3)).await,
            Err(AuditError::Stalled(_))
        ));
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().seq, 1);
        assert_eq!(second.await.unwrap().unwrap().seq, 2);
    }

    #[tokio::test]
    async fn a_partial_record_that_cannot_be_cut_away_stops_all_writes() {
        let disk = Disk {
            truncate_fails: true,
            ..Disk::default()
        };
        disk.room.store(100, Ordering::Relaxed);
        let log = log_on(&disk);
        let error = log.record(&sample(1)).await.unwrap_err();
        assert!(error.to_string().contains("restart"), "{error}");
        disk.room.store(1_000_000, Ordering::Relaxed);
        let error = log.record(&sample(2)).await.unwrap_err();
        assert!(error.to_string().contains("restart"), "{error}");
        assert_eq!(
            disk.bytes.lock().unwrap().len(),
            100,
            "nothing appended after the partial record"
        );
    }
}
