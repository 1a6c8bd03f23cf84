//! [`CacheLayer`]: caches a route's `GET` responses through the [`ResponseCache`] it was
//! given, or else the one found in the request's extensions.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use super::{push_query_hash, Cached, Event, Flight, Lookup, ResponseCache, Seen};
use crate::body::{boxed, full, LayerBody};

/// The body type of responses that went through the cache layer.
pub type CacheBody = LayerBody;

/// Caches `GET` responses of the routes it wraps under `key_prefix` for `ttl`.
///
/// Only `200` responses of requests with a scope are stored, never with `Set-Cookie`. A
/// `HEAD` is served as its `GET` (the HTTP server sends no body for it).
/// Every response of a scoped `GET` carries `X-Cache: HIT|MISS|BYPASS` and `X-Cache-TTL`
/// (seconds left; 0 when nothing is stored); cached ones carry an `ETag` and answer a
/// matching `If-None-Match` with `304`. `Cache-Control: no-cache` runs the handler without
/// reading or writing the cache. Concurrent misses of one key in one process run the
/// handler once. The engine is the one given with [`with_engine`](Self::with_engine), else a
/// [`ResponseCache`] extension of the request; without either the layer does nothing.
#[derive(Debug, Clone)]
pub struct CacheLayer {
    policy: Arc<Policy>,
}

/// Names the representation a request asks for (`None`: the default one).
pub type VaryFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

#[derive(Clone)]
struct Policy {
    key_prefix: String,
    ttl: Duration,
    /// Append the path's last segment to the key prefix (`stats` → `stats:{type}`).
    per_last_segment: bool,
    /// Served from the in-process tier too, at most this stale (capped by the engine's
    /// `CACHE_L1_MAX_STALE_MS`); `None`: Redis only.
    l1_max_stale: Option<Duration>,
    /// Concurrent misses of one key run the handler once across all instances.
    cluster_single_flight: bool,
    /// Representations cached apart (vary-by): appended to the key when `Some`.
    vary: Option<VaryFn>,
    /// Entity tag of the entry: `{name}:{last path segment}` (e.g. `post:42`).
    tag_by_last_segment: Option<String>,
    /// The engine, when the layer was given one (else the request's extension).
    engine: Option<Arc<ResponseCache>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("key_prefix", &self.key_prefix)
            .field("ttl", &self.ttl)
            .field("per_last_segment", &self.per_last_segment)
            .field("l1_max_stale", &self.l1_max_stale)
            .field("cluster_single_flight", &self.cluster_single_flight)
            .field("vary", &self.vary.is_some())
            .field("tag_by_last_segment", &self.tag_by_last_segment)
            .field("engine", &self.engine.is_some())
            .finish()
    }
}

impl CacheLayer {
    /// Caches under `key_prefix` (e.g. `posts:list`) for `ttl`.
    pub fn new(key_prefix: impl Into<String>, ttl: Duration) -> Self {
        Self {
            policy: Arc::new(Policy {
                key_prefix: key_prefix.into(),
                ttl,
                per_last_segment: false,
                l1_max_stale: None,
                cluster_single_flight: false,
                vary: None,
                tag_by_last_segment: None,
                engine: None,
            }),
        }
    }

    /// Also serves the route from the in-process tier (L1), at most as stale as the
    /// engine's bound (`CACHE_L1_MAX_STALE_MS`). For reads that change rarely or cost much,
    /// where a user accepts that another instance's write shows up within that bound.
    pub fn with_l1(self) -> Self {
        self.with_l1_max_stale(Duration::MAX)
    }

    /// Concurrent misses of one key run the handler once across every instance sharing the
    /// Redis: one takes a lock (`lock::Locks`), the others wait for its stored result, up
    /// to a 15 s lease after which another takes over. For handlers expensive enough that
    /// running them once matters more than the extra round trips of a miss.
    pub fn with_cluster_single_flight(self) -> Self {
        let mut policy = (*self.policy).clone();
        policy.cluster_single_flight = true;
        Self {
            policy: Arc::new(policy),
        }
    }

    /// Caches the representations `vary` names apart (seed 004's vary-by): a request for
    /// which it returns `Some(name)` is stored under the key with `:{name}` appended, and
    /// `None` (the default representation) under the plain key. Name the representation
    /// the handler will choose (e.g. `csv` for `Accept: text/csv`), not the raw header,
    /// so that equivalent requests share an entry. The handler should say `Vary`.
    pub fn vary_with(self, vary: VaryFn) -> Self {
        let mut policy = (*self.policy).clone();
        policy.vary = Some(vary);
        Self {
            policy: Arc::new(policy),
        }
    }

    /// Tags each entry with its entity, `{name}:{last path segment}` (`/posts/42` with
    /// `post` → `post:42`), so that a write to that entity alone can drop it
    /// ([`crate::invalidate::InvalidateLayer::tag_by_last_segment`]) while the other
    /// entities' entries stay. The entry still belongs to its group and key prefix.
    pub fn tag_by_last_segment(self, name: &str) -> Self {
        let mut policy = (*self.policy).clone();
        policy.tag_by_last_segment = Some(name.to_string());
        Self {
            policy: Arc::new(policy),
        }
    }

    /// Caches through `engine` instead of the [`ResponseCache`] in each request's
    /// extensions: spares every request of the route an extension to insert and look up.
    pub fn with_engine(self, engine: Arc<ResponseCache>) -> Self {
        let mut policy = (*self.policy).clone();
        policy.engine = Some(engine);
        Self {
            policy: Arc::new(policy),
        }
    }

    /// Like [`with_l1`](Self::with_l1), at most `max_stale` stale (and never more than the
    /// engine's bound).
    pub fn with_l1_max_stale(self, max_stale: Duration) -> Self {
        let mut policy = (*self.policy).clone();
        policy.l1_max_stale = Some(max_stale);
        Self {
            policy: Arc::new(policy),
        }
    }

    /// Caches under `key_prefix:{last path segment}`, for one route serving several kinds
    /// of response (`/stats/{type}` → `stats:by-author`). Only `200` responses are
    /// stored, so only segments the handler accepts ever reach a key.
    pub fn per_last_segment(key_prefix: impl Into<String>, ttl: Duration) -> Self {
        Self {
            policy: Arc::new(Policy {
                key_prefix: key_prefix.into(),
                ttl,
                per_last_segment: true,
                l1_max_stale: None,
                cluster_single_flight: false,
                vary: None,
                tag_by_last_segment: None,
                engine: None,
            }),
        }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner: Arc::new(inner),
            policy: self.policy.clone(),
        }
    }
}

/// The service produced by [`CacheLayer`].
#[derive(Debug, Clone)]
pub struct CacheService<S> {
    /// Shared, and cloned only for a request that reaches it: a hit never does, and cloning
    /// a boxed route (an allocation, and a reference count for everything it holds) on
    /// every request showed in the profile of a hit.
    inner: Arc<S>,
    policy: Arc<Policy>,
}

/// A clone of `inner`, driven to readiness, for one request that needs the handler.
async fn ready<S, R>(inner: &S) -> Result<S, S::Error>
where
    S: Service<R> + Clone,
{
    inner.clone().ready_oneshot().await
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
static X_CACHE_TTL: HeaderName = HeaderName::from_static("x-cache-ttl");
static X_CACHE_TIER: HeaderName = HeaderName::from_static("x-cache-tier");

/// `X-Cache-Tier` of a hit: `L1` (process memory) or `L2` (Redis).
fn tier(response: &mut Response<CacheBody>, tier: &'static str) {
    response
        .headers_mut()
        .insert(X_CACHE_TIER.clone(), HeaderValue::from_static(tier));
}

fn mark(response: &mut Response<CacheBody>, status: &'static str, ttl: Duration) {
    let headers = response.headers_mut();
    // Per tenant, so never for a shared cache; the client may keep it but must revalidate
    // (its ETag makes that a 304). A handler's own Cache-Control wins.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
    }
    headers.insert(X_CACHE.clone(), HeaderValue::from_static(status));
    let seconds = u64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
    headers.insert(X_CACHE_TTL.clone(), crate::numbers::header_value(seconds));
}

/// Headers a replayed `200` usually ends up with besides the entry's own.
const REPLAY_HEADERS: usize = 16;

/// The stored fields a `304` repeats (RFC 9110 §15.4.5; `ETag` and `Date` come apart).
const NOT_MODIFIED_KEEPS: [&str; 4] = ["cache-control", "content-location", "expires", "vary"];

/// The entry's own header fields (those that parse: all, unless the entry was damaged).
fn stored_headers(cached: &Cached) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
    cached.headers.iter().filter_map(|(name, value)| {
        Some((
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(value).ok()?,
        ))
    })
}

/// The response for a cached entry: `304` when the client already has it.
fn replay(cached: &Cached, if_none_match: Option<&HeaderValue>) -> Response<CacheBody> {
    let matches = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // Weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`.
            let ours = cached.etag.to_str().unwrap_or_default();
            let ours = ours.trim_start_matches("W/");
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
        });
    let mut response = if matches {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        // RFC 9110 §15.4.5: a 304 carries the fields a 200 would have had among these (a
        // report's `Vary: Accept` was missing, found by a probe); the cache layer adds its
        // `Cache-Control` on the way out unless the entry has its own.
        for (name, value) in stored_headers(cached) {
            if NOT_MODIFIED_KEEPS.contains(&name.as_str()) {
                r.headers_mut().append(name, value);
            }
        }
        r
    } else {
        let mut r = Response::new(full(cached.body.clone()));
        // Room for the entry's headers and those the layers add on the way out (cache
        // marks, rate-limit fields, request id): the map is not regrown on every hit.
        *r.headers_mut() = http::HeaderMap::with_capacity(REPLAY_HEADERS + cached.headers.len());
        let headers = r.headers_mut();
        headers.insert(header::CONTENT_TYPE, cached.content_type.clone());
        for (name, value) in stored_headers(cached) {
            headers.append(name, value);
        }
        r
    };
    response
        .headers_mut()
        .insert(header::ETAG, cached.etag.clone());
    response
}

fn no_cache(request: &http::request::Parts) -> bool {
    let says_no_cache = |lines: http::header::GetAll<'_, HeaderValue>| {
        lines.iter().filter_map(|v| v.to_str().ok()).any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        })
    };
    // HTTP/1.0's `Pragma: no-cache` means the same when `Cache-Control` is absent (RFC 9111
    // §5.4; found by a probe). `Cache-Control` is looked up once, as before.
    let cache_control = request.headers.get_all(header::CACHE_CONTROL);
    if cache_control.iter().next().is_some() {
        says_no_cache(cache_control)
    } else {
        says_no_cache(request.headers.get_all(header::PRAGMA))
    }
}

/// The request's `If-None-Match`, its lines joined as one list: several lines mean the
/// same as one comma-separated line (RFC 9110 §5.3), and only the first was read (found by
/// a probe).
fn if_none_match(request: &http::request::Parts) -> Option<HeaderValue> {
    let mut lines = request.headers.get_all(header::IF_NONE_MATCH).iter();
    let first = lines.next()?;
    let mut joined: Option<Vec<u8>> = None;
    for line in lines {
        let list = joined.get_or_insert_with(|| first.as_bytes().to_vec());
        list.extend_from_slice(b", ");
        list.extend_from_slice(line.as_bytes());
    }
    match joined {
        None => Some(first.clone()),
        Some(list) => HeaderValue::from_bytes(&list).ok(),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Response = Response<CacheBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    /// Always ready: the inner service is made ready by the request that calls it (see
    /// [`ready`]).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        Box::pin(handle(self.inner.clone(), self.policy.clone(), request))
    }
}

/// Removes a leader's flight when it ends, however it ends (also when the request is
/// dropped mid-way: followers then see the sender gone and run their own handler).
struct FlightGuard<'a> {
    cache: &'a ResponseCache,
    key: &'a str,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.cache.land_flight(self.key);
    }
}

/// Headers an entry does not keep: its own lines (type, tag), framing, per-response ones,
/// and those the cache and outer layers set on every answer.
const NOT_STORED: [&str; 12] = [
    "content-type",
    "etag",
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "age",
    "set-cookie",
    "x-cache",
    "x-cache-ttl",
    "x-cache-tier",
    "x-request-id",
];

/// Buffers a cacheable response (`200`, no `Set-Cookie`, a body of at most `max_bytes`);
/// anything else passes through.
pub(crate) async fn capture<B>(
    response: Response<B>,
    max_bytes: usize,
) -> (Option<Cached>, Response<CacheBody>)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    if response.status() != StatusCode::OK || response.headers().contains_key(header::SET_COOKIE) {
        return (None, boxed(response));
    }
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_bytes) {
        return (None, boxed(response));
    }
    let kept: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| !NOT_STORED.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            if bytes.len() > max_bytes {
                // Served, not stored (CACHE_MAX_ENTRY_BYTES).
                return (None, Response::from_parts(parts, full(bytes)));
            }
            let cached = Cached::new(content_type, bytes.clone()).with_headers(kept);
            (Some(cached), Response::from_parts(parts, full(bytes)))
        }
        Err(e) => {
            tracing::warn!("response body failed while caching: {}", e.into());
            let mut failed = Response::new(full(Bytes::new()));
            *failed.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            (None, failed)
        }
    }
}

async fn handle<S, ReqBody, ResBody>(
    inner: Arc<S>,
    policy: Arc<Policy>,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    // A HEAD is answered as the GET it stands for (RFC 9110 §9.3.2: the same header
    // fields): looked up, replayed (304 included), stored and marked alike, the handler
    // asked for the GET; the HTTP server sends no body for a HEAD. Passed by, it ran the
    // handler every time and answered none of the cache's headers (found by a probe).
    let is_head = request.method() == Method::HEAD;
    let is_get = request.method() == Method::GET || is_head;
    let cache = policy
        .engine
        .clone()
        .or_else(|| request.extensions().get::<Arc<ResponseCache>>().cloned());
    let Some(cache) = cache.filter(|_| is_get) else {
        return ready(&*inner).await?.call(request).await.map(boxed);
    };
    let (mut parts, body) = request.into_parts();
    if is_head {
        parts.method = Method::GET;
    }
    let scope = cache.scope_of(&parts);
    let Some(scope) = scope else {
        return ready(&*inner)
            .await?
            .call(Request::from_parts(parts, body))
            .await
            .map(boxed);
    };
    if no_cache(&parts) {
        cache.count(&scope, Event::Bypass);
        let mut response = ready(&*inner)
            .await?
            .call(Request::from_parts(parts, body))
            .await
            .map(boxed)?;
        mark(&mut response, "BYPASS", Duration::ZERO);
        return Ok(response);
    }
    let if_none_match = if_none_match(&parts);
    let key_prefix = if policy.per_last_segment {
        let segment = parts.uri.path().rsplit('/').next().unwrap_or_default();
        std::borrow::Cow::Owned(format!("{}:{segment}", policy.key_prefix))
    } else {
        std::borrow::Cow::Borrowed(policy.key_prefix.as_str())
    };
    let key_prefix = key_prefix.as_ref();
    let variant = policy.vary.as_ref().and_then(|vary| vary(&parts));
    let tag = policy
        .tag_by_last_segment
        .as_ref()
        .map(|name| super::last_segment_tag(name, parts.uri.path()));
    let tag = tag.as_deref();
    // The L1 key is the request's path and query as sent: no hashing on the hit path. The
    // same query in another order is another L1 entry of the same Redis entry; invalidation
    // goes by scope and group, so both are dropped alike.
    // With the tier off (`max_stale` zero) no key is made: there is nothing to find or keep.
    let l1 = policy
        .l1_max_stale
        .filter(|_| cache.l1_serves())
        .map(|bound| {
            let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
            let target = match &variant {
                Some(variant) => format!("{target}#{variant}"),
                None => target.to_string(),
            };
            (super::l1_key(&scope, key_prefix, &target), bound)
        });
    if let Some((key, bound)) = &l1 {
        if let Some((cached, ttl)) = cache.l1_get(key, *bound) {
            cache.count(&scope, Event::Hit);
            let mut response = replay(&cached, if_none_match.as_ref());
            mark(&mut response, "HIT", ttl);
            tier(&mut response, "L1");
            return Ok(response);
        }
    }
    // What L1 records below was current no later than now: staleness counts from here.
    let fresh_at = std::time::Instant::now();
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    let mut rest = String::with_capacity(method.len() + path.len() + 34);
    for part in [method, ":", path, ":"] {
        rest.push_str(part);
    }
    push_query_hash(&mut rest, parts.uri.query());
    if let Some(variant) = &variant {
        rest.push(':');
        rest.push_str(variant);
    }
    let seen = match cache.lookup(&scope, key_prefix, &rest, tag).await {
        Lookup::Hit(cached, ttl) => {
            cache.count(&scope, Event::Hit);
            let mut response = replay(&cached, if_none_match.as_ref());
            mark(&mut response, "HIT", ttl);
            tier(&mut response, if cache.is_local() { "L1" } else { "L2" });
            if let Some((key, _)) = l1 {
                cache.l1_insert(key, &scope, key_prefix, Arc::new(cached), fresh_at, ttl);
            }
            return Ok(response);
        }
        Lookup::Miss(seen) => Some(seen),
        Lookup::Unavailable => None,
    };
    // A miss holds far more (single flight, the handler's response, the store) than a hit
    // needs: in a box of its own, so that every request's future stays small (it was
    // 3.6 KB, allocated and copied on every hit).
    let key_prefix = key_prefix.to_string();
    let miss = Miss {
        cache,
        policy,
        scope,
        key_prefix,
        rest,
        tag: tag.map(str::to_string),
        l1,
        fresh_at,
        if_none_match,
        seen,
    };
    Box::pin(miss.run(inner, parts, body)).await
}

/// What a miss carries on from the lookup.
struct Miss {
    cache: Arc<ResponseCache>,
    policy: Arc<Policy>,
    scope: String,
    key_prefix: String,
    rest: String,
    tag: Option<String>,
    l1: Option<(String, Duration)>,
    fresh_at: std::time::Instant,
    if_none_match: Option<HeaderValue>,
    /// What the lookup saw (`None`: Redis did not answer, nothing is stored).
    seen: Option<Seen>,
}

impl Miss {
    /// Runs the handler (once per flight) and stores its answer if nothing changed since
    /// the lookup.
    async fn run<S, ReqBody, ResBody>(
        self,
        inner: Arc<S>,
        parts: http::request::Parts,
        body: ReqBody,
    ) -> Result<Response<CacheBody>, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<tower::BoxError>,
    {
        let Miss {
            cache,
            policy,
            scope,
            key_prefix,
            rest,
            tag,
            l1,
            fresh_at,
            if_none_match,
            seen,
        } = self;
        let (key_prefix, tag) = (key_prefix.as_str(), tag.as_deref());
        // Only misses that saw the same epoch share a handler run: a miss that started after an
        // invalidation must not be answered by a run that started before it.
        let flight = match &seen {
            Some(seen) => {
                let key = format!(
                    "{scope}:{key_prefix}:{rest}:{}:{}",
                    seen.epochs_text(),
                    seen.generation
                );
                Some((cache.join_flight(&key), key))
            }
            None => None,
        };
        let (sender, flight_key) = match flight {
            Some((Flight::Follower(mut receiver), _)) => {
                let shared = match receiver.changed().await {
                    Ok(()) => receiver.borrow().clone(),
                    Err(_) => None,
                };
                if let Some((cached, fresh_until)) = shared {
                    cache.count(&scope, Event::Coalesced);
                    let mut response = replay(&cached, if_none_match.as_ref());
                    match fresh_until {
                        // The stored entry, as a hit from the store says it.
                        Some(until) => {
                            cache.count(&scope, Event::Hit);
                            let ttl = until.saturating_duration_since(std::time::Instant::now());
                            mark(&mut response, "HIT", ttl);
                            tier(&mut response, if cache.is_local() { "L1" } else { "L2" });
                        }
                        // The leader's answer, which nothing stored.
                        None => {
                            cache.count(&scope, Event::Miss);
                            mark(&mut response, "MISS", Duration::ZERO);
                        }
                    }
                    return Ok(response);
                }
                (None, None)
            }
            Some((Flight::Leader(sender), key)) => (Some(sender), Some(key)),
            Some((Flight::Alone, _)) | None => (None, None),
        };
        let _guard = flight_key
            .as_deref()
            .map(|key| FlightGuard { cache: &cache, key });
        let mut seen = seen;
        let mut lock = None;
        if policy.cluster_single_flight {
            if let Some(first) = seen.take() {
                match cache
                    .cluster_flight(&scope, key_prefix, &rest, tag, first)
                    .await
                {
                    super::Shared::Hit(cached, ttl) => {
                        let cached = Arc::new(cached);
                        if let Some(sender) = sender {
                            let until = std::time::Instant::now() + ttl;
                            sender.send_replace(Some((cached.clone(), Some(until))));
                        }
                        if let Some((key, _)) = l1 {
                            cache.l1_insert(key, &scope, key_prefix, cached.clone(), fresh_at, ttl);
                        }
                        cache.count(&scope, Event::Hit);
                        let mut response = replay(&cached, if_none_match.as_ref());
                        mark(&mut response, "HIT", ttl);
                        tier(&mut response, "L2");
                        return Ok(response);
                    }
                    super::Shared::Run(guard, latest) => {
                        lock = guard;
                        seen = latest;
                    }
                }
            }
        }
        cache.count(&scope, Event::Miss);
        let response = ready(&*inner)
            .await?
            .call(Request::from_parts(parts, body))
            .await?;
        if response.status().is_server_error() {
            // stale-if-error: the handler failed (the database is away or timed out) and an
            // expired entry is still within its grace period. An invalidated entry was deleted,
            // so it is never found here.
            if let Some((stale, age)) = seen.as_ref().and_then(|seen| seen.stale()) {
                if let Some(sender) = sender {
                    sender.send_replace(None);
                }
                if let Some(lock) = lock {
                    lock.release().await;
                }
                tracing::warn!(
                    status = response.status().as_u16(),
                    "handler failed; answering with a stale cache entry"
                );
                let mut stale_response = replay(stale, if_none_match.as_ref());
                mark(&mut stale_response, "STALE", Duration::ZERO);
                stale_response
                    .headers_mut()
                    .insert(header::AGE, header_value(&age.as_secs().to_string()));
                return Ok(stale_response);
            }
        }
        let (cached, response) = capture(response, cache.max_entry_bytes()).await;
        let Some(cached) = cached else {
            if let Some(sender) = sender {
                sender.send_replace(None);
            }
            // Nothing to wait for: the next instance in line runs its own handler now.
            if let Some(lock) = lock {
                lock.release().await;
            }
            let mut response = response;
            mark(&mut response, "MISS", Duration::ZERO);
            return Ok(response);
        };
        let stored = match &seen {
            Some(seen) => {
                cache
                    .store(&scope, key_prefix, &rest, tag, &cached, policy.ttl, seen)
                    .await
            }
            None => None,
        };
        let cached = Arc::new(cached);
        if let Some(sender) = sender {
            let until = stored.map(|ttl| std::time::Instant::now() + ttl);
            sender.send_replace(Some((cached.clone(), until)));
        }
        if let (Some((key, _)), Some(ttl)) = (l1, stored) {
            cache.l1_insert(key, &scope, key_prefix, cached.clone(), fresh_at, ttl);
        }
        // After the store, so that an instance that takes the lock next finds the entry.
        if let Some(lock) = lock {
            lock.release().await;
        }
        let mut response = replay(&cached, if_none_match.as_ref());
        mark(&mut response, "MISS", stored.unwrap_or(Duration::ZERO));
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_keep_the_handlers_headers_and_large_bodies_are_not_stored() {
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "text/csv")
            .header("content-disposition", "attachment; filename=\"r.csv\"")
            .header("x-total-count", "7")
            .header("x-request-id", "not-kept")
            .body(full(Bytes::from_static(b"a,b\n1,2\n")))
            .expect("response");
        let (cached, _) = capture(response, 1024).await;
        let cached = cached.expect("stored");
        assert_eq!(cached.content_type, "text/csv");
        let replayed = replay(&cached, None);
        let headers = replayed.headers();
        assert_eq!(
            headers["content-disposition"],
            "attachment; filename=\"r.csv\""
        );
        assert_eq!(headers["x-total-count"], "7");
        assert!(headers.get("x-request-id").is_none());
        // A 304 carries the validator, not the body's headers.
        let tag = cached.etag.clone();
        let not_modified = replay(&cached, Some(&tag));
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);

        let big = Response::new(full(Bytes::from(vec![b'x'; 2048])));
        let (cached, served) = capture(big, 1024).await;
        assert!(cached.is_none(), "over the cap: not stored");
        let body = served.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len(), 2048, "but served whole");
    }
}
