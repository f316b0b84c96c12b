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
