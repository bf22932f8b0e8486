//! Enforces the [`CompiledPolicy`] on every request of a mutual-TLS server,
//! before any handler runs. Denials are answered PERMISSION_DENIED and logged
//! with both identities, so an operator can see who tried what against whom.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use tower::{Layer, Service};

use crate::authz::CompiledPolicy;
use crate::connection::PeerInfo;
use crate::end_user::Principal;

#[derive(Debug, Clone)]
pub struct AuthorizationLayer {
    /// `None` on an insecure plaintext server, where there is no identity to check.
    policy: Option<Arc<CompiledPolicy>>,
}

impl AuthorizationLayer {
    pub fn enforce(policy: CompiledPolicy) -> Self {
        Self {
            policy: Some(Arc::new(policy)),
        }
    }

    pub fn disabled() -> Self {
        Self { policy: None }
    }
}

impl<S> Layer<S> for AuthorizationLayer {
    type Service = Authorization<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorization {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Authorization<S> {
    inner: S,
    policy: Option<Arc<CompiledPolicy>>,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for Authorization<S>
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

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(policy) = &self.policy else {
            return self.inner.call(request).boxed();
        };
        let path = request.uri().path();
        let identity = request.extensions().get::<PeerInfo>().and_then(|info| info.identity.as_deref());
        let status = match identity {
            Some(identity) if policy.permits(path, &identity.caller) => {
                if policy.vouches_for_end_users(&identity.caller) {
                    let principal = Principal::from_gateway_headers(request.headers());
                    request.extensions_mut().insert(principal);
                }
                return self.inner.call(request).boxed();
            }
            Some(identity) => {
                tracing::warn!(
                    caller = %identity.caller,
                    caller_serial = %identity.caller_serial,
                    server = %identity.server,
                    method = path,
                    "permission denied: the authorization policy does not allow this caller this method"
                );
                if policy.vouches_for_end_users(&identity.caller) {
                    // A gateway relays this to an end user, who has no business learning
                    // the suite's identities; the log above has them.
                    tonic::Status::permission_denied("permission denied")
                } else {
                    tonic::Status::permission_denied(format!("{} is not allowed to call {path} on {}", identity.caller, identity.server))
                }
            }
            // Unreachable while the handshake requires a certificate; refuse rather than assume.
            None => tonic::Status::unauthenticated("no verified client certificate on this connection"),
        };
        futures::future::ready(Ok(status.into_http())).boxed()
    }
}
