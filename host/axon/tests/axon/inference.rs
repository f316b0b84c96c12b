//! Inference through `wasi:nn`: the capability gates the import, models are
//! verified before they load, the sandbox computes what native ONNX Runtime
//! computes, and every bound holds against a hostile plugin.

use plugin_artifacts::{BENCH_MEDIUM_MODEL, INFERENCE_ABUSE, SUPPORT_INTENT, SUPPORT_INTENT_MODEL};
use plugin_store::model::{ModelManifest, ModelSpec};
use plugin_store::{KeyPair, PluginManifest, PublishSpec, VersionRecord};
use serde_json::{Value, json};

use crate::support::TestAxon;

/// Where the tests run models: `$AGENT_RUNTIME_ACCELERATOR` (`cpu` unless
/// scripts/gpu-check.sh sets `cuda`).
fn accelerator() -> axon::inference::Accelerator {
    use clap::ValueEnum as _;
    let name = std::env::var("AGENT_RUNTIME_ACCELERATOR").unwrap_or_else(|_| "cpu".into());
    axon::inference::Accelerator::from_str(&name, true).unwrap()
}

/// Sends `input` to the abuse plugin: the request must fail with
/// `PLUGIN_RESOURCE_LIMIT`, saying `says`.
async fn assert_limit(axon: &TestAxon, input: Value, says: &str) {
    let reply = axon.reason("inference-abuse", input).await;
    assert_eq!(reply.code(), "PLUGIN_RESOURCE_LIMIT", "{}", reply.body);
    assert!(reply.message().contains(says), "{}", reply.message());
}

/// Axon with inference on, the support-intent model 1.0.0 published.
async fn axon_with_inference() -> TestAxon {
    axon_with_inference_and(|_| {}).await
}

/// The same, with `adjust` applied to its configuration.
async fn axon_with_inference_and(adjust: impl FnOnce(&mut axon::AxonConfig)) -> TestAxon {
    let library = plugin_artifacts::onnxruntime_library().unwrap();
    let axon = TestAxon::start_with(move |config| {
        config.onnxruntime = Some(library);
        config.accelerator = accelerator();
        adjust(config);
    })
    .await;
    publish_model(&axon, &axon.trust.publisher, "1.0.0").await;
    axon
}

/// Publishes the support-intent model as `version`, signed by `key`, to
/// Axon's plugin store.
async fn publish_model(axon: &TestAxon, key: &KeyPair, version: &str) -> ModelManifest {
    let mut spec = ModelSpec::from_toml(&SUPPORT_INTENT_MODEL.spec_text().unwrap()).unwrap();
    spec.version = version.parse().unwrap();
    let bytes = SUPPORT_INTENT_MODEL.bytes().unwrap();
    let published = axon
        .source
        .publish_model(&bytes, spec, key, "test", &|_| {});
    published.await.unwrap().manifest
}

fn support_intent_spec() -> PublishSpec {
    PublishSpec::from_toml(&SUPPORT_INTENT.manifest_text().unwrap().unwrap()).unwrap()
}

/// The support-intent plugin as `version`, pinning the model's `model`.
fn support_intent_pinning(version: &str, model: &str) -> PublishSpec {
    let mut spec = support_intent_spec();
    spec.version = version.parse().unwrap();
    let need = spec.inference.as_mut().unwrap();
    *need.models.values_mut().next().unwrap() = model.parse().unwrap();
    spec
}

/// Registers support-intent `version` pinning model `model` (and `digest`,
/// if any) as is, bypassing publish's checks.
async fn register_pinning(
    axon: &TestAxon,
    version: &str,
    model: &str,
    digest: Option<plugin_store::Digest>,
) {
    let module = SUPPORT_INTENT.bytes().unwrap();
    let mut spec = support_intent_pinning(version, model);
    let need = spec.inference.as_mut().unwrap();
    if let Some(digest) = digest {
        need.digests = need
            .models
            .keys()
            .map(|name| (name.clone(), digest))
            .collect();
    }
    let world = plugin_store::component::reasoning_world(&module).unwrap();
    let key = axon.trust.publisher.id().clone();
    let manifest = PluginManifest::new(spec, &module, world, key);
    let record = VersionRecord::signed(&manifest, &axon.trust.publisher, "test");
    axon.register_raw(&module, record).await;
}

/// The abuse plugin, granted the support-intent model.
fn abuse_spec() -> PublishSpec {
    PublishSpec::from_toml(
        "name = \"inference-abuse\"\nversion = \"1.0.0\"\ncapabilities = [\"inference\"]\n[inference]\nmodels = { support-intent = \"1.0.0\" }\n[limits]\ndeadline_ms = 5000",
    )
    .unwrap()
}

const TEXTS: [&str; 3] = [
    "I was charged twice this month, please refund me",
    "The app crashes on start and production is down, urgent",
    "Please cancel my subscription before it renews",
];

/// What native ONNX Runtime (the Python wheel) says of each of [`TEXTS`].
fn native_predictions() -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("support-intent.onnx");
    std::fs::write(&model, SUPPORT_INTENT_MODEL.bytes().unwrap()).unwrap();
    SUPPORT_INTENT_MODEL
        .predict_natively(&model, &TEXTS)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Asserts that the support-intent plugin's `output` for `text` has the
/// scores `native` has, within `tolerance`.
fn assert_like_native(output: &Value, native: &Value, tolerance: f64, text: &str) {
    let labels = |config: &str| -> Vec<String> {
        serde_json::from_str(&support_intent_spec().config[config]).unwrap()
    };
    for (head, names) in [
        ("intent", labels("intents")),
        ("urgency", labels("urgencies")),
    ] {
        let expected = native[head].as_array().unwrap();
        assert_eq!(expected.len(), names.len());
        for (name, want) in names.iter().zip(expected) {
            let got = output["scores"][head][name].as_f64().unwrap();
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= tolerance,
                "{text}: {head} {name}: {got} vs native {want}"
            );
        }
    }
}

/// How far the sandbox may be from native: the same library and kernels on
/// the CPU; on a GPU, CUDA's own kernels (TF32 matrix products on recent
/// GPUs) against native on the CPU.
fn tolerance() -> f64 {
    match accelerator() {
        axon::inference::Accelerator::Cuda => 1e-3,
        _ => 1e-6,
    }
}

#[tokio::test]
async fn the_sandbox_computes_what_native_onnx_runtime_computes() {
    let axon = axon_with_inference().await;
    axon.publish(&SUPPORT_INTENT.bytes().unwrap(), support_intent_spec())
        .await;
    let native = native_predictions();
    let mut answers = Vec::new();
    for (text, native) in TEXTS.iter().zip(&native) {
        let reply = axon
            .reason("support-intent", json!({ "message": text }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let output = &reply.body["output"];
        assert_like_native(output, native, tolerance(), text);
        assert_eq!(reply.body["stats"]["inference_calls"], 1, "{}", reply.body);
        answers.push((output["intent"].clone(), output["urgency"].clone()));
    }
    assert_eq!(answers[0].0, "billing");
    assert_eq!(answers[1].0, "technical");
    assert_eq!(answers[1].1, "high");
    assert_eq!(answers[2].0, "cancellation");
    axon.stop().await;
}

/// The value of the `series` line for support-intent in `metrics`.
fn model_counter(metrics: &str, series: &str) -> u64 {
    let line = format!("{series}{{model=\"support-intent\",version=\"1.0.0\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line}in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_at_once_are_merged_and_each_gets_its_own_answer() {
    let axon = axon_with_inference_and(|c| c.max_inference_concurrency = 32).await;
    axon.publish(&SUPPORT_INTENT.bytes().unwrap(), support_intent_spec())
        .await;
    let axon = std::sync::Arc::new(axon);
    let native = std::sync::Arc::new(native_predictions());
    // A batch's matrix products may take other kernels than one row's.
    let tolerance = tolerance().max(1e-5);
    // Requests at once, each with one call: a call that comes while
    // another runs waits, and runs merged with the others waiting then.
    // Whether any does depends on timing, so up to 20 bursts.
    let mut metrics = String::new();
    let mut merged = false;
    for _ in 0..20 {
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..24 {
            let (axon, native) = (axon.clone(), native.clone());
            burst.spawn(async move {
                let text = TEXTS[i % TEXTS.len()];
                let reply = axon
                    .reason("support-intent", json!({ "message": text }))
                    .await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                assert_like_native(
                    &reply.body["output"],
                    &native[i % TEXTS.len()],
                    tolerance,
                    text,
                );
            });
        }
        while let Some(done) = burst.join_next().await {
            done.unwrap();
        }
        metrics = axon.metrics().await;
        let calls = model_counter(&metrics, "axon_inference_calls_total");
        let runs = model_counter(&metrics, "axon_inference_runs_total");
        if runs < calls {
            merged = true;
            break;
        }
    }
    assert!(
        merged,
        "in 20 bursts of 24 requests, no calls were merged:\n{metrics}"
    );
    let axon = std::sync::Arc::into_inner(axon).unwrap();
    axon.stop().await;
}

#[tokio::test]
async fn a_plugin_without_the_capability_cannot_link_wasi_nn() {
    let axon = axon_with_inference().await;
    let module = SUPPORT_INTENT.bytes().unwrap();

    // Publishing refuses it, naming the import and what to declare.
    let bare = PublishSpec::from_toml("name = \"support-intent\"\nversion = \"1.0.0\"").unwrap();
    let err = axon
        .source
        .publish(&module, bare.clone(), &axon.trust.publisher, "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("imports `wasi:nn/"), "{err}");
    assert!(err.contains("needs the `inference` capability"), "{err}");

    // Registered behind publish's back, Axon refuses it at load, not at a call.
    let manifest = PluginManifest::new(
        bare,
        &module,
        "agent:reasoning/reasoning-plugin@1.0.0".into(),
        axon.trust.publisher.id().clone(),
    );
    axon.register_raw(
        &module,
        VersionRecord::signed(&manifest, &axon.trust.publisher, "test"),
    )
    .await;
    let reply = axon
        .reason("support-intent", json!({ "message": "hello" }))
        .await;
    assert_eq!(reply.code(), "PLUGIN_ERROR", "{}", reply.body);
    assert!(
        reply
            .message()
            .contains("does not declare the `inference` capability"),
        "{}",
        reply.message()
    );
    axon.stop().await;
}

#[tokio::test]
async fn a_tampered_untrusted_or_missing_model_is_refused() {
    let axon = axon_with_inference().await;
    let module = SUPPORT_INTENT.bytes().unwrap();
    let ask = |version: &str| {
        axon.post(json!({
            "plugin": "support-intent",
            "version": version,
            "request": { "intent": "test", "input": { "message": "refund please" } },
        }))
    };
    let refused = |reply: crate::support::Reply, says: &str| {
        assert_eq!(reply.code(), "PLUGIN_ERROR", "{}", reply.body);
        assert!(reply.message().contains(says), "{}", reply.message());
    };
    let flip_last_byte = |bytes: &mut Vec<u8>| {
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
    };

    // Signed by a key the trust list does not name: refused before it loads.
    publish_model(&axon, &KeyPair::generate().unwrap(), "1.0.2").await;
    axon.publish(&module, support_intent_pinning("1.0.2", "1.0.2"))
        .await;
    refused(ask("1.0.2").await, "is not trusted");

    // Never published: publishing a plugin that pins it is refused, and a
    // version registered anyway (or whose model record was deleted) is
    // refused with how to publish the model.
    let error = axon
        .source
        .publish(
            &module,
            support_intent_pinning("1.0.3", "9.0.0"),
            &axon.trust.publisher,
            "test",
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("which is not published: publish the model first"),
        "{error}"
    );
    register_pinning(&axon, "1.0.3", "9.0.0", None).await;
    refused(
        ask("1.0.3").await,
        "model `support-intent` version `9.0.0` not found: publish it with `agentctl model publish`",
    );

    // A version whose signed manifest pins other bytes than the model's
    // signed ones (its record replaced by another signed manifest): refused,
    // whether the model is loaded already (1.0.0) or not (1.0.6).
    let pinned = axon
        .publish(&module, support_intent_pinning("1.0.7", "1.0.0"))
        .await;
    let need = pinned.inference.as_ref().unwrap();
    assert_eq!(need.digests.len(), 1, "publish pins the model's digest");
    assert_eq!(ask("1.0.7").await.status, 200);
    let other = Some(plugin_store::Digest::of(b"other weights"));
    register_pinning(&axon, "1.0.8", "1.0.0", other).await;
    refused(ask("1.0.8").await, "was published against");
    publish_model(&axon, &axon.trust.publisher, "1.0.6").await;
    register_pinning(&axon, "1.0.9", "1.0.6", other).await;
    refused(ask("1.0.9").await, "was published against");

    // Its bytes changed in the blob store, behind the publisher's back
    // (before any version that pins it is published, so none loaded it).
    let model = publish_model(&axon, &axon.trust.publisher, "1.0.1").await;
    axon.tamper_with_blob(&model.digest, flip_last_byte).await;
    axon.publish(&module, support_intent_pinning("1.0.1", "1.0.1"))
        .await;
    refused(ask("1.0.1").await, "changed or replaced");

    // Publishing the same version again rewrites the damaged blob, and the
    // same plugin version loads: a refused model is not remembered.
    publish_model(&axon, &axon.trust.publisher, "1.0.1").await;
    let reply = ask("1.0.1").await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // A registry record whose digest is not its signed manifest's: written
    // behind publish's back, refused before any bytes are fetched.
    let mut spec = ModelSpec::from_toml(&SUPPORT_INTENT_MODEL.spec_text().unwrap()).unwrap();
    spec.version = "1.0.4".parse().unwrap();
    let key = axon.trust.publisher.id().clone();
    let signed = ModelManifest::new(spec, &SUPPORT_INTENT_MODEL.bytes().unwrap(), key);
    let mut record = VersionRecord::signed_model(&signed, &axon.trust.publisher, "test");
    record.digest = plugin_store::Digest::of(b"other weights");
    axon.source
        .registry()
        .register_model(&record)
        .await
        .unwrap();
    let error = axon
        .source
        .publish(
            &module,
            support_intent_pinning("1.0.4", "1.0.4"),
            &axon.trust.publisher,
            "test",
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("was altered"), "{error}");
    register_pinning(&axon, "1.0.4", "1.0.4", None).await;
    refused(ask("1.0.4").await, "the registry record was altered");

    // Its blob deleted: refused until the version is published again.
    let model = publish_model(&axon, &axon.trust.publisher, "1.0.5").await;
    let blob = axon
        .data_dir
        .join("plugins/blobs/sha256")
        .join(model.digest.hex());
    std::fs::remove_file(blob).unwrap();
    axon.publish(&module, support_intent_pinning("1.0.5", "1.0.5"))
        .await;
    refused(ask("1.0.5").await, "missing from the blob store");
    publish_model(&axon, &axon.trust.publisher, "1.0.5").await;
    let reply = ask("1.0.5").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    axon.stop().await;
}

#[tokio::test]
async fn revoking_a_models_key_evicts_the_versions_that_pin_it() {
    use plugin_store::admin::{edit_trust_list, trusted_key};
    let axon = axon_with_inference().await;
    let registry = axon.source.registry().clone();
    let doomed = KeyPair::generate().unwrap();
    let year = std::time::Duration::from_secs(365 * 86_400);
    let entry = trusted_key(&doomed.public(), "doomed", vec!["*".into()], year).unwrap();
    let key_id = entry.key_id.clone();
    let list = edit_trust_list(&*registry, &axon.trust.root, |keys| {
        keys.push(entry.clone());
        Ok(())
    });
    list.await.unwrap();
    publish_model(&axon, &doomed, "2.0.0").await;
    axon.publish(
        &SUPPORT_INTENT.bytes().unwrap(),
        support_intent_pinning("2.0.0", "2.0.0"),
    )
    .await;
    let ask = || {
        axon.post(json!({
            "plugin": "support-intent",
            "version": "2.0.0",
            "request": { "intent": "test", "input": { "message": "refund please" } },
        }))
    };
    // Served once Axon has the list that trusts the model's key.
    let mut reply = ask().await;
    for _ in 0..200 {
        if reply.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        reply = ask().await;
    }
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Revoked: the loaded version goes, and loads again only with a
    // trusted model.
    let list = edit_trust_list(&*registry, &axon.trust.root, |keys| {
        keys.iter_mut()
            .filter(|k| k.key_id == key_id)
            .for_each(|k| k.revoked = true);
        Ok(())
    });
    list.await.unwrap();
    for _ in 0..200 {
        if reply.status != 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        reply = ask().await;
    }
    assert_eq!(reply.code(), "PLUGIN_ERROR", "{}", reply.body);
    assert!(
        reply.message().contains("is not trusted"),
        "{}",
        reply.message()
    );
    assert!(reply.message().contains("revoked"), "{}", reply.message());
    // And the model, which no loaded version holds now, leaves memory.
    let unloaded = "axon_inference_models_loaded{model=\"support-intent\",version=\"2.0.0\"} 0";
    let mut metrics = axon.metrics().await;
    assert!(
        metrics.contains(&unloaded.replace(" 0", " 1")) || metrics.contains(unloaded),
        "{metrics}"
    );
    for _ in 0..200 {
        if metrics.contains(unloaded) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        metrics = axon.metrics().await;
    }
    assert!(metrics.contains(unloaded), "{metrics}");
    axon.stop().await;
}

/// A version that finds its model loaded holds it until its grant: a
/// refresh that unloads unused models in between (the version that used
/// it just evicted) does not fail the load.
#[tokio::test]
async fn a_model_found_loaded_stays_loaded_until_the_version_is_granted() {
    use axon::inference::{InferenceConfig, InferenceLimits, fetch_model};
    use axon::sandbox::{Sandbox, SandboxConfig};
    use plugin_store::{PluginSource, Trust, TrustList, admin::trusted_key};
    let store = tempfile::tempdir().unwrap();
    let source = PluginSource::local(store.path()).await.unwrap();
    let (root, publisher) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let trust = Trust::new(root.public());
    let hour = std::time::Duration::from_secs(3600);
    let list = TrustList {
        serial: 1,
        issued_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        keys: vec![trusted_key(&publisher.public(), "test", vec!["*".into()], hour).unwrap()],
    };
    trust.install(&list.sign(&root)).unwrap();
    let spec = ModelSpec::from_toml(&SUPPORT_INTENT_MODEL.spec_text().unwrap()).unwrap();
    let bytes = SUPPORT_INTENT_MODEL.bytes().unwrap();
    let published = source.publish_model(&bytes, spec, &publisher, "test", &|_| {});
    published.await.unwrap();
    let sandbox = Sandbox::new(&SandboxConfig {
        inference: Some(InferenceConfig {
            onnxruntime: plugin_artifacts::onnxruntime_library().unwrap(),
            limits: InferenceLimits::default(),
            accelerator: accelerator(),
            threads: 0,
        }),
        ..SandboxConfig::default()
    })
    .unwrap();
    let module = SUPPORT_INTENT.bytes().unwrap();
    let world = plugin_store::component::reasoning_world(&module).unwrap();
    let version = |version: &str| {
        let spec = support_intent_pinning(version, "1.0.0");
        PluginManifest::new(spec, &module, world.clone(), publisher.id().clone())
    };
    let (first, second) = (version("1.0.0"), version("1.0.1"));

    let to_load = sandbox.models_to_load(&first);
    assert_eq!(to_load.to_fetch.len(), 1);
    let fetched = fetch_model(&source, &to_load.to_fetch[0], &trust)
        .await
        .unwrap();
    let grant = sandbox.grant(&first, &trust, to_load, vec![fetched]);
    let grant = grant.unwrap().expect("a grant");
    // The second version finds the model loaded and fetches nothing; then
    // the first is evicted and a refresh unloads what nothing holds.
    let to_load = sandbox.models_to_load(&second);
    assert!(to_load.to_fetch.is_empty());
    drop(grant);
    sandbox.unload_unused_models();
    let grant = sandbox.grant(&second, &trust, to_load, Vec::new());
    let grant = grant.unwrap().expect("a grant");
    // Once nothing holds it, it is unloaded: a load fetches it again.
    sandbox.unload_unused_models();
    assert!(sandbox.models_to_load(&second).to_fetch.is_empty());
    drop(grant);
    sandbox.unload_unused_models();
    assert_eq!(sandbox.models_to_load(&second).to_fetch.len(), 1);
}

// Multi-threaded, as Axon serves: inference runs in `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inference_gets_its_limit_code_while_others_answer() {
    let axon = axon_with_inference().await;
    axon.publish(&SUPPORT_INTENT.bytes().unwrap(), support_intent_spec())
        .await;
    axon.publish(&INFERENCE_ABUSE.bytes().unwrap(), abuse_spec())
        .await;

    // A batch past the model's `max_batch`, even when the plugin ignores the error.
    for keep_going in [false, true] {
        let input = json!({ "rows": 65, "keep_going": keep_going });
        assert_limit(&axon, input, "takes at most 64").await;
    }
    // Inference in a loop: the 17th call is refused and decides the request.
    let input = json!({ "calls": 1000, "keep_going": true });
    assert_limit(&axon, input, "more than 16 inference calls").await;
    // Tensors held in host memory: no more bytes than 16 calls of 4 MiB
    // could pass (256 KiB each here), even when none is run.
    let input = json!({ "hoard": 1000, "rows": 64 });
    let says = "bytes of inference tensors in one request; the limit is 67174400";
    assert_limit(&axon, input, says).await;
    let reply = axon
        .reason("inference-abuse", json!({ "hoard": 255, "rows": 64 }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["output"]["tensors"], 255);
    // Tensors whose dimensions, not data, are the bulk.
    let reply = axon.reason("inference-abuse", json!({ "rank": 8 })).await;
    assert_eq!(reply.body["output"]["rank"], 8, "{}", reply.body);
    let input = json!({ "rank": 1_000_000 });
    assert_limit(&axon, input, "tensors have at most 8 dimensions").await;
    // Calls whose inputs do not fit count as calls too.
    let input = json!({ "input": "pixels", "calls": 1000, "keep_going": true });
    assert_limit(&axon, input, "more than 16 inference calls").await;
    // A name too long to be a model's is not kept in an error.
    let input = json!({ "model": "m".repeat(4096), "keep_going": true });
    assert_limit(&axon, input, "model names are at most 128").await;
    // A model it was not granted is not there to load.
    let reply = axon
        .reason("inference-abuse", json!({ "model": "triage" }))
        .await;
    assert_eq!(reply.code(), "PLUGIN_ERROR", "{}", reply.body);
    assert!(reply.message().contains("NotFound"), "{}", reply.message());
    // Within its bounds it answers, and so does everyone else.
    let reply = axon
        .reason("inference-abuse", json!({ "rows": 64, "calls": 16 }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["output"]["calls_done"], 16);
    let reply = axon
        .reason("support-intent", json!({ "message": "where is my parcel" }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = axon.reason("echo", json!("still here")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    axon.stop().await;
}

// Multi-threaded, as Axon serves: the deadline's timer runs beside the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inference_call_stops_at_the_request_deadline() {
    let axon = axon_with_inference_and(|c| c.max_inference_calls = 100_000).await;
    let spec = ModelSpec::from_toml(&BENCH_MEDIUM_MODEL.spec_text().unwrap()).unwrap();
    let bytes = BENCH_MEDIUM_MODEL.bytes().unwrap();
    let published = axon
        .source
        .publish_model(&bytes, spec, &axon.trust.publisher, "test", &|_| {});
    published.await.unwrap();
    let spec = PublishSpec::from_toml(
        "name = \"inference-abuse\"\nversion = \"1.0.0\"\ncapabilities = [\"inference\"]\n[inference]\nmodels = { bench-medium = \"1.0.0\" }\n[limits]\ndeadline_ms = 100",
    )
    .unwrap();
    axon.publish(&INFERENCE_ABUSE.bytes().unwrap(), spec).await;

    // Calls of 64 rows, one after another, far past the deadline. It falls
    // during a call nearly always (the plugin spends little time between
    // calls): that call is stopped there, and the timeout says so. Not
    // always: ONNX Runtime looks at the stop flag between the model's nodes
    // (three matrix products here), so a call in its last node when the
    // deadline passes ends as usual, and on a loaded machine the deadline
    // falls between calls more often: up to 30 tries (about 3 s at most).
    let input =
        json!({ "model": "bench-medium", "rows": 64, "calls": 100_000, "keep_going": true });
    let (mut replies, mut stopped) = (Vec::new(), false);
    for _ in 0..30 {
        let reply = axon.reason("inference-abuse", input.clone()).await;
        assert_eq!(reply.code(), "PLUGIN_TIMEOUT", "{}", reply.body);
        stopped = reply
            .message()
            .contains("in an inference call, stopped there");
        replies.push(reply.body);
        if stopped {
            break;
        }
    }
    assert!(
        stopped,
        "in 30 requests, no call was stopped at the deadline: {replies:#?}"
    );
    // The stopped call gave back its slot (a session, if lost, is made again).
    let reply = axon
        .reason("inference-abuse", json!({ "model": "bench-medium" }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["output"]["calls_done"], 1, "{}", reply.body);
    axon.stop().await;
}

#[tokio::test]
async fn bounds_on_input_bytes_and_calls_at_once_hold() {
    // 16 KiB of input per call: 4 rows of 1024 floats fit, 8 do not.
    let axon = axon_with_inference_and(|c| c.max_inference_input_kib = 16).await;
    axon.publish(&INFERENCE_ABUSE.bytes().unwrap(), abuse_spec())
        .await;
    let reply = axon.reason("inference-abuse", json!({ "rows": 4 })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let input = json!({ "rows": 8, "keep_going": true });
    let says = "32768 bytes of input to one inference call; the limit is 16384";
    assert_limit(&axon, input, says).await;
    // An input the model does not have is the plugin's error, not a limit.
    let reply = axon
        .reason("inference-abuse", json!({ "input": "pixels" }))
        .await;
    assert_eq!(reply.code(), "PLUGIN_ERROR", "{}", reply.body);
    assert!(
        reply.message().contains("has no input") && reply.message().contains("features"),
        "{}",
        reply.message()
    );
    axon.stop().await;

    // No calls of a model at once: every call is refused as overload, a
    // retry, not the plugin's fault.
    let axon = axon_with_inference_and(|c| c.max_inference_concurrency = 0).await;
    axon.publish(&INFERENCE_ABUSE.bytes().unwrap(), abuse_spec())
        .await;
    let reply = axon
        .reason("inference-abuse", json!({ "keep_going": true }))
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.code(), "OVERLOADED", "{}", reply.body);
    assert!(
        reply
            .message()
            .contains("model `support-intent` is running all the 0 calls it may run at once"),
        "{}",
        reply.message()
    );
    assert!(
        reply.headers.contains_key("retry-after"),
        "{:?}",
        reply.headers
    );
    axon.stop().await;
}
