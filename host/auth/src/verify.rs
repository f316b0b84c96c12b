//! Verifying SigV4 on incoming requests.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, Uri};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::canonical::{canonical_headers, canonical_query, canonical_uri};
use crate::error::AuthError;
use crate::keyring::{AccessKey, Identity, Keyring};
use crate::replay::ReplayCache;
use crate::time::parse_amz_date;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How requests are verified.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The region clients sign for. Default `us-east-1`.
    pub region: String,
    /// The service clients sign for. Default `execute-api`.
    pub service: String,
    /// How far a request's time may be from ours. Default 5 minutes.
    pub max_skew: Duration,
    /// What a repeated signature gets. Default [`ReplayPolicy::Window`].
    pub replay: ReplayPolicy,
}

/// How a signature that arrives more than once is treated.
///
/// SigV4 clients sign `host` and `x-amz-date` and nothing unique, so two
/// identical requests in the same second, or a client's retry of a request
/// that got a 429 or 503, carry the very same signature. AWS accepts a valid
/// signature for its whole skew window; a public edge that did not would
/// turn those clients away. A hop whose only caller is our own service can
/// do better, by requiring a header that is unique per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayPolicy {
    /// A valid signature is accepted each time it arrives within the skew
    /// window. A repeat is the signer's own request again: same principal,
    /// method, path, query, body and signed headers, governed, rate-limited
    /// and audited like the first.
    Window,
    /// Each signature is accepted once: requests must sign `unique_header`
    /// (`INVALID_SIGNATURE` otherwise), and a second arrival is
    /// `REPLAYED_REQUEST`. At most `per_principal` live signatures are
    /// remembered for each principal; past that, only that principal's
    /// requests are refused (503) until its signatures age out.
    Once {
        unique_header: &'static str,
        per_principal: usize,
    },
}

impl ReplayPolicy {
    /// What a service-to-service hop uses: [`REQUEST_ID_HEADER`] signed,
    /// each signature once, two million live signatures per principal.
    /// Signatures stay live for the skew window, so pair it with
    /// [`SERVICE_HOP_MAX_SKEW`]: a caller may then sustain about 66,000
    /// requests a second before its quota refuses it (about 64 MiB of
    /// cache at most).
    ///
    /// [`REQUEST_ID_HEADER`]: crate::REQUEST_ID_HEADER
    pub fn once_per_request_id() -> Self {
        Self::Once {
            unique_header: crate::REQUEST_ID_HEADER,
            per_principal: 2_000_000,
        }
    }
}

/// The skew window of a service-to-service hop: the caller signs just
/// before sending and both hosts keep time with NTP, so 30 s is ample, and
/// it keeps the replay cache a tenth of what the public 5-minute window
/// would need.
pub const SERVICE_HOP_MAX_SKEW: Duration = Duration::from_secs(30);

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            region: crate::DEFAULT_REGION.to_owned(),
            service: crate::SERVICE.to_owned(),
            max_skew: Duration::from_secs(300),
            replay: ReplayPolicy::Window,
        }
    }
}

/// A request whose signature verified.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The key that signed it.
    pub key: Arc<AccessKey>,
}

impl Authenticated {
    /// Who sent the request.
    pub fn identity(&self) -> &Identity {
        &self.key.identity
    }
}

/// Verifies SigV4 signatures against a keyring.
pub struct Verifier {
    config: VerifierConfig,
    keyring: Arc<dyn Keyring>,
    /// Present under [`ReplayPolicy::Once`].
    replay: Option<ReplayCache>,
}

struct AuthorizationHeader<'a> {
    access_key_id: &'a str,
    scope_date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: [u8; 32],
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::InvalidSignature(message.into())
}

fn parse_authorization(value: &str) -> Result<AuthorizationHeader<'_>, AuthError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| invalid(format!("the `Authorization` header must use `{ALGORITHM}`")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(invalid(
            "the `Authorization` header needs `Credential=`, `SignedHeaders=` and `Signature=`",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, region, service, terminal] = scope[..] else {
        return Err(invalid(
            "`Credential` must be `key-id/date/region/service/aws4_request`",
        ));
    };
    if terminal != "aws4_request" {
        return Err(invalid("`Credential` must end with `aws4_request`"));
    }
    let mut signature_bytes = [0u8; 32];
    hex::decode_to_slice(signature, &mut signature_bytes)
        .map_err(|_| invalid("`Signature` must be 64 hex digits"))?;
    let signed_headers: Vec<&str> = signed.split(';').collect();
    let well_formed = signed_headers.windows(2).all(|w| w[0] < w[1])
        && signed_headers
            .iter()
            .all(|h| !h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()));
    if !well_formed {
        return Err(invalid(
            "`SignedHeaders` must be lower-case names, sorted, separated by `;`",
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !signed_headers.contains(&required) {
            return Err(invalid(format!(
                "`SignedHeaders` must include `{required}`"
            )));
        }
    }
    Ok(AuthorizationHeader {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers,
        signature: signature_bytes,
    })
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Hmac<Sha256>, AuthError> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| invalid("bad signing key"))?;
    mac.update(data);
    Ok(mac)
}

impl Verifier {
    pub fn new(config: VerifierConfig, keyring: Arc<dyn Keyring>) -> Self {
        let replay = match config.replay {
            ReplayPolicy::Window => None,
            ReplayPolicy::Once { per_principal, .. } => Some(ReplayCache::new(per_principal)),
        };
        Self {
            config,
            keyring,
            replay,
        }
    }

    /// Verifies one request: method, URI and headers as received, the whole
    /// body, and the current time.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Authenticated, AuthError> {
        let Some(authorization) = headers.get("authorization") else {
            if uri.query().is_some_and(|q| q.contains("X-Amz-Signature=")) {
                return Err(invalid(
                    "presigned URLs are not accepted; sign with an `Authorization` header",
                ));
            }
            return Err(AuthError::MissingAuthorization);
        };
        let authorization = authorization
            .to_str()
            .map_err(|_| invalid("the `Authorization` header is not visible ASCII"))?;
        let auth = parse_authorization(authorization)?;
        if let ReplayPolicy::Once { unique_header, .. } = self.config.replay
            && !auth.signed_headers.contains(&unique_header)
        {
            return Err(invalid(format!(
                "`SignedHeaders` must include `{unique_header}`, with a value unique to each request"
            )));
        }

        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| invalid("missing `x-amz-date` header"))?;
        let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
            invalid(format!(
                "`x-amz-date` `{amz_date}` is not `YYYYMMDDTHHMMSSZ`"
            ))
        })?;
        let skew = now
            .duration_since(signed_at)
            .unwrap_or_else(|e| e.duration());
        if skew > self.config.max_skew {
            return Err(AuthError::SignatureExpired(format!(
                "the request was signed at {amz_date}, more than {} s from this server's clock; sign it again (and check the client's clock)",
                self.config.max_skew.as_secs()
            )));
        }
        if auth.scope_date != &amz_date[..8] {
            return Err(invalid(
                "the credential scope date does not match `x-amz-date`",
            ));
        }
        if auth.region != self.config.region {
            return Err(invalid(format!(
                "the credential scope region is `{}`; sign for `{}`",
                auth.region, self.config.region
            )));
        }
        if auth.service != self.config.service {
            return Err(invalid(format!(
                "the credential scope service is `{}`; sign for `{}`",
                auth.service, self.config.service
            )));
        }

        let key = self
            .keyring
            .find(auth.access_key_id)
            .ok_or_else(|| AuthError::UnknownAccessKey(auth.access_key_id.to_owned()))?;

        let body_hash = hex::encode(Sha256::digest(body));
        if let Some(claimed) = headers.get("x-amz-content-sha256") {
            let claimed = claimed.to_str().unwrap_or_default();
            if claimed == "UNSIGNED-PAYLOAD" || claimed.starts_with("STREAMING-") {
                return Err(invalid("unsigned and streaming payloads are not accepted"));
            }
            if !claimed.eq_ignore_ascii_case(&body_hash) {
                return Err(invalid("the body does not match `x-amz-content-sha256`"));
            }
        }

        let canonical_request = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            method.as_str(),
            canonical_uri(uri.path()),
            canonical_query(uri.query().unwrap_or("")),
            canonical_headers(headers, &auth.signed_headers)?,
            auth.signed_headers.join(";"),
            body_hash
        );
        let scope = format!(
            "{}/{}/{}/aws4_request",
            auth.scope_date, self.config.region, self.config.service
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let k_secret = format!("AWS4{}", key.secret_access_key);
        let k_date = hmac(k_secret.as_bytes(), auth.scope_date.as_bytes())?
            .finalize()
            .into_bytes();
        let k_region = hmac(&k_date, self.config.region.as_bytes())?
            .finalize()
            .into_bytes();
        let k_service = hmac(&k_region, self.config.service.as_bytes())?
            .finalize()
            .into_bytes();
        let k_signing = hmac(&k_service, b"aws4_request")?.finalize().into_bytes();
        // Constant-time comparison.
        hmac(&k_signing, string_to_sign.as_bytes())?
            .verify_slice(&auth.signature)
            .map_err(|_| {
                invalid("the signature does not match: check the secret key, and that nothing changed the request after signing")
            })?;

        if let Some(replay) = &self.replay {
            let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let expires_at = unix(signed_at) + self.config.max_skew.as_secs();
            replay.check_and_record(
                &key.identity.principal,
                &auth.signature,
                expires_at,
                unix(now),
            )?;
        }
        Ok(Authenticated { key })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::keyring::PrincipalKind;
    use crate::sign::{SigningKey, sign};

    struct Keys(HashMap<String, Arc<AccessKey>>);

    impl Keyring for Keys {
        fn find(&self, id: &str) -> Option<Arc<AccessKey>> {
            self.0.get(id).cloned()
        }
    }

    fn key(id: &str, secret: &str) -> AccessKey {
        AccessKey {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            identity: Identity {
                principal: "dev".into(),
                kind: PrincipalKind::User,
                groups: vec![],
                tenant: "local".into(),
            },
            created_at: String::new(),
            revoked: false,
        }
    }

    fn verifier(region: &str, service: &str) -> Verifier {
        verifier_with(region, service, ReplayPolicy::Window)
    }

    fn verifier_with(region: &str, service: &str, replay: ReplayPolicy) -> Verifier {
        let k = key("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        Verifier::new(
            VerifierConfig {
                region: region.into(),
                service: service.into(),
                max_skew: Duration::from_secs(300),
                replay,
            },
            Arc::new(Keys(HashMap::from([(
                k.access_key_id.clone(),
                Arc::new(k),
            )]))),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    /// AWS's published SigV4 test suite case `get-vanilla`.
    #[test]
    fn verifies_the_aws_test_suite_vanilla_request() {
        let verifier = verifier("us-east-1", "service");
        let request_headers = headers(&[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        ]);
        let now = parse_amz_date("20150830T123700Z").unwrap();
        let uri: Uri = "/".parse().unwrap();
        let ok = verifier
            .verify(&Method::GET, &uri, &request_headers, b"", now)
            .unwrap();
        assert_eq!(ok.identity().principal, "dev");
        // Within the window the same signature is accepted again, as AWS
        // does: it is what a client's same-second retry sends.
        verifier
            .verify(&Method::GET, &uri, &request_headers, b"", now)
            .unwrap();
    }

    fn signed(
        key: &SigningKey,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        at: SystemTime,
    ) -> (Method, Uri, HeaderMap) {
        let url = format!("http://127.0.0.1:8080{path_and_query}");
        let extra = [
            ("content-type", "application/json"),
            ("x-correlation-id", "abc"),
        ];
        let added = sign(key, method, &url, &extra, body, at).unwrap();
        let mut map = headers(&extra);
        map.insert("host", "127.0.0.1:8080".parse().unwrap());
        for (name, value) in added {
            map.insert(name, value.parse().unwrap());
        }
        (
            method.parse().unwrap(),
            path_and_query.parse().unwrap(),
            map,
        )
    }

    fn signing_key(secret: &str) -> SigningKey {
        SigningKey {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: secret.into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn accepts_what_aws_sigv4_signs_and_rejects_every_tampering() {
        let verifier = verifier("us-east-1", "execute-api");
        let good = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let now = SystemTime::now();
        let body = br#"{"plugin":"echo","input":1}"#;

        let (m, u, h) = signed(&good, "POST", "/dispatch?b=2&a=x%20y", body, now);
        verifier.verify(&m, &u, &h, body, now).unwrap();

        // Tampered body.
        let (m, u, h) = signed(&good, "POST", "/dispatch", body, now);
        let err = verifier
            .verify(&m, &u, &h, br#"{"plugin":"evil","input":1}"#, now)
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidSignature(_)), "{err}");

        // Tampered path.
        let (m, _, h) = signed(&good, "POST", "/dispatch", body, now);
        let err = verifier
            .verify(&m, &"/v1/dispatch".parse().unwrap(), &h, body, now)
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidSignature(_)), "{err}");

        // Tampered signed header.
        let (m, u, mut h) = signed(&good, "POST", "/dispatch", body, now);
        h.insert("x-correlation-id", "other".parse().unwrap());
        let err = verifier.verify(&m, &u, &h, body, now).unwrap_err();
        assert!(matches!(err, AuthError::InvalidSignature(_)), "{err}");

        // Wrong secret.
        let (m, u, h) = signed(
            &signing_key("not-the-secret"),
            "POST",
            "/dispatch",
            body,
            now,
        );
        let err = verifier.verify(&m, &u, &h, body, now).unwrap_err();
        assert!(matches!(err, AuthError::InvalidSignature(_)), "{err}");

        // Unknown key.
        let mut stranger = good.clone();
        stranger.access_key_id = "AKARNOBODY".into();
        let (m, u, h) = signed(&stranger, "POST", "/dispatch", body, now);
        assert_eq!(
            verifier.verify(&m, &u, &h, body, now).unwrap_err(),
            AuthError::UnknownAccessKey("AKARNOBODY".into())
        );

        // Signed too long ago, or in the future.
        let old = now - Duration::from_secs(600);
        let (m, u, h) = signed(&good, "POST", "/dispatch", body, old);
        assert!(matches!(
            verifier.verify(&m, &u, &h, body, now),
            Err(AuthError::SignatureExpired(_))
        ));
        let future = now + Duration::from_secs(600);
        let (m, u, h) = signed(&good, "POST", "/dispatch", body, future);
        assert!(matches!(
            verifier.verify(&m, &u, &h, body, now),
            Err(AuthError::SignatureExpired(_))
        ));

        // Wrong region.
        let mut elsewhere = good.clone();
        elsewhere.region = "eu-west-1".into();
        let (m, u, h) = signed(&elsewhere, "POST", "/dispatch", body, now);
        let err = verifier.verify(&m, &u, &h, body, now).unwrap_err();
        assert!(err.to_string().contains("region is `eu-west-1`"), "{err}");

        // No Authorization at all.
        let (m, u, mut h) = signed(&good, "POST", "/dispatch", body, now);
        h.remove("authorization");
        assert_eq!(
            verifier.verify(&m, &u, &h, body, now).unwrap_err(),
            AuthError::MissingAuthorization
        );
    }

    /// Every part of a signed request, changed after signing, is refused
    /// with a message that names the problem.
    #[test]
    fn the_tamper_matrix() {
        let verifier = verifier("us-east-1", "execute-api");
        let good = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let now = SystemTime::now();
        let body: &[u8] = br#"{"plugin":"echo","input":1}"#;
        let original = || signed(&good, "POST", "/dispatch?a=1&b=2", body, now);
        let (m, u, h) = original();
        verifier.verify(&m, &u, &h, body, now).unwrap();

        type Tamper = Box<dyn Fn(&mut Method, &mut Uri, &mut HeaderMap, &mut Vec<u8>)>;
        let set = |name: &'static str, value: &'static str| -> Tamper {
            Box::new(move |_, _, h, _| {
                h.insert(name, value.parse().unwrap());
            })
        };
        let in_authorization = |from: &str, to: &str| -> Tamper {
            let (from, to) = (from.to_owned(), to.to_owned());
            Box::new(move |_, _, h, _| {
                let value = h["authorization"].to_str().unwrap().replacen(&from, &to, 1);
                h.insert("authorization", value.parse().unwrap());
            })
        };
        let scope_date = crate::time::format_amz_date(now)[..8].to_owned();
        let yesterday =
            crate::time::format_amz_date(now - Duration::from_secs(86_400))[..8].to_owned();
        let cases: Vec<(&str, Tamper, &str)> = vec![
            (
                "method",
                Box::new(|m, _, _, _| *m = Method::PUT),
                "signature does not match",
            ),
            (
                "path",
                Box::new(|_, u, _, _| *u = "/v1/dispatch?a=1&b=2".parse().unwrap()),
                "signature does not match",
            ),
            (
                "query value",
                Box::new(|_, u, _, _| *u = "/dispatch?a=1&b=3".parse().unwrap()),
                "signature does not match",
            ),
            (
                "query added",
                Box::new(|_, u, _, _| *u = "/dispatch?a=1&b=2&c=3".parse().unwrap()),
                "signature does not match",
            ),
            (
                "query removed",
                Box::new(|_, u, _, _| *u = "/dispatch?a=1".parse().unwrap()),
                "signature does not match",
            ),
            (
                "host",
                set("host", "127.0.0.1:9999"),
                "signature does not match",
            ),
            (
                "content-type",
                set("content-type", "text/plain"),
                "signature does not match",
            ),
            (
                "x-correlation-id",
                set("x-correlation-id", "other"),
                "signature does not match",
            ),
            (
                "signed header repeated",
                Box::new(|_, _, h, _| {
                    h.append("x-correlation-id", "second".parse().unwrap());
                }),
                "signature does not match",
            ),
            (
                "x-amz-date",
                Box::new(|_, _, h, _| {
                    let later =
                        crate::time::format_amz_date(SystemTime::now() + Duration::from_secs(1));
                    h.insert("x-amz-date", later.parse().unwrap());
                }),
                "signature does not match",
            ),
            (
                "x-amz-content-sha256",
                set(
                    "x-amz-content-sha256",
                    "0000000000000000000000000000000000000000000000000000000000000000",
                ),
                "does not match `x-amz-content-sha256`",
            ),
            (
                "body",
                Box::new(|_, _, _, b| b.push(b' ')),
                "does not match `x-amz-content-sha256`",
            ),
            (
                "signed header removed",
                Box::new(|_, _, h, b| {
                    h.remove("x-amz-content-sha256");
                    b.push(b' ');
                }),
                "`x-amz-content-sha256` is not in the request",
            ),
            (
                "UNSIGNED-PAYLOAD",
                set("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
                "unsigned and streaming payloads",
            ),
            (
                "scope date",
                in_authorization(&scope_date, &yesterday),
                "scope date does not match",
            ),
            (
                "scope region",
                in_authorization("/us-east-1/", "/eu-west-1/"),
                "region is `eu-west-1`",
            ),
            (
                "scope service",
                in_authorization("/execute-api/", "/s3/"),
                "service is `s3`",
            ),
            (
                "SignedHeaders without host",
                in_authorization(
                    "SignedHeaders=content-type;host;",
                    "SignedHeaders=content-type;",
                ),
                "must include `host`",
            ),
            (
                "SignedHeaders unsorted",
                in_authorization(
                    "SignedHeaders=content-type;host;",
                    "SignedHeaders=host;content-type;",
                ),
                "sorted",
            ),
            (
                "presigned URL",
                Box::new(|_, u, h, _| {
                    h.remove("authorization");
                    *u = "/dispatch?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00"
                        .parse()
                        .unwrap();
                }),
                "presigned URLs are not accepted",
            ),
        ];
        for (name, tamper, expected) in cases {
            let (mut m, mut u, mut h) = original();
            let mut b = body.to_vec();
            tamper(&mut m, &mut u, &mut h, &mut b);
            let err = verifier.verify(&m, &u, &h, &b, now).unwrap_err();
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
    }

    /// Our canonical request against aws-sigv4's, for paths and queries
    /// where implementations differ: what aws-sigv4 signs must verify.
    #[test]
    fn tricky_paths_and_queries_verify_as_aws_sigv4_signs_them() {
        let verifier = verifier("us-east-1", "execute-api");
        let good = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let now = SystemTime::now();
        for path_and_query in [
            "/v1/plugins/a%2Fb",
            "/a/./b/../c",
            "/a/../../b",
            "//double//slashes/",
            "/trailing/",
            "/caf%C3%A9/%20space",
            "/dispatch?a=1+2",
            "/dispatch?a=b=c",
            "/dispatch?a=2&a=1&a=10",
            "/dispatch?b&a=",
            "/dispatch?key=%2F%3D%26%2B",
            "/dispatch?%E2%9C%93=%7E-_.",
            "/dispatch?z=1&Z=2&_=3",
        ] {
            let (m, u, h) = signed(&good, "GET", path_and_query, b"", now);
            verifier
                .verify(&m, &u, &h, b"", now)
                .unwrap_or_else(|e| panic!("{path_and_query}: {e}"));
        }
    }

    #[test]
    fn once_requires_the_unique_header_and_accepts_each_signature_once() {
        let verifier = verifier_with(
            "us-east-1",
            "execute-api",
            ReplayPolicy::Once {
                unique_header: "x-correlation-id",
                per_principal: 1000,
            },
        );
        let good = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let now = SystemTime::now();
        let (m, u, h) = signed(&good, "POST", "/v1/reason", b"{}", now);
        verifier.verify(&m, &u, &h, b"{}", now).unwrap();
        assert_eq!(
            verifier.verify(&m, &u, &h, b"{}", now).unwrap_err(),
            AuthError::Replayed
        );

        // Signed without the unique header: refused before any check.
        let strict = verifier_with(
            "us-east-1",
            "execute-api",
            ReplayPolicy::Once {
                unique_header: "x-orbit-request-id",
                per_principal: 1000,
            },
        );
        let (m, u, h) = signed(&good, "POST", "/v1/reason", b"{}", now);
        let err = strict.verify(&m, &u, &h, b"{}", now).unwrap_err();
        assert!(
            err.to_string()
                .contains("must include `x-orbit-request-id`"),
            "{err}"
        );
    }

    #[test]
    fn a_principal_flooding_the_replay_cache_does_not_lock_out_another() {
        let mut flooder = key("AKIDFLOOD", "flooder-secret");
        flooder.identity.principal = "flooder".into();
        let other = key("AKIDOTHER", "other-secret");
        let verifier = Verifier::new(
            VerifierConfig {
                replay: ReplayPolicy::Once {
                    unique_header: "x-correlation-id",
                    per_principal: 64,
                },
                ..VerifierConfig::default()
            },
            Arc::new(Keys(HashMap::from([
                (flooder.access_key_id.clone(), Arc::new(flooder)),
                (other.access_key_id.clone(), Arc::new(other)),
            ]))),
        );
        let as_key = |id: &str, secret: &str| SigningKey {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            region: "us-east-1".into(),
        };
        let now = SystemTime::now();
        let flood = as_key("AKIDFLOOD", "flooder-secret");
        let mut full = 0;
        for n in 0..1000 {
            let body = format!("{n}");
            let (m, u, h) = signed(&flood, "POST", "/v1/reason", body.as_bytes(), now);
            match verifier.verify(&m, &u, &h, body.as_bytes(), now) {
                Ok(_) => {}
                Err(AuthError::ReplayCacheFull(who)) => {
                    assert_eq!(who, "flooder");
                    full += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(full > 900, "the flooder was refused past its quota");
        let other = as_key("AKIDOTHER", "other-secret");
        // Fewer than a shard's share of the quota, wherever they land.
        for n in 0..4 {
            let body = format!("{n}");
            let (m, u, h) = signed(&other, "POST", "/v1/reason", body.as_bytes(), now);
            verifier.verify(&m, &u, &h, body.as_bytes(), now).unwrap();
        }
    }

    #[test]
    fn malformed_authorization_headers_are_clear_errors() {
        let verifier = verifier("us-east-1", "execute-api");
        let now = SystemTime::now();
        let amz = crate::time::format_amz_date(now);
        for (value, expected) in [
            ("Basic Zm9vOmJhcg==", "must use `AWS4-HMAC-SHA256`"),
            ("AWS4-HMAC-SHA256 Credential=A/B", "needs `Credential=`"),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=zz",
                "64 hex digits",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                "must include `x-amz-date`",
            ),
        ] {
            let h = headers(&[
                ("host", "h"),
                ("x-amz-date", &amz),
                ("authorization", value),
            ]);
            let err = verifier
                .verify(&Method::GET, &"/".parse().unwrap(), &h, b"", now)
                .unwrap_err();
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
    }
}
