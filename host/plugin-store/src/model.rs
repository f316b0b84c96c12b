//! Models: host-owned weights that plugins with the `inference` capability
//! run through `wasi:nn`. A model is published like a plugin: its bytes
//! addressed by digest, its manifest signed by a publisher key the trust
//! list allows for the model's name. A plugin pins the model versions it
//! uses in its own signed manifest (by version: see docs/supply-chain.md on
//! what that leaves open).

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::manifest::{Digest, PluginName};
use crate::signing::{Envelope, KeyId, KeyPair};

/// The DSSE payload type of a signed model manifest.
pub const MODEL_MANIFEST_TYPE: &str = "application/vnd.agent-runtime.model-manifest.v1+json";

/// How a model's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Onnx,
}

/// The element type of a tensor. Only 32-bit floats for now: the one type
/// wasi-nn's ONNX backend both takes and gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    F32,
}

/// One named input or output, as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub element: ElementType,
    /// Each dimension's size; `-1` where the caller chooses (the batch).
    pub shape: Vec<i64>,
}

/// What a publisher says about a model version: the format of `model.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: PluginName,
    pub version: Version,
    #[serde(default)]
    pub description: String,
    pub format: ModelFormat,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// The most a dynamic (`-1`) dimension may be in one call.
    pub max_batch: u32,
    /// The publisher's word that each row of the batch (the first
    /// dimension, `-1` in every input and output) is computed from that row
    /// of the inputs alone: then Axon may run calls of different requests
    /// as one batch, and give each its rows. Never set it for a model whose
    /// rows see each other (a softmax across the batch, say): one request
    /// would see another's data.
    #[serde(default)]
    pub independent_rows: bool,
}

impl ModelSpec {
    /// Parses a `model.toml`.
    pub fn from_toml(text: &str) -> Result<Self, StoreError> {
        let spec: Self = toml::from_str(text)
            .map_err(|e| StoreError::Invalid(format!("model manifest: {}", e.message().trim())))?;
        if spec.inputs.is_empty() || spec.outputs.is_empty() {
            return Err(StoreError::Invalid(
                "model manifest: name at least one input and one output".into(),
            ));
        }
        if spec.max_batch == 0 {
            return Err(StoreError::Invalid(
                "model manifest: `max_batch` must be at least 1".into(),
            ));
        }
        for tensor in spec.inputs.iter().chain(&spec.outputs) {
            if tensor.shape.is_empty() || tensor.shape.iter().any(|d| *d == 0 || *d < -1) {
                return Err(StoreError::Invalid(format!(
                    "model manifest: tensor `{}` has shape {:?}; use sizes of at least 1, or -1 for the batch",
                    tensor.name, tensor.shape
                )));
            }
            let batch_first = tensor.shape[0] == -1 && !tensor.shape[1..].contains(&-1);
            if spec.independent_rows && !batch_first {
                return Err(StoreError::Invalid(format!(
                    "model manifest: `independent_rows` needs every tensor's first dimension to be the batch (-1) and no other; `{}` has shape {:?}",
                    tensor.name, tensor.shape
                )));
            }
        }
        Ok(spec)
    }
}

/// One published model version, as its publisher signed it. Immutable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub name: PluginName,
    pub version: Version,
    /// sha256 of the model bytes.
    pub digest: Digest,
    pub size: u64,
    pub format: ModelFormat,
    #[serde(default)]
    pub description: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub max_batch: u32,
    /// See [`ModelSpec::independent_rows`]. Left out when false, so that
    /// manifests signed before it existed read the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub independent_rows: bool,
    /// The key that signed this manifest.
    pub key_id: KeyId,
    /// RFC 3339 time the manifest was made.
    pub created_at: String,
}

impl ModelManifest {
    /// The manifest for `bytes` published under `spec`, to be signed by `key_id`.
    pub fn new(spec: ModelSpec, bytes: &[u8], key_id: KeyId) -> Self {
        Self {
            name: spec.name,
            version: spec.version,
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            format: spec.format,
            description: spec.description,
            inputs: spec.inputs,
            outputs: spec.outputs,
            max_batch: spec.max_batch,
            independent_rows: spec.independent_rows,
            key_id,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// This manifest signed by `key` (which must be the one it names).
    pub fn sign(&self, key: &KeyPair) -> Envelope {
        // Strings, numbers and lists of them: encoding cannot fail.
        let payload = serde_json::to_vec(self).unwrap_or_default();
        key.sign(MODEL_MANIFEST_TYPE, &payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
        name = "support-intent"
        version = "1.0.0"
        format = "onnx"
        max_batch = 8
        inputs = [{ name = "features", type = "f32", shape = [-1, 1024] }]
        outputs = [{ name = "intent", type = "f32", shape = [-1, 5] }]
    "#;

    #[test]
    fn model_toml_parses_and_shapes_are_checked() {
        let spec = ModelSpec::from_toml(SPEC).unwrap();
        assert_eq!(spec.inputs[0].shape, vec![-1, 1024]);
        assert_eq!(spec.max_batch, 8);
        let err = ModelSpec::from_toml(&SPEC.replace("[-1, 5]", "[-2, 5]")).unwrap_err();
        assert!(err.to_string().contains("shape [-2, 5]"), "{err}");
        let err = ModelSpec::from_toml(&SPEC.replace("\"f32\"", "\"i64\"")).unwrap_err();
        assert!(err.to_string().contains("i64"), "{err}");
        let err =
            ModelSpec::from_toml(&SPEC.replace("max_batch = 8", "max_batch = 0")).unwrap_err();
        assert!(err.to_string().contains("max_batch"), "{err}");
        assert!(!spec.independent_rows);
        let independent = format!("independent_rows = true\n{SPEC}");
        assert!(ModelSpec::from_toml(&independent).unwrap().independent_rows);
        let err = ModelSpec::from_toml(&independent.replace("[-1, 5]", "[5, -1]")).unwrap_err();
        assert!(
            err.to_string()
                .contains("`independent_rows` needs every tensor's first dimension"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_model_is_published_once_and_fetched_checked() {
        let dir = tempfile::tempdir().unwrap();
        let source = crate::PluginSource::local(dir.path()).await.unwrap();
        let key = KeyPair::generate().unwrap();
        let spec = ModelSpec::from_toml(SPEC).unwrap();
        let publish =
            |bytes: &'static [u8]| source.publish_model(bytes, spec.clone(), &key, "test", &|_| {});
        let published = publish(b"onnx").await.unwrap();
        assert!(published.new);
        assert!(!publish(b"onnx").await.unwrap().new);
        let err = publish(b"other").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("already published with other bytes"),
            "{err}"
        );

        let record = source
            .model_record(&spec.name, &spec.version)
            .await
            .unwrap();
        let payload = record
            .envelope
            .verify(MODEL_MANIFEST_TYPE, key.id(), &key.public())
            .unwrap();
        let manifest: ModelManifest = serde_json::from_slice(&payload).unwrap();
        assert_eq!(manifest, published.manifest);
        assert_eq!(source.model_bytes(&manifest).await.unwrap(), b"onnx");

        // Bytes changed behind the store's back are refused.
        let blob = dir.path().join("blobs/sha256").join(manifest.digest.hex());
        std::fs::write(blob, b"ONNX").unwrap();
        let err = source.model_bytes(&manifest).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_plugin_is_published_pinned_to_its_models_digests() {
        let dir = tempfile::tempdir().unwrap();
        let source = crate::PluginSource::local(dir.path()).await.unwrap();
        let key = KeyPair::generate().unwrap();
        let plugin = plugin_artifacts::SUPPORT_INTENT;
        let module = plugin.bytes().unwrap();
        let spec =
            crate::PublishSpec::from_toml(&plugin.manifest_text().unwrap().unwrap()).unwrap();
        let publish = |spec: crate::PublishSpec| source.publish(&module, spec, &key, "test");

        // Its model first: a plugin pinning a model not published is refused.
        let err = publish(spec.clone()).await.unwrap_err();
        assert!(
            err.to_string().contains(
                "pins model `support-intent` version `1.0.0`, which is not published: publish the model first"
            ),
            "{err}"
        );
        let model = ModelSpec::from_toml(SPEC).unwrap();
        source
            .publish_model(b"onnx", model, &key, "test", &|_| {})
            .await
            .unwrap();

        // The signed manifest names the model's bytes.
        let published = publish(spec.clone()).await.unwrap().manifest;
        let need = published.inference.unwrap();
        let name: crate::PluginName = "support-intent".parse().unwrap();
        assert_eq!(need.digests.get(&name), Some(&Digest::of(b"onnx")));

        // A digest plugin.toml names must be the published one, of a model it pins.
        let mut wrong = spec.clone();
        wrong.version = "1.0.1".parse().unwrap();
        let pins = wrong.inference.as_mut().unwrap();
        pins.digests.insert(name, Digest::of(b"other"));
        let err = publish(wrong.clone()).await.unwrap_err();
        assert!(
            err.to_string().contains("but that version is published as"),
            "{err}"
        );
        let pins = wrong.inference.as_mut().unwrap();
        pins.digests = [("triage".parse().unwrap(), Digest::of(b"onnx"))].into();
        let err = publish(wrong).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("names a digest for model `triage`, which is not among"),
            "{err}"
        );
    }

    #[test]
    fn a_signed_model_manifest_round_trips() {
        let key = KeyPair::generate().unwrap();
        let manifest = ModelManifest::new(
            ModelSpec::from_toml(SPEC).unwrap(),
            b"onnx",
            key.id().clone(),
        );
        let envelope = manifest.sign(&key);
        let payload = envelope
            .verify(MODEL_MANIFEST_TYPE, key.id(), &key.public())
            .unwrap();
        let back: ModelManifest = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(back.digest, Digest::of(b"onnx"));
        // A manifest without independent rows reads as one signed before
        // the field existed.
        assert!(
            !String::from_utf8(payload)
                .unwrap()
                .contains("independent_rows")
        );
    }
}
