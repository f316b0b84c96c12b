//! The embedded policy store: one SQLite file (WAL mode) that `agentctl`
//! writes while Orbit polls it. Each write is one `BEGIN IMMEDIATE`
//! transaction, so a condition and its change are atomic across processes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Activate, Activation, ActivationKind, Head, NewPolicySet, PolicySetVersion, PolicyStore,
    PolicyStoreError, ShadowHead, VersionInfo, next_head, timestamp_now,
};
use crate::policies::PolicyDocument;

/// How long a write waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    documents TEXT NOT NULL,
    schema TEXT NOT NULL,
    hash TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    revision INTEGER NOT NULL,
    previous INTEGER,
    activated_by TEXT NOT NULL,
    activated_at TEXT NOT NULL,
    shadow_version INTEGER,
    shadow_hash TEXT
);
CREATE TABLE IF NOT EXISTS activations (
    revision INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    from_version INTEGER,
    kind TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL
);
";

/// Policy sets in a SQLite file.
#[derive(Clone)]
pub struct SqlitePolicyStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> PolicyStoreError + '_ {
    move |e| PolicyStoreError::Backend(format!("`{}`: {e}", path.display()))
}

fn corrupt(what: String) -> impl Fn(serde_json::Error) -> PolicyStoreError {
    move |e| PolicyStoreError::Corrupt(format!("{what}: {e}"))
}

fn number(value: i64, what: &str) -> Result<u64, PolicyStoreError> {
    u64::try_from(value).map_err(|_| PolicyStoreError::Corrupt(format!("{what}: {value}")))
}

fn sql_number(value: u64) -> Result<i64, PolicyStoreError> {
    i64::try_from(value)
        .map_err(|_| PolicyStoreError::Invalid(format!("{value} is not a policy set version")))
}

impl SqlitePolicyStore {
    /// Opens (creating if needed) the store file at `path`.
    pub async fn open(path: &Path) -> Result<Self, PolicyStoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(|e| PolicyStoreError::Backend(format!("opening the policy store: {e}")))?
    }

    fn open_blocking(path: &Path) -> Result<Self, PolicyStoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                PolicyStoreError::Backend(format!("cannot create `{}`: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(db_error(path))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error(path))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error(path))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_error(path))?;
        conn.execute_batch(SCHEMA).map_err(db_error(path))?;
        add_shadow_columns(&conn).map_err(db_error(path))?;
        Ok(Self {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Path) -> Result<T, PolicyStoreError> + Send + 'static,
    ) -> Result<T, PolicyStoreError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &path)
        })
        .await
        .map_err(|e| PolicyStoreError::Backend(format!("a policy store call stopped: {e}")))?
    }
}

/// A store file written before shadows existed gains their columns.
fn add_shadow_columns(conn: &Connection) -> rusqlite::Result<()> {
    let has_shadow: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('head') WHERE name = 'shadow_version'",
        [],
        |r| r.get(0),
    )?;
    if !has_shadow {
        conn.execute_batch(
            "ALTER TABLE head ADD COLUMN shadow_version INTEGER;
             ALTER TABLE head ADD COLUMN shadow_hash TEXT;",
        )?;
    }
    Ok(())
}

type HeadRow = (
    i64,
    String,
    i64,
    Option<i64>,
    String,
    String,
    Option<i64>,
    Option<String>,
);

fn read_head(conn: &Connection, path: &Path) -> Result<Option<Head>, PolicyStoreError> {
    let row: Option<HeadRow> = conn
        .query_row(
            "SELECT version, hash, revision, previous, activated_by, activated_at, shadow_version, shadow_hash
             FROM head WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .optional()
        .map_err(db_error(path))?;
    row.map(
        |(version, hash, revision, previous, by, at, shadow_version, shadow_hash)| {
            let shadow = match (shadow_version, shadow_hash) {
                (Some(version), Some(hash)) => Some(ShadowHead {
                    version: number(version, "head shadow version")?,
                    hash,
                }),
                (None, None) => None,
                _ => {
                    return Err(PolicyStoreError::Corrupt(
                        "head: a shadow version without its hash, or a hash without a version"
                            .to_owned(),
                    ));
                }
            };
            Ok(Head {
                version: number(version, "head version")?,
                hash,
                revision: number(revision, "head revision")?,
                previous: previous.map(|p| number(p, "head previous")).transpose()?,
                shadow,
                activated_by: by,
                activated_at: at,
            })
        },
    )
    .transpose()
}

#[async_trait]
impl PolicyStore for SqlitePolicyStore {
    async fn put(&self, set: &NewPolicySet) -> Result<PolicySetVersion, PolicyStoreError> {
        set.check()?;
        let set = set.clone();
        self.with(move |conn, path| {
            let documents = serde_json::to_string(&set.documents)
                .map_err(|e| PolicyStoreError::Invalid(e.to_string()))?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_error(path))?;
            let last: i64 = tx
                .query_row("SELECT COALESCE(MAX(version), 0) FROM versions", [], |r| {
                    r.get(0)
                })
                .map_err(db_error(path))?;
            let stored = PolicySetVersion {
                version: number(last, "version")? + 1,
                hash: set.hash(),
                documents: set.documents,
                schema: set.schema,
                author: set.author,
                created_at: timestamp_now(),
                message: set.message,
            };
            tx.execute(
                "INSERT INTO versions (version, documents, schema, hash, author, created_at, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    last + 1,
                    documents,
                    stored.schema,
                    stored.hash,
                    stored.author,
                    stored.created_at,
                    stored.message
                ],
            )
            .map_err(db_error(path))?;
            tx.commit().map_err(db_error(path))?;
            Ok(stored)
        })
        .await
    }

    async fn get(&self, version: u64) -> Result<PolicySetVersion, PolicyStoreError> {
        let key = sql_number(version)?;
        self.with(move |conn, path| {
            let row = conn
                .query_row(
                    "SELECT documents, schema, hash, author, created_at, message FROM versions WHERE version = ?1",
                    [key],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                        ))
                    },
                )
                .optional()
                .map_err(db_error(path))?;
            let (documents, schema, hash, author, created_at, message) =
                row.ok_or(PolicyStoreError::NotFound(version))?;
            let documents: Vec<PolicyDocument> = serde_json::from_str(&documents)
                .map_err(corrupt(format!("policy set version {version}")))?;
            Ok(PolicySetVersion {
                version,
                documents,
                schema,
                hash,
                author,
                created_at,
                message,
            })
        })
        .await
    }

    async fn list(&self) -> Result<Vec<VersionInfo>, PolicyStoreError> {
        self.with(|conn, path| {
            let mut statement = conn
                .prepare(
                    "SELECT version, hash, json_array_length(documents), author, created_at, message
                     FROM versions ORDER BY version",
                )
                .map_err(db_error(path))?;
            let rows = statement
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .map_err(db_error(path))?;
            let mut versions = Vec::new();
            for row in rows {
                let (version, hash, documents, author, created_at, message) =
                    row.map_err(db_error(path))?;
                let version = number(version, "version")?;
                let documents =
                    documents
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            PolicyStoreError::Corrupt(format!("policy set version {version}"))
                        })?;
                versions.push(VersionInfo {
                    version,
                    hash,
                    documents,
                    author,
                    created_at,
                    message,
                });
            }
            Ok(versions)
        })
        .await
    }

    async fn head(&self) -> Result<Option<Head>, PolicyStoreError> {
        self.with(|conn, path| read_head(conn, path)).await
    }

    async fn activate(&self, request: &Activate<'_>) -> Result<Head, PolicyStoreError> {
        let version = request.version;
        let expected = request.expected_revision;
        let kind = request.kind;
        let actor = request.actor.to_owned();
        let key = sql_number(version)?;
        self.with(move |conn, path| {
            let request = Activate {
                version,
                expected_revision: expected,
                kind,
                actor: &actor,
            };
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_error(path))?;
            let current = read_head(&tx, path)?;
            let actual = current.as_ref().map_or(0, |h| h.revision);
            if actual != expected {
                return Err(PolicyStoreError::Conflict { expected, actual });
            }
            let hash: String = tx
                .query_row("SELECT hash FROM versions WHERE version = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(db_error(path))?
                .ok_or(PolicyStoreError::NotFound(version))?;
            let (head, activation) = next_head(current.as_ref(), &request, &hash)?;
            let revision = sql_number(head.revision)?;
            let previous = head.previous.map(sql_number).transpose()?;
            let shadow_version = head
                .shadow
                .as_ref()
                .map(|s| sql_number(s.version))
                .transpose()?;
            tx.execute(
                "INSERT OR REPLACE INTO head
                 (id, version, hash, revision, previous, activated_by, activated_at, shadow_version, shadow_hash)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    sql_number(head.version)?,
                    head.hash,
                    revision,
                    previous,
                    head.activated_by,
                    head.activated_at,
                    shadow_version,
                    head.shadow.as_ref().map(|s| s.hash.as_str()),
                ],
            )
            .map_err(db_error(path))?;
            tx.execute(
                "INSERT INTO activations (revision, version, from_version, kind, by, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    revision,
                    key,
                    activation.from.map(sql_number).transpose()?,
                    activation.kind.as_str(),
                    activation.by,
                    activation.at,
                ],
            )
            .map_err(db_error(path))?;
            tx.commit().map_err(db_error(path))?;
            Ok(head)
        })
        .await
    }

    async fn history(&self) -> Result<Vec<Activation>, PolicyStoreError> {
        self.with(|conn, path| {
            let mut statement = conn
                .prepare(
                    "SELECT revision, version, from_version, kind, by, at FROM activations ORDER BY revision",
                )
                .map_err(db_error(path))?;
            let rows = statement
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .map_err(db_error(path))?;
            let mut history = Vec::new();
            for row in rows {
                let (revision, version, from, kind, by, at) = row.map_err(db_error(path))?;
                history.push(Activation {
                    revision: number(revision, "activation revision")?,
                    version: number(version, "activation version")?,
                    from: from.map(|f| number(f, "activation from")).transpose()?,
                    kind: ActivationKind::parse(&kind).ok_or_else(|| {
                        PolicyStoreError::Corrupt(format!("activation kind `{kind}`"))
                    })?,
                    by,
                    at,
                });
            }
            Ok(history)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("`{}`", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::SqlitePolicyStore;
    use crate::store::{PolicyStore, contract};

    #[tokio::test]
    async fn sqlite_keeps_the_policy_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        contract::run(move |name| {
            let path = root.join(format!("{name}.db"));
            async move {
                let store = SqlitePolicyStore::open(&path).await.unwrap();
                Arc::new(store) as Arc<dyn PolicyStore>
            }
        })
        .await;
    }
}
