//! One harness per parser of untrusted input. Each takes raw bytes, never
//! panics on any input, and asserts what must hold of the parser's answer;
//! a panic is a finding. `src/bin/` hands each to AFL++ (`cargo afl`), and
//! the tests below run each over its seed corpus (`corpus/<target>/`), so a
//! plain `cargo test` here exercises them too.
//!
//! Signed inputs (manifests, trust lists) are parsed only after their
//! signature verifies, so random bytes would never reach the parser: those
//! harnesses sign what the fuzzer writes with a trusted key first, which is
//! what a hostile key holder can send.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth::canonical::{canonical_query, canonical_uri};
use auth::{AccessKey, Identity, Keyring, PrincipalKind, ReplayPolicy, Verifier, VerifierConfig};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use plugin_store::trust::TRUST_LIST_TYPE;
use plugin_store::{
    Envelope, KeyPair, MANIFEST_TYPE, PluginName, PublishSpec, Trust, TrustList, Version,
};
use service_kit::reasoning::{DispatchBody, ReasonBody, check_fields};
use service_kit::reply::{MAX_MESSAGE_BYTES, bounded_message, encoded_len, notes_len};

/// The key the `sigv4` seeds are signed with.
pub const FUZZ_KEY_ID: &str = "AKARFUZZFUZZFUZZFUZZ";
pub const FUZZ_SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret-fuzz";

/// The time every harness runs at: 2026-01-01T00:00:00Z, so seeds signed
/// then stay inside the skew window.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

struct OneKey(Arc<AccessKey>);

impl Keyring for OneKey {
    fn find(&self, id: &str) -> Option<Arc<AccessKey>> {
        (id == self.0.access_key_id).then(|| self.0.clone())
    }
}

fn fuzz_key() -> Arc<AccessKey> {
    static KEY: OnceLock<Arc<AccessKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        Arc::new(AccessKey {
            access_key_id: FUZZ_KEY_ID.into(),
            secret_access_key: FUZZ_SECRET.into(),
            identity: Identity {
                principal: "fuzz".into(),
                kind: PrincipalKind::User,
                groups: vec![],
                tenant: "local".into(),
            },
            created_at: String::new(),
            revoked: false,
        })
    })
    .clone()
}

/// A verifier for the fuzz key. Each input gets its own, so the replay
/// cache never carries one input's signature into the next (which would
/// make the same input take another path on a second run).
fn verifier(replay: ReplayPolicy) -> Verifier {
    Verifier::new(
        VerifierConfig {
            replay,
            ..VerifierConfig::default()
        },
        Arc::new(OneKey(fuzz_key())),
    )
}

/// A request as the fuzzer writes it: a method line, a path-and-query
/// line, `name: value` header lines, a blank line, then the body.
fn request(data: &[u8]) -> Option<(Method, Uri, HeaderMap, &[u8])> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let method = Method::from_bytes(lines.next()?).ok()?;
    let uri = Uri::try_from(lines.next()?).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    Some((method, uri, headers, body))
}

/// SigV4 verification: the `Authorization` header, the canonical request,
/// the scope, the body hash and the replay cache.
pub fn sigv4(data: &[u8]) {
    let Some((method, uri, headers, body)) = request(data) else {
        return;
    };
    for replay in [ReplayPolicy::Window, ReplayPolicy::once_per_request_id()] {
        if let Ok(authenticated) = verifier(replay).verify(&method, &uri, &headers, body, now()) {
            assert_eq!(authenticated.identity().principal, "fuzz");
        }
    }
}

/// The canonical path and query: only unreserved characters and `%XX`
/// escapes come out, and a canonical query is its own canonical form.
pub fn canonical(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = text.split_once('\n').unwrap_or((text, ""));
    let is_canonical = |out: &str, extra: &[u8]| {
        out.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b) || extra.contains(&b))
    };
    let uri = canonical_uri(path);
    assert!(uri.starts_with('/') && is_canonical(&uri, b"/"), "{uri}");
    let once = canonical_query(query);
    assert!(is_canonical(&once, b"=&"), "{once}");
    assert_eq!(canonical_query(&once), once, "not a fixed point: {query:?}");
}

struct Keys {
    root: KeyPair,
    publisher: KeyPair,
    trust: Trust,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        // Fixed keys: the same input signs to the same bytes in every run.
        let root = KeyPair::from_seed(&[1; 32]);
        let publisher = KeyPair::from_seed(&[2; 32]);
        let list = TrustList {
            serial: 1,
            issued_at: "2025-01-01T00:00:00Z".into(),
            keys: vec![plugin_store::TrustedKey {
                key_id: publisher.id().clone(),
                publisher: "fuzz".into(),
                public_key: plugin_store::signing::encode_public(&publisher.public()),
                not_before: "2025-01-01T00:00:00Z".into(),
                not_after: "2030-01-01T00:00:00Z".into(),
                plugins: vec!["*".into()],
                revoked: false,
            }],
        };
        let trust = Trust::new(root.public());
        trust
            .install(&list.sign(&root))
            .expect("the fuzz trust list");
        Keys {
            root,
            publisher,
            trust,
        }
    })
}

/// A DSSE envelope as stored beside a plugin: parsed, then verified as a
/// manifest of `fuzz@1.0.0`.
pub fn envelope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(envelope) = Envelope::from_json(text) else {
        return;
    };
    let _ = envelope.unverified_payload();
    let name: PluginName = "fuzz".parse().expect("a valid name");
    let _ = keys()
        .trust
        .verify_manifest(&envelope, &name, &Version::new(1, 0, 0), now());
}

/// A manifest payload signed by a trusted publisher: its JSON, its name,
/// version, digest and limits as verification reads them.
pub fn manifest(data: &[u8]) {
    let keys = keys();
    let envelope = keys.publisher.sign(MANIFEST_TYPE, data);
    let name: PluginName = "fuzz".parse().expect("a valid name");
    if let Ok(verified) =
        keys.trust
            .verify_manifest(&envelope, &name, &Version::new(1, 0, 0), now())
    {
        assert_eq!(verified.manifest.name, name);
    }
}

/// A trust-list payload signed by the root: parsed, each key checked, then
/// installed over the current list (serials only go up).
pub fn trust_list(data: &[u8]) {
    let keys = keys();
    let envelope = keys.root.sign(TRUST_LIST_TYPE, data);
    if let Ok(list) = TrustList::verify(&envelope, &keys.root.public()) {
        let trust = Trust::new(keys.root.public());
        let installed = trust.install(&envelope);
        assert!(installed.is_ok(), "a list that verifies installs: {list:?}");
    }
}

/// A publisher's `plugin.toml`.
pub fn plugin_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PublishSpec::from_toml(text);
    }
}

/// The bytes of a module offered for publishing: is it a component, and
/// which contract world does it target.
pub fn component(data: &[u8]) {
    let _ = plugin_store::component::reasoning_world(data);
}

/// `POST /dispatch` and `POST /v1/reason` bodies, parsed as the handlers
/// parse them, then their fields checked against the limits.
pub fn request_body(data: &[u8]) {
    if let Ok(body) = serde_json::from_slice::<DispatchBody>(data) {
        let _ = check_fields("", &body.intent, &body.context);
    }
    if let Ok(body) = serde_json::from_slice::<ReasonBody>(data) {
        let _ = check_fields("request.", &body.request.intent, &body.request.context);
    }
    let _ = serde_json::from_slice::<BTreeMap<String, String>>(data);
}

/// Headers a client or a proxy writes that the servers parse: a correlation
/// id (echoed back, so it must stay a valid header value) and an
/// `X-Forwarded-For` entry.
pub fn request_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = service_kit::CorrelationId::parse(text) {
        assert!(HeaderValue::from_str(id.as_str()).is_ok(), "{text:?}");
    }
    let _ = service_kit::front_door::parse_forwarded(text);
}

/// What a plugin hands back (an error message, notes), as the reply budget
/// counts and cuts it: counts match what serde_json writes, and a cut
/// message fits the budget.
pub fn plugin_reply(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let written = serde_json::to_string(&text).expect("a string encodes");
    assert_eq!(encoded_len(&text), written.len());
    let bounded = bounded_message(text.clone());
    assert!(
        encoded_len(&bounded) <= MAX_MESSAGE_BYTES,
        "{}",
        bounded.len()
    );
    if written.len() <= MAX_MESSAGE_BYTES {
        assert_eq!(bounded, text);
    }
    let notes: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let json = serde_json::to_string(&notes).expect("notes encode");
    assert_eq!(json.len(), notes_len(&notes) + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `harness` over every seed in `corpus/<target>/`.
    fn seeds(target: &str, harness: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("the seed corpus") {
            harness(&std::fs::read(entry.expect("a seed").path()).expect("a seed"));
            count += 1;
        }
        assert!(count > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn every_harness_takes_its_seeds() {
        seeds("sigv4", sigv4);
        seeds("canonical", canonical);
        seeds("envelope", envelope);
        seeds("manifest", manifest);
        seeds("trust_list", trust_list);
        seeds("plugin_toml", plugin_toml);
        seeds("component", component);
        seeds("request_body", request_body);
        seeds("request_headers", request_headers);
        seeds("plugin_reply", plugin_reply);
    }

    /// The signed seed verifies, so the fuzzer starts past the HMAC.
    #[test]
    fn the_signed_seed_verifies() {
        let seed = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sigv4/signed-dispatch"),
        )
        .expect("the signed seed");
        let (method, uri, headers, body) = request(&seed).expect("it parses");
        verifier(ReplayPolicy::Window)
            .verify(&method, &uri, &headers, body, now())
            .expect("the seed verifies");
    }
}

/// The `sigv4` seed that verifies: a dispatch signed with the fuzz key at
/// [`now`] by `aws-sigv4`, in the harness's request format. Regenerate the
/// seed with `cargo test -- --ignored write_signed_seed`.
pub fn signed_seed() -> Vec<u8> {
    let key = auth::SigningKey {
        access_key_id: FUZZ_KEY_ID.into(),
        secret_access_key: FUZZ_SECRET.into(),
        region: auth::DEFAULT_REGION.into(),
    };
    let body = br#"{"plugin":"echo","intent":"x","input":{"a":[1,"b"]},"context":{"k":"v"}}"#;
    let headers = [
        ("content-type", "application/json"),
        (
            auth::REQUEST_ID_HEADER,
            "0f8fad5b-d9cb-469f-a165-70867728950e",
        ),
    ];
    let url = "http://h/dispatch?a=1&b=x%20y";
    let signed = auth::sign(&key, "POST", url, &headers, body, now()).expect("signing");
    let mut seed = b"POST\n/dispatch?a=1&b=x%20y\nhost: h\n".to_vec();
    for (name, value) in headers
        .iter()
        .map(|(n, v)| (*n, (*v).to_owned()))
        .chain(signed)
    {
        seed.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    seed.extend_from_slice(b"\n");
    seed.extend_from_slice(body);
    seed
}

#[cfg(test)]
mod seed_writer {
    #[test]
    #[ignore = "writes the seed corpus; run when the request format changes"]
    fn write_signed_seed() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sigv4/signed-dispatch");
        std::fs::write(path, super::signed_seed()).expect("writing the seed");
    }
}
