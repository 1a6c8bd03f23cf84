//! The response body type the crate's tower layers hand out, in one place so that the
//! layers (cache, rate limit, invalidation) share it without depending on each other.

use std::any::Any;

use bytes::Bytes;
use http::Response;
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// The body of every response that went through one of this crate's layers: whatever the
/// inner service answered, boxed, or bytes the layer produced itself (a replayed cache
/// entry, a `429` problem).
pub type LayerBody = UnsyncBoxBody<Bytes, tower::BoxError>;

/// Boxes an inner service's response body; one another of this crate's layers boxed
/// already (the cache's, inside the limiter) is passed on as it is: boxing it again would
/// cost every response an allocation and every frame one more dynamic call.
pub(crate) fn boxed<B>(response: Response<B>) -> Response<LayerBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    response.map(|body| {
        let mut body = Some(body);
        match (&mut body as &mut dyn Any).downcast_mut::<Option<LayerBody>>() {
            Some(boxed) => boxed.take().unwrap_or_else(|| full(Bytes::new())),
            None => body
                .map(|body| body.map_err(Into::into).boxed_unsync())
                .unwrap_or_else(|| full(Bytes::new())),
        }
    })
}

/// A body of known bytes.
pub(crate) fn full(bytes: Bytes) -> LayerBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_boxed_by_two_layers_keeps_its_bytes_and_size() {
        let once = boxed(Response::new(Full::new(Bytes::from_static(b"abc"))));
        let twice = boxed(once);
        assert_eq!(twice.body().size_hint().exact(), Some(3));
        let bytes = twice.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(bytes, Bytes::from_static(b"abc"));
    }
}
