//! [`WritesOnly`]: a layer applied to requests that may carry a body or change something,
//! while reads (`GET`, `HEAD`, `OPTIONS`) go past it to the same inner service.
//!
//! The body limit and the outbox journal matter only to writes, yet as plain layers they
//! cost every read an extension (an allocation, and the map's growth) and a move of the
//! request through each of them; a cached read is the request that can least afford it.
//! Written by hand because `tower::steer::Steer`, the nearest thing, keeps its services in
//! a `Vec` and a queue, which every per-request clone of the route stack would copy.
//!
//! axum clones a route's whole stack for every request. The layered copy for writes is
//! therefore kept behind an `Arc` and cloned only by a write: held by value, it was a
//! second copy of the inner route (an allocation and its reference counts) on every read.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Method, Request};
use futures::future::Either;
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};

/// Applies `L` to writes only (see the module docs).
#[derive(Clone, Debug)]
pub struct WritesOnly<L>(pub L);

impl<L, S> Layer<S> for WritesOnly<L>
where
    L: Layer<S>,
    S: Clone,
{
    type Service = WritesOnlyService<S, L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        WritesOnlyService {
            reads: inner.clone(),
            writes: Arc::new(self.0.layer(inner)),
        }
    }
}

/// The service of [`WritesOnly`]: the inner service as it is for reads, and layered for
/// writes (shared: each write takes a clone of its own, driven to readiness).
#[derive(Clone, Debug)]
pub struct WritesOnlyService<R, W> {
    reads: R,
    writes: Arc<W>,
}

/// Whether `method` only reads: no body a handler takes, nothing to invalidate.
fn reads(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl<B, R, W> Service<Request<B>> for WritesOnlyService<R, W>
where
    R: Service<Request<B>>,
    W: Service<Request<B>, Response = R::Response, Error = R::Error> + Clone,
{
    type Response = R::Response;
    type Error = R::Error;
    type Future = Either<R::Future, Oneshot<W, Request<B>>>;

    /// The reads' service; a write's clone is made ready when it is called.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.reads.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if reads(request.method()) {
            Either::Left(self.reads.call(request))
        } else {
            Either::Right((*self.writes).clone().oneshot(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// A layer that marks the requests it sees.
    #[derive(Clone)]
    struct Mark;

    impl<S> Layer<S> for Mark {
        type Service = tower::util::MapRequest<S, fn(Request<()>) -> Request<()>>;

        fn layer(&self, inner: S) -> Self::Service {
            tower::util::MapRequest::new(inner, |mut request: Request<()>| {
                request.extensions_mut().insert("marked");
                request
            })
        }
    }

    #[tokio::test]
    async fn only_writes_go_through_the_layer() {
        let service =
            WritesOnly(Mark).layer(tower::service_fn(|request: Request<()>| async move {
                Ok::<_, Infallible>(request.extensions().get::<&str>().is_some())
            }));
        for (method, marked) in [
            (Method::GET, false),
            (Method::HEAD, false),
            (Method::OPTIONS, false),
            (Method::POST, true),
            (Method::PUT, true),
            (Method::PATCH, true),
            (Method::DELETE, true),
        ] {
            let request = Request::builder()
                .method(method.clone())
                .body(())
                .expect("request");
            let seen = service.clone().oneshot(request).await.expect("answer");
            assert_eq!(seen, marked, "{method}");
        }
    }
}
