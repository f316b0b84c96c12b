//! The plugin registry in one DynamoDB table (string keys `pk` and `sk`):
//!
//! ```text
//! pk                 sk                          what
//! catalog            generation                  `gen`: the counter every write moves
//! catalog            trust                       the signed trust list and its `serial`
//! catalog            version#<name>#<version>    a signed manifest, labels, revoked
//! catalog            alias#<plugin>#<alias>      target, previous, `revision`
//! catalog            route#<intent>              plugin, alias, `revision`
//! models             <name>#<version>            a signed model manifest
//! history#<plugin>   <generation, 20 digits>     who, when, what, from, to
//! history##routes    <generation, 20 digits>     the same, for the intent table
//! history#model#<n>  <generation, 20 digits>     the same, for a model
//! ```
//!
//! Every write is one `TransactWriteItems`: its own condition (the version is
//! absent, the alias is at the revision the writer read, the trust serial is
//! older, the route is at the revision the writer read), its history item, and a compare-and-set of the generation from the
//! value it read to the next. So writes are totally ordered, the history of a
//! plugin reads in that order, and a reader who sees the same generation
//! before and after reading the catalog partition has read one consistent
//! moment. Losing only the generation race (another write landed first) is
//! retried here. A write whose own condition fails decides from the item as
//! it was: the same module already registered is unchanged, another module
//! is refused, a moved alias is a conflict, a missing version not found;
//! labels that changed meanwhile are read again.
//! Registry writes are operator actions (publish, alias moves, labels), a few
//! a minute at most, so one counter is no bottleneck; readers poll only the
//! generation item and read the catalog when it moved.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, KeySchemaElement, KeyType, Put,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TransactWriteItem, Update,
};
use plugin_store::registry::{
    ROUTES_SUBJECT, Route, RouteChange, StoredAlias, StoredVersion, check_intent, model_subject,
    refusal, timestamp_now, to_json,
};
use plugin_store::{
    Alias, AliasMove, Envelope, HistoryEntry, PluginName, Registered, Registry, Snapshot,
    StoreError, Version, VersionEntry, VersionRecord,
};

use crate::backend;
use crate::item::{BadAttribute, Fields, Item, n, s};

const CATALOG: &str = "catalog";
/// Models are apart from the catalog: Axon reads one when a plugin version
/// that pins it loads, never as part of a snapshot.
const MODELS: &str = "models";
const GENERATION: &str = "generation";
const TRUST: &str = "trust";

/// How often a write retries after losing only the generation race.
const WRITE_ATTEMPTS: u32 = 64;
/// How long `create_table` waits for a new table to become active.
const TABLE_READY: Duration = Duration::from_secs(120);
/// How often labels are read again when they changed under a writer.
const LABEL_ATTEMPTS: u32 = 8;
/// How often a snapshot is read again when a write landed while reading.
const SNAPSHOT_ATTEMPTS: u32 = 8;

/// The plugin registry in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoRegistry {
    client: Client,
    table: String,
}

fn version_key(name: &str, version: &str) -> Item {
    key(CATALOG, &format!("version#{name}#{version}"))
}

fn model_key(name: &str, version: &str) -> Item {
    key(MODELS, &format!("{name}#{version}"))
}

fn alias_key(plugin: &str, alias: &str) -> Item {
    key(CATALOG, &format!("alias#{plugin}#{alias}"))
}

fn route_key(intent: &str) -> Item {
    key(CATALOG, &format!("route#{intent}"))
}

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

impl From<BadAttribute> for StoreError {
    fn from(bad: BadAttribute) -> Self {
        StoreError::Corrupt {
            reason: bad.reason(),
            what: bad.what,
        }
    }
}

fn stored_version(item: &Item) -> Result<StoredVersion, StoreError> {
    let f = Fields {
        item,
        what: "a registry version item",
    };
    Ok(StoredVersion {
        name: f.text("name")?,
        version: f.text("version")?,
        digest: f.text("digest")?,
        envelope: f.text("envelope")?,
        published_at: f.text("published_at")?,
        published_by: f.text("published_by")?,
        labels: f.text("labels")?,
        revoked: f.flag("revoked")?,
    })
}

/// `stored` under `key`. A model is stored with labels `[]` and `revoked`
/// false, so that `stored_version` reads it as it reads a plugin version.
fn record_item(mut item: Item, stored: &StoredVersion) -> Item {
    item.extend([
        ("name".to_owned(), s(&stored.name)),
        ("version".to_owned(), s(&stored.version)),
        ("digest".to_owned(), s(&stored.digest)),
        ("envelope".to_owned(), s(&stored.envelope)),
        ("published_at".to_owned(), s(&stored.published_at)),
        ("published_by".to_owned(), s(&stored.published_by)),
        ("labels".to_owned(), s(&stored.labels)),
        ("revoked".to_owned(), AttributeValue::Bool(stored.revoked)),
    ]);
    item
}

fn stored_alias(item: &Item) -> Result<StoredAlias, StoreError> {
    let f = Fields {
        item,
        what: "a registry alias item",
    };
    Ok(StoredAlias {
        plugin: f.text("plugin")?,
        name: f.text("alias")?,
        target: f.text("target")?,
        previous: f.optional_text("previous")?,
        revision: f.number("revision")?,
        updated_by: f.text("updated_by")?,
        updated_at: f.text("updated_at")?,
    })
}

fn route(item: &Item) -> Result<Route, StoreError> {
    let f = Fields {
        item,
        what: "a registry route item",
    };
    let intent = f.text("intent")?;
    let target = format!("{}@{}", f.text("plugin")?, f.text("alias")?)
        .parse()
        .map_err(|e: StoreError| StoreError::Corrupt {
            what: format!("the route of intent `{intent}`"),
            reason: e.to_string(),
        })?;
    Ok(Route {
        intent,
        target,
        revision: f.number("revision")?,
        updated_by: f.text("updated_by")?,
        updated_at: f.text("updated_at")?,
    })
}

/// A history item, written in the same transaction as the change it records.
struct Change<'a> {
    /// The history partition: `history#<plugin>`.
    partition: String,
    actor: &'a str,
    action: String,
    from: Option<String>,
    to: Option<String>,
}

/// How a transactional write ended when it did not land.
enum Refused {
    /// The write's own condition failed; the item as it was, when returned.
    Condition(Option<Item>),
    Error(StoreError),
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        Self::Error(error)
    }
}

impl DynamoRegistry {
    /// The registry in `table`.
    pub fn new(sdk: &aws_config::SdkConfig, table: &str) -> Self {
        Self {
            client: Client::new(sdk),
            table: table.to_owned(),
        }
    }

    /// The registry in `table`, through an existing client.
    pub(crate) fn with_client(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    /// Creates the table (on-demand capacity); one that exists is fine. In
    /// AWS, infra/ creates it; this is for emulators and set-up by hand
    /// (`agentctl plugin create-store`).
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))
        };
        let schema = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .key_schema(schema("pk", KeyType::Hash)?)
            .key_schema(schema("sk", KeyType::Range)?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(self.failed("cannot create", e)),
        }
        // A new table takes a while to become active; an old one must have
        // this key schema.
        let described = self
            .client
            .wait_until_table_exists()
            .table_name(&self.table)
            .wait(TABLE_READY)
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "the registry table `{}` did not become active within {}s: {}",
                    self.table,
                    TABLE_READY.as_secs(),
                    crate::causes(&e)
                ))
            })?;
        let keys: Vec<(String, String)> = described
            .as_result()
            .ok()
            .and_then(|out| out.table())
            .map(|table| {
                table
                    .key_schema()
                    .iter()
                    .map(|k| {
                        (
                            k.attribute_name().to_owned(),
                            k.key_type().as_str().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let wanted = [("pk", "HASH"), ("sk", "RANGE")];
        if keys.len() != 2
            || !wanted
                .iter()
                .all(|(n, t)| keys.iter().any(|(a, b)| a == n && b == t))
        {
            return Err(StoreError::Invalid(format!(
                "the table `{}` exists with another key schema ({keys:?}); the registry needs string keys `pk` (hash) and `sk` (range)",
                self.table
            )));
        }
        Ok(())
    }

    /// Checks the table can be read.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.generation().await.map(|_| ())
    }

    fn failed<E, R>(&self, what: &str, error: SdkError<E, R>) -> StoreError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        backend(format!("{what} the registry table `{}`", self.table), error)
    }

    async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.failed("cannot read", e))?;
        Ok(out.item)
    }

    /// Every item of partition `pk`, in sort-key order, read consistently.
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.failed("cannot read", e))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    fn put(
        &self,
        item: Item,
        condition: &str,
        values: Item,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete(
        &self,
        key: Item,
        condition: &str,
        values: Item,
    ) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    fn update(
        &self,
        key: Item,
        expression: &str,
        condition: &str,
        values: Item,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Writes `write` (one item, conditional) with the history item of
    /// `change` and the generation's compare-and-set, as one transaction;
    /// retries when only the generation race was lost.
    async fn write(&self, write: TransactWriteItem, change: Change<'_>) -> Result<(), Refused> {
        for attempt in 0..WRITE_ATTEMPTS {
            let current = self.generation().await?;
            let next = current.checked_add(1).ok_or_else(|| StoreError::Corrupt {
                what: format!("the generation item of `{}`", self.table),
                reason: format!("`gen` is {current}, past the end of its range"),
            })?;
            let mut history = key(&change.partition, &format!("{next:020}"));
            history.extend([
                ("at".to_owned(), s(timestamp_now())),
                ("actor".to_owned(), s(change.actor)),
                ("action".to_owned(), s(&change.action)),
            ]);
            for (name, value) in [("from", &change.from), ("to", &change.to)] {
                if let Some(value) = value {
                    history.insert(name.to_owned(), s(value));
                }
            }
            let items = vec![
                write.clone(),
                self.put(history, "attribute_not_exists(pk)", Item::new())?,
                self.update(
                    key(CATALOG, GENERATION),
                    "SET gen = :next",
                    if current == 0 {
                        "attribute_not_exists(gen) OR gen = :current"
                    } else {
                        "gen = :current"
                    },
                    HashMap::from([
                        (":next".to_owned(), n(next)),
                        (":current".to_owned(), n(current)),
                    ]),
                )?,
            ];
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            let error = match sent {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            let reasons = match &error {
                SdkError::ServiceError(service) => match service.err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        cancelled.cancellation_reasons().to_vec()
                    }
                    _ => return Err(self.failed("cannot write", error).into()),
                },
                _ => return Err(self.failed("cannot write", error).into()),
            };
            // The reasons are in the order of the items: the write, its
            // history, the generation.
            let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
            if code(0) == "ConditionalCheckFailed" {
                let old = reasons.first().and_then(|r| r.item.clone());
                return Err(Refused::Condition(old));
            }
            if code(1) == "ConditionalCheckFailed" {
                // A history item at the next generation exists: `gen` was
                // set back. Retrying cannot help.
                return Err(StoreError::Corrupt {
                    what: format!("the generation item of `{}`", self.table),
                    reason: format!("generation {next} is already in the history"),
                }
                .into());
            }
            let conflict = |i: usize| code(i) == "TransactionConflict";
            let lost_race = code(2) == "ConditionalCheckFailed" || (0..3).any(conflict);
            if !lost_race {
                return Err(self.failed("cannot write", error).into());
            }
            // Another write took this generation: read it again, after a
            // short random pause so racing writers spread out.
            let pause = rand::random_range(1..=4u64 << attempt.min(4));
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        Err(StoreError::Backend(format!(
            "the registry table `{}` is too busy: {WRITE_ATTEMPTS} writes in a row lost to others; try again",
            self.table
        ))
        .into())
    }

    /// The history of one subject (a plugin, or the intent table), oldest first.
    async fn history_of(&self, subject: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let items = self.query(&history_partition(subject)).await?;
        items
            .iter()
            .map(|item| {
                let f = Fields {
                    item,
                    what: "a registry history item",
                };
                Ok(HistoryEntry {
                    subject: subject.to_owned(),
                    at: f.text("at")?,
                    actor: f.text("actor")?,
                    action: f.text("action")?,
                    from: f.optional_text("from")?,
                    to: f.optional_text("to")?,
                })
            })
            .collect()
    }

    /// Puts `record` under `key` unless that item exists: the same digest
    /// again is unchanged, another is refused (versions are immutable). The
    /// history of `subject` records it.
    async fn insert_record(
        &self,
        kind: &'static str,
        key: Item,
        subject: String,
        record: &VersionRecord,
    ) -> Result<Registered, StoreError> {
        let stored = StoredVersion::of(record);
        let write = self.put(
            record_item(key.clone(), &stored),
            "attribute_not_exists(pk)",
            Item::new(),
        )?;
        let change = Change {
            partition: history_partition(&subject),
            actor: &record.published_by,
            action: "publish".to_owned(),
            from: None,
            to: Some(format!("{} {}", record.version, record.digest)),
        };
        let existing = match self.write(write, change).await {
            Ok(()) => return Ok(Registered::New),
            Err(Refused::Error(error)) => return Err(error),
            // The version exists: immutable, so reading it now is safe.
            Err(Refused::Condition(Some(item))) => item,
            Err(Refused::Condition(None)) => self.get(key).await?.ok_or_else(|| {
                StoreError::Conflict(format!(
                    "{kind} `{}@{}` was refused as present, and is absent: try again",
                    record.name, record.version
                ))
            })?,
        };
        let existing = stored_version(&existing)?.into_entry()?;
        if existing.record.digest == record.digest {
            Ok(Registered::Unchanged(Box::new(existing.record)))
        } else {
            Err(StoreError::AlreadyPublished {
                kind,
                name: record.name.to_string(),
                version: record.version.to_string(),
            })
        }
    }

    async fn version_item(&self, name: &PluginName, version: &Version) -> Result<Item, StoreError> {
        self.get(version_key(name.as_str(), &version.to_string()))
            .await?
            .ok_or_else(|| refusal::no_version(name, version))
    }
}

fn history_partition(subject: &str) -> String {
    format!("history#{subject}")
}

#[async_trait]
impl Registry for DynamoRegistry {
    async fn register(&self, record: &VersionRecord) -> Result<Registered, StoreError> {
        let key = version_key(record.name.as_str(), &record.version.to_string());
        self.insert_record("plugin", key, record.name.to_string(), record)
            .await
    }

    async fn register_model(&self, record: &VersionRecord) -> Result<Registered, StoreError> {
        let key = model_key(record.name.as_str(), &record.version.to_string());
        self.insert_record("model", key, model_subject(&record.name), record)
            .await
    }

    async fn model(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<VersionRecord, StoreError> {
        let item = self
            .get(model_key(name.as_str(), &version.to_string()))
            .await?
            .ok_or_else(|| refusal::no_model(name, version))?;
        Ok(stored_version(&item)?.into_entry()?.record)
    }

    async fn models(&self) -> Result<Vec<VersionRecord>, StoreError> {
        let mut records = Vec::new();
        for item in self.query(MODELS).await? {
            records.push(stored_version(&item)?.into_entry()?.record);
        }
        records.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(records)
    }

    async fn version(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<VersionEntry, StoreError> {
        stored_version(&self.version_item(name, version).await?)?.into_entry()
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        match self.get(key(CATALOG, GENERATION)).await? {
            None => Ok(0),
            Some(item) => Fields {
                item: &item,
                what: "the registry generation",
            }
            .number("gen")
            .map_err(Into::into),
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        for _ in 0..SNAPSHOT_ATTEMPTS {
            let before = self.generation().await?;
            let items = self.query(CATALOG).await?;
            if self.generation().await? != before {
                tokio::time::sleep(Duration::from_millis(rand::random_range(5..=50))).await;
                continue;
            }
            let mut snapshot = Snapshot {
                generation: before,
                ..Snapshot::default()
            };
            for item in &items {
                let Some(AttributeValue::S(sk)) = item.get("sk") else {
                    continue;
                };
                if sk.starts_with("version#") {
                    match stored_version(item).and_then(StoredVersion::into_entry) {
                        Ok(entry) => snapshot.versions.push(entry),
                        // One bad item must not hide every other plugin.
                        Err(error) => tracing::error!(%error, "skipping a corrupt registry entry"),
                    }
                } else if sk.starts_with("alias#") {
                    match stored_alias(item).and_then(StoredAlias::into_alias) {
                        Ok(alias) => snapshot.aliases.push(alias),
                        Err(error) => tracing::error!(%error, "skipping a corrupt alias"),
                    }
                } else if sk.starts_with("route#") {
                    match route(item) {
                        Ok(route) => snapshot.routes.push(route),
                        Err(error) => tracing::error!(%error, "skipping a corrupt route"),
                    }
                } else if sk == TRUST {
                    let text = Fields {
                        item,
                        what: "the stored trust list",
                    }
                    .text("envelope")?;
                    snapshot.trust_list =
                        Some(Envelope::from_json(&text).map_err(|e| StoreError::Corrupt {
                            what: "the stored trust list".to_owned(),
                            reason: e.to_string(),
                        })?);
                }
            }
            snapshot.routes.sort_by(|a, b| a.intent.cmp(&b.intent));
            snapshot.versions.sort_by(|a, b| {
                (&a.record.name, &a.record.version).cmp(&(&b.record.name, &b.record.version))
            });
            return Ok(snapshot);
        }
        Err(StoreError::Backend(format!(
            "the registry table `{}` changed during each of {SNAPSHOT_ATTEMPTS} reads; try again",
            self.table
        )))
    }

    async fn move_alias(&self, change: &AliasMove) -> Result<Alias, StoreError> {
        change.target.validate()?;
        let conflict = |now: u64| {
            refusal::alias_moved(&change.plugin, &change.name, now, change.expected_revision)
        };
        let key = alias_key(change.plugin.as_str(), &change.name);
        let current = match self.get(key.clone()).await? {
            Some(item) => Some(stored_alias(&item)?.into_alias()?),
            None => None,
        };
        let revision = current.as_ref().map_or(0, |a| a.revision);
        if revision != change.expected_revision {
            return Err(conflict(revision));
        }
        let alias = change.applied(revision);
        let row = StoredAlias::of(&alias)?;
        let mut item = key;
        item.extend([
            ("plugin".to_owned(), s(row.plugin)),
            ("alias".to_owned(), s(row.name)),
            ("target".to_owned(), s(row.target)),
            ("revision".to_owned(), n(row.revision)),
            ("updated_by".to_owned(), s(row.updated_by)),
            ("updated_at".to_owned(), s(row.updated_at)),
        ]);
        if let Some(previous) = row.previous {
            item.insert("previous".to_owned(), s(previous));
        }
        let write = if revision == 0 {
            self.put(item, "attribute_not_exists(pk)", Item::new())?
        } else {
            self.put(
                item,
                "revision = :expected",
                HashMap::from([(":expected".to_owned(), n(revision))]),
            )?
        };
        let history = Change {
            partition: history_partition(alias.plugin.as_str()),
            actor: &alias.updated_by,
            action: format!("alias {}", alias.name),
            from: current.map(|a| a.target.to_string()),
            to: Some(alias.target.to_string()),
        };
        match self.write(write, history).await {
            Ok(()) => Ok(alias),
            Err(Refused::Error(error)) => Err(error),
            Err(Refused::Condition(item)) => {
                let now = item
                    .as_ref()
                    .and_then(|i| stored_alias(i).ok())
                    .map_or(revision + 1, |a| a.revision);
                Err(conflict(now))
            }
        }
    }

    async fn set_labels(
        &self,
        name: &PluginName,
        version: &Version,
        labels: &BTreeSet<String>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let new = to_json(labels)?;
        // Compare-and-set on the labels read, so the history's `from` is
        // what this write replaced.
        for _ in 0..LABEL_ATTEMPTS {
            let old = stored_version(&self.version_item(name, version).await?)?.labels;
            let write = self.update(
                version_key(name.as_str(), &version.to_string()),
                "SET labels = :new",
                "labels = :old",
                HashMap::from([(":new".to_owned(), s(&new)), (":old".to_owned(), s(&old))]),
            )?;
            let change = Change {
                partition: history_partition(name.as_str()),
                actor,
                action: format!("labels {version}"),
                from: Some(old),
                to: Some(new.clone()),
            };
            match self.write(write, change).await {
                Ok(()) => return Ok(()),
                Err(Refused::Error(error)) => return Err(error),
                Err(Refused::Condition(_)) => continue,
            }
        }
        Err(StoreError::Conflict(format!(
            "the labels of `{name}@{version}` keep changing; try again"
        )))
    }

    async fn revoke(
        &self,
        name: &PluginName,
        version: &Version,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let write = self.update(
            version_key(name.as_str(), &version.to_string()),
            "SET revoked = :yes",
            "attribute_exists(pk)",
            HashMap::from([(":yes".to_owned(), AttributeValue::Bool(true))]),
        )?;
        let change = Change {
            partition: history_partition(name.as_str()),
            actor,
            action: "revoke".to_owned(),
            from: Some(version.to_string()),
            to: Some(reason.to_owned()),
        };
        match self.write(write, change).await {
            Ok(()) => Ok(()),
            Err(Refused::Error(error)) => Err(error),
            Err(Refused::Condition(_)) => Err(refusal::no_version(name, version)),
        }
    }

    async fn history(&self, name: &PluginName) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_of(name.as_str()).await
    }

    async fn model_history(&self, name: &PluginName) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_of(&model_subject(name)).await
    }

    async fn change_route(&self, change: &RouteChange) -> Result<Option<Route>, StoreError> {
        check_intent(&change.intent)?;
        let conflict =
            |now: u64| refusal::route_moved(&change.intent, now, change.expected_revision);
        let key = route_key(&change.intent);
        let current = match self.get(key.clone()).await? {
            Some(item) => Some(route(&item)?),
            None => None,
        };
        let revision = current.as_ref().map_or(0, |r| r.revision);
        if revision != change.expected_revision {
            return Err(conflict(revision));
        }
        let expected = HashMap::from([(":expected".to_owned(), n(revision))]);
        let applied = change.applied(revision);
        let write = match (&applied, revision) {
            (None, 0) => return Err(refusal::no_route(&change.intent)),
            (None, _) => self.delete(key, "revision = :expected", expected)?,
            (Some(route), _) => {
                let mut item = key;
                item.extend([
                    ("intent".to_owned(), s(&route.intent)),
                    ("plugin".to_owned(), s(route.target.plugin.as_str())),
                    ("alias".to_owned(), s(&route.target.alias)),
                    ("revision".to_owned(), n(route.revision)),
                    ("updated_by".to_owned(), s(&route.updated_by)),
                    ("updated_at".to_owned(), s(&route.updated_at)),
                ]);
                if revision == 0 {
                    self.put(item, "attribute_not_exists(pk)", Item::new())?
                } else {
                    self.put(item, "revision = :expected", expected)?
                }
            }
        };
        let history = Change {
            partition: history_partition(ROUTES_SUBJECT),
            actor: &change.actor,
            action: change.history_action(),
            from: current.map(|r| r.target.to_string()),
            to: change.target.as_ref().map(ToString::to_string),
        };
        match self.write(write, history).await {
            Ok(()) => Ok(applied),
            Err(Refused::Error(error)) => Err(error),
            Err(Refused::Condition(item)) => {
                let now = item
                    .as_ref()
                    .and_then(|i| route(i).ok())
                    .map_or(0, |r| r.revision);
                Err(conflict(now))
            }
        }
    }

    async fn route_history(&self) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_of(ROUTES_SUBJECT).await
    }

    async fn put_trust_list(&self, serial: u64, envelope: &Envelope) -> Result<(), StoreError> {
        refusal::check_serial(serial)?;
        let mut item = key(CATALOG, TRUST);
        item.extend([
            ("serial".to_owned(), n(serial)),
            ("envelope".to_owned(), s(envelope.to_json())),
        ]);
        let write = self.put(
            item,
            "attribute_not_exists(pk) OR serial < :serial",
            HashMap::from([(":serial".to_owned(), n(serial))]),
        )?;
        let change = Change {
            // Not a plugin's (no plugin name has a `#`).
            partition: "history#trust#list".to_owned(),
            actor: "root",
            action: "trust list".to_owned(),
            from: None,
            to: Some(serial.to_string()),
        };
        match self.write(write, change).await {
            Ok(()) => Ok(()),
            Err(Refused::Error(error)) => Err(error),
            Err(Refused::Condition(_)) => Err(refusal::trust_not_newer(serial)),
        }
    }
}
