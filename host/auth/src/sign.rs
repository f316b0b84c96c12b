//! Signing outgoing requests with `aws-sigv4`, the AWS SDKs' own signer.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity as AwsIdentity;

use crate::SERVICE;

/// What a client signs with.
#[derive(Clone)]
pub struct SigningKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Signs a request for service `execute-api`. `url` is the full URL as it
/// will be sent; `headers` are the headers it will carry (all are signed;
/// `host` is taken from the URL). Returns the headers to add:
/// `authorization`, `x-amz-date` and `x-amz-content-sha256`.
pub fn sign(
    key: &SigningKey,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, String> {
    let identity: AwsIdentity = Credentials::new(
        &key.access_key_id,
        &key.secret_access_key,
        None,
        None,
        "agent-runtime",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&key.region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign the request: {e}"))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(request, &params)
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into_parts();
    let (added, _params) = instructions.into_parts();
    Ok(added
        .into_iter()
        .map(|h| (h.name(), h.value().to_owned()))
        .collect())
}
