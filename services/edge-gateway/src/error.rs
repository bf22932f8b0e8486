//! The gateway's errors and their single mapping to gRPC statuses.

use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::auth::AuthFailure;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("not authenticated: {}", .0.as_str())]
    Unauthenticated(AuthFailure),
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("too many calls in flight for one client")]
    TooManyInFlight,
    #[error("the request body sent nothing for {0:?}")]
    RequestBodyStalled(Duration),
    /// No routed service has the method (or the path is not `/package.Service/Method`).
    #[error("unknown method")]
    UnknownMethod,
    #[error("upstream {upstream} is unavailable: {detail}")]
    UpstreamUnavailable { upstream: &'static str, detail: String },
    /// The client stack refused the call locally (breaker open, bulkhead full).
    #[error("upstream {upstream} refused locally: {}", status.message())]
    UpstreamRefused { upstream: &'static str, status: Status },
    #[error("a request message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge { size: u64, limit: u64 },
    #[error("the deadline passed before the call could be forwarded")]
    DeadlineExceeded,
}

impl GatewayError {
    pub fn into_response(self) -> http::Response<tonic::body::Body> {
        Status::from(self).into_http()
    }
}

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Self {
        match error {
            // Which check failed is for logs and metrics only: telling a caller
            // "expired" versus "bad signature" helps an attacker more than a client.
            GatewayError::Unauthenticated(_) => Status::unauthenticated("missing or invalid bearer token"),
            GatewayError::RequestBodyStalled(idle) => {
                Status::deadline_exceeded(format!("the request body sent nothing for {} ms", idle.as_millis()))
            }
            GatewayError::TooManyInFlight => {
                Status::resource_exhausted("too many calls in flight; wait for one to finish before starting another")
            }
            GatewayError::RateLimited { retry_after } => {
                let mut status = Status::resource_exhausted("rate limit exceeded; retry later");
                let millis = retry_after.as_millis().max(1);
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let metadata = status.metadata_mut();
                // gRPC's own retry pushback, and the HTTP header people know.
                if let Ok(value) = MetadataValue::try_from(millis.to_string()) {
                    metadata.insert("grpc-retry-pushback-ms", value);
                }
                if let Ok(value) = MetadataValue::try_from(seconds.to_string()) {
                    metadata.insert("retry-after", value);
                }
                status
            }
            // The client's path is not echoed back: it may be anything.
            GatewayError::UnknownMethod => Status::unimplemented("unknown method"),
            GatewayError::UpstreamUnavailable { upstream, .. } => Status::unavailable(format!("{upstream} is unavailable; retry later")),
            GatewayError::UpstreamRefused { status, .. } => status,
            GatewayError::MessageTooLarge { size, limit } => {
                Status::resource_exhausted(format!("request message of {size} bytes exceeds the limit of {limit} bytes"))
            }
            GatewayError::DeadlineExceeded => Status::deadline_exceeded("the deadline passed at the gateway"),
        }
    }
}
