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

use super::{Decision, PartsFn, Quota, RateLimiter};
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

/// The default quota, the routes that have their own, and the per-user tier.
#[derive(Clone)]
struct Quotas {
    default: Quota,
    routes: Arc<[(String, Quota)]>,
    /// Names a request's user (`None`: anonymous, not in this tier) and the user's quota.
    user: Option<(Quota, PartsFn)>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("default", &self.default)
            .field("routes", &self.routes)
            .field("user", &self.user.as_ref().map(|(quota, _)| quota))
            .finish()
    }
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
                user: None,
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
                routes: Arc::from(routes),
                ..self.quotas
            },
        }
    }

    /// Adds a per-user tier (seed 003's API tier): every request that `user` names a user
    /// for is also counted against `quota` under `ratelimit:user:{user}`, across routes and
    /// client addresses. A request must pass both; one refused by either counts in neither.
    pub fn per_user(self, quota: Quota, user: PartsFn) -> Self {
        Self {
            quotas: Quotas {
                user: Some((quota, user)),
                ..self.quotas
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
    checks: Arc<Checks>,
    limiter: Arc<RateLimiter>,
    decisions: Arc<Mutex<Option<Decisions>>>,
}

impl Deferred {
    /// Takes the decisions (once) and records them for the limiter; true when admitted.
    pub(crate) async fn decide(&self) -> bool {
        let decisions = decide(&self.limiter, &self.checks).await;
        let allowed = decisions.allowed();
        if let Ok(mut slot) = self.decisions.lock() {
            *slot = Some(decisions);
        }
        allowed
    }

    fn taken(&self) -> Option<Decisions> {
        self.decisions.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("checks", &self.checks.keys)
            .finish()
    }
}

/// The policies a request is counted against: (name, key, quota).
#[derive(Debug)]
struct Checks {
    names: Vec<&'static str>,
    keys: Vec<(String, Quota)>,
}

/// The decisions of every policy, in the order of [`Checks`].
#[derive(Debug, Clone)]
pub(crate) struct Decisions(Vec<(&'static str, Decision)>);

impl Decisions {
    fn allowed(&self) -> bool {
        self.0.iter().all(|(_, d)| d.allowed)
    }

    /// The policy that refused, else the one closest to its limit: the one whose
    /// `RateLimit-*` figures the client should heed.
    fn binding(&self) -> Option<&(&'static str, Decision)> {
        self.0
            .iter()
            .find(|(_, d)| !d.allowed)
            .or_else(|| self.0.iter().min_by_key(|(_, d)| d.remaining))
    }
}

async fn decide(limiter: &RateLimiter, checks: &Checks) -> Decisions {
    let decisions = limiter.check_all(&checks.keys).await;
    Decisions(checks.names.iter().copied().zip(decisions).collect())
}

fn seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn set(response: &mut Response<CacheBody>, name: &'static str, value: u64) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, value);
    }
}

fn decorate(mut response: Response<CacheBody>, decisions: &Decisions) -> Response<CacheBody> {
    let Some((name, decision)) = decisions.binding() else {
        return response;
    };
    set(&mut response, "ratelimit-limit", u64::from(decision.limit));
    set(
        &mut response,
        "ratelimit-remaining",
        u64::from(decision.remaining),
    );
    set(&mut response, "ratelimit-reset", seconds(decision.reset));
    // draft-ietf-httpapi-ratelimit-headers: every policy (quota, window), and the state of
    // the binding one (remaining, seconds to reset), as RFC 8941 lists.
    let policies: Vec<String> = decisions
        .0
        .iter()
        .map(|(name, d)| format!("\"{name}\";q={};w={}", d.limit, seconds(d.window)))
        .collect();
    let fields = [
        ("ratelimit-policy", policies.join(", ")),
        (
            "ratelimit",
            format!(
                "\"{name}\";r={};t={}",
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
pub(crate) fn too_many(decisions: &Decisions) -> Response<CacheBody> {
    let Some((_, decision)) = decisions.binding() else {
        return Response::new(full(Bytes::new()));
    };
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
    decorate(response, decisions)
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
            let mut checks = Checks {
                names: vec!["ip-route"],
                keys: vec![(key, quotas.for_route(route.as_deref()))],
            };
            if let Some((quota, user)) = &quotas.user {
                if let Some(user) = user(&parts) {
                    checks.names.push("user");
                    checks.keys.push((format!("ratelimit:user:{user}"), *quota));
                }
            }
            let cached_route = parts.method == Method::GET
                && route
                    .as_deref()
                    .is_some_and(|route| limiter.is_cached(route));
            if !cached_route {
                let decisions = decide(&limiter, &checks).await;
                if !decisions.allowed() {
                    return Ok(too_many(&decisions));
                }
                let response = inner.call(Request::from_parts(parts, body)).await?;
                return Ok(decorate(boxed(response), &decisions));
            }
            let deferred = Deferred {
                checks: Arc::new(checks),
                limiter: limiter.clone(),
                decisions: Arc::new(Mutex::new(None)),
            };
            parts.extensions.insert(deferred.clone());
            let response = inner.call(Request::from_parts(parts, body)).await?;
            let decisions = match deferred.taken() {
                Some(decisions) => decisions,
                // The cache layer always decides; this only runs if a route's layers changed
                // at runtime, and then counting late beats not counting.
                None => decide(&limiter, &deferred.checks).await,
            };
            if !decisions.allowed() {
                return Ok(too_many(&decisions));
            }
            Ok(decorate(boxed(response), &decisions))
        })
    }
}
