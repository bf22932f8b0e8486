//! A response body that keeps a guard alive until the response has been fully
//! sent, and shows it the trailers (where gRPC puts the status of a normal reply).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// Something that lasts as long as a response: a concurrency permit, a metrics recorder.
pub trait ResponseGuard: Send + 'static {
    fn on_trailers(&mut self, _trailers: &HeaderMap) {}
}

pin_project_lite::pin_project! {
    pub struct GuardedBody<G> {
        #[pin]
        inner: tonic::body::Body,
        guard: G,
    }
}

impl<G: ResponseGuard> GuardedBody<G> {
    pub fn wrap(inner: tonic::body::Body, guard: G) -> tonic::body::Body {
        tonic::body::Body::new(Self { inner, guard })
    }
}

impl<G: ResponseGuard> Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            this.guard.on_trailers(trailers);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
