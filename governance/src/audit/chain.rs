//! The hash chain of the audit file.
//!
//! Each line is one JSON object: `seq` (1, 2, ...), `prev` (the hash of
//! the line before; zeros for the first), the record's fields, and last
//! `hash`: the SHA-256 of the line as it reads without its `hash` member.
//! An edited line no longer matches its own hash; a removed or reordered
//! one breaks the `seq` and `prev` of the next. Removing records from the
//! end leaves a shorter valid chain: compare the last `seq` and `hash` with
//! a copy kept elsewhere (the `audit` log target carries every line).

use std::io::BufRead;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AuditRecord;

/// `prev` of the first record.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

const HASH_MEMBER: &str = ",\"hash\":\"sha256:";
/// `,"hash":"sha256:` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = HASH_MEMBER.len() + 64 + 2;

/// Where the chain stands: the last record's number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub seq: u64,
    pub hash: String,
}

impl Link {
    /// Before the first record.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct ChainFields {
    seq: u64,
    prev: String,
}

/// The longest line a record may take (records are far smaller: their
/// caller-controlled parts are bounded); a longer last line is not a
/// record.
pub const MAX_LINE: usize = 1024 * 1024;

/// A record serialized, ready to be chained: the part of the work done
/// outside the writer's lock.
pub struct Serialized(Vec<u8>);

impl Serialized {
    pub fn new(record: &AuditRecord) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(record).map(Self)
    }
}

/// The line (newline included) that records `record` after `last`, and the
/// link it becomes.
pub fn encode(last: &Link, record: &Serialized) -> (Vec<u8>, Link) {
    let seq = last.seq + 1;
    // `{"seq":N,"prev":"...",` then the record's own members.
    let fields = record.0.strip_prefix(b"{").unwrap_or(&record.0);
    let mut line = Vec::with_capacity(fields.len() + 220);
    line.extend_from_slice(format!("{{\"seq\":{seq},\"prev\":\"{}\",", last.hash).as_bytes());
    line.extend_from_slice(fields);
    let hash = hash_of(&line);
    line.pop(); // the closing brace, put back after `hash`
    line.extend_from_slice(HASH_MEMBER.as_bytes());
    line.extend_from_slice(&hash.as_bytes()["sha256:".len()..]);
    line.extend_from_slice(b"\"}\n");
    (line, Link { seq, hash })
}

fn hash_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Why a line does not belong where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("it does not end with its `hash` member")]
    NoHash,
    #[error("it is not a well-formed audit record: {0}")]
    Malformed(String),
    #[error("its content does not match its hash: the record was edited")]
    Edited,
    #[error(
        "its `seq` is {found}, expected {expected}: a record is missing, inserted or out of order here"
    )]
    Seq { expected: u64, found: u64 },
    #[error(
        "its `prev` does not match the hash of the record before it: a record was removed, inserted or replaced here"
    )]
    Prev,
}

/// Checks that `line` (no newline) is a record that follows `last`, and
/// returns its link.
pub fn check(last: &Link, line: &[u8]) -> Result<Link, LineError> {
    let (link, prev) = read(line)?;
    serde_json::from_slice::<AuditRecord>(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    if link.seq != last.seq + 1 {
        return Err(LineError::Seq {
            expected: last.seq + 1,
            found: link.seq,
        });
    }
    if prev != last.hash {
        return Err(LineError::Prev);
    }
    Ok(link)
}

/// The link a line claims, after checking only its own hash: where an
/// existing file's chain continues from.
pub fn link_of(line: &[u8]) -> Result<Link, LineError> {
    read(line).map(|(link, _)| link)
}

/// A line's own link and its `prev`, once its hash checks out.
fn read(line: &[u8]) -> Result<(Link, String), LineError> {
    let (body, hash) = split(line)?;
    if hash_of(&body) != hash {
        return Err(LineError::Edited);
    }
    let fields: ChainFields =
        serde_json::from_slice(&body).map_err(|e| LineError::Malformed(e.to_string()))?;
    Ok((
        Link {
            seq: fields.seq,
            hash,
        },
        fields.prev,
    ))
}

/// The line without its `hash` member, and that member's value.
fn split(line: &[u8]) -> Result<(Vec<u8>, String), LineError> {
    let at = line
        .len()
        .checked_sub(HASH_SUFFIX_LEN)
        .ok_or(LineError::NoHash)?;
    let suffix = &line[at..];
    if !suffix.starts_with(HASH_MEMBER.as_bytes()) || !suffix.ends_with(b"\"}") {
        return Err(LineError::NoHash);
    }
    let hex = &suffix[HASH_MEMBER.len()..suffix.len() - 2];
    if !hex.iter().all(|b| b.is_ascii_hexdigit()) {
        return Err(LineError::NoHash);
    }
    let hash = format!("sha256:{}", String::from_utf8_lossy(hex));
    let mut body = line[..at].to_vec();
    body.push(b'}');
    Ok((body, hash))
}

/// What a verified file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    /// The last record's number and hash (`seq` 0 for an empty file):
    /// compare them with a copy kept elsewhere to detect a shortened file.
    pub last: Link,
}

/// Where and why a file does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the audit log: {0}")]
    Read(#[from] std::io::Error),
    #[error("line {line}: {error}")]
    Line { line: u64, error: LineError },
    #[error("the last line is not complete (no newline): a write was cut off")]
    Torn,
}

/// Verifies a whole chain, from its first record.
pub fn verify(mut reader: impl BufRead) -> Result<VerifyReport, VerifyError> {
    let mut last = Link::genesis();
    let mut records = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(VerifyReport { records, last });
        }
        if line.pop() != Some(b'\n') {
            return Err(VerifyError::Torn);
        }
        last = check(&last, &line).map_err(|error| VerifyError::Line {
            line: records + 1,
            error,
        })?;
        records += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tests::sample;

    /// A chain of `n` records, one per line.
    fn lines(n: u64) -> Vec<Vec<u8>> {
        let mut last = Link::genesis();
        (1..=n)
            .map(|i| {
                let (mut line, link) = encode(&last, &Serialized::new(&sample(i)).unwrap());
                line.pop(); // the newline
                last = link;
                line
            })
            .collect()
    }

    fn file(lines: &[Vec<u8>]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| [l.as_slice(), b"\n"].concat())
            .collect()
    }

    #[test]
    fn a_whole_chain_verifies_and_reports_where_it_ends() {
        let lines = lines(5);
        let report = verify(file(&lines).as_slice()).unwrap();
        assert_eq!(report.records, 5);
        assert_eq!(report.last, link_of(&lines[4]).unwrap());
        assert_eq!(verify(&b""[..]).unwrap().last, Link::genesis());
        // Each line is the record's JSON with the chain's members around it.
        let value: serde_json::Value = serde_json::from_slice(&lines[0]).unwrap();
        assert_eq!(value["seq"], 1);
        assert_eq!(value["prev"], GENESIS);
        assert_eq!(value["correlation_id"], "corr-1");
    }

    #[test]
    fn a_removed_record_is_found_where_the_chain_breaks() {
        let mut lines = lines(5);
        lines.remove(2);
        let error = verify(file(&lines).as_slice()).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::Line {
                    line: 3,
                    error: LineError::Seq {
                        expected: 3,
                        found: 4
                    }
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn an_edited_record_is_found() {
        let mut lines = lines(5);
        let text = String::from_utf8(lines[1].clone()).unwrap();
        lines[1] = text.replace("user-2", "user-9").into_bytes();
        assert_ne!(lines[1], text.as_bytes());
        let error = verify(file(&lines).as_slice()).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::Line {
                    line: 2,
                    error: LineError::Edited
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_record_rehashed_after_an_edit_breaks_the_next_link() {
        let mut lines = lines(3);
        // Re-encode record 2 with other content but a correct own hash.
        let mut forged: AuditRecord = serde_json::from_slice(&lines[1]).unwrap();
        assert!(forged.decision.allowed);
        forged.decision.allowed = false;
        let (mut line, _) = encode(
            &link_of(&lines[0]).unwrap(),
            &Serialized::new(&forged).unwrap(),
        );
        line.pop();
        assert_ne!(line, lines[1]);
        lines[1] = line;
        let error = verify(file(&lines).as_slice()).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::Line {
                    line: 3,
                    error: LineError::Prev
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_cut_off_last_line_and_a_line_without_its_hash_are_refused() {
        let lines = lines(2);
        let mut bytes = file(&lines);
        bytes.pop();
        assert!(matches!(verify(bytes.as_slice()), Err(VerifyError::Torn)));
        let error = verify(&b"{\"seq\":1}\n"[..]).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::Line {
                    line: 1,
                    error: LineError::NoHash
                }
            ),
            "{error}"
        );
    }
}
