//! Request ids and the access log: every request gets an id that an operator can follow
//! from a client's report to the log lines of that request.
//!
//! [`AssignRequestId`] keeps the client's `X-Request-Id` when it is sane (1 to 128
//! characters of letters, digits, `-`, `_`, `.`, `:`), else makes a UUID; it puts the id on
//! the response, into a tracing span around the request's future (so every log line of the
//! request carries it) and into problem+json bodies as `requestId`. [`AccessLog`] writes one
//! `info` line per request. Two middlewares, one job each; the id reaches the access log as
//! the request's `X-Request-Id`, which the first sets.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::{Method, Uri};
use axum::response::Response;
use tracing::Instrument;

use crate::around::Around;
use crate::config::Settings;

/// The header, in both directions.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Problem bodies are small; a larger one is passed on untouched.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

fn sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Assigns the request id (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct AssignRequestId;

impl Around for AssignRequestId {
    type Carry = HeaderValue;

    fn before(&self, request: &mut Request) -> HeaderValue {
        let id = request
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|v| sane(v))
            .cloned()
            .unwrap_or_else(|| {
                let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
                HeaderValue::from_str(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text))
                    .unwrap_or(HeaderValue::from_static("-"))
            });
        request
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), id.clone());
        id
    }

    async fn after<F>(id: HeaderValue, response: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        let span = tracing::info_span!("request", id = %id.to_str().unwrap_or_default());
        // With `info` off there is no line for the span to mark: the response is not wrapped.
        let response = if span.is_disabled() {
            response.await
        } else {
            response.instrument(span).await
        };
        let is_problem = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        // Rewriting a body holds far more than passing it on: boxed, so that every other
        // response's future need not have room for it.
        let mut response = if is_problem {
            Box::pin(with_request_id(response, &id)).await
        } else {
            response
        };
        response.headers_mut().insert(X_REQUEST_ID.clone(), id);
        response
    }
}

/// Adds `requestId` to a problem+json body.
async fn with_request_id(response: Response, id: &HeaderValue) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut problem)) => {
            problem.insert(
                "requestId".into(),
                serde_json::Value::String(id.to_str().unwrap_or_default().into()),
            );
            let text = serde_json::Value::Object(problem).to_string();
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Body::from(text)
        }
        _ => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// One `info` line per request: method, route template, path, status, latency, request id
/// and client address (as the proxy settings decide it).
#[derive(Clone, Debug)]
pub struct AccessLog(pub Arc<Settings>);

/// What the access line says of the request: kept as the request had it (reference-counted
/// or copied by value), not as strings made for a line that is written once.
pub struct Requested {
    started: Instant,
    method: Method,
    uri: Uri,
    route: Option<MatchedPath>,
    id: Option<HeaderValue>,
    client: Option<IpAddr>,
}

impl Around for AccessLog {
    type Carry = Option<Requested>;

    fn before(&self, request: &mut Request) -> Option<Requested> {
        // Nothing to prepare when the line would not be written (RUST_LOG above info).
        if !tracing::enabled!(target: "ims_api::access", tracing::Level::INFO) {
            return None;
        }
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Some(Requested {
            started: Instant::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
            id: request.headers().get(&X_REQUEST_ID).cloned(),
            client: self.0.proxy_trust.client(peer, request.headers()),
        })
    }

    async fn after<F>(requested: Option<Requested>, response: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        let mut pending = Unanswered(requested);
        let response = response.await;
        if let Some(r) = pending.0.take() {
            r.log(response.status().as_u16());
        }
        response
    }
}

/// The access line of a request whose client went away before its answer: hyper drops the
/// request's future mid-await, and the request left no line at all (found by a probe). It
/// is written on drop with status 499, nginx's "client closed request".
struct Unanswered(Option<Requested>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.log(499);
        }
    }
}

impl Requested {
    fn log(self, status: u16) {
        let latency_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        // A root event: the line names the request id itself, so the request's span (which
        // marks the request's other lines) is not looked up and written before it too.
        tracing::info!(
            target: "ims_api::access",
            parent: None,
            method = %self.method,
            route = %self.route.as_ref().map_or("unmatched", MatchedPath::as_str),
            path = %self.uri.path(),
            status,
            latency_ms,
            request_id = %self.id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or("-"),
            client = %OrDash(self.client),
            "request"
        );
    }
}

/// An optional value as the access line writes it: `-` when absent (no string is made).
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_short_and_plain() {
        assert!(sane(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!sane(&HeaderValue::from_static("")));
        assert!(!sane(&HeaderValue::from_static("has space")));
        assert!(!sane(&HeaderValue::from_static("quote\"d")));
        assert!(!sane(
            &HeaderValue::from_str(&"a".repeat(129)).expect("value")
        ));
    }
}
