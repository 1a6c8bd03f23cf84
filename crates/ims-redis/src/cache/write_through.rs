//! [`WriteThroughLayer`]: after a successful `PUT`/`PATCH` of a resource, its new
//! representation (the write's response body) is stored under the key a `GET` of the same
//! path would use, so the next read is a hit that already shows the change (seed 001's
//! write-through pattern, Spring's `@CachePut`).
//!
//! **Race safety.** The layer sits outside the route's [`InvalidateLayer`], so the write's
//! own invalidation has run when the response comes back. It reads the group's epoch before
//! the write and stores only if the epoch is now exactly one higher: the write's own bump
//! and no other. Any other write's invalidation in between (whose data may be newer) makes
//! the store fail, and any later write's invalidation deletes the entry, since an
//! invalidation always follows its commit. The in-process engine (`REDIS_ENABLED=false`)
//! does the same with its own epochs. Without a scope, with Redis unreachable, or on any
//! other method the layer does nothing.
//!
//! [`InvalidateLayer`]: crate::invalidate::InvalidateLayer
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use ims_redis::cache::WriteThroughLayer;
//!
//! // PUT/PATCH /things/{id} answer the thing as GET /things/{id} does (cached 120 s).
//! let layer = WriteThroughLayer::new("things:detail", Duration::from_secs(120));
//! # let _ = layer;
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response};
use http_body::Body;
use tower::{Layer, Service};

use super::layer::{capture, CacheBody};
use super::{query_hash, ResponseCache};
use crate::body::boxed;

/// Stores a successful `PUT`/`PATCH` response under the `GET` key of the same path.
#[derive(Debug, Clone)]
pub struct WriteThroughLayer {
    key_prefix: Arc<str>,
    ttl: Duration,
    tag_by_last_segment: Option<Arc<str>>,
}

impl WriteThroughLayer {
    /// For the `GET` route cached under `key_prefix` for `ttl`.
    pub fn new(key_prefix: &str, ttl: Duration) -> Self {
        Self {
            key_prefix: key_prefix.into(),
            ttl,
            tag_by_last_segment: None,
        }
    }

    /// The `GET` route tags its entries by entity (see
    /// [`CacheLayer::tag_by_last_segment`](super::CacheLayer::tag_by_last_segment)): the
    /// stored entry carries the same tag.
    pub fn tag_by_last_segment(mut self, name: &str) -> Self {
        self.tag_by_last_segment = Some(name.into());
        self
    }
}

impl<S> Layer<S> for WriteThroughLayer {
    type Service = WriteThroughService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WriteThroughService {
            inner,
            policy: self.clone(),
        }
    }
}

/// The service produced by [`WriteThroughLayer`].
#[derive(Debug, Clone)]
pub struct WriteThroughService<S> {
    inner: S,
    policy: WriteThroughLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WriteThroughService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
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
        let policy = self.policy.clone();
        let writes = matches!(*request.method(), Method::PUT | Method::PATCH);
        let cache = request.extensions().get::<Arc<ResponseCache>>().cloned();
        let (parts, body) = request.into_parts();
        let target = match cache {
            Some(cache) if writes => cache
                .scope_of(&parts)
                .map(|scope| (cache, scope, parts.uri.path().to_string())),
            _ => None,
        };
        let request = Request::from_parts(parts, body);
        Box::pin(async move {
            let Some((cache, scope, path)) = target else {
                return inner.call(request).await.map(boxed);
            };
            let rest = format!("GET:{path}:{}", query_hash(None));
            let tag = policy
                .tag_by_last_segment
                .as_ref()
                .map(|name| super::last_segment_tag(name, &path));
            let before = cache
                .observe(&scope, &policy.key_prefix, &rest, tag.as_deref())
                .await;
            let response = inner.call(request).await?;
            let Some(before) = before else {
                return Ok(boxed(response));
            };
            // The same rules as a cached read's miss: a 200 without `Set-Cookie`, within
            // the size cap, its headers kept.
            let (cached, response) = capture(response, cache.max_entry_bytes()).await;
            if let Some(cached) = cached {
                cache
                    .store(
                        &scope,
                        &policy.key_prefix,
                        &rest,
                        tag.as_deref(),
                        &cached,
                        policy.ttl,
                        &before.after_one_invalidation(),
                    )
                    .await;
            }
            Ok(response)
        })
    }
}
