//! `/dispatch` end to end: Think -> Govern -> Act.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Stack, code};

#[tokio::test]
async fn an_allowed_dispatch_returns_the_plugins_output_and_the_decision() {
    let stack = Stack::start().await;
    let reply = stack
        .dispatch(json!({
            "plugin": "keywords",
            "version": "1.0.0",
            "intent": "extract",
            "input": { "text": "cedar policies decide; cedar policies deny", "top": 2 },
            "context": { "ticket": "T-1" },
        }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "success");
    assert_eq!(
        reply.body["output"],
        json!({ "keywords": ["cedar", "policies"] })
    );
    assert_eq!(reply.body["plugin"]["name"], "keywords");
    assert_eq!(reply.body["plugin"]["version"], "1.0.0");
    assert!(
        reply.body["plugin"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let governance = &reply.body["governance"];
    assert_eq!(governance["allowed"], true);
    assert_eq!(governance["reason"], "allowed");
    assert_eq!(
        governance["policies"],
        json!(["developers-may-dispatch-approved"])
    );
    assert!(governance["decision_time_us"].is_u64());
    let correlation_id = reply.body["correlation_id"].as_str().unwrap();
    assert_eq!(reply.headers["x-correlation-id"], correlation_id);
    for header in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(reply.headers.contains_key(header), "missing {header}");
    }
}

#[tokio::test]
async fn without_a_version_the_newest_release_runs() {
    let stack = Stack::start().await;
    let reply = stack
        .dispatch(json!({ "plugin": "echo", "intent": "x", "input": [1, 2] }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["output"], json!([1, 2]));
    assert_eq!(reply.body["plugin"]["version"], "1.0.0");
}

#[tokio::test]
async fn a_policy_denial_is_a_403_naming_the_policy() {
    let stack = Stack::start().await;
    // triage is tagged `experimental`: only group `beta` may run it.
    let body = json!({ "plugin": "triage", "intent": "classify", "input": { "subject": "refund please" } });
    let denied = stack.dispatch(body.clone()).await;
    assert_eq!(
        (denied.status, code(&denied)),
        (StatusCode::FORBIDDEN, "GOVERNANCE_DENIED"),
        "{}",
        denied.body
    );
    assert_eq!(denied.body["status"], "denied");
    assert_eq!(denied.body["governance"]["allowed"], false);
    assert_eq!(denied.body["governance"]["reason"], "forbidden_by_policy");
    assert_eq!(
        denied.body["governance"]["policies"],
        json!(["experimental-only-for-beta"])
    );
    assert!(
        denied.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("experimental-only-for-beta")
    );
    assert_eq!(denied.body["plugin"]["name"], "triage");

    let allowed = stack.bea.dispatch(&body).await.unwrap();
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert_eq!(allowed.body["output"]["category"], "billing");
}

/// A candidate in shadow (`agentctl policy activate --shadow`) decides every
/// dispatch beside the set in force: the audit trail marks exactly the
/// decisions it would change, the metric counts them, and callers get only
/// what the set in force decides.
#[tokio::test]
async fn a_version_in_shadow_records_exactly_the_decisions_it_would_change_and_enforces_none() {
    use governance::store::{Activate, ActivationKind, NewPolicySet};

    let stack = Stack::start().await;
    let mut candidate = governance::default_documents();
    candidate.push(governance::PolicyDocument {
        name: "no-keywords-for-dev.cedar".into(),
        text: r#"@id("no-keywords-for-dev") forbid (principal == AgentRuntime::User::"dev", action, resource == AgentRuntime::Plugin::"keywords");"#.into(),
    });
    let store = &stack.policies;
    let version = store
        .put(&NewPolicySet {
            documents: candidate.clone(),
            schema: governance::SCHEMA.into(),
            author: "test".into(),
            message: "candidate".into(),
        })
        .await
        .unwrap()
        .version;
    let revision = store.head().await.unwrap().unwrap().revision;
    store
        .activate(&Activate {
            version,
            expected_revision: revision,
            kind: ActivationKind::Shadow,
            actor: "test",
        })
        .await
        .unwrap();
    let metrics = || async {
        reqwest::get(format!("{}/metrics", stack.orbit_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let in_shadow = crate::support::eventually(std::time::Duration::from_secs(30), || async {
        metrics()
            .await
            .contains(&format!("orbit_policy_shadow_version {version}"))
    })
    .await;
    assert!(in_shadow, "Orbit never took the version in shadow");

    let keywords = json!({ "plugin": "keywords", "intent": "extract", "input": { "text": "a b a", "top": 1 } });
    let echo = json!({ "plugin": "echo", "intent": "echo", "input": 1 });
    let triage = json!({ "plugin": "triage", "intent": "classify", "input": {} });
    for _ in 0..3 {
        for (client, body, status) in [
            (&stack.dev, &keywords, StatusCode::OK),
            (&stack.dev, &echo, StatusCode::OK),
            (&stack.bea, &keywords, StatusCode::OK),
            (&stack.dev, &triage, StatusCode::FORBIDDEN),
        ] {
            let reply = client.dispatch(body).await.unwrap();
            assert_eq!(reply.status, status, "{}", reply.body);
            assert!(
                reply.body["governance"].get("shadow").is_none(),
                "{}",
                reply.body
            );
        }
    }

    let judge = governance::Governance::of_documents(&candidate, Default::default()).unwrap();
    let records = stack.audit_records();
    assert_eq!(records.len(), 12);
    let mut differing = 0;
    for record in &records {
        let shadow = record.decision.shadow.as_ref().expect("decided in shadow");
        assert_eq!(shadow.policy_version, version);
        let would = judge.decide_now(&record.request().unwrap());
        assert_eq!(
            shadow.differs,
            !would.same_verdict(&record.decision),
            "{record:?}"
        );
        assert_eq!(
            (shadow.allowed, shadow.reason),
            (would.allowed, would.reason)
        );
        differing += usize::from(shadow.differs);
    }
    assert_eq!(
        differing, 3,
        "exactly dev's keywords dispatches would change"
    );
    let text = metrics().await;
    assert!(
        text.contains(r#"orbit_policy_shadow_decisions_total{result="different"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"orbit_policy_shadow_decisions_total{result="same"} 9"#),
        "{text}"
    );
}

#[tokio::test]
async fn an_activated_policy_version_takes_effect_without_a_restart() {
    an_activated_policy_version_takes_effect(Stack::start().await).await;
}

#[tokio::test]
async fn an_activated_policy_version_in_dynamodb_takes_effect_without_a_restart() {
    an_activated_policy_version_takes_effect(Stack::start_on_aws().await).await;
}

async fn an_activated_policy_version_takes_effect(stack: Stack) {
    let echo = json!({ "plugin": "echo", "intent": "x", "input": 1 });
    let allowed = stack.dispatch(echo.clone()).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.body["governance"]["policy_version"], 1);
    let mut documents = governance::default_documents();
    documents.push(governance::PolicyDocument {
        name: "no-echo.cedar".into(),
        text:
            r#"@id("no-echo") forbid(principal, action, resource == AgentRuntime::Plugin::"echo");"#
                .into(),
    });
    let version = stack.activate_policies(documents).await;
    let denied = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        stack.dispatch(echo.clone()).await.status == StatusCode::FORBIDDEN
    })
    .await;
    assert!(denied, "the new forbid was not picked up");
    let reply = stack.dispatch(echo.clone()).await;
    assert_eq!(reply.body["governance"]["policies"], json!(["no-echo"]));
    assert_eq!(reply.body["governance"]["policy_version"], version);
}

/// Governance by a Lambda function that cannot be reached (nothing listens
/// on the endpoint): every dispatch is a recorded `unavailable` deny,
/// nothing runs, and after three in a row Orbit is not ready. The function
/// answering is `governance-lambda`'s own test.
#[tokio::test]
async fn a_governance_function_that_cannot_be_reached_denies_every_dispatch_as_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let stack = Stack::start_with(|c| {
        c.governance = aws_stores::GovernanceArgs::lambda("governance", Some(&endpoint));
        c.governance.governance_timeout_ms = 500;
    })
    .await;
    for _ in 0..3 {
        let reply = stack
            .dispatch(json!({ "plugin": "echo", "intent": "x", "input": 1 }))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(code(&reply), "GOVERNANCE_UNAVAILABLE", "{}", reply.body);
        assert_eq!(reply.headers["retry-after"], "1");
        assert_eq!(reply.body["status"], "unavailable");
        assert_eq!(reply.body["governance"]["reason"], "unavailable");
        assert_eq!(reply.body["governance"]["allowed"], false);
        let message = reply.body["error"]["message"].as_str().unwrap();
        // Refused at the connection, or still retrying it at the timeout.
        assert!(
            message.contains("governance is unavailable: invoking the governance function failed: the Lambda API could not be reached")
                || message.contains("did not answer within 500 ms"),
            "{message}"
        );
        assert!(!message.contains("127.0.0.1"), "{message}");
    }

    let records = stack.audit_records();
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r.decision.reason == governance::Outcome::Unavailable),
        "{records:?}"
    );
    let ready = crate::support::reply(
        reqwest::get(format!("{}/ready", stack.orbit_url))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body.to_string().contains("governance not ready"),
        "{}",
        ready.body
    );
    let axon = reqwest::get(format!("{}/metrics", stack.axon_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ran: Vec<&str> = axon
        .lines()
        .filter(|l| l.starts_with("axon_reason_requests_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(ran.is_empty(), "{ran:?}");
}

#[tokio::test]
async fn a_broken_head_keeps_the_last_good_set_then_denies_as_stale_and_recovers() {
    let stack = Stack::start_with(|c| {
        c.refresh_secs = 1;
        c.policy_max_staleness_secs = 2;
    })
    .await;
    let get = |path: &str| reqwest::get(format!("{}{path}", stack.orbit_url));
    let echo = json!({ "plugin": "echo", "intent": "x", "input": 1 });
    assert_eq!(stack.dispatch(echo.clone()).await.status, StatusCode::OK);

    // A version that does not validate, activated behind the tools' back.
    let broken = stack
        .activate_policies(vec![governance::PolicyDocument {
            name: "broken.cedar".into(),
            text: "forbid(principal, action, resource) when { nonsense };".into(),
        }])
        .await;
    let stale = crate::support::eventually(std::time::Duration::from_secs(60), || async {
        stack.dispatch(echo.clone()).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(stale, "the broken head never made governance stale");
    let reply = stack.dispatch(echo.clone()).await;
    assert_eq!(code(&reply), "GOVERNANCE_STALE", "{}", reply.body);
    assert_eq!(reply.body["governance"]["reason"], "stale");
    assert_eq!(
        reply.body["governance"]["policy_version"], 1,
        "the last good set is still the one in force"
    );
    let text = reply.body.to_string();
    assert!(
        !text.contains(".db") && !text.contains(stack.data_dir.to_str().unwrap()),
        "a server path reached the caller: {text}"
    );
    let ready = crate::support::reply(get("/ready").await.unwrap()).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("orbit_policy_stale 1"), "{metrics}");
    assert!(metrics.contains("orbit_policy_version 1"), "{metrics}");
    assert!(
        !metrics.contains("orbit_policy_refresh_failures_total 0"),
        "{metrics}"
    );
    assert!(broken > 1);

    // Activating a good version recovers without a restart.
    let fixed = stack
        .activate_policies(governance::default_documents())
        .await;
    let recovered = crate::support::eventually(std::time::Duration::from_secs(30), || async {
        stack.dispatch(echo.clone()).await.status == StatusCode::OK
    })
    .await;
    assert!(recovered, "a good head did not end the staleness");
    let reply = stack.dispatch(echo.clone()).await;
    assert_eq!(reply.body["governance"]["policy_version"], fixed);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("orbit_policy_stale 0"), "{metrics}");
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_stable_code() {
    let stack = Stack::start().await;
    let send = |body: Vec<u8>| async {
        stack
            .dev
            .send(reqwest::Method::POST, "/dispatch", body)
            .await
            .unwrap()
    };
    let cases: Vec<(Vec<u8>, StatusCode, &str, &str)> = vec![
        (
            b"{oops".to_vec(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "invalid request body",
        ),
        (
            json!({ "plugin": "nope", "intent": "x", "input": 1 })
                .to_string()
                .into_bytes(),
            StatusCode::NOT_FOUND,
            "PLUGIN_NOT_FOUND",
            "no plugin `nope`",
        ),
        (
            json!({ "plugin": "echo", "version": "7.0.0", "intent": "x", "input": 1 })
                .to_string()
                .into_bytes(),
            StatusCode::NOT_FOUND,
            "PLUGIN_NOT_FOUND",
            "no published version `7.0.0`",
        ),
        (
            json!({ "plugin": "echo", "version": "one", "intent": "x", "input": 1 })
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "semantic version",
        ),
        (
            // The principal comes from the signature: the body cannot name one.
            json!({ "plugin": "triage", "intent": "x", "input": {}, "principal": "bea" })
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "unknown field `principal`",
        ),
        (
            json!({ "plugin": "echo", "intent": "x", "input": "x".repeat(2 << 20) })
                .to_string()
                .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "larger than",
        ),
        (
            // Checked by Axon, passed through by Orbit.
            json!({ "plugin": "keywords", "intent": "x", "input": { "text": "a", "top": 0 } })
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_INVALID_INPUT",
            "`top` must be between 1 and 100",
        ),
    ];
    for (body, status, expected, message) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(100)]).into_owned();
        let reply = send(body).await;
        assert_eq!(
            (reply.status, code(&reply)),
            (status, expected),
            "{shown}: {}",
            reply.body
        );
        let text = reply.body["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{shown}: {text}");
        assert!(
            reply.body["correlation_id"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
    }
}

/// Each caller sees what it could dispatch: `triage` is `experimental`,
/// which the default policies keep for group `beta`. A plugin one may not
/// see is absent, as one that does not exist.
#[tokio::test]
async fn plugins_are_listed_for_signed_callers_filtered_by_what_each_may_dispatch() {
    let stack = Stack::start().await;
    let names = |reply: &orbit::client::Reply| -> Vec<String> {
        reply.body["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let dev = stack
        .dev
        .send(reqwest::Method::GET, "/v1/plugins", Vec::new())
        .await
        .unwrap();
    assert_eq!(dev.status, StatusCode::OK, "{}", dev.body);
    assert_eq!(names(&dev), ["echo", "keywords"]);
    assert_eq!(dev.body["plugins"][1]["versions"], json!(["1.0.0"]));
    assert!(!dev.body["plugins"][1]["aliases"]["live"].is_null());
    let bea = stack
        .bea
        .send(reqwest::Method::GET, "/v1/plugins", Vec::new())
        .await
        .unwrap();
    assert_eq!(names(&bea), ["echo", "keywords", "triage"]);

    // A set that permits nothing lists nothing.
    stack.activate_policies(Vec::new()).await;
    let emptied = crate::support::eventually(std::time::Duration::from_secs(30), || async {
        let reply = stack
            .bea
            .send(reqwest::Method::GET, "/v1/plugins", Vec::new())
            .await
            .unwrap();
        names(&reply).is_empty()
    })
    .await;
    assert!(emptied, "a set that permits nothing still lists plugins");

    let unsigned = reqwest::get(format!("{}/v1/plugins", stack.orbit_url))
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let stack = Stack::start().await;
    let get = |path: &str| reqwest::get(format!("{}{path}", stack.orbit_url));
    assert_eq!(get("/health").await.unwrap().status(), StatusCode::OK);
    let ready = crate::support::reply(get("/ready").await.unwrap()).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);

    stack
        .dispatch(json!({ "plugin": "echo", "intent": "x", "input": 1 }))
        .await;
    stack
        .dispatch(json!({ "plugin": "triage", "intent": "x", "input": {} }))
        .await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for line in [
        r#"orbit_governance_decisions_total{outcome="allowed"} 1"#,
        r#"orbit_governance_decisions_total{outcome="forbidden_by_policy"} 1"#,
        r#"orbit_axon_calls_total{pool="cpu",outcome="answered"} 1"#,
        r#"http_requests_total{route="/dispatch",status="200"} 1"#,
        r#"http_requests_total{route="/dispatch",status="403"} 1"#,
        r#"orbit_axon_breaker_state{pool="cpu"} 0"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}

#[tokio::test]
async fn past_the_principal_rate_limit_requests_get_429_with_headers() {
    let stack = Stack::start_with(|c| {
        c.principal_rate = 1;
        c.principal_burst = 2;
    })
    .await;
    let body = json!({ "plugin": "echo", "intent": "x", "input": 1 });
    let first = stack.dispatch(body.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["x-ratelimit-limit"], "2");
    assert_eq!(first.headers["x-ratelimit-remaining"], "1");
    let second = stack.dispatch(body.clone()).await;
    assert_eq!(second.headers["x-ratelimit-remaining"], "0");
    let third = stack.dispatch(body.clone()).await;
    assert_eq!(
        (third.status, code(&third)),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED")
    );
    assert_eq!(third.headers["x-ratelimit-limit"], "2");
    assert_eq!(third.headers["x-ratelimit-remaining"], "0");
    let reset: u64 = third.headers["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&reset), "{reset}");
    assert_eq!(third.headers["retry-after"], "1");
    // Another principal has its own budget.
    assert_eq!(
        stack.bea.dispatch(&body).await.unwrap().status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_hold_more_than_its_share_of_axon() {
    let stack = std::sync::Arc::new(Stack::start_with(|c| c.max_in_flight_per_principal = 2).await);
    // Sleeps that hold their places far longer than the test needs them to.
    stack
        .publish_approved(
            plugin_artifacts::SPIN_LOOP,
            "name = \"spin-loop\"\nversion = \"1.0.0\"\n[limits]\ndeadline_ms = 20000",
        )
        .await;
    let slow = json!({ "plugin": "spin-loop", "intent": "x", "input": { "sleep_ms": 15_000 } });
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let stack = stack.clone();
            let slow = slow.clone();
            tokio::spawn(async move { stack.dispatch(slow).await })
        })
        .collect();
    stack.wait_in_flight(2).await;
    let third = stack
        .dispatch(json!({ "plugin": "echo", "intent": "x", "input": 1 }))
        .await;
    assert_eq!(
        (third.status, code(&third)),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED"),
        "{}",
        third.body
    );
    assert_eq!(third.headers["retry-after"], "1");
    assert!(
        third.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 dispatches in flight"),
        "{}",
        third.body
    );
    // Another principal is served meanwhile.
    let other = stack
        .bea
        .dispatch(&json!({ "plugin": "echo", "intent": "x", "input": 2 }))
        .await
        .unwrap();
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    for holder in holders {
        let reply = holder.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    // Places come back when dispatches finish.
    stack.wait_in_flight(0).await;
    let again = stack
        .dispatch(json!({ "plugin": "echo", "intent": "x", "input": 3 }))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

#[tokio::test]
async fn past_the_address_rate_limit_even_unsigned_requests_get_429() {
    let stack = Stack::start_with(|c| {
        c.ip_rate = 1;
        c.ip_burst = 1;
    })
    .await;
    let client = reqwest::Client::new();
    let first = client
        .post(format!("{}/dispatch", stack.orbit_url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let second = crate::support::reply(
        client
            .post(format!("{}/dispatch", stack.orbit_url))
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (second.status, code(&second)),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED")
    );
}

#[tokio::test]
async fn an_answer_larger_than_orbit_reads_from_axon_is_refused() {
    let stack = Stack::start_with(|c| c.max_axon_reply_kib = 16).await;
    let small = stack
        .dispatch(json!({"plugin": "echo", "intent": "t", "input": "x".repeat(1024)}))
        .await;
    assert_eq!(small.status, StatusCode::OK, "{}", small.body);
    // Within echo's own output limit (1 MiB), beyond what Orbit reads.
    let large = stack
        .dispatch(json!({"plugin": "echo", "intent": "t", "input": "x".repeat(32 * 1024)}))
        .await;
    assert_eq!(large.status, StatusCode::BAD_GATEWAY, "{}", large.body);
    assert_eq!(code(&large), "PLUGIN_OUTPUT_LIMIT");
    assert!(large.body.to_string().len() < 2048);
}

/// A plugin that declares an input schema: Orbit refuses input that breaks
/// it (400, with the failing path) before anything is decided, and a policy
/// on the plugin's own action reads the typed input, allowing and denying.
#[tokio::test]
async fn a_policy_reads_the_typed_input_and_input_that_breaks_the_schema_is_refused_first() {
    let stack = Stack::start().await;
    let input_schema = json!({
        "type": "object",
        "required": ["amount", "currency"],
        "properties": {
            "amount": {"type": "integer", "minimum": 0},
            "currency": {"type": "string", "enum": ["EUR", "USD"]},
            "memo": {"type": "string"}
        },
        "additionalProperties": false
    });
    let toml = format!(
        "name = \"approve-expense\"\nversion = \"1.0.0\"\ninput_schema = {}",
        toml_inline(&input_schema)
    );
    stack.publish_approved(plugin_artifacts::ECHO, &toml).await;
    let plugins = std::collections::BTreeMap::from([(
        "approve-expense".to_owned(),
        governance::InputType::of_schema(&input_schema).unwrap(),
    )]);
    let schema = governance::PolicySchema::with_plugin_actions(
        &governance::inputs::plugin_actions_fragment(&plugins),
    )
    .unwrap();
    let mut documents = governance::default_documents();
    documents.push(governance::PolicyDocument {
        name: "expenses.cedar".into(),
        text: r#"@id("small-expenses-only") forbid (principal, action == AgentRuntime::Action::"approve-expense", resource)
                 unless { context.input.amount < 1000 };"#
            .into(),
    });
    stack
        .activate_policies_with(documents, &schema.text())
        .await;
    let expense = |input: serde_json::Value| json!({ "plugin": "approve-expense", "intent": "approve", "input": input });
    let refused = crate::support::eventually(std::time::Duration::from_secs(30), || async {
        stack
            .dispatch(expense(json!({"amount": 1000, "currency": "EUR"})))
            .await
            .status
            == StatusCode::FORBIDDEN
    })
    .await;
    assert!(refused, "the input condition was never in force");
    let denied = stack
        .dispatch(expense(json!({"amount": 1000, "currency": "EUR"})))
        .await;
    assert_eq!(
        denied.body["governance"]["policies"],
        json!(["small-expenses-only"])
    );
    let allowed = stack
        .dispatch(expense(
            json!({"amount": 999, "currency": "EUR", "memo": "taxi"}),
        ))
        .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert_eq!(
        allowed.body["output"]["memo"], "taxi",
        "the plugin gets the input whole"
    );

    for (input, path) in [
        (json!({"amount": "lots", "currency": "EUR"}), "/amount"),
        (json!({"amount": 5, "currency": "GBP"}), "/currency"),
        (json!({"amount": 5, "currency": "EUR", "extra": 1}), ""),
        (json!({"currency": "EUR"}), ""),
        (json!({"amount": 1e300, "currency": "EUR"}), "/amount"),
    ] {
        let reply = stack.dispatch(expense(input.clone())).await;
        assert_eq!(
            (reply.status, code(&reply)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{input}: {}",
            reply.body
        );
        assert_eq!(reply.body["path"], path, "{input}: {}", reply.body);
        if input["amount"] == "lots" {
            assert_eq!(
                reply.body["error"]["message"],
                "`input` does not match the plugin's input schema at /amount: \"lots\" is not of type \"integer\""
            );
        }
    }
    // Only decisions were recorded, each with the input policies saw.
    let records = stack.audit_records();
    let expenses: Vec<_> = records
        .iter()
        .filter(|r| r.plugin.info.name == "approve-expense")
        .collect();
    assert!(expenses.len() >= 2);
    assert!(expenses.iter().all(|r| r.input.is_some()));
    let last = expenses.last().unwrap();
    assert_eq!(
        last.input,
        Some(json!({"amount": 999, "currency": "EUR", "memo": "taxi"}))
    );
}

/// `value` as a TOML inline value (JSON Schema in a plugin.toml).
fn toml_inline(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(fields) => format!(
            "{{ {} }}",
            fields
                .iter()
                .map(|(k, v)| format!("\"{k}\" = {}", toml_inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_inline).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// What a version needs from the host (its manifest's capabilities, models
/// and GPU) reaches governance: a policy on a model, or on the GPU, denies
/// with its reason before anything runs, and is recorded so.
#[tokio::test]
async fn policies_on_models_and_the_gpu_deny_with_their_reason() {
    let stack = Stack::start().await;
    let toml = plugin_artifacts::SUPPORT_INTENT
        .manifest_text()
        .unwrap()
        .unwrap();
    // 1.0.0 as published, and 1.1.0 the same but requiring a GPU.
    let gpu = toml
        .replace(
            "version = \"1.0.0\"\ndescription",
            "version = \"1.1.0\"\ndescription",
        )
        .replace("[inference]\n", "[inference]\ngpu = \"required\"\n");
    assert!(
        gpu.contains("gpu = \"required\"") && gpu.contains("1.1.0"),
        "{gpu}"
    );
    for toml in [&toml, &gpu] {
        stack
            .publish_approved(plugin_artifacts::SUPPORT_INTENT, toml)
            .await;
    }
    let dispatch = |version: &str| {
        let body = json!({ "plugin": "support-intent", "version": version, "intent": "classify", "input": { "message": "refund" } });
        let stack = &stack;
        async move { stack.dispatch(body).await }
    };

    let mut documents = governance::default_documents();
    documents.push(governance::PolicyDocument {
        name: "inference.cedar".into(),
        text: r#"@id("no-support-intent-model") forbid(principal, action, resource)
                   when { resource.capabilities.contains("inference") && resource.models.contains("support-intent") };"#
            .into(),
    });
    stack.activate_policies(documents).await;
    let denied = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        dispatch("1.0.0").await.status == StatusCode::FORBIDDEN
    })
    .await;
    assert!(denied, "the forbid on the model was not picked up");
    let reply = dispatch("1.0.0").await;
    assert_eq!(code(&reply), "GOVERNANCE_DENIED", "{}", reply.body);
    assert_eq!(reply.body["governance"]["reason"], "forbidden_by_policy");
    assert_eq!(
        reply.body["governance"]["policies"],
        json!(["no-support-intent-model"])
    );
    let recorded = serde_json::to_value(stack.audit_records().pop().unwrap()).unwrap();
    assert_eq!(
        recorded["plugin"]["needs"],
        json!({ "capabilities": ["inference"], "models": ["support-intent"], "gpu": "none" }),
        "{recorded}"
    );

    // Only tenant acme may run what requires a GPU: dev (tenant local) is
    // denied 1.1.0, and 1.0.0 gets past governance.
    let mut documents = governance::default_documents();
    documents.push(governance::PolicyDocument {
        name: "gpu.cedar".into(),
        text: r#"@id("gpu-only-for-acme") forbid(principal, action, resource)
                   when { resource.gpu == "required" } unless { principal in AgentRuntime::Tenant::"acme" };"#
            .into(),
    });
    stack.activate_policies(documents).await;
    let denied = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let reply = dispatch("1.1.0").await;
        reply.status == StatusCode::FORBIDDEN
            && reply.body["governance"]["policies"] == json!(["gpu-only-for-acme"])
    })
    .await;
    assert!(denied, "the GPU policy did not deny the GPU version");
    let reply = dispatch("1.0.0").await;
    assert_ne!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
}
