//! [`InvalidateLayer`]: after a successful write, delete the caller's cached responses of
//! the given groups, before the response leaves.
//!
//! Invalidation happens inside the request, so once a client has the write's response no
//! later read of that scope can be answered from an older entry. Reads (`GET`, `HEAD`,
//! `OPTIONS`) and failed writes (non-2xx) invalidate nothing. Requests without a scope or
//! without a [`ResponseCache`] extension pass through untouched. If Redis cannot be asked
//! the response is still sent; the cache is flushed when Redis comes back.
//!
//! # Example
//! ```
//! use ims_redis::invalidate::InvalidateLayer;
//!
//! // A stock adjustment changes stock levels, item stock-on-hand and the dashboard.
//! let layer = InvalidateLayer::new(&["stock", "items", "dashboard"]);
//! assert_eq!(layer.groups(), ["stock", "items", "dashboard"]);
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use tower::{Layer, Service};

use crate::cache::{group_of, ResponseCache};

/// Invalidates cache groups (key-prefix first segments, e.g. `items`) after a 2xx write.
#[derive(Debug, Clone)]
pub struct InvalidateLayer {
    groups: Arc<[String]>,
}

impl InvalidateLayer {
    /// Invalidates `groups`; a full key prefix (`items:list`) stands for its group (`items`).
    pub fn new(groups: &[&str]) -> Self {
        Self {
            groups: groups.iter().map(|g| group_of(g).to_string()).collect(),
        }
    }

    /// The groups this layer invalidates.
    pub fn groups(&self) -> Vec<&str> {
        self.groups.iter().map(String::as_str).collect()
    }
}

impl<S> Layer<S> for InvalidateLayer {
    type Service = InvalidateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InvalidateService {
            inner,
            groups: self.groups.clone(),
        }
    }
}

/// The service produced by [`InvalidateLayer`].
#[derive(Debug, Clone)]
pub struct InvalidateService<S> {
    inner: S,
    groups: Arc<[String]>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InvalidateService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let groups = self.groups.clone();
        let is_read = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        let cache = request.extensions().get::<Arc<ResponseCache>>().cloned();
        let target = match cache {
            Some(cache) if !is_read => {
                let (parts, body) = request.into_parts();
                let scope = cache.scope_of(&parts);
                let request = Request::from_parts(parts, body);
                (scope.map(|scope| (cache, scope)), request)
            }
            _ => (None, request),
        };
        Box::pin(async move {
            let (target, request) = target;
            let response = inner.call(request).await?;
            if let Some((cache, scope)) = target {
                if response.status().is_success() {
                    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
                    cache.invalidate(&scope, &groups).await;
                }
            }
            Ok(response)
        })
    }
}
