//! The API's one error type and its problem+json (RFC 9457) rendering.
//!
//! Every variant states the status it becomes. Internal details (SQL errors, panics' causes)
//! are logged and never sent; the client gets a stable title and a useful detail.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{
    JsonRejection, MissingJsonContentType, PathRejection, QueryRejection,
};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fields;

/// Field name → messages, as sent in a validation problem's `errors`.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 308: the row is at another URL (an id written in another form than the API's own:
    /// upper case, no hyphens, braces); the canonical URL goes in `Location`.
    #[error("ids are written as lower-case hyphenated UUIDs; this row's URL is {0}")]
    Moved(String),
    /// 400: the request cannot be understood (malformed JSON, bad query string).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no, malformed, expired or forged credentials. Adds `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource in the caller's organization.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: conflicts with the current state (duplicate, in use, not enough stock).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the limit.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid fields; listed in `errors`.
    #[error("validation failed")]
    Validation(FieldErrors),
    /// 503: a dependency the request cannot do without (the database) is down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; logged with its cause, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// An error, as every route sends it: `application/problem+json` (RFC 9457). Also the
/// schema of every error answer in the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem<'a> {
    /// A stable identifier of the kind of problem, e.g. `/problems/not-found`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'a str,
    /// The status's reason phrase, e.g. `Not Found`.
    #[schema(value_type = String)]
    pub title: &'a str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// Validation failures only (422): field name → messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, Vec<String>>>)]
    pub errors: Option<&'a FieldErrors>,
    /// The request's id (`X-Request-Id`), added to every problem on its way out
    /// (`crate::request_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
}

impl ApiError {
    /// A 422 for a single field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.insert(field.to_string(), vec![message.into()]);
        Self::Validation(errors)
    }

    /// The HTTP status this error becomes.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Moved(_) => StatusCode::PERMANENT_REDIRECT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Moved(_) => "/problems/non-canonical-id",
            Self::BadRequest(_) => "/problems/bad-request",
            Self::Unauthorized(_) => "/problems/unauthorized",
            Self::Forbidden(_) => "/problems/forbidden",
            Self::NotFound(_) => "/problems/not-found",
            Self::MethodNotAllowed => "/problems/method-not-allowed",
            Self::Conflict(_) => "/problems/conflict",
            Self::PayloadTooLarge => "/problems/payload-too-large",
            Self::UnsupportedMediaType(_) => "/problems/unsupported-media-type",
            Self::Validation(_) => "/problems/validation",
            Self::Unavailable(_) => "/problems/unavailable",
            Self::Internal(_) => "/problems/internal",
        }
    }
}

/// `Retry-After` of every `503` problem: the seconds a client should wait.
pub const RETRY_AFTER_BUSY: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Internal(cause) => {
                tracing::error!("internal error: {cause:#}");
                "an unexpected error occurred; it has been logged".to_string()
            }
            Self::Validation(_) => "one or more fields are invalid".to_string(),
            other => other.to_string(),
        };
        let errors = match &self {
            Self::Validation(errors) => Some(errors),
            _ => None,
        };
        let body = Problem {
            kind: self.kind(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            errors,
            request_id: None,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // The body over the limit is left unread, so the connection cannot carry another
        // request: say so, rather than let a client's next request on it fail (hyper closed
        // it silently; a probe's pooled client got a reset).
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // When to try again (a probe found the 503s said "try again" without it, and
        // clients retried at once, adding load to a database already behind): a few
        // seconds, long enough for a busy pool to drain.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_BUSY),
            );
        }
        if let Self::Moved(location) = &self {
            if let Ok(location) = HeaderValue::try_from(location.as_str()) {
                headers.insert(header::LOCATION, location);
            }
        }
        response
    }
}

/// Answers 503 when the request runs longer than `REQUEST_TIMEOUT_MS` (the handler is
/// dropped: a transaction it held rolls back). When what the handler was waiting for at
/// that moment was the rest of the request's body (a client that stalls, or sends less
/// than its `Content-Length`), the answer says so instead of inviting a retry, and closes
/// the connection, whose framing the missing bytes have broken. RFC 9110 would call that a
/// 408; the contract answers every request over the time-out with 503 (§1), so the status
/// stays (a probe found the "try again" and the missing `Connection: close`).
///
/// A write that has already sent its `COMMIT` (or an autocommitted statement) is not
/// dropped at the time-out: the database may have applied it, and a 503 "try again" would
/// make a client apply a stock movement or a payment twice (a probe saw it: 3 of 60
/// adjustments with a 4 ms time-out). Such a request gets up to another
/// `REQUEST_TIMEOUT_MS` for its own answer; past that, the 503 says the outcome is unknown.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeout(pub std::time::Duration);

impl crate::around::Around for RequestTimeout {
    type Carry = (
        std::time::Duration,
        Option<Arc<BodyState>>,
        Option<Arc<AtomicBool>>,
    );

    fn before(&self, request: &mut axum::extract::Request) -> Self::Carry {
        use http_body::Body as _;
        // Only writes can make a change the time-out must not hide; reads are not watched.
        let durable = (!matches!(
            *request.method(),
            axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
        ))
        .then(|| Arc::new(AtomicBool::new(false)));
        // Requests without a body (most reads) are not watched: nothing to wrap or box.
        if request.body().is_end_stream() {
            return (self.0, None, durable);
        }
        let state = Arc::new(BodyState::default());
        let body = std::mem::take(request.body_mut());
        *request.body_mut() = axum::body::Body::new(Watched {
            inner: body,
            state: state.clone(),
        });
        (self.0, Some(state), durable)
    }

    async fn after<F>((limit, body, durable): Self::Carry, response: F) -> Response
    where
        F: std::future::Future<Output = Response> + Send + 'static,
    {
        let Some(durable) = durable else {
            return match tokio::time::timeout(limit, response).await {
                Ok(response) => response,
                Err(_) => timed_out(limit, body.as_deref()),
            };
        };
        let response = crate::db::watch_durable(durable.clone(), response);
        tokio::pin!(response);
        match tokio::time::timeout(limit, &mut response).await {
            Ok(response) => response,
            Err(_) if durable.load(Ordering::Relaxed) => {
                tracing::info!(
                    "request past {} ms while its write was being committed; waiting for it",
                    limit.as_millis()
                );
                match tokio::time::timeout(limit, response).await {
                    Ok(response) => response,
                    Err(_) => {
                        metrics::counter!("ims_http_request_timeouts_total").increment(1);
                        tracing::warn!(
                            "request still committing after {} ms",
                            2 * limit.as_millis()
                        );
                        ApiError::Unavailable(format!(
                            "the request took longer than {} ms while its changes were being \
                             saved; whether they were saved is unknown: read them back before \
                             trying again",
                            2 * limit.as_millis()
                        ))
                        .into_response()
                    }
                }
            }
            Err(_) => timed_out(limit, body.as_deref()),
        }
    }
}

/// The 503 of a request dropped at its time-out, before it wrote anything.
fn timed_out(limit: std::time::Duration, body: Option<&BodyState>) -> Response {
    metrics::counter!("ims_http_request_timeouts_total").increment(1);
    if body.is_some_and(BodyState::waiting) {
        tracing::info!(
            "request body still incomplete after {} ms",
            limit.as_millis()
        );
        let mut response = ApiError::Unavailable(format!(
            "the request's body did not arrive within {} ms; the connection is closed",
            limit.as_millis()
        ))
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    tracing::warn!("request timed out after {} ms", limit.as_millis());
    ApiError::Unavailable(format!(
        "the request took longer than {} ms and was abandoned; try again",
        limit.as_millis()
    ))
    .into_response()
}

/// Whether a handler is waiting on its request's body: set while a read of it is pending.
#[derive(Debug, Default)]
pub struct BodyState(AtomicBool);

impl BodyState {
    fn waiting(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A request body that records, in its [`BodyState`], whether its last read is pending.
struct Watched {
    inner: axum::body::Body,
    state: Arc<BodyState>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        self.state.0.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A handler that panicked: 500 problem+json instead of a dropped connection.
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    metrics::counter!("ims_http_panics_total").increment(1);
    ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// True when `e` says the database is away rather than that the query is wrong: the pool
/// cannot hand out a connection, the socket failed, or PostgreSQL refuses or ended the
/// session (SQLSTATE class 08 connection exception, 57 operator intervention such as a
/// terminated backend or a shutdown, 53 insufficient resources, and 55000 for a database
/// that does not accept connections).
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("57")
                || code.starts_with("53")
                || code == "55000"
        }),
        _ => false,
    }
}

/// True when PostgreSQL rolled the transaction back because of another one: a deadlock it
/// broke (SQLSTATE 40P01) or a serialization failure (40001). Nothing of the request was
/// applied and the same request can succeed when sent again, so it is a 409, not a 500.
/// The writes take their rows in one order so that these do not happen (two deadlocks were
/// found and removed: a revocation against a login past the session cap, an item's deletion
/// against a PATCH of an order's lines); this answers any that is left.
fn lost_to_a_concurrent_write(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code == "40P01" || code == "40001"),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // No connection within the acquire time-out: every one busy (a burst of slow
        // reports) or the database unreachable; said as both, where "unavailable" alone
        // misled a probe whose database was up and merely saturated.
        if matches!(e, sqlx::Error::PoolTimedOut) {
            tracing::warn!(
                "no database connection within the acquire time-out: all busy, or the database unreachable"
            );
            return Self::Unavailable(
                "the database is busy or unreachable; try again shortly".into(),
            );
        }
        if is_unavailable(&e) {
            tracing::error!("database unavailable: {e}");
            return Self::Unavailable("the database is unavailable; try again shortly".into());
        }
        if lost_to_a_concurrent_write(&e) {
            tracing::warn!("a write lost to a concurrent one and was rolled back: {e}");
            return Self::Conflict(
                "this request met a concurrent change to the same records; nothing of it was \
                 applied, and it can be sent again"
                    .into(),
            );
        }
        Self::Internal(e.into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                let message = e.body_text();
                // serde names the first offending field; surface it as a field error so
                // clients can show it next to the input.
                let missing = message
                    .split("missing field `")
                    .nth(1)
                    .and_then(|rest| rest.split('`').next());
                match missing {
                    Some(field) => Self::field(field, "is required"),
                    None => {
                        let mut errors = FieldErrors::new();
                        errors.insert("body".into(), vec![message]);
                        Self::Validation(errors)
                    }
                }
            }
            // `1e400` is valid JSON (RFC 8259 sets no range); serde calls it a syntax error,
            // but it is a value no field takes, so it is a 422 like any other.
            JsonRejection::JsonSyntaxError(e) if e.body_text().contains("number out of range") => {
                Self::field("body", "has a number out of range")
            }
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "expected a body with Content-Type: application/json".into(),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::BadRequest(other.body_text()),
        }
    }
}

/// `axum::Json` whose rejections are problem+json [`ApiError`]s, and which refuses text that
/// an engine cannot store: a NUL in any string of the body is a 422 naming the field
/// ([`fields::NUL_MESSAGE`]), before the handler runs, so no handler has to remember it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // axum's `Json` in three steps, so the raw bytes can be looked at in between; the
        // content-type check comes first, as there, so a non-JSON body is a 415 unread.
        if !json_content_type(req.headers()) {
            return Err(JsonRejection::from(MissingJsonContentType::default()).into());
        }
        // A body sent compressed would be read as JSON text and refused as malformed; say
        // what is wrong instead (RFC 9110 §8.4.1: 415 for a content coding not accepted).
        if req
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return Err(Self::Rejection::UnsupportedMediaType(
                "Content-Encoding is not supported: send the JSON body uncompressed".into(),
            ));
        }
        // A declared length over the limit is refused before a byte is read: waiting for a
        // body that will be refused anyway would hold the connection until it came, or until
        // the request timed out (a 503 that would invite a retry).
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > crate::startup::BODY_LIMIT as u64) {
            return Err(Self::Rejection::PayloadTooLarge);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(JsonRejection::from)?;
        // Almost every body has no `\u0000`; only those that may are parsed a second time.
        let nul = if fields::json_may_contain_nul(&bytes) {
            nul_in_body(&bytes)
        } else {
            Nul::None
        };
        if let Nul::In(errors) = nul {
            return Err(ApiError::Validation(errors));
        }
        // Every body is an object; serde would also read a struct from an array of its
        // fields in order (`["name", 825]`), which the document does not allow.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::field("body", "must be a JSON object"));
        }
        let value = match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => value,
            // JSON Schema counts `4768.0` as an integer, and so do some clients' encoders
            // (Python's for a float that holds one); serde does not. Such a body is read
            // again, as text with those literals written as integers (only those integral
            // as written), through the same typed parse: duplicate keys, syntax errors and
            // every other rule apply to it as to the body sent.
            Err(rejection) => match crate::json_integers::rewritten(&bytes) {
                Some(rewritten) => match axum::Json::<T>::from_bytes(&rewritten) {
                    Ok(axum::Json(value)) => value,
                    Err(rejection) => return Err(rejection.into()),
                },
                None => return Err(rejection.into()),
            },
        };
        if let Nul::Unplaced = nul {
            return Err(ApiError::field("body", fields::NUL_MESSAGE));
        }
        Ok(Self(value))
    }
}

/// What the NUL check of a body found.
enum Nul {
    /// No string contains NUL.
    None,
    /// These fields contain NUL.
    In(FieldErrors),
    /// The body may hold a `\u0000` but does not parse as a `serde_json::Value`. Usually it is
    /// not JSON at all, and the typed parse reports that. But `Value` refuses a lone surrogate
    /// escape anywhere, while a typed parse skips unknown fields unchecked, so such a body can
    /// still parse as the handler's type. There is no tree to name the field, so the whole
    /// body is refused rather than let the NUL through.
    Unplaced,
}

fn nul_in_body(body: &[u8]) -> Nul {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => {
            let errors = fields::json_nul_errors(&value);
            if errors.is_empty() {
                Nul::None
            } else {
                Nul::In(errors)
            }
        }
        Err(_) => Nul::Unplaced,
    }
}

/// Whether the body is declared JSON: `application/json`, or any `application/*+json` but a
/// JSON Patch (the check axum's `Json` makes, but closer to RFC 9110's media-type syntax).
fn json_content_type(headers: &HeaderMap) -> bool {
    // Only the type and subtype decide; parameters are not read, so any valid spelling of
    // them passes (`application/json ; charset=utf-8`, which the `mime` crate refused). The subtype is
    // `json` or ends in `+json` (RFC 6839), but not `json-patch+json`: a JSON Patch is not
    // the merge patch these routes take (RFC 7396), and `json+zip` is not JSON (`mime` read
    // it as `json` with a suffix; both found by a probe). Written by hand: `mime` is what
    // got both wrong.
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application")
        && (subtype == "json"
            || (subtype.len() > "+json".len()
                && subtype.ends_with("+json")
                && subtype != "json-patch+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        // form-urlencoded parsing itself never fails, so a rejection is always a query that
        // does not fit the expected shape (a repeated parameter, say): the query analogue of
        // a JSON body with the wrong shape.
        let mut errors = FieldErrors::new();
        errors.insert("query".into(), vec![rejection.body_text()]);
        Self::Validation(errors)
    }
}

/// `axum::extract::Query` whose rejections are problem+json [`ApiError`]s, and which refuses
/// a NUL in any parameter's value with a 422 naming the parameter, like [`Json`] for bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let errors = fields::query_nul_errors(parts.uri.query().unwrap_or_default());
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let axum::extract::Query(value) = axum::extract::Query::<T>::try_from_uri(&parts.uri)?;
        Ok(Self(value))
    }
}

/// `axum::extract::Path` whose rejections are problem+json [`ApiError`]s. A segment that
/// cannot be read as the parameter (`%FF` percent-decodes to bytes that are not UTF-8) names
/// no row, so it is the 404 of any other id that is not a UUID, not axum's text/plain 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { .. }
                | ErrorKind::ParseError { .. }
                | ErrorKind::ParseErrorAtKey { .. }
                | ErrorKind::ParseErrorAtIndex { .. } => {
                    Err(ApiError::NotFound("no such resource".into()))
                }
                // The route and the handler's parameters disagree: a bug, not the client's.
                _ => Err(ApiError::Internal(anyhow::anyhow!(
                    "path: {}",
                    e.body_text()
                ))),
            },
            Err(other) => Err(ApiError::Internal(anyhow::anyhow!(
                "path: {}",
                other.body_text()
            ))),
        }
    }
}

/// Collects field errors so a handler can report all of them at once.
#[derive(Debug, Default)]
pub struct Validator {
    errors: FieldErrors,
}

impl Validator {
    /// Records `message` against `field` when `ok` is false, once: a check repeated per line
    /// or per item that fails twice says so once.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            let messages = self.errors.entry(field.to_string()).or_default();
            if !messages.iter().any(|known| known == message) {
                messages.push(message.to_string());
            }
        }
        self
    }

    /// `Err(Validation)` if anything was recorded.
    pub fn finish(&mut self) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(std::mem::take(&mut self.errors)))
        }
    }
}

/// Fallback for unknown paths: 404 problem+json.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no route matches this path".into())
}

/// Fallback for known paths with another method: 405 problem+json.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database error with a given SQLSTATE, as a driver reports it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error with SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "coded"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[test]
    fn a_write_rolled_back_for_a_concurrent_one_is_a_conflict_and_other_errors_are_not() {
        let status = |code| ApiError::from(sqlx::Error::Database(Box::new(Coded(code)))).status();
        assert_eq!(status("40P01"), StatusCode::CONFLICT, "deadlock detected");
        assert_eq!(
            status("40001"),
            StatusCode::CONFLICT,
            "serialization failure"
        );
        assert_eq!(
            status("57P01"),
            StatusCode::SERVICE_UNAVAILABLE,
            "admin shutdown"
        );
        assert_eq!(
            status("42601"),
            StatusCode::INTERNAL_SERVER_ERROR,
            "syntax error"
        );
    }

    #[test]
    fn a_field_gets_each_message_once() {
        let mut v = Validator::default();
        for _ in 0..3 {
            v.check(
                false,
                "lines",
                "the order's total must not exceed 10^13 cents",
            );
        }
        v.check(false, "lines", "another");
        match v.finish() {
            Err(ApiError::Validation(errors)) => assert_eq!(errors["lines"].len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_content_types_are_json_and_its_suffix() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(header::CONTENT_TYPE, value);
            }
            json_content_type(&headers)
        };
        assert!(accepts("application/json"));
        assert!(accepts("application/json; charset=utf-8"));
        assert!(accepts("application/json;charset=utf-8"));
        assert!(accepts("Application/JSON"));
        assert!(accepts("application/cloudevents+json"));
        assert!(accepts("application/json ; charset=utf-8"));
        assert!(accepts("application/json;;"));
        assert!(accepts("application/merge-patch+json"));
        assert!(!accepts("text/json"));
        assert!(!accepts("application/jsonx"));
        assert!(!accepts("application/json+zip"));
        assert!(!accepts("application/json+xml"));
        assert!(!accepts("application/json-patch+json"));
        assert!(!accepts("application/+json"));
        assert!(!accepts("application"));
        assert!(!accepts(""));
        assert!(!json_content_type(&HeaderMap::new()));
    }
}
