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

/// What the very same signed request gets when it arrives a second time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Repeat {
    /// Served again, as AWS does within the signature's window (Orbit).
    Served,
    /// `401 REPLAYED_REQUEST` (Axon, whose only caller signs a unique id).
    Refused,
}

/// Runs every attack against `url`, where `key` is a key the server accepts.
async fn attacks(url: &str, key: &auth::SigningKey, body: &[u8], repeat: Repeat) {
    let now = SystemTime::now();

    // The genuine request works.
    let ok = Stack::send_signed(url, key, body, now, |_| {}).await;
    assert_eq!(ok.status, StatusCode::OK, "{url}: {}", ok.body);

    // The same signed request again.
    let headers = [
        ("content-type", "application/json"),
        ("x-correlation-id", "replay-me"),
        (auth::REQUEST_ID_HEADER, "replay-me"),
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
    match repeat {
        Repeat::Served => assert_eq!(replayed.status, StatusCode::OK, "{url}: {}", replayed.body),
        Repeat::Refused => assert_eq!(
            (replayed.status, code(&replayed)),
            (StatusCode::UNAUTHORIZED, "REPLAYED_REQUEST"),
            "{url}"
        ),
    }

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
        Repeat::Served,
    )
    .await;
}

#[tokio::test]
async fn every_sigv4_attack_on_axon_is_refused_with_its_code() {
    let stack = Stack::start().await;
    let url = format!("{}/v1/reason", stack.axon_url);
    attacks(&url, &stack.orbit_key, &axon_body(), Repeat::Refused).await;
    // Axon accepts each signature once, so it requires a unique signed id.
    let headers = [("content-type", "application/json")];
    let body = axon_body();
    let signed = auth::sign(
        &stack.orbit_key,
        "POST",
        &url,
        &headers,
        &body,
        SystemTime::now(),
    )
    .unwrap();
    let mut request = reqwest::Client::new().post(&url).body(body);
    for (name, value) in headers
        .iter()
        .copied()
        .chain(signed.iter().map(|(n, v)| (*n, v.as_str())))
    {
        request = request.header(name, value);
    }
    let no_id = reply(request.send().await.unwrap()).await;
    assert_eq!(
        (no_id.status, code(&no_id)),
        (StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE"),
        "{}",
        no_id.body
    );
    assert!(
        no_id.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(auth::REQUEST_ID_HEADER),
        "{}",
        no_id.body
    );
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

/// Runs the test Python (`$AGENT_RUNTIME_PYTHON`, which ./scripts/test.sh
/// sets up) with `args` and `envs`, off the runtime's threads so the servers
/// keep serving; returns stdout, or fails with stderr.
async fn python(args: Vec<String>, envs: Vec<(&'static str, String)>) -> String {
    let python = std::env::var("AGENT_RUNTIME_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = std::process::Command::new(&python);
    command.args(&args).envs(envs);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("cannot run `{python}` ({e}); ./scripts/test.sh sets up a Python with botocore and awscurl")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?} failed (./scripts/test.sh installs botocore and awscurl):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn clients_py() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/orbit/clients.py").to_owned()
}

const KEYWORDS: &str = r#"{"plugin": "keywords", "intent": "extract", "input": {"text": "boto signs boto", "top": 1}}"#;

#[tokio::test]
async fn botocore_identical_requests_in_one_second_are_both_served() {
    let stack = Stack::start().await;
    // One signature sent twice is exactly what a same-second retry, or two
    // identical requests in one second, put on the wire.
    let out = python(
        vec![
            clients_py(),
            "twice".into(),
            format!("{}/dispatch", stack.orbit_url),
            stack.dev_key.access_key_id.clone(),
            stack.dev_key.secret_access_key.clone(),
            KEYWORDS.into(),
        ],
        vec![],
    )
    .await;
    let answers: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{out}");
    for answer in answers {
        assert_eq!(answer["status"], 200, "{answer}");
        let body: serde_json::Value =
            serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["output"], serde_json::json!({ "keywords": ["boto"] }));
    }
}

/// A proxy in front of Orbit that forwards every request as it came and
/// swallows Orbit's first answer, replying 503 instead: a reply lost after
/// Orbit served the request, which a client's retry must survive.
struct LosesFirstReply {
    url: String,
    /// The `Authorization` of each request forwarded, and Orbit's status.
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LosesFirstReply {
    async fn start(orbit_url: &str) -> Self {
        use axum::extract::{Request, State};
        type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>;
        let seen: Seen = Default::default();
        let orbit_url = orbit_url.to_owned();
        let forward = |State((orbit_url, seen)): State<(String, Seen)>, request: Request| async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let path = parts.uri.path_and_query().unwrap().as_str();
            // reqwest keeps the `host` header it is given: the signed one.
            let mut forwarded = reqwest::Client::new()
                .request(parts.method.clone(), format!("{orbit_url}{path}"))
                .body(body);
            for (name, value) in &parts.headers {
                forwarded = forwarded.header(name, value);
            }
            let answer = forwarded.send().await.unwrap();
            let status = answer.status().as_u16();
            let bytes = answer.bytes().await.unwrap();
            let authorization = parts.headers["authorization"].to_str().unwrap().to_owned();
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push((authorization, status));
                seen.len() == 1
            };
            if first {
                axum::http::Response::builder()
                    .status(503)
                    .body(axum::body::Body::from("lost"))
                    .unwrap()
            } else {
                axum::http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(bytes))
                    .unwrap()
            }
        };
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((orbit_url, seen.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, seen, task }
    }
}

#[tokio::test]
async fn botocores_own_retry_after_a_lost_reply_is_served() {
    let stack = Stack::start().await;
    let proxy = LosesFirstReply::start(&stack.orbit_url).await;
    let out = python(
        vec![
            clients_py(),
            "retry".into(),
            proxy.url.clone(),
            stack.dev_key.access_key_id.clone(),
            stack.dev_key.secret_access_key.clone(),
            KEYWORDS.into(),
        ],
        vec![],
    )
    .await;
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(answer["status"], "success", "{out}");
    assert_eq!(
        answer["output"],
        serde_json::json!({ "keywords": ["boto"] })
    );
    assert_eq!(answer["retries"], 1, "{out}");
    let seen = proxy.seen.lock().unwrap().clone();
    proxy.task.abort();
    // Orbit served both attempts. When they fell in the same second they
    // carried the same signature, which the old replay cache refused.
    assert_eq!(
        seen.iter().map(|(_, status)| *status).collect::<Vec<_>>(),
        [200, 200],
        "{seen:?}"
    );
}

#[tokio::test]
async fn awscurl_as_the_readme_shows_it_works_twice_in_a_row() {
    let stack = Stack::start().await;
    let home = tempfile::tempdir().unwrap();
    let credentials = stack.data_dir.join("credentials");
    auth::credentials::write_profile(
        &credentials,
        "agent-runtime",
        &stack.dev_key.access_key_id,
        &stack.dev_key.secret_access_key,
    )
    .unwrap();
    // The README's command, with a `HOME` of its own so that a developer's
    // ~/.aws cannot change what it does.
    let envs = vec![
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            credentials.display().to_string(),
        ),
        ("AWS_PROFILE", "agent-runtime".to_owned()),
        ("HOME", home.path().display().to_string()),
    ];
    // `python -m awscurl --service execute-api --region us-east-1 ARGS... URL`.
    let awscurl = |args: &[&str], path: &str| -> Vec<String> {
        [
            "-m",
            "awscurl",
            "--service",
            "execute-api",
            "--region",
            "us-east-1",
        ]
        .iter()
        .chain(args)
        .map(|s| (*s).to_owned())
        .chain([format!("{}{path}", stack.orbit_url)])
        .collect()
    };
    let args = awscurl(&["-X", "POST", "-d", KEYWORDS], "/dispatch");
    // The runbook's listing, too.
    let listing = awscurl(&[], "/v1/plugins");
    let out = python(listing, envs.clone()).await;
    assert!(out.contains("\"keywords\""), "{out}");
    for attempt in 0..2 {
        let out = python(args.clone(), envs.clone()).await;
        let body: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}: {out}"));
        assert_eq!(
            body["output"],
            serde_json::json!({ "keywords": ["boto"] }),
            "attempt {attempt}: {out}"
        );
    }
}
