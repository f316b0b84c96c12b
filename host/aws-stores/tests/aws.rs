//! The AWS stores against a real AWS API emulator (moto) on loopback: the
//! same contract suites the embedded stores pass.

use std::sync::Arc;

use aws_stores::testing::Moto;
use aws_stores::{DynamoPolicyStore, DynamoRegistry, PluginStoreArgs, S3BlobStore};
use plugin_store::contract;
use plugin_store::{BlobStore, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_keeps_the_registry_contract() {
    let moto = Moto::start().unwrap();
    let registry = DynamoRegistry::new(&moto.sdk_config(), "registry");
    registry.create_table().await.unwrap();
    // Each handle its own client, as separate processes would have.
    contract::run(|| async {
        Arc::new(DynamoRegistry::new(&moto.sdk_config(), "registry")) as Arc<dyn Registry>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_keeps_the_policy_store_contract() {
    let moto = Moto::start().unwrap();
    let sdk = moto.sdk_config();
    // Each case its own table; each handle its own client, as separate
    // processes would have.
    governance::store::contract::run(|name| {
        let sdk = sdk.clone();
        async move {
            let store = DynamoPolicyStore::new(&sdk, name);
            store.create_table().await.unwrap();
            Arc::new(store) as Arc<dyn governance::PolicyStore>
        }
    })
    .await;
}

#[tokio::test]
async fn s3_keeps_the_blob_store_contract() {
    let moto = Moto::start().unwrap();
    let source = moto.plugin_source("blobs", "registry").await.unwrap();
    // A module of the Python plugin's size: progress as the body is sent.
    contract::blob_store(source.blobs().clone(), 20 << 20).await;
}

#[tokio::test]
async fn objects_go_up_with_a_checksum_s3_checks() {
    let moto = Moto::start().unwrap();
    moto.plugin_source("checked", "registry").await.unwrap();
    let store = S3BlobStore::new(&moto.sdk_config(), "checked", "plugins/");
    let bytes = b"module bytes";
    let digest = plugin_store::Digest::of(bytes);
    store.put(&digest, bytes).await.unwrap();
    let head = store
        .client()
        .head_object()
        .bucket("checked")
        .key(store.key(&digest))
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(digest.as_bytes());
    assert_eq!(head.checksum_sha256(), Some(expected.as_str()));
    assert_eq!(
        store.key(&digest),
        format!("plugins/sha256/{}", digest.hex())
    );
}

#[tokio::test]
async fn a_missing_table_or_bucket_fails_at_open_with_its_name() {
    let moto = Moto::start().unwrap();
    let sdk = moto.sdk_config();
    let args = PluginStoreArgs::aws("no-such-bucket", "no-such-table", Some(moto.endpoint()));
    let error = args.open_aws(&sdk).await.err().unwrap().to_string();
    assert!(error.contains("`no-such-table`"), "{error}");

    DynamoRegistry::new(&sdk, "present")
        .create_table()
        .await
        .unwrap();
    let args = PluginStoreArgs::aws("no-such-bucket", "present", Some(moto.endpoint()));
    let error = args.open_aws(&sdk).await.err().unwrap().to_string();
    assert!(error.contains("`no-such-bucket`"), "{error}");

    let incomplete = PluginStoreArgs {
        registry_table: None,
        ..args
    };
    let error = incomplete.open_aws(&sdk).await.err().unwrap().to_string();
    assert!(error.contains("--registry-table"), "{error}");
}

#[test]
fn moto_that_cannot_start_says_how_to_install_it() {
    let error = Moto::start_with("/nonexistent/python")
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("requirements-test.txt"), "{error}");
    assert!(error.contains("moto[server]"), "{error}");
}

#[tokio::test]
async fn a_corrupt_item_hides_only_itself() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let moto = Moto::start().unwrap();
    let source = moto.plugin_source("corrupt", "registry").await.unwrap();
    let key = plugin_store::KeyPair::generate().unwrap();
    let good = plugin_store::VersionRecord {
        name: "good".parse().unwrap(),
        version: plugin_store::Version::new(1, 0, 0),
        digest: plugin_store::Digest::of(b"good"),
        envelope: key.sign("application/test", b"good"),
        published_at: "2026-01-01T00:00:00Z".into(),
        published_by: "test".into(),
    };
    source.registry().register(&good).await.unwrap();
    // Someone with write access to the table breaks another item.
    aws_sdk_dynamodb::Client::new(&moto.sdk_config())
        .put_item()
        .table_name("registry")
        .item("pk", AttributeValue::S("catalog".into()))
        .item("sk", AttributeValue::S("version#bad#1.0.0".into()))
        .item("name", AttributeValue::S("bad".into()))
        .send()
        .await
        .unwrap();
    let snapshot = source.registry().snapshot().await.unwrap();
    let names: Vec<&str> = snapshot
        .versions
        .iter()
        .map(|v| v.record.name.as_str())
        .collect();
    assert_eq!(names, ["good"]);
}
