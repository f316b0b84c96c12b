//! Models: host-owned weights that plugins with the `inference` capability
//! run through `wasi:nn`. A model is published like a plugin: its bytes
//! addressed by digest, its manifest signed by a publisher key the trust
//! list allows for the model's name. A plugin pins the model versions it
//! uses in its own signed manifest, so a plugin version runs the same
//! weights for as long as it exists.

use std::path::{Path, PathBuf};

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

/// The files of model `name@version` in a model directory.
pub fn model_files(dir: &Path, name: &PluginName, version: &Version) -> (PathBuf, PathBuf) {
    let at = dir.join(name.as_str()).join(version.to_string());
    (at.join("model.onnx"), at.join("manifest.json"))
}

/// Signs `bytes` under `spec` with `key` and writes both into the model
/// directory `dir` (`<name>/<version>/model.onnx` and `manifest.json`, the
/// layout Axon reads). A version is immutable: the same bytes again are a
/// no-op (returning `false`), other bytes are refused.
pub fn add_to_dir(
    dir: &Path,
    spec: ModelSpec,
    bytes: &[u8],
    key: &KeyPair,
) -> Result<(ModelManifest, bool), StoreError> {
    let (model_path, manifest_path) = model_files(dir, &spec.name, &spec.version);
    let manifest = ModelManifest::new(spec, bytes, key.id().clone());
    if let Ok(existing) = std::fs::read(&model_path) {
        if Digest::of(&existing) == manifest.digest {
            return Ok((manifest, false));
        }
        return Err(StoreError::Invalid(format!(
            "model `{}@{}` is already in `{}` with other bytes; models are immutable: give the new one a new version",
            manifest.name,
            manifest.version,
            dir.display()
        )));
    }
    let io = |path: &Path| StoreError::io(format!("writing `{}`", path.display()));
    if let Some(parent) = model_path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // The manifest first, the model last: a reader sees no model without
    // its manifest. Each through a temporary file renamed into place.
    for (path, contents) in [
        (&manifest_path, manifest.sign(key).to_json().into_bytes()),
        (&model_path, bytes.to_vec()),
    ] {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, contents).map_err(io(&partial))?;
        std::fs::rename(&partial, path).map_err(io(path))?;
    }
    Ok((manifest, true))
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
    }

    #[test]
    fn a_model_directory_entry_is_written_once_and_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let spec = ModelSpec::from_toml(SPEC).unwrap();
        let (manifest, new) = add_to_dir(dir.path(), spec.clone(), b"onnx", &key).unwrap();
        assert!(new);
        let (model, signed) = model_files(dir.path(), &spec.name, &spec.version);
        assert_eq!(std::fs::read(model).unwrap(), b"onnx");
        let envelope = Envelope::from_json(&std::fs::read_to_string(signed).unwrap()).unwrap();
        let payload = envelope
            .verify(MODEL_MANIFEST_TYPE, key.id(), &key.public())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<ModelManifest>(&payload).unwrap(),
            manifest
        );
        assert!(
            !add_to_dir(dir.path(), spec.clone(), b"onnx", &key)
                .unwrap()
                .1
        );
        let err = add_to_dir(dir.path(), spec, b"other", &key).unwrap_err();
        assert!(err.to_string().contains("immutable"), "{err}");
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
    }
}
