//! The README's first command, end to end: `agentctl up --check` on a fresh
//! data directory creates keys and policies, publishes the examples, starts
//! Axon and Orbit, and dispatches through them with a signed request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn up_check_starts_the_stack_and_answers_a_sample_request() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("state");
    let run = || {
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
            .output()
            .unwrap()
    };
    let first = run();
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

    // A second run on the same data directory reuses what the first published.
    let second = run();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
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
    for name in ["echo", "keywords", "triage"] {
        assert!(listed.contains(name), "{listed}");
    }
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
