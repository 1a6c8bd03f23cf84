//! The response body type the crate's tower layers hand out, in one place so that the
//! layers (cache, rate limit, invalidation) share it without depending on each other.

use bytes::Bytes;
use http::Response;
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// The body of every response that went through one of this crate's layers: whatever the
/// inner service answered, boxed, or bytes the layer produced itself (a replayed cache
/// entry, a `429` problem).
pub type LayerBody = UnsyncBoxBody<Bytes, tower::BoxError>;

/// Boxes an inner service's response body.
pub(crate) fn boxed<B>(response: Response<B>) -> Response<LayerBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

/// A body of known bytes.
pub(crate) fn full(bytes: Bytes) -> LayerBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}
