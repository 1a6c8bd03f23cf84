//! [`RateLimitLayer`]: applies a [`Quota`] per (client, route) through the [`RateLimiter`]
//! found in the request's extensions, with `RateLimit-*` headers and `429` problems.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use smallvec::SmallVec;
use tower::{Layer, Service};

use super::{Decision, PartsFn, Quota, RateLimiter};
use crate::body::{boxed, full, LayerBody};

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Limits the routes it wraps to `quota` per client and route.
///
/// Every limited response carries `RateLimit-Limit`, `RateLimit-Remaining` and
/// `RateLimit-Reset` (seconds until a slot frees up); a refused request gets `429` with
/// `Retry-After` and an `application/problem+json` body, and never reaches the handler.
/// The limiter is the one given with [`with_limiter`](Self::with_limiter), else a
/// [`RateLimiter`] extension of the request; without either, or when the limiter cannot
/// identify the client or route, requests pass untouched.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    quotas: Quotas,
}

/// The default quota, the routes that have their own, and the per-user tier.
#[derive(Clone)]
struct Quotas {
    default: Quota,
    routes: Arc<[(String, Quota)]>,
    /// The header values of the default quota, then of each route's: the same few values
    /// on every response, made once.
    policy_values: Arc<[QuotaValues]>,
    /// Names a request's user (`None`: anonymous, not in this tier), the user's quota and
    /// its `RateLimit-Limit`.
    user: Option<(Quota, PartsFn, HeaderValue)>,
    /// The engine, when the layer was given one (else the request's extension).
    limiter: Option<Arc<RateLimiter>>,
}

/// The header values of one quota, made once.
#[derive(Debug)]
struct QuotaValues {
    /// `RateLimit-Policy` without and with the user tier.
    policy: [HeaderValue; 2],
    /// `RateLimit-Limit` (a limit above the shared table of small numbers cost two
    /// allocations a response).
    limit: HeaderValue,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("default", &self.default)
            .field("routes", &self.routes)
            .field("user", &self.user.as_ref().map(|(quota, _, _)| quota))
            .finish()
    }
}

impl Quotas {
    /// The policies `parts` is counted against; `None` when the limiter cannot name the
    /// client (the request passes unlimited).
    fn checks(&self, limiter: &RateLimiter, parts: &http::request::Parts) -> Option<Checks> {
        let (key, route) = limiter.key_and_route(parts)?;
        let (quota, index) = self.for_route(&route);
        let values = self.policy_values.get(index)?;
        let mut checks = Checks {
            names: SmallVec::new(),
            keys: SmallVec::new(),
            policy: values.policy[0].clone(),
        };
        checks.names.push(("ip-route", values.limit.clone()));
        checks.keys.push((key, quota));
        if let Some((quota, user, limit)) = &self.user {
            if let Some(user) = user(parts) {
                checks.names.push(("user", limit.clone()));
                checks
                    .keys
                    .push((["ratelimit:user:", &user].concat(), *quota));
                checks.policy = values.policy[1].clone();
            }
        }
        Some(checks)
    }

    /// The quota of `route` and its index in `policy_values`.
    fn for_route(&self, route: &str) -> (Quota, usize) {
        self.routes
            .iter()
            .position(|(r, _)| r == route)
            .map_or((self.default, 0), |i| (self.routes[i].1, i + 1))
    }

    fn with_policy_values(self) -> Self {
        let user = self.user.as_ref().map(|(quota, _, _)| *quota);
        let values = std::iter::once(self.default)
            .chain(self.routes.iter().map(|(_, quota)| *quota))
            .map(|quota| {
                let own = policy_item("ip-route", quota);
                let with_user = match user {
                    Some(user) => format!("{own}, {}", policy_item("user", user)),
                    None => own.clone(),
                };
                QuotaValues {
                    policy: [own, with_user].map(|text| {
                        HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""))
                    }),
                    limit: HeaderValue::from(quota.limit),
                }
            })
            .collect::<Vec<_>>();
        Self {
            policy_values: Arc::from(values),
            ..self
        }
    }
}

/// One policy of `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers, an RFC 8941
/// list item): name, quota, window in seconds.
fn policy_item(name: &str, quota: Quota) -> String {
    format!("\"{name}\";q={};w={}", quota.limit, seconds(quota.window))
}

impl RateLimitLayer {
    /// Limits every wrapped route to `quota`.
    pub fn new(quota: Quota) -> Self {
        Self {
            quotas: Quotas {
                default: quota,
                routes: Arc::from(Vec::new()),
                policy_values: Arc::from(Vec::new()),
                user: None,
                limiter: None,
            }
            .with_policy_values(),
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
            }
            .with_policy_values(),
        }
    }

    /// Counts with `limiter` instead of the one in each request's extensions (spares every
    /// request an extension to insert and look up).
    pub fn with_limiter(self, limiter: Arc<RateLimiter>) -> Self {
        Self {
            quotas: Quotas {
                limiter: Some(limiter),
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
                user: Some((quota, user, HeaderValue::from(quota.limit))),
                ..self.quotas
            }
            .with_policy_values(),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            // One reference count per request's clone of the service, not one per part.
            quotas: Arc::new(self.quotas.clone()),
        }
    }
}

/// The service produced by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    quotas: Arc<Quotas>,
}

/// The policies a request is counted against: (name and `RateLimit-Limit`, key and quota);
/// at most two, kept inline.
#[derive(Debug)]
struct Checks {
    names: SmallVec<[(&'static str, HeaderValue); 2]>,
    keys: SmallVec<[(String, Quota); 2]>,
    /// Their `RateLimit-Policy` header.
    policy: HeaderValue,
}

impl Checks {
    /// `decisions` (one per policy, in order) named, with the policy header.
    fn decided(&self, decisions: SmallVec<[Decision; 2]>) -> Decisions {
        Decisions(
            self.names
                .iter()
                .zip(decisions)
                .map(|((name, limit), decision)| Decided {
                    name,
                    limit: limit.clone(),
                    decision,
                })
                .collect(),
            self.policy.clone(),
        )
    }
}

/// The decisions of every policy, in the order of [`Checks`].
#[derive(Debug, Clone)]
pub(crate) struct Decisions(SmallVec<[Decided; 2]>, HeaderValue);

/// One policy's decision, with its name and `RateLimit-Limit`.
#[derive(Debug, Clone)]
struct Decided {
    name: &'static str,
    limit: HeaderValue,
    decision: Decision,
}

impl Decisions {
    fn allowed(&self) -> bool {
        self.0.iter().all(|d| d.decision.allowed)
    }

    /// The policy that refused (of several, the one that frees a slot last: the request
    /// needs room in all), else the one closest to its limit: the one whose `RateLimit-*`
    /// figures and `Retry-After` the client should heed.
    fn binding(&self) -> Option<&Decided> {
        self.0
            .iter()
            .filter(|d| !d.decision.allowed)
            .max_by_key(|d| d.decision.reset)
            .or_else(|| self.0.iter().min_by_key(|d| d.decision.remaining))
    }
}

fn seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn set(response: &mut Response<LayerBody>, name: &HeaderName, value: u64) {
    response
        .headers_mut()
        .insert(name.clone(), crate::numbers::header_value(value));
}

fn decorate(mut response: Response<LayerBody>, decisions: &Decisions) -> Response<LayerBody> {
    let Some(Decided {
        name,
        limit,
        decision,
    }) = decisions.binding()
    else {
        return response;
    };
    let reset = seconds(decision.reset);
    response
        .headers_mut()
        .insert(RATELIMIT_LIMIT.clone(), limit.clone());
    set(
        &mut response,
        &RATELIMIT_REMAINING,
        u64::from(decision.remaining),
    );
    set(&mut response, &RATELIMIT_RESET, reset);
    // draft-ietf-httpapi-ratelimit-headers: every policy (quota, window), and the state of
    // the binding one (remaining, seconds to reset), as RFC 8941 lists. Numbers written
    // with `itoa`, as `HeaderValue::from` does: `format!` cost more than the rest of the
    // limiter's work on a leased slot.
    let (mut remaining, mut seconds) = (itoa::Buffer::new(), itoa::Buffer::new());
    let binding = [
        "\"",
        name,
        "\";r=",
        remaining.format(decision.remaining),
        ";t=",
        seconds.format(reset),
    ]
    .concat();
    let headers = response.headers_mut();
    headers.insert(RATELIMIT_POLICY.clone(), decisions.1.clone());
    if let Ok(value) = HeaderValue::try_from(binding) {
        headers.insert(RATELIMIT.clone(), value);
    }
    response
}

/// The `429` for a refused request (RFC 9457 problem, `Retry-After`).
pub(crate) fn too_many(decisions: &Decisions) -> Response<LayerBody> {
    let Some(Decided { decision, .. }) = decisions.binding() else {
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
    set(&mut response, &header::RETRY_AFTER, retry);
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
    type Response = Response<LayerBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let limiter = self
            .quotas
            .limiter
            .clone()
            .or_else(|| parts.extensions.get::<Arc<RateLimiter>>().cloned());
        // No limiter, or no client or route to count: the request passes untouched.
        let limited = limiter.and_then(|limiter| {
            let checks = self.quotas.checks(&limiter, &parts)?;
            Some((limiter, checks))
        });
        let Some((limiter, checks)) = limited else {
            let response = self.inner.call(Request::from_parts(parts, body));
            return Box::pin(async move { response.await.map(boxed) });
        };
        // Decided before the handler (a cached read included), so the cache layer needs to
        // know nothing of limits. A busy client's request is usually admitted with slots
        // its leases already hold: the inner service, driven to readiness, is called at
        // once, and the future is only the response's.
        if let Some(decisions) = limiter.decide_now(&checks.keys) {
            let decisions = checks.decided(decisions);
            let response = self.inner.call(Request::from_parts(parts, body));
            return Box::pin(async move { Ok(decorate(boxed(response.await?), &decisions)) });
        }
        // Else Redis is asked (or a reservation in flight awaited) first; the clone that
        // was driven to readiness is the one to call once admitted.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let decisions = checks.decided(limiter.check_all(&checks.keys).await);
            if !decisions.allowed() {
                return Ok(too_many(&decisions));
            }
            let response = inner.call(Request::from_parts(parts, body)).await?;
            Ok(decorate(boxed(response), &decisions))
        })
    }
}
