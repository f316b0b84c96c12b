//! Governance policy sets in one DynamoDB table (string keys `pk` and `sk`):
//!
//! ```text
//! pk       sk                        what
//! policy   version#<20 digits>       an immutable policy set: documents, schema, hash, author, message
//! policy   head                      the version in force, its hash, `revision`, `previous`, the shadow's `shadow_version` and `shadow_hash`
//! policy   activation#<20 digits>    one move of the head (by revision): who, when, from, to, why
//! ```
//!
//! A version is put with `attribute_not_exists`, so two writers never share a
//! number (the loser takes the next). The head moves in one transaction with
//! its activation item, on the condition that its revision is the one the
//! caller read: of two concurrent activations exactly one lands. Readers
//! (Orbit, the governance Lambda) poll only the head item.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use governance::PolicyDocument;
use governance::store::{
    Activate, Activation, ActivationKind, Head, NewPolicySet, PolicySetVersion, PolicyStore,
    PolicyStoreError, ShadowHead, VersionInfo, next_head,
};

use crate::DynamoRegistry;
use crate::item::{BadAttribute, Fields, Item, n, s};

const PARTITION: &str = "policy";
const HEAD: &str = "head";
/// How often a put retries after another writer took its version number.
const PUT_ATTEMPTS: u32 = 32;
/// How often an activation retries after a transaction conflict that left
/// the head where the caller read it.
const ACTIVATE_ATTEMPTS: u32 = 8;

/// Policy sets in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoPolicyStore {
    client: Client,
    table: String,
}

fn key(sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(PARTITION)), ("sk".to_owned(), s(sk))])
}

fn version_sk(version: u64) -> String {
    format!("version#{version:020}")
}

fn activation_sk(revision: u64) -> String {
    format!("activation#{revision:020}")
}

impl From<BadAttribute> for PolicyStoreError {
    fn from(bad: BadAttribute) -> Self {
        PolicyStoreError::Corrupt(format!("{}: {}", bad.what, bad.reason()))
    }
}

fn head_of(item: &Item) -> Result<Head, PolicyStoreError> {
    let f = Fields {
        item,
        what: "policy head item",
    };
    let shadow = match (
        f.optional_number("shadow_version")?,
        f.optional_text("shadow_hash")?,
    ) {
        (Some(version), Some(hash)) => Some(ShadowHead { version, hash }),
        (None, None) => None,
        (Some(_), None) => return Err(f.bad("shadow_hash").into()),
        (None, Some(_)) => return Err(f.bad("shadow_version").into()),
    };
    Ok(Head {
        version: f.number("version")?,
        hash: f.text("hash")?,
        revision: f.number("revision")?,
        previous: f.optional_number("previous")?,
        shadow,
        activated_by: f.text("by")?,
        activated_at: f.text("at")?,
    })
}

fn info_of(item: &Item) -> Result<VersionInfo, PolicyStoreError> {
    let f = Fields {
        item,
        what: "policy version item",
    };
    Ok(VersionInfo {
        version: f.number("version")?,
        hash: f.text("hash")?,
        documents: usize::try_from(f.number("count")?).map_err(|_| f.bad("count"))?,
        author: f.text("author")?,
        created_at: f.text("created_at")?,
        message: f.text("message")?,
    })
}

fn activation_of(item: &Item) -> Result<Activation, PolicyStoreError> {
    let f = Fields {
        item,
        what: "policy activation item",
    };
    let kind = f.text("kind")?;
    Ok(Activation {
        revision: f.number("revision")?,
        version: f.number("version")?,
        from: f.optional_number("from")?,
        kind: ActivationKind::parse(&kind).ok_or_else(|| f.bad("kind"))?,
        by: f.text("by")?,
        at: f.text("at")?,
    })
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A short random pause before a retry, so racing writers spread out.
async fn back_off(attempt: u32) {
    let pause = rand::random_range(1..=4u64 << attempt.min(4));
    tokio::time::sleep(Duration::from_millis(pause)).await;
}

impl DynamoPolicyStore {
    /// The policy store in `table`.
    pub fn new(sdk: &aws_config::SdkConfig, table: &str) -> Self {
        Self {
            client: Client::new(sdk),
            table: table.to_owned(),
        }
    }

    /// Creates the table (on-demand, keys `pk` and `sk`); one that exists is
    /// fine. In AWS, infra/ creates it; this is for emulators and set-up by
    /// hand (`agentctl policy create-store`).
    pub async fn create_table(&self) -> Result<(), PolicyStoreError> {
        DynamoRegistry::with_client(self.client.clone(), &self.table)
            .create_table()
            .await
            .map_err(|e| PolicyStoreError::Backend(e.to_string()))
    }

    fn failed<E, R>(&self, what: &str, error: SdkError<E, R>) -> PolicyStoreError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        PolicyStoreError::Backend(
            crate::backend(format!("{what} the policy table `{}`", self.table), error).to_string(),
        )
    }

    async fn get_item(&self, sk: &str) -> Result<Option<Item>, PolicyStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.failed("cannot read", e))?;
        Ok(out.item)
    }

    /// Items whose sort key starts with `prefix`, in order, read
    /// consistently; `newest_only` reads just the last one. Only the
    /// attributes in `projection` when given.
    async fn query(
        &self,
        prefix: &str,
        newest_only: bool,
        projection: Option<&[&str]>,
    ) -> Result<Vec<Item>, PolicyStoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(PARTITION))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .scan_index_forward(!newest_only)
                .set_exclusive_start_key(start);
            if newest_only {
                request = request.limit(1);
            }
            if let Some(names) = projection {
                // Every name through a placeholder: some are reserved words.
                let placeholders: Vec<String> =
                    (0..names.len()).map(|i| format!("#a{i}")).collect();
                request = request.projection_expression(placeholders.join(", "));
                for (placeholder, name) in placeholders.iter().zip(names) {
                    request = request.expression_attribute_names(placeholder, *name);
                }
            }
            let page = request
                .send()
                .await
                .map_err(|e| self.failed("cannot read", e))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() && !newest_only => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    async fn last_version(&self) -> Result<u64, PolicyStoreError> {
        let items = self.query("version#", true, Some(&["version"])).await?;
        items.first().map_or(Ok(0), |item| {
            Fields {
                item,
                what: "policy version item",
            }
            .number("version")
            .map_err(Into::into)
        })
    }

    fn put_item(
        &self,
        item: Item,
        condition: &str,
        values: Item,
    ) -> Result<TransactWriteItem, PolicyStoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .build()
            .map_err(|e| PolicyStoreError::Invalid(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn current_revision(&self) -> Result<u64, PolicyStoreError> {
        Ok(self.head().await?.map_or(0, |h| h.revision))
    }
}

#[async_trait]
impl PolicyStore for DynamoPolicyStore {
    async fn put(&self, set: &NewPolicySet) -> Result<PolicySetVersion, PolicyStoreError> {
        set.check()?;
        let documents = serde_json::to_string(&set.documents)
            .map_err(|e| PolicyStoreError::Invalid(e.to_string()))?;
        for attempt in 0..PUT_ATTEMPTS {
            let version = self.last_version().await? + 1;
            let stored = PolicySetVersion {
                version,
                documents: set.documents.clone(),
                schema: set.schema.clone(),
                hash: set.hash(),
                author: set.author.clone(),
                created_at: now(),
                message: set.message.clone(),
            };
            let mut item = key(&version_sk(version));
            item.extend([
                ("version".to_owned(), n(version)),
                ("documents".to_owned(), s(&documents)),
                ("count".to_owned(), n(stored.documents.len() as u64)),
                ("schema".to_owned(), s(&stored.schema)),
                ("hash".to_owned(), s(&stored.hash)),
                ("author".to_owned(), s(&stored.author)),
                ("created_at".to_owned(), s(&stored.created_at)),
                ("message".to_owned(), s(&stored.message)),
            ]);
            let sent = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(stored),
                Err(SdkError::ServiceError(service))
                    if matches!(
                        service.err(),
                        PutItemError::ConditionalCheckFailedException(_)
                    ) =>
                {
                    // Another writer took this number: take the next.
                    back_off(attempt).await;
                }
                Err(error) => return Err(self.failed("cannot write", error)),
            }
        }
        Err(PolicyStoreError::Backend(format!(
            "the policy table `{}` is too busy: {PUT_ATTEMPTS} puts in a row lost to others; try again",
            self.table
        )))
    }

    async fn get(&self, version: u64) -> Result<PolicySetVersion, PolicyStoreError> {
        let item = self
            .get_item(&version_sk(version))
            .await?
            .ok_or(PolicyStoreError::NotFound(version))?;
        let what = format!("policy set version {version}");
        let f = Fields {
            item: &item,
            what: &what,
        };
        let documents: Vec<PolicyDocument> = serde_json::from_str(&f.text("documents")?)
            .map_err(|e| PolicyStoreError::Corrupt(format!("{what}: {e}")))?;
        Ok(PolicySetVersion {
            version: f.number("version")?,
            documents,
            schema: f.text("schema")?,
            hash: f.text("hash")?,
            author: f.text("author")?,
            created_at: f.text("created_at")?,
            message: f.text("message")?,
        })
    }

    async fn list(&self) -> Result<Vec<VersionInfo>, PolicyStoreError> {
        let fields = [
            "version",
            "hash",
            "count",
            "author",
            "created_at",
            "message",
        ];
        self.query("version#", false, Some(&fields))
            .await?
            .iter()
            .map(info_of)
            .collect()
    }

    async fn head(&self) -> Result<Option<Head>, PolicyStoreError> {
        self.get_item(HEAD).await?.as_ref().map(head_of).transpose()
    }

    async fn activate(&self, request: &Activate<'_>) -> Result<Head, PolicyStoreError> {
        let expected = request.expected_revision;
        let version = self.get(request.version).await?;
        for attempt in 0..ACTIVATE_ATTEMPTS {
            let current = self.head().await?;
            let actual = current.as_ref().map_or(0, |h| h.revision);
            if actual != expected {
                return Err(PolicyStoreError::Conflict { expected, actual });
            }
            let (head, moved) = next_head(current.as_ref(), request, &version.hash)?;
            let mut head_item = key(HEAD);
            head_item.extend([
                ("version".to_owned(), n(head.version)),
                ("hash".to_owned(), s(&head.hash)),
                ("revision".to_owned(), n(head.revision)),
                ("by".to_owned(), s(&head.activated_by)),
                ("at".to_owned(), s(&head.activated_at)),
            ]);
            let mut activation = key(&activation_sk(moved.revision));
            activation.extend([
                ("revision".to_owned(), n(moved.revision)),
                ("version".to_owned(), n(moved.version)),
                ("kind".to_owned(), s(moved.kind.as_str())),
                ("by".to_owned(), s(&moved.by)),
                ("at".to_owned(), s(&moved.at)),
            ]);
            if let Some(previous) = head.previous {
                head_item.insert("previous".to_owned(), n(previous));
            }
            if let Some(shadow) = &head.shadow {
                head_item.insert("shadow_version".to_owned(), n(shadow.version));
                head_item.insert("shadow_hash".to_owned(), s(&shadow.hash));
            }
            if let Some(from) = moved.from {
                activation.insert("from".to_owned(), n(from));
            }
            let head_write = if expected == 0 {
                self.put_item(head_item, "attribute_not_exists(pk)", Item::new())?
            } else {
                self.put_item(
                    head_item,
                    "revision = :expected",
                    HashMap::from([(":expected".to_owned(), n(expected))]),
                )?
            };
            let items = vec![
                head_write,
                self.put_item(activation, "attribute_not_exists(pk)", Item::new())?,
            ];
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            let error = match sent {
                Ok(_) => return Ok(head),
                Err(error) => error,
            };
            let cancelled = matches!(
                &error,
                SdkError::ServiceError(service)
                    if matches!(service.err(), TransactWriteItemsError::TransactionCanceledException(_))
            );
            if !cancelled {
                return Err(self.failed("cannot write", error));
            }
            // Cancelled: another activation landed (its revision moved) or
            // raced this one; read the head again to say which.
            let actual = self.current_revision().await?;
            if actual != expected {
                return Err(PolicyStoreError::Conflict { expected, actual });
            }
            back_off(attempt).await;
        }
        Err(PolicyStoreError::Backend(format!(
            "the policy table `{}` is too busy: {ACTIVATE_ATTEMPTS} activations in a row conflicted; try again",
            self.table
        )))
    }

    async fn history(&self) -> Result<Vec<Activation>, PolicyStoreError> {
        self.query("activation#", false, None)
            .await?
            .iter()
            .map(activation_of)
            .collect()
    }

    fn describe(&self) -> String {
        format!("DynamoDB table `{}`", self.table)
    }
}
