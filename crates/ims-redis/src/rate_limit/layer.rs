//! [`RateLimitLayer`]: applies a [`Quota`] per (client, route) through the [`RateLimiter`]
//! found in the request's extensions, with `RateLimit-*` headers and `429` problems.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower::{Layer, Service};

use super::{Decision, Quota, RateLimiter};
use crate::cache::{boxed, full, CacheBody};

/// Limits the routes it wraps to `quota` per client and route.
///
/// Every limited response carries `RateLimit-Limit`, `RateLimit-Remaining` and
/// `RateLimit-Reset` (seconds until a slot frees up); a refused request gets `429` with
/// `Retry-After` and an `application/problem+json` body, and never reaches the handler.
/// Without a [`RateLimiter`] extension, or when the limiter cannot identify the client or
/// route, requests pass untouched.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    quotas: Quotas,
}

/// The default quota and the routes that have their own.
#[derive(Debug, Clone)]
struct Quotas {
    default: Quota,
    routes: Arc<[(String, Quota)]>,
}

impl Quotas {
    fn for_route(&self, route: Option<&str>) -> Quota {
        route
            .and_then(|route| self.routes.iter().find(|(r, _)| r == route))
            .map(|(_, quota)| *quota)
            .unwrap_or(self.default)
    }
}

impl RateLimitLayer {
    /// Limits every wrapped route to `quota`.
    pub fn new(quota: Quota) -> Self {
        Self {
            quotas: Quotas {
                default: quota,
                routes: Arc::from(Vec::new()),
            },
        }
    }

    /// Gives `route` (as the limiter's route function names it, e.g. the route template
    /// `/auth/login`) its own `quota` instead of the default.
    pub fn route(self, route: &str, quota: Quota) -> Self {
        let mut routes: Vec<(String, Quota)> = self.quotas.routes.to_vec();
        routes.push((route.to_string(), quota));
        Self {
            quotas: Quotas {
                default: self.quotas.default,
                routes: Arc::from(routes),
            },
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            quotas: self.quotas.clone(),
        }
    }
}

/// The service produced by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    quotas: Quotas,
}

/// A check handed down to the cache layer of a cached `GET` route, which takes it together
/// with its lookup (one round trip) and leaves the decision for the limiter's headers.
#[derive(Clone)]
pub struct Deferred {
    key: String,
    quota: Quota,
    limiter: Arc<RateLimiter>,
    decision: Arc<Mutex<Option<Decision>>>,
}

impl Deferred {
    /// Takes the decision (once) and records it for the limiter.
    pub(crate) async fn decide(&self) -> Decision {
        let decision = self.limiter.check(&self.key, self.quota).await;
        if let Ok(mut slot) = self.decision.lock() {
            *slot = Some(decision);
        }
        decision
    }

    fn taken(&self) -> Option<Decision> {
        self.decision.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("key", &self.key)
            .field("quota", &self.quota)
            .finish()
    }
}

fn seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn set(response: &mut Response<CacheBody>, name: &'static str, value: u64) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, value);
    }
}

/// The policy's name in the IETF draft's structured fields.
const POLICY: &str = "ip-route";

fn decorate(mut response: Response<CacheBody>, decision: &Decision) -> Response<CacheBody> {
    set(&mut response, "ratelimit-limit", u64::from(decision.limit));
    set(
        &mut response,
        "ratelimit-remaining",
        u64::from(decision.remaining),
    );
    set(&mut response, "ratelimit-reset", seconds(decision.reset));
    // draft-ietf-httpapi-ratelimit-headers: the policy (quota, window) and its state
    // (remaining, seconds to reset), as RFC 8941 lists of one item.
    let fields = [
        (
            "ratelimit-policy",
            format!(
                "\"{POLICY}\";q={};w={}",
                decision.limit,
                seconds(decision.window)
            ),
        ),
        (
            "ratelimit",
            format!(
                "\"{POLICY}\";r={};t={}",
                decision.remaining,
                seconds(decision.reset)
            ),
        ),
    ];
    for (name, value) in fields {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The `429` for a refused request (RFC 9457 problem, `Retry-After`).
pub(crate) fn too_many(decision: &Decision) -> Response<CacheBody> {
    let retry = seconds(decision.reset).max(1);
    let body = format!(
        r#"{{"type":"/problems/too-many-requests","title":"Too Many Requests","status":429,"detail":"rate limit of {} requests exceeded; retry in {} s"}}"#,
        decision.limit, retry
    );
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    set(&mut response, "retry-after", retry);
    decorate(response, decision)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Response = Response<CacheBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let quotas = self.quotas.clone();
        Box::pin(async move {
            let limiter = request.extensions().get::<Arc<RateLimiter>>().cloned();
            let Some(limiter) = limiter else {
                return inner.call(request).await.map(boxed);
            };
            let (mut parts, body) = request.into_parts();
            let Some(key) = limiter.key_of(&parts) else {
                return inner
                    .call(Request::from_parts(parts, body))
                    .await
                    .map(boxed);
            };
            let route = limiter.route_of(&parts);
            let quota = quotas.for_route(route.as_deref());
            let cached_route = parts.method == Method::GET
                && route
                    .as_deref()
                    .is_some_and(|route| limiter.is_cached(route));
            if !cached_route {
                let decision = limiter.check(&key, quota).await;
                if !decision.allowed {
                    return Ok(too_many(&decision));
                }
                let response = inner.call(Request::from_parts(parts, body)).await?;
                return Ok(decorate(boxed(response), &decision));
            }
            let deferred = Deferred {
                key,
                quota,
                limiter: limiter.clone(),
                decision: Arc::new(Mutex::new(None)),
            };
            parts.extensions.insert(deferred.clone());
            let response = inner.call(Request::from_parts(parts, body)).await?;
            let decision = match deferred.taken() {
                Some(decision) => decision,
                // The cache layer always decides; this only runs if a route's layers changed
                // at runtime, and then counting late beats not counting.
                None => deferred.decide().await,
            };
            if !decision.allowed {
                return Ok(too_many(&decision));
            }
            Ok(decorate(boxed(response), &decision))
        })
    }
}
