//! Signatures: ed25519 keys and the DSSE envelope every signed document of the
//! supply chain travels in (plugin manifests, the trust list).
//!
//! Why DSSE (the Dead Simple Signing Envelope of in-toto and Sigstore) rather
//! than a signature over "canonical JSON": the signature covers the exact
//! payload bytes plus their type, so there is no canonicalisation to get wrong,
//! a manifest cannot be replayed as a trust list (the type is signed), and the
//! payload is parsed only after its signature verified. Verification uses
//! ed25519's strict mode (no malleable or small-order signatures).

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The largest envelope accepted, in bytes: manifests carry config, but a
/// signed document is never megabytes.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;

/// Why a key or an envelope is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signed document is malformed: {0}")]
    Malformed(String),
    #[error("the document is of type `{found}`, expected `{expected}`")]
    WrongType { expected: String, found: String },
    #[error("the document carries no signature by key `{0}`")]
    NotSignedBy(String),
    #[error("the signature by key `{0}` does not verify")]
    BadSignature(String),
    #[error("key file: {0}")]
    KeyFile(String),
}

/// A key id: the first 16 bytes of the sha256 of the public key, in hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> Self {
        Self(hex::encode(&Sha256::digest(key.as_bytes())[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for KeyId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A public key as written in trust lists and key files: base64 of 32 bytes.
pub fn encode_public(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Parses [`encode_public`]'s form.
pub fn decode_public(text: &str) -> Result<VerifyingKey, SignatureError> {
    let bytes: [u8; 32] = B64
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            SignatureError::Malformed("a public key is not base64 of 32 bytes".into())
        })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| SignatureError::Malformed("a public key is not a valid ed25519 point".into()))
}

/// An ed25519 key pair, as kept in a key file (mode 0600).
#[derive(Clone)]
pub struct KeyPair {
    key: SigningKey,
    id: KeyId,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    kind: String,
    key_id: KeyId,
    public_key: String,
    secret_key: String,
}

const KEY_FILE_KIND: &str = "agent-runtime-ed25519-private-key";

impl KeyPair {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, SignatureError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| SignatureError::KeyFile(format!("no randomness for a new key: {e}")))?;
        Ok(Self::from_seed(&seed))
    }

    /// The key whose ed25519 secret is `seed`. For keys kept elsewhere, and
    /// for fixed keys in tests and fuzzing; [`KeyPair::generate`] otherwise.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let id = KeyId::of(&key.verifying_key());
        Self { key, id }
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Reads a key file written by [`KeyPair::write`].
    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SignatureError::KeyFile(format!("cannot read `{}`: {e}", path.display()))
        })?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
            SignatureError::KeyFile(format!(
                "`{}` is not a private key file: {e}",
                path.display()
            ))
        })?;
        let seed: [u8; 32] = B64
            .decode(&file.secret_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .filter(|_| file.kind == KEY_FILE_KIND)
            .ok_or_else(|| {
                SignatureError::KeyFile(format!("`{}` is not a private key file", path.display()))
            })?;
        let pair = Self::from_seed(&seed);
        if pair.id != file.key_id {
            return Err(SignatureError::KeyFile(format!(
                "`{}` is damaged: its key id does not match its key",
                path.display()
            )));
        }
        Ok(pair)
    }

    /// Writes the key file, readable by its owner only. Never overwrites.
    pub fn write(&self, path: &Path) -> Result<(), SignatureError> {
        let file = KeyFile {
            kind: KEY_FILE_KIND.to_owned(),
            key_id: self.id.clone(),
            public_key: encode_public(&self.public()),
            secret_key: B64.encode(self.key.to_bytes()),
        };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| SignatureError::KeyFile(e.to_string()))?;
        let fail = |e: std::io::Error| {
            SignatureError::KeyFile(format!("cannot write `{}`: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(path).map_err(fail)?;
        std::io::Write::write_all(&mut out, &json).map_err(fail)
    }

    /// Signs `payload` as a document of `payload_type`.
    pub fn sign(&self, payload_type: &str, payload: &[u8]) -> Envelope {
        let sig = self.key.sign(&pae(payload_type, payload));
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: B64.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: self.id.clone(),
                sig: B64.encode(sig.to_bytes()),
            }],
        }
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A DSSE envelope: a typed payload and its signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    pub payload_type: String,
    /// base64 of the payload bytes.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    pub keyid: KeyId,
    /// base64 of the 64-byte ed25519 signature.
    pub sig: String,
}

impl Envelope {
    /// Parses an envelope's JSON, bounded in size.
    pub fn from_json(text: &str) -> Result<Self, SignatureError> {
        if text.len() > MAX_ENVELOPE_BYTES {
            return Err(SignatureError::Malformed(format!(
                "the envelope is larger than {MAX_ENVELOPE_BYTES} bytes"
            )));
        }
        serde_json::from_str(text).map_err(|e| SignatureError::Malformed(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        // An envelope is strings only: encoding it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The key ids that claim to have signed, in order.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.signatures.iter().map(|s| &s.keyid)
    }

    /// The payload, once the signature by `key` over it and `payload_type`
    /// verifies.
    pub fn verify(
        &self,
        payload_type: &str,
        key_id: &KeyId,
        key: &VerifyingKey,
    ) -> Result<Vec<u8>, SignatureError> {
        if self.payload_type != payload_type {
            return Err(SignatureError::WrongType {
                expected: payload_type.to_owned(),
                found: self.payload_type.clone(),
            });
        }
        let signature = self
            .signatures
            .iter()
            .find(|s| &s.keyid == key_id)
            .ok_or_else(|| SignatureError::NotSignedBy(key_id.to_string()))?;
        let payload = B64
            .decode(&self.payload)
            .map_err(|_| SignatureError::Malformed("the payload is not base64".into()))?;
        let bad = || SignatureError::BadSignature(key_id.to_string());
        let sig: [u8; 64] = B64
            .decode(&signature.sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        key.verify_strict(
            &pae(payload_type, &payload),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| bad())?;
        Ok(payload)
    }

    /// The payload without checking any signature: for display only.
    pub fn unverified_payload(&self) -> Result<Vec<u8>, SignatureError> {
        B64.decode(&self.payload)
            .map_err(|_| SignatureError::Malformed("the payload is not base64".into()))
    }
}

/// DSSE's pre-authentication encoding: what is actually signed.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(
        format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            payload.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: &str = "application/vnd.test+json";

    #[test]
    fn pae_matches_the_dsse_specification() {
        // The DSSE spec's own example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn a_signed_payload_verifies_and_any_change_breaks_it() {
        let key = KeyPair::generate().unwrap();
        let envelope = key.sign(TYPE, b"{\"a\":1}");
        let back = Envelope::from_json(&envelope.to_json()).unwrap();
        assert_eq!(
            back.verify(TYPE, key.id(), &key.public()).unwrap(),
            b"{\"a\":1}"
        );

        let mut tampered = back.clone();
        tampered.payload = B64.encode(b"{\"a\":2}");
        assert_eq!(
            tampered.verify(TYPE, key.id(), &key.public()),
            Err(SignatureError::BadSignature(key.id().to_string()))
        );
        // The type is signed too: a document cannot pass as another kind.
        let mut retyped = back.clone();
        retyped.payload_type = "other".into();
        assert!(retyped.verify("other", key.id(), &key.public()).is_err());
        assert!(matches!(
            back.verify("other", key.id(), &key.public()),
            Err(SignatureError::WrongType { .. })
        ));
        let other = KeyPair::generate().unwrap();
        assert_eq!(
            back.verify(TYPE, other.id(), &other.public()),
            Err(SignatureError::NotSignedBy(other.id().to_string()))
        );
        // A signature claimed by one key id but made by another fails.
        let mut relabelled = other.sign(TYPE, b"{\"a\":1}");
        relabelled.signatures[0].keyid = key.id().clone();
        assert!(relabelled.verify(TYPE, key.id(), &key.public()).is_err());
    }

    #[test]
    fn key_files_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = KeyPair::generate().unwrap();
        key.write(&path).unwrap();
        let back = KeyPair::read(&path).unwrap();
        assert_eq!(back.id(), key.id());
        assert!(key.write(&path).is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            decode_public(&encode_public(&key.public())).unwrap(),
            key.public()
        );
        assert!(Envelope::from_json(&"x".repeat(MAX_ENVELOPE_BYTES + 1)).is_err());
    }
}
