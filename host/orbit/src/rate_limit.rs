//! Rate limits per principal and per client address (GCRA, `governor`), and
//! the `X-RateLimit-*` headers every limited route answers with.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use auth::Authenticated;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use service_kit::{ApiError, ErrorCode};

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The headers every response of a limited route carries, for the
/// OpenAPI document. Not `required`: a request refused before routing (a
/// malformed `X-Correlation-ID`) is answered without them.
pub(crate) fn response_headers() -> serde_json::Value {
    let header = |description: &str| {
        serde_json::json!({
            "required": false,
            "description": description,
            "schema": { "type": "integer", "minimum": 0 },
        })
    };
    serde_json::json!({
        "X-RateLimit-Limit": header("The burst the tighter limit (the principal's, once signed; else the address's) allows."),
        "X-RateLimit-Remaining": header("Requests left in that burst now."),
        "X-RateLimit-Reset": header("Seconds until the burst is full again."),
    })
}

/// A rate: `per_second` sustained, bursts up to `burst`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Quota {
        let per_second = NonZeroU32::new(self.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst).unwrap_or(per_second);
        Quota::per_second(per_second).allow_burst(burst)
    }
}

type Limiter<K> = DefaultKeyedRateLimiter<K, StateInformationMiddleware>;

/// What one check found, for the headers.
#[derive(Debug, Clone, Copy)]
struct Standing {
    limit: u32,
    remaining: u32,
    reset: Duration,
}

struct Keyed<K: Hash + Eq + Clone> {
    limiter: Limiter<K>,
    quota: Quota,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(rate: Rate) -> Self {
        let quota = rate.quota();
        Self {
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            quota,
        }
    }

    fn check(&self, key: &K) -> Result<Standing, Standing> {
        let limit = self.quota.burst_size().get();
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let reset = self.quota.replenish_interval() * (limit - remaining);
                Ok(Standing {
                    limit,
                    remaining,
                    reset,
                })
            }
            Err(not_until) => Err(Standing {
                limit,
                remaining: 0,
                reset: not_until.wait_time_from(self.limiter.clock().now()),
            }),
        }
    }
}

/// The limits of one Orbit.
pub struct RateLimits {
    per_principal: Keyed<String>,
    per_ip: Keyed<IpAddr>,
    trust_forwarded_for: bool,
}

impl RateLimits {
    pub fn new(per_principal: Rate, per_ip: Rate, trust_forwarded_for: bool) -> Self {
        Self {
            per_principal: Keyed::new(per_principal),
            per_ip: Keyed::new(per_ip),
            trust_forwarded_for,
        }
    }

    /// Forgets keys idle long enough to be full again, to bound memory.
    pub fn prune(&self) {
        self.per_principal.limiter.retain_recent();
        self.per_ip.limiter.retain_recent();
    }

    /// The client's address: the peer, or with `--trust-forwarded-for` the
    /// last entry of `X-Forwarded-For`, the one the trusted proxy appended.
    /// Only that entry counts: when it does not parse, the entries before it
    /// (which the client wrote) are not consulted, and the peer is used.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trust_forwarded_for {
            return peer.ip();
        }
        let last = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        match last.and_then(service_kit::front_door::parse_forwarded) {
            Some(ip) => ip,
            None => {
                if last.is_some() {
                    tracing::debug!(%peer, "X-Forwarded-For's last entry is not an address; using the peer");
                }
                peer.ip()
            }
        }
    }

    /// The key a client address is limited under: an IPv4 address, or an
    /// IPv6 /64 (what one host usually holds, so rotating addresses within
    /// it neither escapes the limit nor grows the key map).
    pub fn client_key(&self, ip: IpAddr) -> IpAddr {
        service_kit::front_door::client_key(ip)
    }
}

/// Whole seconds, rounded up: a client that waits this long is not early.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn set_headers(response: &mut Response, standing: Standing, overwrite: bool) {
    let headers = response.headers_mut();
    if !overwrite && headers.contains_key(LIMIT) {
        return;
    }
    let reset_secs = ceil_secs(standing.reset);
    headers.insert(LIMIT, HeaderValue::from(standing.limit));
    headers.insert(REMAINING, HeaderValue::from(standing.remaining));
    headers.insert(RESET, HeaderValue::from(reset_secs));
}

fn limited(standing: Standing, scope: &str) -> Response {
    let retry = ceil_secs(standing.reset).max(1);
    let mut response = ApiError::new(
        ErrorCode::RateLimitExceeded,
        format!("too many requests from this {scope}; retry in {retry} s"),
    )
    .retry_after(retry)
    .into_response();
    set_headers(&mut response, standing, true);
    response
}

/// Middleware, before authentication: the per-address limit.
pub async fn per_ip(
    State(limits): State<Arc<RateLimits>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let ip = limits.client_ip(peer, request.headers());
    match limits.per_ip.check(&limits.client_key(ip)) {
        Ok(standing) => {
            let mut response = next.run(request).await;
            // The principal's standing, when there is one, is the tighter news.
            set_headers(&mut response, standing, false);
            response
        }
        Err(standing) => limited(standing, "address"),
    }
}

/// Middleware, after authentication: the per-principal limit.
pub async fn per_principal(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(principal) = request
        .extensions()
        .get::<Authenticated>()
        .map(|a| a.identity().principal.clone())
    else {
        return ApiError::internal("rate limiting ran before authentication").into_response();
    };
    match limits.per_principal.check(&principal) {
        Ok(standing) => {
            let mut response = next.run(request).await;
            set_headers(&mut response, standing, true);
            response
        }
        Err(standing) => limited(standing, "principal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_limited_with_a_reset() {
        let keyed = Keyed::<String>::new(Rate {
            per_second: 1,
            burst: 2,
        });
        let key = "dev".to_owned();
        let first = keyed.check(&key).unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        let second = keyed.check(&key).unwrap();
        assert_eq!(second.remaining, 0);
        let refused = keyed.check(&key).unwrap_err();
        assert_eq!(refused.remaining, 0);
        assert!(refused.reset > Duration::ZERO && refused.reset <= Duration::from_secs(1));
        // Another key has its own budget.
        assert!(keyed.check(&"other".to_owned()).is_ok());
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        let rate = Rate {
            per_second: 1,
            burst: 1,
        };
        assert_eq!(
            RateLimits::new(rate, rate, false).client_ip(peer, &headers),
            peer.ip()
        );
        assert_eq!(
            RateLimits::new(rate, rate, true).client_ip(peer, &headers),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn only_the_proxys_entry_of_forwarded_for_counts() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let rate = Rate {
            per_second: 1,
            burst: 1,
        };
        let limits = RateLimits::new(rate, rate, true);
        let client = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("x-forwarded-for", v.parse().unwrap());
            }
            limits.client_ip(peer, &headers)
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A forged entry before an unparseable last one is never used.
        assert_eq!(client(&["1.2.3.4, unknown"]), peer.ip());
        assert_eq!(client(&["1.2.3.4", "garbage"]), peer.ip());
        // Ports and brackets, as proxies write them.
        assert_eq!(client(&["1.2.3.4, 5.6.7.8:443"]), ip("5.6.7.8"));
        assert_eq!(client(&["[2001:db8::7]:443"]), ip("2001:db8::7"));
        // The last header's last entry.
        assert_eq!(client(&["9.9.9.9", "1.2.3.4, 5.6.7.8"]), ip("5.6.7.8"));
    }

    #[test]
    fn ipv6_clients_share_a_limit_per_64() {
        let rate = Rate {
            per_second: 1,
            burst: 1,
        };
        let limits = RateLimits::new(rate, rate, false);
        let a = limits.client_key("2001:db8:0:1::1".parse().unwrap());
        let b = limits.client_key("2001:db8:0:1:ffff::2".parse().unwrap());
        assert_eq!(a, b);
        assert!(limits.per_ip.check(&a).is_ok());
        assert!(
            limits.per_ip.check(&b).is_err(),
            "a second address of the /64 shares the budget"
        );
    }
}
