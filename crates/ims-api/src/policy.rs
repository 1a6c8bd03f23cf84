//! The response-cache and invalidation policies routes attach where they are declared
//! (contract §5): `routes!(list).cache(cached("items:list", 60))` on a read,
//! `routes!(create).layer(invalidates(&[Group::Items, …]))` on writes. Short names keep
//! each route's policy readable in its router; [`RoutePolicy::cache`] also writes the
//! cache's answers (headers, `304`) into the route's OpenAPI operations, so the policy is
//! declared once. The server names its cache engine once for all the read policies, around
//! the routes it builds ([`building_with`]).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use ims_redis::cache::{CacheLayer, ResponseCache, WriteThroughLayer};
use ims_redis::invalidate::InvalidateLayer;
use utoipa::openapi::security::SecurityRequirement;
use utoipa_axum::router::OpenApiRouter;

thread_local! {
    /// The cache engine of the routes being built on this thread ([`building_with`]).
    static ENGINE: RefCell<Option<Arc<ResponseCache>>> = const { RefCell::new(None) };
}

/// Runs `build` (the declaration of routes) with `engine` as the cache of every `cached…`
/// policy declared in it. A route names its policy where it is declared, and the server
/// that builds the routes names its engine once, here; the layers then hold the engine,
/// and no request needs it as an extension (inserting one cost every cached hit an
/// allocation and a move through one more layer). A policy declared outside finds the
/// engine in the request's extensions, which only writes are given.
pub fn building_with<R>(engine: &Arc<ResponseCache>, build: impl FnOnce() -> R) -> R {
    /// Puts back what was there before, also when `build` panics.
    struct Restore(Option<Arc<ResponseCache>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            ENGINE.with_borrow_mut(|engine| *engine = before);
        }
    }
    let _restore = Restore(ENGINE.with_borrow_mut(|current| current.replace(engine.clone())));
    build()
}

/// `layer` with the engine of the routes being built, if any.
fn bound(layer: CacheLayer) -> CacheLayer {
    match ENGINE.with_borrow(Clone::clone) {
        Some(engine) => layer.with_engine(engine),
        None => layer,
    }
}

/// Caches the route's `GET` responses under `key_prefix` for `seconds`.
pub fn cached(key_prefix: &str, seconds: u64) -> CacheLayer {
    bound(CacheLayer::new(key_prefix, Duration::from_secs(seconds)))
}

/// Caches under `key_prefix:{last path segment}` (one key prefix per report type).
pub fn cached_per_type(key_prefix: &str, seconds: u64) -> CacheLayer {
    bound(CacheLayer::per_last_segment(
        key_prefix,
        Duration::from_secs(seconds),
    ))
}

/// Like [`cached`], and also served from process memory (L1) for at most
/// `CACHE_L1_MAX_STALE_MS` after it was read from Redis: for reads that change rarely or
/// cost much, where another instance's write may show up that much later (contract §5).
pub fn cached_l1(key_prefix: &str, seconds: u64) -> CacheLayer {
    cached(key_prefix, seconds).with_l1()
}

/// For the expensive aggregates (dashboards): [`cached_l1`], and concurrent misses of one
/// key run the handler once across all instances (the others wait for its result).
pub fn cached_expensive(key_prefix: &str, seconds: u64) -> CacheLayer {
    cached_l1(key_prefix, seconds).with_cluster_single_flight()
}

/// [`cached_expensive`] under `key_prefix:{last path segment}` (reports).
pub fn cached_per_type_expensive(key_prefix: &str, seconds: u64) -> CacheLayer {
    cached_per_type(key_prefix, seconds)
        .with_l1()
        .with_cluster_single_flight()
}

/// After a successful `PUT`/`PATCH` (and its invalidation: attach it outside `invalidates`),
/// stores the response as the `GET` of the same path cached under `key_prefix` for
/// `seconds`, so the next read is a hit showing the change.
pub fn writes_through(key_prefix: &str, seconds: u64) -> WriteThroughLayer {
    WriteThroughLayer::new(key_prefix, Duration::from_secs(seconds))
}

/// What a write can invalidate: a cache group (every read whose key prefix starts with
/// it) or a single key prefix. An enum, so that a misspelt name does not compile (a string
/// would silently leave stale data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Every item read: lists and details (`items:*`).
    Items,
    /// The item lists only (`items:list`), not the items' details.
    ItemsList,
    /// Stock levels (`stock:*`).
    Stock,
    /// Every dashboard (`dashboard:*`).
    Dashboard,
    /// Every report (`reports:*`).
    Reports,
    /// Categories (`categories:*`).
    Categories,
    /// Contacts (`contacts:*`).
    Contacts,
    /// Tax rates (`tax:*`).
    Tax,
}

impl Group {
    /// Every group.
    pub const ALL: [Group; 8] = [
        Self::Items,
        Self::ItemsList,
        Self::Stock,
        Self::Dashboard,
        Self::Reports,
        Self::Categories,
        Self::Contacts,
        Self::Tax,
    ];

    /// The name the cache indexes it under.
    pub fn name(self) -> &'static str {
        match self {
            Self::Items => "items",
            Self::ItemsList => "items:list",
            Self::Stock => "stock",
            Self::Dashboard => "dashboard",
            Self::Reports => "reports",
            Self::Categories => "categories",
            Self::Contacts => "contacts",
            Self::Tax => "tax",
        }
    }
}

/// After a successful write, invalidates the caller's cached responses of `groups` (a
/// group such as `Items` drops all of them, a key prefix such as `ItemsList` one kind).
/// Add `.tag_by_last_segment("item")` on an entity's route to drop that entity's entries
/// too.
pub fn invalidates(groups: &[Group]) -> InvalidateLayer {
    let names: Vec<&str> = groups.iter().map(|g| g.name()).collect();
    InvalidateLayer::new(&names)
}

/// The rate limit a route is counted against per client address (contract §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `RATE_LIMIT_GLOBAL`: every API route unless it says otherwise.
    Global,
    /// `RATE_LIMIT_AUTH`: the routes that take credentials (login, registration, refresh),
    /// where guessing must be slow.
    Credentials,
}

impl Limit {
    /// The OpenAPI extension naming an operation's limit; the server's limiter reads its
    /// per-route quotas from it (`startup::router`), so the route declaration is the one
    /// place that says it.
    pub const EXTENSION: &'static str = "x-rate-limit";

    /// Its name in [`Self::EXTENSION`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Credentials => "credentials",
        }
    }
}

/// What a route declaration can attach besides plain layers.
pub trait RoutePolicy {
    /// Caches the route's `GET` answers with `layer`, and documents what that adds to them:
    /// `X-Cache`, `X-Cache-TTL`, `X-Cache-Tier` and `ETag` on the `200`, and the `304`.
    fn cache(self, layer: CacheLayer) -> Self;

    /// Counts the route against `limit` instead of the global one (recorded in its
    /// operations as [`Limit::EXTENSION`], where the limiter and clients both read it).
    fn limit(self, limit: Limit) -> Self;

    /// Runs the route's handler to its end even when its request is given up
    /// ([`crate::fairness::RunToEnd`]): for the expensive reads, whose slot of the
    /// organization's share must last as long as their query does. Declare it before
    /// `cache`, so that it wraps the handler only.
    fn runs_to_end(self) -> Self;
}

impl<S> RoutePolicy for utoipa_axum::router::UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn cache(self, layer: CacheLayer) -> Self {
        let (schemas, mut paths, method_router) = self;
        for item in paths.paths.values_mut() {
            if let Some(operation) = item.get.as_mut() {
                document_cache(operation);
            }
        }
        (schemas, paths, method_router.layer(layer))
    }

    fn runs_to_end(self) -> Self {
        let (schemas, paths, method_router) = self;
        (
            schemas,
            paths,
            method_router.layer(crate::around::AroundLayer(crate::fairness::RunToEnd)),
        )
    }

    fn limit(self, limit: Limit) -> Self {
        let (schemas, mut paths, method_router) = self;
        for item in paths.paths.values_mut() {
            for operation in crate::openapi::operations_mut(item) {
                let extensions = operation.extensions.get_or_insert_with(Default::default);
                extensions.insert(Limit::EXTENSION.into(), limit.name().into());
            }
        }
        (schemas, paths, method_router)
    }
}

/// Documents every operation of `router` as needing the access token (`bearer`), for the
/// areas whose every route takes [`crate::auth::AuthUser`]: said once per area, where the
/// areas are merged, instead of in each operation.
pub fn signed_in<S>(mut router: OpenApiRouter<S>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    for item in router.get_openapi_mut().paths.paths.values_mut() {
        for operation in crate::openapi::operations_mut(item) {
            operation.security.get_or_insert_with(|| {
                vec![SecurityRequirement::new("bearer", Vec::<String>::new())]
            });
        }
    }
    router
}

/// The routes `doc` marks with `limit` (their path templates, as the limiter's route
/// function names them).
pub fn routes_limited_by(doc: &utoipa::openapi::OpenApi, limit: Limit) -> Vec<String> {
    doc.paths
        .paths
        .iter()
        .filter(|(_, item)| {
            [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
                .any(|operation: &utoipa::openapi::path::Operation| {
                    operation
                        .extensions
                        .as_ref()
                        .and_then(|e| e.get(Limit::EXTENSION))
                        .is_some_and(|v| v == limit.name())
                })
        })
        .map(|(path, _)| path.clone())
        .collect()
}

/// The answers a cached read adds (contract §5).
fn document_cache(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{RefOr, ResponseBuilder};
    use utoipa::PartialSchema;

    let header = |schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                  description: &str| {
        HeaderBuilder::new()
            .schema(schema)
            .description(Some(description))
            .build()
    };
    let etag = |description: &str| header(String::schema(), description);
    if let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") {
        ok.headers.insert(
            "X-Cache".into(),
            header(
                String::schema(),
                "`HIT`, `MISS`, `STALE` (an expired entry served because the database \
                 failed), or `BYPASS` when the request sent `Cache-Control: no-cache`",
            ),
        );
        ok.headers.insert(
            "X-Cache-TTL".into(),
            header(
                u64::schema(),
                "Seconds the cached entry has left; 0 when nothing is stored",
            ),
        );
        ok.headers.insert(
            "X-Cache-Tier".into(),
            header(
                String::schema(),
                "On a hit: `L1` (the instance's memory) or `L2` (Redis)",
            ),
        );
        ok.headers.insert(
            "ETag".into(),
            etag("Tag of the cached body, when there is one; send it in `If-None-Match` to get a 304"),
        );
    }
    operation.responses.responses.insert(
        "304".into(),
        ResponseBuilder::new()
            .description("Not modified: `If-None-Match` matches the cached entry's `ETag`")
            .header("ETag", etag("Tag of the cached body"))
            .build()
            .into(),
    );
}

#[cfg(test)]
mod engine_tests {
    use super::*;
    use ims_redis::{RedisConnection, RedisService};

    fn has_engine(layer: &CacheLayer) -> bool {
        format!("{layer:?}").contains("engine: true")
    }

    #[tokio::test]
    async fn read_policies_hold_the_engine_of_the_routes_being_built_and_only_those() {
        let engine = ResponseCache::new(
            RedisService::new(RedisConnection::disabled(), "t:"),
            Arc::new(|_: &axum::http::request::Parts| None),
            0.0,
        );
        assert!(!has_engine(&cached("a", 1)));
        let inside = building_with(&engine, || {
            let nested = building_with(&engine, || cached_l1("b", 1));
            (nested, cached_per_type_expensive("c", 1))
        });
        assert!(has_engine(&inside.0) && has_engine(&inside.1));
        assert!(
            !has_engine(&cached("d", 1)),
            "the binding ends with the build"
        );
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            building_with(&engine, || panic!("a route failed to build"))
        }));
        assert!(panicked.is_err());
        assert!(!has_engine(&cached("e", 1)), "nor outlives a panic");
    }
}
