//! The OpenAPI documents: each service serves at `GET /openapi.json` the
//! document generated from its handlers' types, and docs/api.md (the
//! readable version) names every error code they name.

use serde_json::Value;

use crate::support::Stack;

#[tokio::test]
async fn both_services_serve_their_document_and_the_docs_name_every_code() {
    let stack = Stack::start().await;
    let api_md =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    for (url, generated, title) in [
        (&stack.orbit_url, orbit::server::openapi(), "Orbit"),
        (&stack.axon_url, axon::server::openapi(), "Axon"),
    ] {
        // Unsigned, like any tool that reads a spec.
        let response = reqwest::get(format!("{url}/openapi.json")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        let served: Value = response.json().await.unwrap();
        assert_eq!(served, generated, "{title}");
        assert_eq!(served["openapi"], "3.1.0");
        assert_eq!(served["info"]["title"], title);

        let codes = service_kit::openapi::codes_in(&served);
        assert!(
            codes.contains("PLUGIN_TIMEOUT") && codes.len() >= 28,
            "{codes:?}"
        );
        let missing: Vec<_> = codes
            .iter()
            .filter(|code| !api_md.contains(&format!("`{code}`")))
            .collect();
        assert!(missing.is_empty(), "docs/api.md does not name {missing:?}");
    }
}
