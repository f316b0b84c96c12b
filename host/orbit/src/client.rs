//! A client for Orbit's API that signs like any AWS SigV4 client: what the
//! CLI, the tests and the load benchmark use.

use std::time::SystemTime;

use auth::SigningKey;

/// Signs and sends requests to one Orbit.
#[derive(Clone)]
pub struct OrbitClient {
    http: reqwest::Client,
    base_url: String,
    key: SigningKey,
}

/// An answer: status and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl OrbitClient {
    /// A client for the Orbit at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str, key: SigningKey) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
        }
    }

    /// Uses `http` (e.g. with tuned pooling) instead of a default client.
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// A signed request, ready to send. Each carries a fresh correlation id
    /// (signed), so no two signatures are alike even for identical bodies.
    pub fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = format!("{}{path}", self.base_url);
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let headers = [
            ("content-type", "application/json"),
            ("x-correlation-id", correlation_id.as_str()),
        ];
        let signed = auth::sign(
            &self.key,
            method.as_str(),
            &url,
            &headers,
            &body,
            SystemTime::now(),
        )?;
        let mut request = self.http.request(method, &url).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        for (name, value) in signed {
            request = request.header(name, value);
        }
        Ok(request)
    }

    /// Sends a signed request and reads the JSON answer.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let response = self
            .signed(method, path, body)?
            .send()
            .await
            .map_err(|e| format!("cannot reach orbit at {}: {e}", self.base_url))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("reading orbit's answer: {e}"))?;
        let body = serde_json::from_slice(&bytes)
            .map_err(|e| format!("orbit answered {status} with a body that is not JSON ({e})"))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// `POST /dispatch` with `body`.
    pub async fn dispatch(&self, body: &serde_json::Value) -> Result<Reply, String> {
        self.send(
            reqwest::Method::POST,
            "/dispatch",
            body.to_string().into_bytes(),
        )
        .await
    }
}
