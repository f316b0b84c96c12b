//! SigV4 cost: signing with `aws-sigv4` (what Orbit does per call to Axon)
//! and verifying (what Orbit and Axon do per request).
//!
//! ```text
//! cargo bench -p auth --bench sigv4
//! ```

#![allow(clippy::expect_used)] // a benchmark fails loudly

use std::sync::Arc;
use std::time::SystemTime;

use auth::keyring::{AccessKey, Identity, Keyring, PrincipalKind};
use auth::{SigningKey, Verifier, VerifierConfig, sign};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use divan::Bencher;

fn main() {
    divan::main();
}

const URL: &str = "http://127.0.0.1:8080/dispatch";
const BODY: &[u8] = br#"{"plugin":"keywords","intent":"extract","input":{"text":"the quick brown fox jumps over the lazy dog","top":3}}"#;

struct OneKey(Arc<AccessKey>);

impl Keyring for OneKey {
    fn find(&self, id: &str) -> Option<Arc<AccessKey>> {
        (id == self.0.access_key_id).then(|| self.0.clone())
    }
}

fn key() -> SigningKey {
    SigningKey {
        access_key_id: "AKARBENCHMARKKEY0000".into(),
        secret_access_key: "benchmark-secret-benchmark-secret-000000".into(),
        region: "us-east-1".into(),
    }
}

fn signed_headers(correlation_id: &str) -> HeaderMap {
    let extra = [
        ("content-type", "application/json"),
        ("x-correlation-id", correlation_id),
    ];
    let added = sign(&key(), "POST", URL, &extra, BODY, SystemTime::now()).expect("sign");
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
    for (name, value) in extra
        .into_iter()
        .map(|(n, v)| (n, v.to_owned()))
        .chain(added)
    {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("header"),
        );
    }
    headers
}

#[divan::bench(sample_count = 2000)]
fn sign_request(bencher: Bencher) {
    let key = key();
    let extra = [
        ("content-type", "application/json"),
        ("x-correlation-id", "bench"),
    ];
    bencher.bench_local(|| sign(&key, "POST", URL, &extra, BODY, SystemTime::now()).expect("sign"));
}

#[divan::bench(sample_count = 2000)]
fn verify_request(bencher: Bencher) {
    let k = key();
    let access_key = AccessKey {
        access_key_id: k.access_key_id.clone(),
        secret_access_key: k.secret_access_key.clone(),
        identity: Identity {
            principal: "bench".into(),
            kind: PrincipalKind::User,
            groups: Vec::new(),
            tenant: "local".into(),
        },
        created_at: String::new(),
        revoked: false,
    };
    let verifier = Verifier::new(
        VerifierConfig::default(),
        Arc::new(OneKey(Arc::new(access_key))),
    );
    let uri: Uri = "/dispatch".parse().expect("uri");
    let mut n = 0u64;
    // Every verified signature is remembered (replay protection), so each
    // iteration verifies a freshly signed request; the signing is not timed.
    bencher
        .with_inputs(|| {
            n += 1;
            signed_headers(&format!("bench-{n}"))
        })
        .bench_local_values(|headers| {
            verifier
                .verify(&Method::POST, &uri, &headers, BODY, SystemTime::now())
                .expect("verifies")
        });
}
