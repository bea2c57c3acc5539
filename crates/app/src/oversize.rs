//! A request over the gRPC message limit is RESOURCE_EXHAUSTED, as the error model says, not
//! the OUT_OF_RANGE tonic's decoder answers with: this layer rewrites that one status.

use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::Map;
use tonic::codegen::http;

/// The start of tonic's message for a request over `max_decoding_message_size`.
const TOO_LARGE: &str = "Error, decoded message length too large";

/// Wraps the server's routes in [`Oversize`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OversizeLayer;

impl<S> tower_layer::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Oversize<S> {
        Oversize(inner)
    }
}

/// Answers RESOURCE_EXHAUSTED where tonic refused a request as too large with OUT_OF_RANGE.
#[derive(Debug, Clone)]
pub(crate) struct Oversize<S>(S);

type Answer<B, E> = Result<http::Response<B>, E>;

impl<S, R, B> tower_service::Service<http::Request<R>> for Oversize<S>
where
    S: tower_service::Service<http::Request<R>, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Map<S::Future, fn(Answer<B, S::Error>) -> Answer<B, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<R>) -> Self::Future {
        self.0.call(request).map(|answer| {
            answer.map(|mut response| {
                rewrite(response.headers_mut());
                response
            })
        })
    }
}

/// Rewrites a trailers-only OUT_OF_RANGE "message too large" status to RESOURCE_EXHAUSTED.
fn rewrite(headers: &mut http::HeaderMap) {
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.replace("%20", " ").starts_with(TOO_LARGE));
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from_static(RESOURCE_EXHAUSTED),
        );
    }
}

/// `tonic::Code::ResourceExhausted` on the wire.
const RESOURCE_EXHAUSTED: &str = "8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_size_refusal_is_rewritten() {
        let status = tonic::Status::out_of_range(format!(
            "{TOO_LARGE}: found 5 bytes, the limit is: 4 bytes"
        ));
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        rewrite(&mut headers);
        let back = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(back.code(), tonic::Code::ResourceExhausted);
        assert!(back.message().contains("the limit is: 4 bytes"), "{back:?}");

        let other = tonic::Status::out_of_range("page 9 of 3");
        let mut headers = http::HeaderMap::new();
        other.add_header(&mut headers).unwrap();
        rewrite(&mut headers);
        let back = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(back.code(), tonic::Code::OutOfRange);
    }
}
