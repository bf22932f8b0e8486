//! What every request meets at the gateway, after the harness's metrics and
//! global in-flight limit: identity headers stripped, the bearer token
//! verified (unless the method is public), a token bucket, then either the
//! gateway's own health and reflection or the proxy to the upstream that
//! serves the request's gRPC service.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use suite_grpc::end_user::{ROLES_HEADER, SUBJECT_HEADER};
use suite_grpc::layers::body::GuardedBody;
use suite_grpc::{PeerInfo, RouteService};
use tonic::body::Body;
use tower::ServiceExt as _;

use crate::auth::{AuthFailure, Authenticator};
use crate::error::GatewayError;
use crate::metrics::GatewayMetrics;
use crate::proxy::Proxy;
use crate::ratelimit::{InFlightLimiter, RateKey, RateLimiter};
use crate::routes::RouteTable;

/// Services the gateway answers itself.
pub const LOCAL_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Methods reachable without a token.
#[derive(Debug, Clone, Default)]
pub struct PublicMethods {
    services: HashSet<String>,
    paths: HashSet<String>,
}

impl PublicMethods {
    /// From `package.Service/*` and `package.Service/Method` entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut public = Self::default();
        for entry in entries {
            let entry = entry.trim().trim_start_matches('/');
            match entry.split_once('/') {
                Some((service, "*")) if !service.is_empty() => {
                    public.services.insert(service.to_owned());
                }
                Some((service, method)) if !service.is_empty() && !method.is_empty() && !method.contains('/') => {
                    public.paths.insert(format!("/{entry}"));
                }
                _ => {
                    return Err(format!(
                        "PUBLIC_METHODS entry {entry:?} must be package.Service/Method or package.Service/*"
                    ));
                }
            }
        }
        Ok(public)
    }

    fn contains(&self, path: &str, service: &str) -> bool {
        self.services.contains(service) || self.paths.contains(path)
    }
}

/// Everything the edge needs, shared by every connection.
#[derive(Debug)]
pub struct EdgeConfig {
    pub authenticator: Arc<Authenticator>,
    pub public: PublicMethods,
    pub limiter: RateLimiter,
    /// Calls in flight per subject (per address without a token).
    pub in_flight: InFlightLimiter,
    /// Token verifications per client address, spent before any signature is checked.
    pub verifications: RateLimiter,
    pub routes: RouteTable,
    pub proxy: Proxy,
    pub metrics: GatewayMetrics,
}

/// The tower service in front of the gateway's own routes.
#[derive(Clone)]
pub struct Edge {
    config: Arc<EdgeConfig>,
    local: RouteService,
}

impl Edge {
    pub fn new(config: Arc<EdgeConfig>, local: RouteService) -> Self {
        Self { config, local }
    }
}

impl tower::Service<http::Request<Body>> for Edge {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let received_at = Instant::now();
        let config = self.config.clone();
        let local = self.local.clone();
        Box::pin(async move {
            Ok(config
                .handle(local, request, received_at)
                .await
                .unwrap_or_else(GatewayError::into_response))
        })
    }
}

impl EdgeConfig {
    async fn handle(
        &self,
        local: RouteService,
        mut request: http::Request<Body>,
        received_at: Instant,
    ) -> Result<http::Response<Body>, GatewayError> {
        let path = request.uri().path().to_owned();
        let service = suite_grpc::split_method_path(&path).map_or("", |(service, _)| service);
        // Only the gateway says who the end user is.
        let headers = request.headers_mut();
        headers.remove(SUBJECT_HEADER);
        headers.remove(ROLES_HEADER);

        let rate_key = if self.public.contains(&path, service) {
            RateKey::Address(client_address(&request))
        } else {
            let client = client_address(&request);
            let may_verify = || self.verifications.try_acquire(&RateKey::Address(client));
            let token = self
                .authenticator
                .authenticate(request.headers(), may_verify)
                .await
                .map_err(|failure| {
                    if let AuthFailure::Throttled(retry_after) = failure {
                        self.metrics.rate_limited("verification");
                        return GatewayError::RateLimited { retry_after };
                    }
                    self.metrics.auth_failure(failure.as_str());
                    tracing::info!(
                        reason = failure.as_str(),
                        method = %path,
                        %client,
                        "request refused: not authenticated"
                    );
                    GatewayError::Unauthenticated(failure)
                })?;
            let headers = request.headers_mut();
            // The services trust the gateway's word; the token itself stays here.
            headers.remove(http::header::AUTHORIZATION);
            headers.insert(SUBJECT_HEADER, token.subject.clone());
            if !token.roles.is_empty() {
                headers.insert(ROLES_HEADER, token.roles.clone());
            }
            RateKey::Subject(token.subject.clone())
        };
        if let Err(retry_after) = self.limiter.try_acquire(&rate_key) {
            self.metrics.rate_limited(rate_key.kind());
            return Err(GatewayError::RateLimited { retry_after });
        }
        // Held until the response has been sent: a client whose calls never finish
        // (a body that never ends, a reply it never reads) holds only its own places.
        let Some(in_flight) = self.in_flight.try_enter(&rate_key) else {
            self.metrics.rate_limited("in_flight");
            return Err(GatewayError::TooManyInFlight);
        };

        let response = if LOCAL_SERVICES.contains(&service) {
            match local.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        } else {
            let upstream = self.routes.route(&path).ok_or(GatewayError::UnknownMethod)?;
            self.proxy.forward(upstream, request, received_at).await?
        };
        Ok(response.map(|body| GuardedBody::wrap(body, in_flight)))
    }
}

fn client_address<B>(request: &http::Request<B>) -> IpAddr {
    request
        .extensions()
        .get::<PeerInfo>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.remote_addr.ip())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn public_methods() {
        let public = PublicMethods::parse(&["grpc.health.v1.Health/*".into(), "/suite.user.v1.UserService/GetUser".into()]).unwrap();
        assert!(public.contains("/grpc.health.v1.Health/Check", "grpc.health.v1.Health"));
        assert!(public.contains("/suite.user.v1.UserService/GetUser", "suite.user.v1.UserService"));
        assert!(!public.contains("/suite.user.v1.UserService/DeleteUser", "suite.user.v1.UserService"));
        assert!(PublicMethods::parse(&["nonsense".into()]).is_err());
    }
}
