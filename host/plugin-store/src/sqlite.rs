//! The embedded registry: one SQLite file (WAL mode), shared safely by every
//! process of the local stack (`agentctl` moving an alias while Orbit and
//! Axon read). Each write is one `BEGIN IMMEDIATE` transaction, so its
//! condition and its change are atomic across processes; a crash leaves the
//! file at the last committed write.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use semver::Version;

use crate::error::StoreError;
use crate::manifest::PluginName;
use crate::registry::{
    Alias, AliasMove, AliasTarget, HistoryEntry, ROUTES_SUBJECT, Registered, Registry, Route,
    RouteChange, Snapshot, StoredAlias, StoredVersion, VersionEntry, VersionRecord, corrupt,
    model_subject, refusal, timestamp_now, to_json,
};
use crate::signing::Envelope;

/// How long a write waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    envelope TEXT NOT NULL,
    published_at TEXT NOT NULL,
    published_by TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '[]',
    revoked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    envelope TEXT NOT NULL,
    published_at TEXT NOT NULL,
    published_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    plugin TEXT NOT NULL,
    name TEXT NOT NULL,
    target TEXT NOT NULL,
    previous TEXT,
    revision INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (plugin, name)
);
CREATE TABLE IF NOT EXISTS routes (
    intent TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    alias TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_value TEXT,
    to_value TEXT
);
CREATE INDEX IF NOT EXISTS history_by_plugin ON history (plugin, seq);
CREATE TABLE IF NOT EXISTS trust (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    serial INTEGER NOT NULL,
    envelope TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, generation) VALUES (1, 0);
";

/// The registry in a SQLite file.
#[derive(Clone)]
pub struct SqliteRegistry {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("registry `{}`: {e}", path.display()))
}

impl SqliteRegistry {
    /// Opens (creating if needed) the registry file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(|e| StoreError::Backend(format!("opening the registry stopped: {e}")))?
    }

    fn open_blocking(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(StoreError::io(format!("cannot create `{}`", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(db_error(path))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error(path))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error(path))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_error(path))?;
        conn.execute_batch(SCHEMA).map_err(db_error(path))?;
        Ok(Self {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &path)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a registry call stopped: {e}")))?
    }

    /// Runs `f` in one immediate (write-locking) transaction that bumps the
    /// generation, committed only if `f` succeeds.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with(move |conn, path| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_error(path))?;
            let value = f(&tx, path)?;
            tx.execute(
                "UPDATE meta SET generation = generation + 1 WHERE id = 1",
                [],
            )
            .map_err(db_error(path))?;
            tx.commit().map_err(db_error(path))?;
            Ok(value)
        })
        .await
    }

    /// The history of one subject (a plugin, or the intent table), oldest first.
    async fn history_of(&self, subject: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let subject = subject.to_owned();
        self.with(move |conn, path| {
            let mut stmt = conn
                .prepare(
                    "SELECT at, actor, action, from_value, to_value FROM history WHERE plugin = ?1 ORDER BY seq",
                )
                .map_err(db_error(path))?;
            let rows = stmt
                .query_map(params![subject], |r| {
                    Ok(HistoryEntry {
                        subject: subject.clone(),
                        at: r.get(0)?,
                        actor: r.get(1)?,
                        action: r.get(2)?,
                        from: r.get(3)?,
                        to: r.get(4)?,
                    })
                })
                .map_err(db_error(path))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error(path))
        })
        .await
    }
}

fn record_history(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    subject: &str,
    actor: &str,
    action: &str,
    from: Option<String>,
    to: Option<String>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO history (plugin, at, actor, action, from_value, to_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![subject, timestamp_now(), actor, action, from, to],
    )
    .map_err(db_error(path))?;
    Ok(())
}

/// What a published record is: a plugin version or a model version, each
/// in its own table.
#[derive(Debug, Clone, Copy)]
enum Published {
    Plugin,
    Model,
}

impl Published {
    fn table(self) -> &'static str {
        match self {
            Self::Plugin => "versions",
            Self::Model => "models",
        }
    }

    /// The columns [`version_row`] reads (models are never labelled or revoked).
    fn columns(self) -> &'static str {
        match self {
            Self::Plugin => VERSION_COLUMNS,
            Self::Model => "name, version, digest, envelope, published_at, published_by, '[]', 0",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Plugin => "plugin",
            Self::Model => "model",
        }
    }

    fn subject(self, name: &PluginName) -> String {
        match self {
            Self::Plugin => name.to_string(),
            Self::Model => model_subject(name),
        }
    }
}

/// Inserts `record` unless its version is there: the same digest again is
/// unchanged, another is refused (versions are immutable).
fn insert_record(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    what: Published,
    record: &VersionRecord,
) -> Result<Registered, StoreError> {
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO {} (name, version, digest, envelope, published_at, published_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name, version) DO NOTHING",
                what.table()
            ),
            params![
                record.name.as_str(),
                record.version.to_string(),
                record.digest.to_string(),
                record.envelope.to_json(),
                record.published_at,
                record.published_by,
            ],
        )
        .map_err(db_error(path))?;
    if inserted == 1 {
        record_history(
            tx,
            path,
            &what.subject(&record.name),
            &record.published_by,
            "publish",
            None,
            Some(format!("{} {}", record.version, record.digest)),
        )?;
        return Ok(Registered::New);
    }
    let existing = tx
        .query_row(
            &format!(
                "SELECT {} FROM {} WHERE name = ?1 AND version = ?2",
                what.columns(),
                what.table()
            ),
            params![record.name.as_str(), record.version.to_string()],
            version_row,
        )
        .map_err(db_error(path))?
        .into_entry()?;
    if existing.record.digest == record.digest {
        Ok(Registered::Unchanged(Box::new(existing.record)))
    } else {
        Err(StoreError::AlreadyPublished {
            kind: what.kind(),
            name: record.name.to_string(),
            version: record.version.to_string(),
        })
    }
}

const VERSION_COLUMNS: &str =
    "name, version, digest, envelope, published_at, published_by, labels, revoked";

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredVersion> {
    Ok(StoredVersion {
        name: row.get(0)?,
        version: row.get(1)?,
        digest: row.get(2)?,
        envelope: row.get(3)?,
        published_at: row.get(4)?,
        published_by: row.get(5)?,
        labels: row.get(6)?,
        revoked: row.get(7)?,
    })
}

const ROUTE_COLUMNS: &str = "intent, plugin, alias, revision, updated_by, updated_at";

/// A route row; a target that does not parse is [`StoreError::Corrupt`].
fn route_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Route, StoreError>> {
    let intent: String = row.get(0)?;
    let (plugin, alias): (String, String) = (row.get(1)?, row.get(2)?);
    let revision = u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0);
    let (updated_by, updated_at) = (row.get(4)?, row.get(5)?);
    Ok(format!("{plugin}@{alias}")
        .parse()
        .map_err(|e| corrupt(format!("the route of intent `{intent}`"), e))
        .map(|target| Route {
            intent,
            target,
            revision,
            updated_by,
            updated_at,
        }))
}

const ALIAS_COLUMNS: &str = "plugin, name, target, previous, revision, updated_by, updated_at";

fn alias_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAlias> {
    Ok(StoredAlias {
        plugin: row.get(0)?,
        name: row.get(1)?,
        target: row.get(2)?,
        previous: row.get(3)?,
        revision: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        updated_by: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

#[async_trait]
impl Registry for SqliteRegistry {
    async fn register(&self, record: &VersionRecord) -> Result<Registered, StoreError> {
        let record = record.clone();
        self.write(move |tx, path| insert_record(tx, path, Published::Plugin, &record))
            .await
    }

    async fn register_model(&self, record: &VersionRecord) -> Result<Registered, StoreError> {
        let record = record.clone();
        self.write(move |tx, path| insert_record(tx, path, Published::Model, &record))
            .await
    }

    async fn model(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<VersionRecord, StoreError> {
        let (name, version) = (name.clone(), version.clone());
        self.with(move |conn, path| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {} FROM models WHERE name = ?1 AND version = ?2",
                        Published::Model.columns()
                    ),
                    params![name.as_str(), version.to_string()],
                    version_row,
                )
                .optional()
                .map_err(db_error(path))?
                .ok_or_else(|| refusal::no_model(&name, &version))?
                .into_entry()?
                .record)
        })
        .await
    }

    async fn models(&self) -> Result<Vec<VersionRecord>, StoreError> {
        let mut records = self
            .with(move |conn, path| {
                let mut statement = conn
                    .prepare(&format!(
                        "SELECT {} FROM models",
                        Published::Model.columns()
                    ))
                    .map_err(db_error(path))?;
                let rows = statement
                    .query_map([], version_row)
                    .map_err(db_error(path))?;
                let mut records = Vec::new();
                for row in rows {
                    records.push(row.map_err(db_error(path))?.into_entry()?.record);
                }
                Ok(records)
            })
            .await?;
        records.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(records)
    }

    async fn version(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<VersionEntry, StoreError> {
        let (name, version) = (name.clone(), version.clone());
        self.with(move |conn, path| {
            conn.query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE name = ?1 AND version = ?2"),
                params![name.as_str(), version.to_string()],
                version_row,
            )
            .optional()
            .map_err(db_error(path))?
            .ok_or_else(|| refusal::no_version(&name, &version))?
            .into_entry()
        })
        .await
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        self.with(|conn, path| {
            let generation: i64 = conn
                .query_row("SELECT generation FROM meta WHERE id = 1", [], |r| r.get(0))
                .map_err(db_error(path))?;
            Ok(u64::try_from(generation).unwrap_or(0))
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.with(|conn, path| {
            // One read transaction: every part from the same moment.
            let tx = conn.transaction().map_err(db_error(path))?;
            let generation: i64 = tx
                .query_row("SELECT generation FROM meta WHERE id = 1", [], |r| r.get(0))
                .map_err(db_error(path))?;
            let mut versions = Vec::new();
            let mut stmt = tx
                .prepare(&format!("SELECT {VERSION_COLUMNS} FROM versions"))
                .map_err(db_error(path))?;
            for row in stmt.query_map([], version_row).map_err(db_error(path))? {
                match row.map_err(db_error(path))?.into_entry() {
                    Ok(entry) => versions.push(entry),
                    // One bad row must not hide every other plugin.
                    Err(error) => tracing::error!(%error, "skipping a corrupt registry entry"),
                }
            }
            drop(stmt);
            let mut aliases = Vec::new();
            let mut stmt = tx
                .prepare(&format!("SELECT {ALIAS_COLUMNS} FROM aliases"))
                .map_err(db_error(path))?;
            for row in stmt.query_map([], alias_row).map_err(db_error(path))? {
                match row.map_err(db_error(path))?.into_alias() {
                    Ok(alias) => aliases.push(alias),
                    Err(error) => tracing::error!(%error, "skipping a corrupt alias"),
                }
            }
            drop(stmt);
            let mut routes = Vec::new();
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {ROUTE_COLUMNS} FROM routes ORDER BY intent"
                ))
                .map_err(db_error(path))?;
            for row in stmt.query_map([], route_row).map_err(db_error(path))? {
                match row.map_err(db_error(path))? {
                    Ok(route) => routes.push(route),
                    Err(error) => tracing::error!(%error, "skipping a corrupt route"),
                }
            }
            drop(stmt);
            let trust_list = tx
                .query_row("SELECT envelope FROM trust WHERE id = 1", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(db_error(path))?
                .map(|text| {
                    Envelope::from_json(&text).map_err(|e| corrupt("the stored trust list", e))
                })
                .transpose()?;
            versions.sort_by(|a, b| {
                (&a.record.name, &a.record.version).cmp(&(&b.record.name, &b.record.version))
            });
            Ok(Snapshot {
                generation: u64::try_from(generation).unwrap_or(0),
                versions,
                aliases,
                routes,
                trust_list,
            })
        })
        .await
    }

    async fn move_alias(&self, change: &AliasMove) -> Result<Alias, StoreError> {
        change.target.validate()?;
        let change = change.clone();
        self.write(move |tx, path| {
            let current: Option<(i64, String)> = tx
                .query_row(
                    "SELECT revision, target FROM aliases WHERE plugin = ?1 AND name = ?2",
                    params![change.plugin.as_str(), change.name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_error(path))?;
            let revision = current
                .as_ref()
                .map_or(0, |(r, _)| u64::try_from(*r).unwrap_or(0));
            if revision != change.expected_revision {
                return Err(refusal::alias_moved(
                    &change.plugin,
                    &change.name,
                    revision,
                    change.expected_revision,
                ));
            }
            let from = current
                .map(|(_, t)| serde_json::from_str::<AliasTarget>(&t).map(|t| t.to_string()))
                .transpose()
                .map_err(|e| corrupt("an alias", e))?;
            let alias = change.applied(revision);
            let row = StoredAlias::of(&alias)?;
            tx.execute(
                &format!(
                    "INSERT INTO aliases ({ALIAS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (plugin, name) DO UPDATE SET target = excluded.target,
                     previous = excluded.previous, revision = excluded.revision,
                     updated_by = excluded.updated_by, updated_at = excluded.updated_at"
                ),
                params![
                    row.plugin,
                    row.name,
                    row.target,
                    row.previous,
                    i64::try_from(row.revision).unwrap_or(i64::MAX),
                    row.updated_by,
                    row.updated_at,
                ],
            )
            .map_err(db_error(path))?;
            record_history(
                tx,
                path,
                alias.plugin.as_str(),
                &alias.updated_by,
                &format!("alias {}", alias.name),
                from,
                Some(alias.target.to_string()),
            )?;
            Ok(alias)
        })
        .await
    }

    async fn set_labels(
        &self,
        name: &PluginName,
        version: &Version,
        labels: &BTreeSet<String>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let (name, version, labels, actor) = (
            name.clone(),
            version.clone(),
            labels.clone(),
            actor.to_owned(),
        );
        self.write(move |tx, path| {
            let old: String = tx
                .query_row(
                    "SELECT labels FROM versions WHERE name = ?1 AND version = ?2",
                    params![name.as_str(), version.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_error(path))?
                .ok_or_else(|| refusal::no_version(&name, &version))?;
            let new = to_json(&labels)?;
            tx.execute(
                "UPDATE versions SET labels = ?3 WHERE name = ?1 AND version = ?2",
                params![name.as_str(), version.to_string(), new],
            )
            .map_err(db_error(path))?;
            record_history(
                tx,
                path,
                name.as_str(),
                &actor,
                &format!("labels {version}"),
                Some(old),
                Some(new),
            )
        })
        .await
    }

    async fn revoke(
        &self,
        name: &PluginName,
        version: &Version,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (name, version, actor, reason) = (
            name.clone(),
            version.clone(),
            actor.to_owned(),
            reason.to_owned(),
        );
        self.write(move |tx, path| {
            let changed = tx
                .execute(
                    "UPDATE versions SET revoked = 1 WHERE name = ?1 AND version = ?2",
                    params![name.as_str(), version.to_string()],
                )
                .map_err(db_error(path))?;
            if changed == 0 {
                return Err(refusal::no_version(&name, &version));
            }
            record_history(
                tx,
                path,
                name.as_str(),
                &actor,
                "revoke",
                Some(version.to_string()),
                Some(reason),
            )
        })
        .await
    }

    async fn history(&self, name: &PluginName) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_of(name.as_str()).await
    }

    async fn model_history(&self, name: &PluginName) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_of(&model_subject(name)).await
    }

    async fn change_route(&self, change: &RouteChange) -> Result<Option<Route>, StoreError> {
        crate::registry::check_intent(&change.intent)?;
        let change = change.clone();
        self.write(move |tx, path| {
            let current: Option<(i64, String, String)> = tx
                .query_row(
                    "SELECT revision, plugin, alias FROM routes WHERE intent = ?1",
                    params![change.intent],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db_error(path))?;
            let revision = current
                .as_ref()
                .map_or(0, |(r, _, _)| u64::try_from(*r).unwrap_or(0));
            if revision != change.expected_revision {
                return Err(refusal::route_moved(
                    &change.intent,
                    revision,
                    change.expected_revision,
                ));
            }
            if current.is_none() && change.target.is_none() {
                return Err(refusal::no_route(&change.intent));
            }
            let route = change.applied(revision);
            match &route {
                Some(route) => tx.execute(
                    &format!(
                        "INSERT INTO routes ({ROUTE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (intent) DO UPDATE SET plugin = excluded.plugin,
                         alias = excluded.alias, revision = excluded.revision,
                         updated_by = excluded.updated_by, updated_at = excluded.updated_at"
                    ),
                    params![
                        route.intent,
                        route.target.plugin.as_str(),
                        route.target.alias,
                        i64::try_from(route.revision).unwrap_or(i64::MAX),
                        route.updated_by,
                        route.updated_at,
                    ],
                ),
                None => tx.execute(
                    "DELETE FROM routes WHERE intent = ?1",
                    params![change.intent],
                ),
            }
            .map_err(db_error(path))?;
            record_history(
                tx,
                path,
                ROUTES_SUBJECT,
                &change.actor,
                &change.history_action(),
                current.map(|(_, plugin, alias)| format!("{plugin}@{alias}")),
                change.target.as_ref().map(ToString::to_string),
            )?;
            Ok(route)
        })
        .await
    }

    async fn route_history(&self) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_of(ROUTES_SUBJECT).await
    }

    async fn put_trust_list(&self, serial: u64, envelope: &Envelope) -> Result<(), StoreError> {
        let json = envelope.to_json();
        let stored = refusal::check_serial(serial)?;
        self.write(move |tx, path| {
            let changed = tx
                .execute(
                    "INSERT INTO trust (id, serial, envelope) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, envelope = excluded.envelope
                     WHERE excluded.serial > trust.serial",
                    params![stored, json],
                )
                .map_err(db_error(path))?;
            if changed == 0 {
                return Err(refusal::trust_not_newer(serial));
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn keeps_the_registry_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        // Each handle its own connection, as separate processes would have.
        crate::contract::run(|| {
            let path = path.clone();
            async move { Arc::new(SqliteRegistry::open(&path).await.unwrap()) as Arc<dyn Registry> }
        })
        .await;
    }

    #[tokio::test]
    async fn a_corrupt_row_hides_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let registry = SqliteRegistry::open(&path).await.unwrap();
        let key = crate::KeyPair::generate().unwrap();
        let good = VersionRecord {
            name: "good".parse().unwrap(),
            version: Version::new(1, 0, 0),
            digest: crate::Digest::of(b"good"),
            envelope: key.sign("application/test", b"good"),
            published_at: "2026-01-01T00:00:00Z".into(),
            published_by: "test".into(),
        };
        registry.register(&good).await.unwrap();
        // Someone with write access to the file breaks another row.
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO versions (name, version, digest, envelope, published_at, published_by)
                 VALUES ('bad', '1.0.0', 'not a digest', '{', 'x', 'x')",
                [],
            )
            .unwrap();
        let snapshot = registry.snapshot().await.unwrap();
        let names: Vec<&str> = snapshot
            .versions
            .iter()
            .map(|v| v.record.name.as_str())
            .collect();
        assert_eq!(names, ["good"]);
        assert!(
            registry
                .version(&"bad".parse().unwrap(), &Version::new(1, 0, 0))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_file_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let registry = SqliteRegistry::open(&path).await.unwrap();
        let generation = registry.generation().await.unwrap();
        let key = crate::KeyPair::generate().unwrap();
        registry
            .put_trust_list(1, &key.sign("t", b"x"))
            .await
            .unwrap();
        drop(registry);
        let again = SqliteRegistry::open(&path).await.unwrap();
        assert_eq!(again.generation().await.unwrap(), generation + 1);
        assert!(again.snapshot().await.unwrap().trust_list.is_some());
    }
}
