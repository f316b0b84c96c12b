//! The README's first command, end to end: `agentctl up --check` on a fresh
//! data directory creates keys and policies, publishes the examples, starts
//! Axon and Orbit, and dispatches through them with a signed request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn up_check_starts_the_stack_and_answers_a_sample_request() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("state");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_agentctl"))
            .args(["--data-dir"])
            .arg(&data_dir)
            .args([
                "up",
                "--check",
                "--axon-listen",
                "127.0.0.1:0",
                "--orbit-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        first.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("agent-runtime is up"), "{stdout}");
    assert!(
        stdout.contains(r#"{"keywords":["fresh","plugin","sandbox"]}"#),
        "{stdout}"
    );
    // Inference end to end (the test Python has the `onnxruntime` wheel):
    // Orbit governs, Axon runs the model through wasi:nn.
    assert!(
        stdout.contains(r#"sample: support-intent -> intent "billing", urgency"#),
        "{stdout}"
    );

    assert!(!stdout.contains("GPU pool"), "{stdout}");

    // A second run on the same data directory reuses what the first
    // published; with a GPU pool (simulated: there is no GPU here), which
    // Orbit finds up.
    let second = run(&["--simulated-gpu", "--gpu-axon-listen", "127.0.0.1:0"]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        stdout.contains("sample: the GPU pool (simulated-cuda) is up"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(Axon's GPU pool, simulated-cuda)"),
        "{stdout}"
    );

    // The credentials file works for standard AWS clients: 0600, profile agent-runtime.
    let credentials = std::fs::read_to_string(data_dir.join("credentials")).unwrap();
    assert!(
        credentials.contains("[agent-runtime]") && credentials.contains("aws_access_key_id = AKAR")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data_dir.join("credentials"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let list = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["plugin", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    for name in ["echo", "keywords", "triage", "support-intent"] {
        assert!(listed.contains(name), "{listed}");
    }

    models_are_published_to_the_plugin_store(dir.path(), &data_dir);

    policies_read_the_input_of_a_plugin_with_an_input_schema(dir.path(), &data_dir);
}

/// `agentctl model publish` publishes a model to the stack's plugin store:
/// the one `up` published is unchanged, a new version is published once,
/// and other bytes for a version are refused.
fn models_are_published_to_the_plugin_store(dir: &std::path::Path, data_dir: &std::path::Path) {
    let model = plugin_artifacts::SUPPORT_INTENT_MODEL;
    let bytes = dir.join("support-intent.onnx");
    std::fs::write(&bytes, model.bytes().unwrap()).unwrap();
    let spec = dir.join("model.toml");
    let publish = |spec_text: &str, model: &std::path::Path| {
        std::fs::write(&spec, spec_text).unwrap();
        let (spec, model) = (spec.to_str().unwrap(), model.to_str().unwrap());
        agentctl(
            data_dir,
            &["model", "publish", "--manifest", spec, "--model", model],
        )
    };
    let text = model.spec_text().unwrap();
    let (ok, out) = publish(&text, &bytes);
    assert!(
        ok && out.contains("unchanged model support-intent 1.0.0"),
        "{out}"
    );
    let newer = text.replace("version = \"1.0.0\"", "version = \"1.1.0\"");
    let (ok, out) = publish(&newer, &bytes);
    assert!(
        ok && out.contains("published model support-intent 1.1.0"),
        "{out}"
    );
    let (ok, out) = publish(&newer, &bytes);
    assert!(
        ok && out.contains("unchanged model support-intent 1.1.0"),
        "{out}"
    );
    let other = dir.join("other.onnx");
    std::fs::write(&other, b"not the same model").unwrap();
    let (ok, out) = publish(&newer, &other);
    assert!(
        !ok && out.contains(
            "model `support-intent` version `1.1.0` is already published with other bytes"
        ),
        "{out}"
    );

    // Listed and verified; described with the plugin versions that pin it.
    let out = agentctl_ok(data_dir, &["model", "list"]);
    let listed: Vec<&str> = out
        .lines()
        .filter(|line| line.starts_with("support-intent"))
        .collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(listed.iter().all(|line| line.ends_with(" ok")), "{out}");
    let out = agentctl_ok(data_dir, &["model", "describe", "support-intent@1.0.0"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["pinned_by"],
        serde_json::json!(["support-intent@1.0.0"]),
        "{out}"
    );
    assert_eq!(doc["manifest"]["digest"], doc["digest"], "{out}");
    assert_eq!(
        doc["verified_publisher"],
        plugin_store::admin::DEV_PUBLISHER,
        "{out}"
    );
    let out = agentctl_ok(data_dir, &["model", "history", "support-intent"]);
    let published: Vec<&str> = out.lines().filter(|l| l.contains(" publish ")).collect();
    assert!(
        published.len() == 2 && published[1].contains(" 1.1.0 sha256:"),
        "{out}"
    );
    let (ok, out) = agentctl(data_dir, &["model", "describe", "no-such-model"]);
    assert!(
        !ok && out.contains("no model `no-such-model` is published"),
        "{out}"
    );
}

/// On the stack `up` made: a plugin published with an input schema gets an
/// action of its own, and `agentctl policy` validates, tests and puts
/// policies on its typed input against the registry's schema.
fn policies_read_the_input_of_a_plugin_with_an_input_schema(
    dir: &std::path::Path,
    data_dir: &std::path::Path,
) {
    let agentctl = |args: &[&str]| agentctl(data_dir, args);
    let manifest = dir.join("approve-expense.toml");
    std::fs::write(
        &manifest,
        "name = \"approve-expense\"\nversion = \"1.0.0\"\n\
         [input_schema]\ntype = \"object\"\nrequired = [\"amount\"]\n\
         [input_schema.properties.amount]\ntype = \"integer\"\n",
    )
    .unwrap();
    let module = plugin_artifacts::ECHO.path().to_str().unwrap();
    let (ok, out) = agentctl(&[
        "plugin",
        "publish",
        "--manifest",
        manifest.to_str().unwrap(),
        "--module",
        module,
    ]);
    assert!(ok, "{out}");

    let policies = dir.join("expenses");
    std::fs::create_dir(&policies).unwrap();
    let defaults =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../governance/policies");
    std::fs::copy(
        defaults.join("dispatch.cedar"),
        policies.join("dispatch.cedar"),
    )
    .unwrap();
    let expenses = r#"@id("small-expenses-only")
forbid (principal, action == AgentRuntime::Action::"approve-expense", resource)
unless { context.input.amount < 1000 };
"#;
    std::fs::write(policies.join("expenses.cedar"), expenses).unwrap();
    let cases = dir.join("expenses.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
name = "a small expense"
principal = { id = "dev", groups = ["developers"] }
plugin = { name = "approve-expense", labels = ["approved"], publisher = "agent-runtime" }
input = { amount = 999 }
expect = "allow"

[[case]]
name = "a large expense"
principal = { id = "dev", groups = ["developers"] }
plugin = { name = "approve-expense", labels = ["approved"], publisher = "agent-runtime" }
input = { amount = 1000 }
expect = "forbidden_by_policy"
policies = ["small-expenses-only"]
"#,
    )
    .unwrap();
    let set = policies.to_str().unwrap();
    let (ok, out) = agentctl(&["policy", "validate", set]);
    assert!(ok && out.contains("valid: 3 policies"), "{out}");
    let (ok, out) = agentctl(&["policy", "test", set, "--cases", cases.to_str().unwrap()]);
    assert!(ok && out.contains("2 passed, 0 failed"), "{out}");
    let (ok, out) = agentctl(&["policy", "put", set, "-m", "small expenses", "--activate"]);
    assert!(ok && out.contains("stored version 2"), "{out}");
    let (ok, out) = agentctl(&["policy", "validate", "active"]);
    assert!(ok, "the stored version keeps its plugin actions: {out}");

    // A field the plugin does not have, and `==` on dispatch, are refused.
    std::fs::write(
        policies.join("expenses.cedar"),
        expenses.replace("input.amount", "input.amuont"),
    )
    .unwrap();
    let (ok, out) = agentctl(&["policy", "validate", set]);
    assert!(!ok && out.contains("amuont"), "{out}");
    std::fs::write(policies.join("expenses.cedar"), expenses).unwrap();
    let dispatch = std::fs::read_to_string(defaults.join("dispatch.cedar")).unwrap();
    std::fs::write(
        policies.join("dispatch.cedar"),
        dispatch.replace("action in", "action =="),
    )
    .unwrap();
    let (ok, out) = agentctl(&["policy", "put", set, "-m", "oops"]);
    assert!(
        !ok && out.contains("write `action in AgentRuntime::Action::\"dispatch\"`"),
        "{out}"
    );
}

/// `agentctl policy` as a governance owner uses it, on the embedded store.
#[test]
fn policy_commands_validate_test_diff_put_activate_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("state");
    let defaults =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../governance/policies");
    let cases = defaults.join("tests.toml");
    let agentctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentctl"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("policy")
            .args(args)
            .env("USER", "owner")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let (ok, out) = agentctl(&["validate", &path(&defaults)]);
    assert!(ok && out.contains("valid: 2 policies"), "{out}");
    let (ok, out) = agentctl(&["test", &path(&defaults), "--cases", &path(&cases)]);
    assert!(ok && out.contains("6 passed, 0 failed"), "{out}");

    let (ok, out) = agentctl(&["put", &path(&defaults), "-m", "defaults", "--activate"]);
    assert!(ok && out.contains("stored version 1"), "{out}");
    assert!(out.contains("version 1 is the active set"), "{out}");
    let (ok, out) = agentctl(&["put", &path(&defaults), "-m", "again"]);
    assert!(ok && out.contains("unchanged: version 1"), "{out}");

    // A candidate: the defaults plus a forbid.
    let candidate = dir.path().join("candidate");
    std::fs::create_dir(&candidate).unwrap();
    std::fs::copy(
        defaults.join("dispatch.cedar"),
        candidate.join("dispatch.cedar"),
    )
    .unwrap();
    std::fs::write(
        candidate.join("no-echo.cedar"),
        "@id(\"no-echo\")\nforbid (principal, action, resource == AgentRuntime::Plugin::\"echo\");\n",
    )
    .unwrap();
    let (ok, out) = agentctl(&["diff", "active", &path(&candidate)]);
    assert!(ok && out.contains("+@id(\"no-echo\")"), "{out}");
    assert!(!out.contains("-@id"), "only additions: {out}");
    // The default cases now fail for echo: the test says which, and exits non-zero.
    let (ok, out) = agentctl(&["test", &path(&candidate), "--cases", &path(&cases)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  a developer may run an approved example plugin"),
        "{out}"
    );

    let (ok, out) = agentctl(&["put", &path(&candidate), "-m", "no echo"]);
    assert!(ok && out.contains("stored version 2"), "{out}");
    // Someone else moved the head since revision 0 was read: refused.
    let (ok, out) = agentctl(&["activate", "2", "--expect-revision", "0"]);
    assert!(!ok && out.contains("revision 1, expected 0"), "{out}");
    let (ok, out) = agentctl(&["activate", "2"]);
    assert!(
        ok && out.contains("version 2 is the active set (revision 2; was 1)"),
        "{out}"
    );
    let (ok, out) = agentctl(&["rollback"]);
    assert!(
        ok && out.contains("version 1 is the active set (revision 3; was 2)"),
        "{out}"
    );
    let (ok, out) = agentctl(&["history"]);
    assert!(ok, "{out}");
    let moves: Vec<&str> = out.lines().collect();
    assert_eq!(moves.len(), 3, "{out}");
    assert!(
        moves[2].contains("rollback") && moves[2].contains("owner") && moves[2].ends_with("2 -> 1"),
        "{out}"
    );
    let (ok, out) = agentctl(&["list"]);
    assert!(
        ok && out.contains("active: version 1 (revision 3), by owner"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("*    1")), "{out}");

    // Version 2 in shadow beside version 1: listed and in the history,
    // then ended without being enforced.
    let (ok, out) = agentctl(&["activate", "2", "--shadow"]);
    assert!(
        ok && out.contains("version 2 is in shadow beside version 1 (revision 4)"),
        "{out}"
    );
    let (_, out) = agentctl(&["list"]);
    assert!(out.lines().any(|l| l.starts_with("~    2")), "{out}");
    assert!(out.contains("active: version 1 (revision 4)"), "{out}");
    assert!(out.contains("in shadow: version 2"), "{out}");
    let (ok, out) = agentctl(&["activate", "1", "--shadow"]);
    assert!(
        !ok && out.contains("version 1 is the set in force"),
        "{out}"
    );
    let (ok, out) = agentctl(&["end-shadow"]);
    assert!(
        ok && out.contains("version 2 is no longer in shadow (revision 5)"),
        "{out}"
    );
    let (ok, out) = agentctl(&["end-shadow"]);
    assert!(!ok && out.contains("no version is in shadow"), "{out}");
    let (_, out) = agentctl(&["history"]);
    let kinds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(
        kinds,
        ["activate", "activate", "rollback", "shadow", "end-shadow"],
        "{out}"
    );

    // A broken set is refused before it is stored, naming what to fix.
    let broken = dir.path().join("broken.cedar");
    std::fs::write(
        &broken,
        "@id(\"typo\") permit(principal, action, resource) when { resource.nmae == \"x\" };",
    )
    .unwrap();
    let (ok, out) = agentctl(&["validate", &path(&broken)]);
    assert!(!ok && out.contains("typo"), "{out}");
    let (ok, out) = agentctl(&["put", &path(&broken), "-m", "oops"]);
    assert!(!ok && out.contains("typo"), "{out}");
    let (_, out) = agentctl(&["list"]);
    assert_eq!(out.lines().count(), 3, "nothing stored: {out}");
}

/// `agentctl up` under load, stopped by SIGTERM as a process manager stops
/// it: every decision a caller got an answer for is in the audit file,
/// once, and `agentctl audit verify` accepts the file; an edited copy fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_decision_is_lost_when_up_is_stopped_by_sigterm_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let (mut seen, mut recorded) = signal_under_load(dir.path(), "TERM").await;
    seen.sort();
    recorded.sort();
    assert!(seen.iter().any(|(_, allowed)| !allowed));
    assert_eq!(recorded, seen);

    // A record removed from the middle is found.
    let audit = dir.path().join("state/audit/decisions.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    let mut kept: Vec<&str> = text.lines().collect();
    kept.remove(kept.len() / 2);
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, kept.join("\n") + "\n").unwrap();
    let refused = audit_verify(&tampered);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Killed outright (SIGKILL, as by the OOM killer), `up` writes nothing
/// more, but every decision that took effect was written before it did:
/// the file holds each answered decision (and may hold decisions whose
/// answers never left). A write the kill cut short leaves a partial last
/// line, which the next open cuts away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_decision_that_took_effect_is_lost_when_up_is_killed_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let (seen, recorded) = signal_under_load(dir.path(), "KILL").await;
    let recorded: std::collections::HashSet<_> = recorded.into_iter().collect();
    for decision in &seen {
        assert!(recorded.contains(decision), "{decision:?} is not on record");
    }
}

/// Runs `agentctl up` on a fresh data directory under `dir`, dispatches from
/// eight callers until at least 60 decisions are answered, sends `signal`,
/// and returns the decisions answered and those recorded in the audit file
/// (which must verify), as (correlation id, allowed).
async fn signal_under_load(
    dir: &std::path::Path,
    signal: &str,
) -> (Vec<(String, bool)>, Vec<(String, bool)>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    const INTENT: &str = "under-a-signal";
    let data_dir = dir.join("state");
    let (mut up, orbit_url) = start_up(&data_dir);
    let (access_key_id, secret_access_key) =
        auth::credentials::read_profile(&data_dir.join("credentials"), "agent-runtime").unwrap();
    let client = orbit::client::OrbitClient::new(
        &orbit_url,
        auth::SigningKey {
            access_key_id,
            secret_access_key,
            region: auth::DEFAULT_REGION.to_owned(),
        },
    );

    // Callers dispatch until Orbit is gone: `echo` is allowed, `triage`
    // (experimental) denied.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..8 {
        let (client, answered) = (client.clone(), answered.clone());
        callers.spawn(async move {
            let mut seen = Vec::new();
            for i in 0.. {
                let plugin = if (caller + i) % 2 == 0 {
                    "echo"
                } else {
                    "triage"
                };
                let body = serde_json::json!({ "plugin": plugin, "intent": INTENT, "input": {} });
                let Ok(reply) = client.dispatch(&body).await else {
                    break;
                };
                match reply.status.as_u16() {
                    200 | 403 => {
                        let id = reply.headers["x-correlation-id"].to_str().unwrap();
                        seen.push((id.to_owned(), reply.status.is_success()));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // The per-principal rate limit answers before governance.
                    429 => tokio::time::sleep(Duration::from_millis(20)).await,
                    status => panic!("{status}: {}", reply.body),
                }
            }
            seen
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::Relaxed) < 60 {
        assert!(Instant::now() < deadline, "the callers got no answers");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &up.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let seen: Vec<(String, bool)> = callers.join_all().await.concat();
    let status = up.wait().unwrap();
    if signal == "TERM" {
        assert!(status.success(), "{status}");
    }
    assert!(seen.len() >= 60);

    let audit = data_dir.join("audit").join("decisions.jsonl");
    if signal == "KILL" {
        // As Orbit's next start does: cut away a write the kill cut short.
        governance::AuditLog::open(Some(&audit)).unwrap();
    }
    let verified = audit_verify(&audit);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let recorded = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<governance::AuditRecord>(line).unwrap())
        .filter(|record| record.intent == INTENT)
        .map(|record| (record.correlation_id, record.decision.allowed))
        .collect();
    (seen, recorded)
}

/// Starts `agentctl up` (serving until a signal) on `data_dir`, on free
/// ports; returns it and Orbit's URL once it is up.
fn start_up(data_dir: &std::path::Path) -> (std::process::Child, String) {
    let (up, orbit_url, _) = start_up_with_axon(data_dir);
    (up, orbit_url)
}

/// [`start_up`], with Axon's URL too.
fn start_up_with_axon(data_dir: &std::path::Path) -> (std::process::Child, String, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut up = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "up",
            "--axon-listen",
            "127.0.0.1:0",
            "--orbit-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut url_of = |service: &str| loop {
        let line = lines.next().expect("`up` ended before it was up").unwrap();
        if let Some(rest) = line.trim().strip_prefix(service) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let orbit_url = url_of("orbit  ");
    let axon_url = url_of("axon   ");
    // Keep reading stdout, so `up` never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (up, orbit_url, axon_url)
}

/// Schemathesis reads each service's `GET /openapi.json` and tests every
/// operation with every check (server errors; status code, content type,
/// header and body conformance; bad data refused and good data accepted;
/// missing and ignored auth; unsupported methods), signing with botocore:
/// Orbit as `dev`, Axon as `orbit` (the only principal it accepts). The
/// examples are bounded and the seed fixed, so a run is short and repeats.
#[test]
fn schemathesis_finds_no_failure_in_either_service() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("state");
    let (mut up, orbit_url, axon_url) = start_up_with_axon(&data_dir);
    let keyring = auth::LocalKeyring::open(&data_dir.join("keys.json")).unwrap();
    let python = std::env::var("AGENT_RUNTIME_PYTHON").unwrap_or_else(|_| "python3".into());
    let tests_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let runs: Vec<_> = [(&orbit_url, "dev"), (&axon_url, "orbit")]
        .into_iter()
        .map(|(url, principal)| {
            let key = keyring.newest_key_of(principal).unwrap();
            let output = Command::new(&python)
                .args(["-m", "schemathesis.cli", "--config-file"])
                .arg(format!("{tests_dir}/schemathesis.toml"))
                .args(["run", &format!("{url}/openapi.json")])
                .args(["--checks", "all", "--max-examples", "50", "--seed", "1"])
                .args(["--generation-database", "none", "--no-color"])
                .args(["--report-dir"])
                .arg(dir.path().join(format!("report-{principal}")))
                // Schemathesis keeps state in its working directory.
                .current_dir(dir.path())
                .env("PYTHONPATH", tests_dir)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("SCHEMATHESIS_HOOKS", "schemathesis_sigv4")
                .env("SIGV4_ACCESS_KEY_ID", &key.access_key_id)
                .env("SIGV4_SECRET_ACCESS_KEY", &key.secret_access_key)
                .output();
            (url, output)
        })
        .collect();
    let stopped = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success() && up.wait().unwrap().success());
    for (url, output) in runs {
        let output = output.unwrap_or_else(|e| {
            panic!(
                "cannot run `{python}` ({e}); ./scripts/test.sh sets up a Python with schemathesis"
            )
        });
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "schemathesis against {url}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Cases were generated and sent, and none failed a check.
        assert!(
            stdout.contains(" passed") && !stdout.contains(" failed"),
            "{stdout}"
        );
    }
}

/// The earlier system's documented Python client (botocore's `SigV4Auth`,
/// service `execute-api`, credentials found by `boto3.Session()`), run as
/// its document gives it against the stack `agentctl up` brings up: the
/// intent it dispatches is routed by the stack's seeded intent table.
#[test]
fn the_earlier_systems_python_client_works_as_written_against_up() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("state");
    let (mut up, orbit_url) = start_up(&data_dir);
    let python = std::env::var("AGENT_RUNTIME_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/earlier_client.py"
        ))
        .arg(&orbit_url)
        .env("AWS_SHARED_CREDENTIALS_FILE", data_dir.join("credentials"))
        .env("AWS_PROFILE", "agent-runtime")
        .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .output();
    let stopped = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success() && up.wait().unwrap().success());
    let output = output.unwrap_or_else(|e| {
        panic!("cannot run `{python}` ({e}); ./scripts/test.sh sets up a Python with boto3")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let [health, routed, unrouted] = &lines[..] else {
        panic!("three answers expected: {stdout}");
    };
    let is_time =
        |v: &serde_json::Value| humantime::parse_rfc3339(v.as_str().unwrap_or_default()).is_ok();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["service"], "orbit", "{health}");
    assert!(
        health["version"].is_string() && is_time(&health["timestamp"]),
        "{health}"
    );

    assert_eq!(routed["status"], "success", "{routed}");
    assert_eq!(
        routed["message"], "`echo` 1.0.0 answered intent `call_reasoning`",
        "{routed}"
    );
    assert!(
        routed["correlation_id"].is_string() && is_time(&routed["timestamp"]),
        "{routed}"
    );
    let governance = &routed["governance"];
    assert_eq!(governance["allowed"], true, "{routed}");
    assert!(governance["reason"].is_string(), "{routed}");
    assert!(governance["decision_time_ms"].is_u64(), "{routed}");

    assert_eq!(unrouted["error"]["code"], "PLUGIN_NOT_FOUND", "{unrouted}");
    assert!(unrouted["correlation_id"].is_string(), "{unrouted}");

    // The seeded route, as an operator sees it.
    let agentctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentctl"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = agentctl(&["route", "list"]);
    assert!(listed.starts_with("call_reasoning "), "{listed}");
    assert!(listed.contains("echo@live"), "{listed}");
    let described = agentctl(&["plugin", "describe", "echo"]);
    assert!(
        described.contains("route call_reasoning -> echo@live (revision 1"),
        "{described}"
    );
    let history = agentctl(&["route", "history"]);
    assert!(
        history.contains("route call_reasoning") && history.contains("- -> echo@live"),
        "{history}"
    );
}

fn audit_verify(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap()
}

/// `policy replay` decides the recorded requests again under a candidate
/// set and lists exactly the decisions that would change.
#[test]
fn policy_replay_lists_exactly_the_decisions_a_candidate_would_change() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("state");
    let agentctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_agentctl"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .output()
            .unwrap()
    };
    // `up --check` records three decisions: `keywords` and `support-intent`
    // allowed, `triage` denied.
    let up = agentctl(&[
        "up",
        "--check",
        "--axon-listen",
        "127.0.0.1:0",
        "--orbit-listen",
        "127.0.0.1:0",
    ]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let replay = |candidate: &std::path::Path| {
        let out = agentctl(&["policy", "replay", candidate.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let defaults =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../governance/policies");
    let same = replay(&defaults);
    assert!(
        same.contains("3 decisions replayed: 0 would change"),
        "{same}"
    );

    // A candidate that forbids `keywords`, lets everyone run `triage`, and
    // permits nothing else (so `support-intent` would be denied).
    let candidate = dir.path().join("candidate");
    std::fs::create_dir(&candidate).unwrap();
    std::fs::write(
        candidate.join("c.cedar"),
        r#"@id("no-keywords") forbid (principal, action, resource == AgentRuntime::Plugin::"keywords");
@id("triage-for-all") permit (principal, action, resource == AgentRuntime::Plugin::"triage");"#,
    )
    .unwrap();
    let changed = replay(&candidate);
    let lines: Vec<&str> = changed.lines().collect();
    assert_eq!(lines.len(), 4, "{changed}");
    assert!(
        lines.iter().any(|l| l.contains("dev -> keywords@1.0.0: allowed (developers-may-dispatch-approved) -> forbidden_by_policy (no-keywords)")),
        "{changed}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("dev -> triage@") && l.ends_with("-> allowed (triage-for-all)")),
        "{changed}"
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "dev -> support-intent@1.0.0: allowed (developers-may-dispatch-approved) -> no_permitting_policy"
        )),
        "{changed}"
    );
    assert!(
        changed.contains("3 decisions replayed: 3 would change (2 allowed would be denied, 1 denied would be allowed)"),
        "{changed}"
    );

    // A file that does not verify is not replayed.
    let audit = data_dir.join("audit").join("decisions.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.replace("keywords", "keyword5")).unwrap();
    let refused = agentctl(&["policy", "replay", candidate.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Runs `agentctl --data-dir data_dir args`: whether it succeeded, and its
/// stdout then stderr.
fn agentctl(data_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `agentctl --data-dir data_dir args`, which must succeed.
fn agentctl_ok(data_dir: &std::path::Path, args: &[&str]) -> String {
    let (ok, text) = agentctl(data_dir, args);
    assert!(ok, "agentctl {args:?}: {text}");
    text
}

/// The official MCP Python SDK as an agent uses it, over Streamable HTTP
/// (signing with botocore) and over stdio through `agentctl mcp`: it lists
/// the plugins `dev` may run, with their input schemas, and a call is a
/// governed dispatch: allowed, denied, refused for input that breaks the
/// schema, each on record in the audit trail.
#[test]
fn the_mcp_sdk_lists_and_calls_plugins_over_http_and_through_agentctl_mcp() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("state");
    let (mut up, orbit_url) = start_up(&data_dir);
    // A plugin with an input schema, approved and live.
    let manifest = dir.path().join("approve-expense.toml");
    std::fs::write(
        &manifest,
        "name = \"approve-expense\"\nversion = \"1.0.0\"\ndescription = \"Approves an expense\"\n\
         [input_schema]\ntype = \"object\"\nrequired = [\"amount\"]\n\
         [input_schema.properties.amount]\ntype = \"integer\"\n",
    )
    .unwrap();
    let module = plugin_artifacts::ECHO.path().to_str().unwrap();
    let manifest = manifest.to_str().unwrap();
    agentctl_ok(
        &data_dir,
        &[
            "plugin",
            "publish",
            "--manifest",
            manifest,
            "--module",
            module,
        ],
    );
    agentctl_ok(
        &data_dir,
        &["plugin", "label", "approve-expense", "1.0.0", "approved"],
    );
    agentctl_ok(
        &data_dir,
        &["plugin", "alias", "set", "approve-expense", "live", "1.0.0"],
    );
    // Orbit reads a registry change within seconds; a dispatch naming the
    // plugin makes it look at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["dispatch", "approve-expense", "--input", r#"{"amount": 1}"#])
        .args(["--orbit", &orbit_url])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "approve-expense never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let keyring = auth::LocalKeyring::open(&data_dir.join("keys.json")).unwrap();
    let dev = keyring.newest_key_of("dev").unwrap();

    let python = std::env::var("AGENT_RUNTIME_PYTHON").unwrap_or_else(|_| "python3".into());
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_client.py");
    let agentctl = env!("CARGO_BIN_EXE_agentctl");
    let data = data_dir.to_str().unwrap();
    let mcp_url = format!("{orbit_url}/mcp");
    let runs: Vec<_> = [
        vec![client, "http", &mcp_url],
        vec![client, "stdio", agentctl, data, &orbit_url],
    ]
    .into_iter()
    .map(|args| {
        let output = Command::new(&python)
            .args(&args)
            .env("SIGV4_ACCESS_KEY_ID", &dev.access_key_id)
            .env("SIGV4_SECRET_ACCESS_KEY", &dev.secret_access_key)
            .output();
        (args[1], output)
    })
    .collect();
    let stopped = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success() && up.wait().unwrap().success());

    for (mode, output) in runs {
        let output = output.unwrap_or_else(|e| {
            panic!("cannot run `{python}` ({e}); ./scripts/test.sh sets up a Python with mcp")
        });
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let tools = seen["tools"].as_object().unwrap();
        assert!(
            tools.contains_key("keywords") && tools.contains_key("echo"),
            "{mode}: {seen}"
        );
        assert!(
            !tools.contains_key("triage"),
            "`dev` may not run triage: {seen}"
        );
        assert_eq!(
            tools["approve-expense"]["required"],
            serde_json::json!(["amount"])
        );

        let allowed = &seen["allowed"];
        assert_eq!(allowed["is_error"], false, "{mode}: {allowed}");
        assert_eq!(
            allowed["structured"]["output"],
            serde_json::json!({ "keywords": ["fox"] })
        );
        assert_eq!(allowed["structured"]["governance"]["allowed"], true);
        let denied = &seen["denied"];
        assert_eq!(denied["is_error"], true, "{mode}: {denied}");
        assert_eq!(denied["structured"]["error"]["code"], "GOVERNANCE_DENIED");
        assert!(
            denied["text"][0]
                .as_str()
                .unwrap()
                .contains("experimental-only-for-beta")
        );
        let invalid = &seen["invalid"];
        assert_eq!(invalid["is_error"], true, "{mode}: {invalid}");
        assert_eq!(invalid["structured"]["error"]["code"], "INVALID_INPUT");
        assert_eq!(invalid["structured"]["path"], "/amount");
        let fits = &seen["fits"];
        assert_eq!(fits["is_error"], false, "{mode}: {fits}");
        assert_eq!(
            fits["structured"]["output"],
            serde_json::json!({ "amount": 12 })
        );
    }

    // Each call that was decided is on record, as a dispatch's would be
    // (input that breaks the schema is refused before anything is decided).
    let records: Vec<governance::AuditRecord> =
        std::fs::read_to_string(data_dir.join("audit").join("decisions.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
    let count = |intent: &str, allowed: bool| {
        records
            .iter()
            .filter(|r| r.intent == intent && r.decision.allowed == allowed)
            .count()
    };
    assert_eq!(count("keywords", true), 2);
    assert_eq!(count("triage", false), 2);
    assert_eq!(count("approve-expense", true), 2);
}
