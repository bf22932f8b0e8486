//! A global concurrency limit that sheds load instead of queueing: when every
//! permit is taken, the request is answered at once with RESOURCE_EXHAUSTED so
//! the client can back off or try another replica, and latency stays bounded.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::body::{GuardedBody, ResponseGuard};

#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
}

impl ConcurrencyLimitLayer {
    /// `max_in_flight` requests across every connection of the server.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            permits: self.permits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl ResponseGuard for OwnedSemaphorePermit {}

impl<S, ReqBody> Service<http::Request<ReqBody>> for ConcurrencyLimit<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!(path = request.uri().path(), "shedding request: concurrency limit reached");
            let status = tonic::Status::resource_exhausted("server is at its concurrency limit; retry with backoff");
            return futures::future::ready(Ok(status.into_http())).boxed();
        };
        // The permit lives until the response body is sent, so streaming replies count too.
        self.inner
            .call(request)
            .map(|result| result.map(|response| response.map(|body| GuardedBody::wrap(body, permit))))
            .boxed()
    }
}
