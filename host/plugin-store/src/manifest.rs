//! Plugin manifests: what a published version is, immutably.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use semver::Version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::StoreError;
use crate::signing::{Envelope, KeyId, KeyPair};

/// A plugin name: 1 to 64 characters, lowercase letters, digits and `-`,
/// starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginName(String);

impl PluginName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PluginName {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        let valid = (1..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(StoreError::Invalid(format!(
                "plugin name `{s}` is invalid: use 1 to 64 lowercase letters, digits or `-`, starting with a letter"
            )))
        }
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PluginName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PluginName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The sha256 of a module's bytes, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        let invalid =
            || StoreError::Invalid(format!("digest `{s}` is not `sha256:` and 64 hex digits"));
        let hex_part = s.strip_prefix("sha256:").ok_or_else(invalid)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Limits a plugin asks for. Unset means the host's default; the host refuses
/// to load a plugin that asks for more than its maxima.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    /// Linear memory, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// Wall-clock time for one request, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u32>,
    /// Size of the answer (output JSON and notes), in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_kib: Option<u32>,
    /// Instances of this plugin running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// The capability to run host-owned models through `wasi:nn`.
pub const INFERENCE: &str = "inference";
/// Every capability this release knows.
pub const CAPABILITIES: &[&str] = &[INFERENCE];

/// Whether a plugin's inference needs a GPU, as its publisher declares it.
/// Governance policies read it, and Orbit routes by it: `Required` to the
/// GPU pool (or `GPU_UNAVAILABLE`), `Preferred` there while it is up, `None`
/// to the CPU pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuNeed {
    /// The CPU pool (the default).
    #[default]
    None,
    /// Faster on a GPU, correct on a CPU.
    Preferred,
    /// Meant to serve only on a GPU.
    Required,
}

/// What the `inference` capability asks for: the models a plugin loads by
/// name, each pinned to one version and its bytes, and its need for a GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceNeed {
    /// Model name to the exact version the plugin runs.
    pub models: BTreeMap<PluginName, Version>,
    #[serde(default)]
    pub gpu: GpuNeed,
    /// Model name to the sha256 of that version's bytes, as published when
    /// this plugin version was: publishing fills it in (a `plugin.toml`
    /// may name them, and then they must match), and Axon loads no other
    /// bytes. Empty in manifests published before models were pinned by
    /// digest, which Axon still serves by each model's own signature.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<PluginName, Digest>,
}

/// What a publisher says about a version: the format of a plugin's
/// `plugin.toml`. Publishing adds the digest, size, world, key and time.
///
/// There is no `publisher` field: who published is the owner of the signing
/// key, as the trust list says. `tags` are the publisher's own claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    pub name: PluginName,
    pub version: Version,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Read-only configuration the plugin reads through `config.get`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: RequestedLimits,
    /// Host capabilities the plugin asks for (see [`CAPABILITIES`]).
    #[serde(default)]
    pub capabilities: BTreeSet<String>,
    /// The models and GPU the `inference` capability asks for (`[inference]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceNeed>,
    /// A JSON Schema for the input (`[input_schema]`, a TOML table): Orbit
    /// refuses input that breaks it, and policies see the input's typed
    /// fields (`context.input`, see governance/README.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
}

impl PublishSpec {
    /// Parses a `plugin.toml`.
    pub fn from_toml(text: &str) -> Result<Self, StoreError> {
        let spec: Self = toml::from_str(text).map_err(|e| {
            let hint = if e.message().contains("`publisher`") {
                "; the publisher is the owner of the signing key, so remove `publisher`"
            } else {
                ""
            };
            StoreError::Invalid(format!("plugin manifest: {}{hint}", e.message().trim()))
        })?;
        if let Some(capability) = spec
            .capabilities
            .iter()
            .find(|c| !CAPABILITIES.contains(&c.as_str()))
        {
            return Err(StoreError::Invalid(format!(
                "plugin manifest: capability `{capability}` is unknown; this release offers {}",
                CAPABILITIES.join(", ")
            )));
        }
        match (spec.capabilities.contains(INFERENCE), &spec.inference) {
            (true, None) => {
                return Err(StoreError::Invalid(
                    "plugin manifest: the `inference` capability needs an `[inference]` table naming its models, e.g. `models = { support-intent = \"1.0.0\" }`".into(),
                ));
            }
            (true, Some(need)) if need.models.is_empty() => {
                return Err(StoreError::Invalid(
                    "plugin manifest: `[inference]` names no models; list each model the plugin loads, with its version".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(StoreError::Invalid(
                    "plugin manifest: `[inference]` is set but `inference` is not in `capabilities`; add it there".into(),
                ));
            }
            _ => {}
        }
        if let Some(schema) = &spec.input_schema {
            crate::input::InputSchema::compile(schema)
                .map_err(|e| StoreError::Invalid(format!("plugin manifest: {e}")))?;
        }
        Ok(spec)
    }
}

/// Which plugin version answered a request: how responses name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginRef {
    #[schema(example = "echo")]
    pub name: String,
    #[schema(example = "1.0.0")]
    pub version: String,
    /// The module that ran (`sha256:` and 64 hex digits).
    #[schema(value_type = String, pattern = "^sha256:[0-9a-f]{64}$")]
    pub digest: Digest,
}

/// The DSSE payload type of a signed manifest.
pub const MANIFEST_TYPE: &str = "application/vnd.agent-runtime.plugin-manifest.v1+json";

/// One published plugin version, as its publisher signed it. Immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    pub name: PluginName,
    pub version: Version,
    /// sha256 of the module bytes.
    pub digest: Digest,
    /// Size of the module in bytes.
    pub size: u64,
    /// The WIT world the module targets, read from the component.
    pub world: String,
    #[serde(default)]
    pub description: String,
    /// The publisher's own descriptive tags: claims, not operator labels.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: RequestedLimits,
    #[serde(default)]
    pub capabilities: BTreeSet<String>,
    /// What the `inference` capability asks for, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceNeed>,
    /// The input's JSON Schema, if the publisher declared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
    /// The key that signed this manifest.
    pub key_id: KeyId,
    /// RFC 3339 time the manifest was made.
    pub created_at: String,
}

impl PluginManifest {
    /// The manifest for `module` (targeting `world`) published under `spec`,
    /// to be signed by `key_id`.
    pub fn new(spec: PublishSpec, module: &[u8], world: String, key_id: KeyId) -> Self {
        Self {
            name: spec.name,
            version: spec.version,
            digest: Digest::of(module),
            size: module.len() as u64,
            world,
            description: spec.description,
            tags: spec.tags,
            config: spec.config,
            limits: spec.limits,
            capabilities: spec.capabilities,
            inference: spec.inference,
            input_schema: spec.input_schema,
            key_id,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// This manifest signed by `key` (which must be the one it names).
    pub fn sign(&self, key: &KeyPair) -> Envelope {
        // Strings, numbers, maps of strings and JSON: encoding cannot fail.
        let payload = serde_json::to_vec(self).unwrap_or_default();
        key.sign(MANIFEST_TYPE, &payload)
    }

    /// How responses name this version.
    pub fn reference(&self) -> PluginRef {
        PluginRef {
            name: self.name.to_string(),
            version: self.version.to_string(),
            digest: self.digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["keywords", "a", "triage-v2", &"a".repeat(64)] {
            assert!(good.parse::<PluginName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Keywords",
            "1abc",
            "-a",
            "a_b",
            "a.b",
            &"a".repeat(65),
            "../etc",
        ] {
            assert!(bad.parse::<PluginName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_round_trip_through_text() {
        let digest = Digest::of(b"hello");
        let text = digest.to_string();
        assert_eq!(
            text,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(text.parse::<Digest>().unwrap(), digest);
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(
            "md5:2cf24dba5fb0a30e26e83b2ac5b9e29e"
                .parse::<Digest>()
                .is_err()
        );
    }

    #[test]
    fn plugin_toml_parses_and_rejects_unknown_keys() {
        let spec = PublishSpec::from_toml(
            r#"
            name = "triage"
            version = "1.2.3"
            tags = ["support"]
            [config]
            default_category = "general"
            [limits]
            memory_mib = 32
            "#,
        )
        .unwrap();
        assert_eq!(spec.name.as_str(), "triage");
        assert_eq!(spec.version, Version::new(1, 2, 3));
        assert_eq!(spec.limits.memory_mib, Some(32));
        assert_eq!(spec.config["default_category"], "general");

        let err =
            PublishSpec::from_toml("name = \"x\"\nversion = \"1.0.0\"\nmemory = 3").unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn manifest_json_round_trips() {
        let spec = PublishSpec::from_toml("name = \"echo\"\nversion = \"1.0.0\"").unwrap();
        let manifest = PluginManifest::new(spec, b"\0asm", "w".into(), KeyId::from("k"));
        let json = serde_json::to_string(&manifest).unwrap();
        let back: PluginManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(back.size, 4);
        assert_eq!(back.world, "w");
    }

    #[test]
    fn publisher_is_not_for_the_publisher_to_say_and_capabilities_are_checked() {
        let err = PublishSpec::from_toml("name = \"x\"\nversion = \"1.0.0\"\npublisher = \"me\"")
            .unwrap_err();
        assert!(err.to_string().contains("remove `publisher`"), "{err}");
        let err = PublishSpec::from_toml(
            "name = \"x\"\nversion = \"1.0.0\"\ncapabilities = [\"network\"]",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("capability `network` is unknown"),
            "{err}"
        );
    }

    #[test]
    fn inference_needs_its_table_and_the_table_its_capability() {
        let spec = PublishSpec::from_toml(
            "name = \"x\"\nversion = \"1.0.0\"\ncapabilities = [\"inference\"]\n[inference]\nmodels = { support-intent = \"1.2.0\" }\ngpu = \"preferred\"",
        )
        .unwrap();
        let need = spec.inference.unwrap();
        assert_eq!(need.gpu, GpuNeed::Preferred);
        assert_eq!(
            need.models[&"support-intent".parse::<PluginName>().unwrap()],
            Version::new(1, 2, 0)
        );
        for (toml, says) in [
            (
                "capabilities = [\"inference\"]",
                "needs an `[inference]` table",
            ),
            (
                "capabilities = [\"inference\"]\n[inference]\nmodels = {}",
                "names no models",
            ),
            (
                "[inference]\nmodels = { m = \"1.0.0\" }",
                "`inference` is not in `capabilities`",
            ),
            (
                "capabilities = [\"inference\"]\n[inference]\nmodels = { m = \"1.0.0\" }\ngpu = \"always\"",
                "expected one of `none`, `preferred`, `required`",
            ),
        ] {
            let err = PublishSpec::from_toml(&format!("name = \"x\"\nversion = \"1.0.0\"\n{toml}"))
                .unwrap_err();
            assert!(err.to_string().contains(says), "{toml}: {err}");
        }
    }
}
