//! Middlewares as two plain steps around the inner service: one on the request, one on the
//! response's future. Written by hand because axum's `from_fn`, on every request, clones the
//! whole inner stack, boxes it as a `Route`, boxes that route's future and its own, and
//! moves the request through each: with five such layers the profile of a cached hit showed
//! them as the largest share of the server's own work. Here the inner service is called
//! in place (it was driven to readiness through `poll_ready`) and each layer boxes one
//! small future; tower-http has no general before/after middleware to use instead.

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::FutureExt;
use tower::{Layer, Service};

/// One middleware: [`before`](Around::before) sees the request before the inner service,
/// [`after`](Around::after) wraps the inner service's response.
pub trait Around: Clone + Send + Sync + 'static {
    /// What the request step leaves for the response step.
    type Carry: Send + 'static;

    /// Runs on the request before the inner service is called.
    fn before(&self, request: &mut Request) -> Self::Carry;

    /// The response: `response` is the inner service's, to await (or bound in time).
    fn after<F>(carry: Self::Carry, response: F) -> impl Future<Output = Response> + Send
    where
        F: Future<Output = Response> + Send + 'static;
}

/// The layer of an [`Around`] middleware.
#[derive(Clone, Debug)]
pub struct AroundLayer<M>(pub M);

impl<M: Clone, S> Layer<S> for AroundLayer<M> {
    type Service = AroundService<M, S>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService {
            around: self.0.clone(),
            inner,
        }
    }
}

/// The service of an [`AroundLayer`].
#[derive(Clone, Debug)]
pub struct AroundService<M, S> {
    around: M,
    inner: S,
}

impl<M, S> Service<Request> for AroundService<M, S>
where
    M: Around,
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let carry = self.around.before(&mut request);
        let response = self.inner.call(request).map(|answer| match answer {
            Ok(response) => response.into_response(),
            Err(never) => match never {},
        });
        Box::pin(M::after(carry, response).map(Ok))
    }
}
