//! Tuning shared by every gRPC server of the suite. Listen addresses belong to
//! each service's own configuration (each has its own default ports).

use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Largest request or response message, in bytes; a larger one is rejected
    /// (tonic answers OUT_OF_RANGE) before it reaches a handler.
    #[arg(long, env = "GRPC_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,

    /// Requests served at once across all connections; beyond it requests are
    /// shed at once with RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, env = "GRPC_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// Upper bound on any request, whatever deadline the client sent.
    #[arg(long, env = "GRPC_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// After SIGTERM, how long in-flight requests may take before connections are closed.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 20_000)]
    pub shutdown_grace_ms: u64,

    /// How often readiness (database reachable) is re-checked.
    #[arg(long, env = "READINESS_INTERVAL_MS", default_value_t = 2_000)]
    pub readiness_interval_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            max_concurrent_requests: 1024,
            max_concurrent_streams: 256,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 20_000,
            readiness_interval_ms: 2_000,
        }
    }
}

impl ServerConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn readiness_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_interval_ms)
    }
}
