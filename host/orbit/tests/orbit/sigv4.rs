//! SigV4 on both hops: every attack gets a 401 with its own code, against
//! Orbit and against Axon; standard AWS signers are accepted.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use crate::support::{Stack, code, reply};

/// An attack: its name, what it does to the signed request, when it was
/// signed, with which key, and the code it must get.
type Attack<'a> = (
    &'static str,
    Box<dyn FnOnce(&mut reqwest::Request) + 'a>,
    SystemTime,
    auth::SigningKey,
    &'static str,
);

const BODY: &[u8] = br#"{"plugin":"echo","version":"1.0.0","intent":"x","input":1}"#;
/// What Orbit would send Axon for `BODY`: with the digest it governed.
fn axon_body() -> Vec<u8> {
    let digest = plugin_store::Digest::of(&plugin_artifacts::ECHO.bytes().unwrap());
    format!(r#"{{"plugin":"echo","version":"1.0.0","digest":"{digest}","request":{{"intent":"x","input":1}}}}"#)
        .into_bytes()
}

/// Runs every attack against `url`, where `key` is a key the server accepts.
async fn attacks(url: &str, key: &auth::SigningKey, body: &[u8]) {
    let now = SystemTime::now();

    // The genuine request works...
    let ok = Stack::send_signed(url, key, body, now, |_| {}).await;
    assert_eq!(ok.status, StatusCode::OK, "{url}: {}", ok.body);

    // ...once: the same signature again is a replay.
    let headers = [
        ("content-type", "application/json"),
        ("x-correlation-id", "replay-me"),
    ];
    let signed = auth::sign(key, "POST", url, &headers, body, now).unwrap();
    let client = reqwest::Client::new();
    let mut builder = client.post(url).body(body.to_vec());
    for (name, value) in headers
        .iter()
        .copied()
        .chain(signed.iter().map(|(n, v)| (*n, v.as_str())))
    {
        builder = builder.header(name, value);
    }
    let request = builder.build().unwrap();
    let again = request.try_clone().unwrap();
    assert_eq!(
        client.execute(request).await.unwrap().status(),
        StatusCode::OK
    );
    let replayed = reply(client.execute(again).await.unwrap()).await;
    assert_eq!(
        (replayed.status, code(&replayed)),
        (StatusCode::UNAUTHORIZED, "REPLAYED_REQUEST"),
        "{url}"
    );

    let cases: Vec<Attack<'_>> = vec![
        (
            "unsigned",
            Box::new(|r| {
                r.headers_mut().remove("authorization");
            }),
            now,
            key.clone(),
            "MISSING_AUTHORIZATION",
        ),
        (
            "unknown key",
            Box::new(|_| {}),
            now,
            auth::SigningKey {
                access_key_id: "AKARUNKNOWNUNKNOWN00".into(),
                ..key.clone()
            },
            "UNKNOWN_ACCESS_KEY",
        ),
        (
            "wrong secret",
            Box::new(|_| {}),
            now,
            auth::SigningKey {
                secret_access_key: "not-the-secret-at-all".into(),
                ..key.clone()
            },
            "INVALID_SIGNATURE",
        ),
        (
            "tampered body",
            Box::new(|r| {
                *r.body_mut() = Some(reqwest::Body::from(
                    body.iter().rev().copied().collect::<Vec<u8>>(),
                ));
            }),
            now,
            key.clone(),
            "INVALID_SIGNATURE",
        ),
        (
            "tampered header",
            Box::new(|r| {
                r.headers_mut()
                    .insert("x-correlation-id", HeaderValue::from_static("someone-else"));
            }),
            now,
            key.clone(),
            "INVALID_SIGNATURE",
        ),
        (
            "expired",
            Box::new(|_| {}),
            now - Duration::from_secs(3600),
            key.clone(),
            "SIGNATURE_EXPIRED",
        ),
        (
            "from the future",
            Box::new(|_| {}),
            now + Duration::from_secs(3600),
            key.clone(),
            "SIGNATURE_EXPIRED",
        ),
    ];
    for (name, tamper, at, signing_key, expected) in cases {
        let got = Stack::send_signed(url, &signing_key, body, at, tamper).await;
        assert_eq!(
            (got.status, code(&got)),
            (StatusCode::UNAUTHORIZED, expected),
            "{url} {name}: {}",
            got.body
        );
    }
}

#[tokio::test]
async fn every_sigv4_attack_on_orbit_is_refused_with_its_code() {
    let stack = Stack::start().await;
    attacks(
        &format!("{}/dispatch", stack.orbit_url),
        &stack.dev_key,
        BODY,
    )
    .await;
}

#[tokio::test]
async fn every_sigv4_attack_on_axon_is_refused_with_its_code() {
    let stack = Stack::start().await;
    let url = format!("{}/v1/reason", stack.axon_url);
    attacks(&url, &stack.orbit_key, &axon_body()).await;
    // Axon trusts only Orbit: a valid user key is unknown to it.
    let user = Stack::send_signed(
        &url,
        &stack.dev_key,
        &axon_body(),
        SystemTime::now(),
        |_| {},
    )
    .await;
    assert_eq!(
        (user.status, code(&user)),
        (StatusCode::UNAUTHORIZED, "UNKNOWN_ACCESS_KEY")
    );
}

#[tokio::test]
async fn a_request_signed_by_botocore_is_accepted() {
    let stack = Stack::start().await;
    let python = std::env::var("AGENT_RUNTIME_PYTHON").unwrap_or_else(|_| "python3".into());
    let shown = python.clone();
    let script = r#"
import sys, urllib.request, urllib.error
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url, key_id, secret, body = sys.argv[1:5]
request = AWSRequest(method="POST", url=url, data=body.encode(), headers={"Content-Type": "application/json"})
SigV4Auth(Credentials(key_id, secret), "execute-api", "us-east-1").add_auth(request)
sent = urllib.request.Request(url, data=body.encode(), headers=dict(request.headers.items()), method="POST")
try:
    response = urllib.request.urlopen(sent, timeout=30)
    print(response.status); print(response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code); print(error.read().decode())
"#;
    let mut command = std::process::Command::new(&python);
    command
        .args(["-c", script])
        .arg(format!("{}/dispatch", stack.orbit_url))
        .arg(&stack.dev_key.access_key_id)
        .arg(&stack.dev_key.secret_access_key)
        .arg(r#"{"plugin": "keywords", "intent": "extract", "input": {"text": "boto signs boto", "top": 1}}"#);
    // Off the runtime's thread: the servers must keep running while it waits.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("cannot run `{python}` ({e}); ./scripts/test.sh sets up a Python with botocore")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the botocore client failed (is botocore installed for `{shown}`? ./scripts/test.sh installs it):\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (status, body) = stdout.split_once('\n').unwrap();
    assert_eq!(status.trim(), "200", "{stdout}");
    let body: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(body["output"], serde_json::json!({ "keywords": ["boto"] }));
}
