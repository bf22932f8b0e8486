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
    #[arg(long, env = "READINESS_INTERVAL_MS", default_value_t = 500)]
    pub readiness_interval_ms: u64,

    /// Largest block of request headers (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
    #[arg(long, env = "GRPC_MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024)]
    pub max_header_list_bytes: u32,

    /// Largest HTTP/2 frame the server accepts (16 KiB to 16 MiB).
    #[arg(long, env = "GRPC_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: u32,

    /// Streams a client may open and reset before the server accepted them; past
    /// it the connection is closed (the HTTP/2 rapid-reset attack).
    #[arg(long, env = "GRPC_MAX_PENDING_RESET_STREAMS", default_value_t = 20)]
    pub max_pending_reset_streams: usize,

    /// A ping goes out on a connection silent for this long ...
    #[arg(long, env = "GRPC_KEEPALIVE_INTERVAL_MS", default_value_t = 30_000)]
    pub keepalive_interval_ms: u64,

    /// ... and the connection is closed if the ack takes longer than this.
    #[arg(long, env = "GRPC_KEEPALIVE_TIMEOUT_MS", default_value_t = 10_000)]
    pub keepalive_timeout_ms: u64,

    /// A connection with no request in progress for this long is closed (0: never).
    #[arg(long, env = "GRPC_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    pub idle_timeout_ms: u64,

    /// A connection older than this (give or take 10%, drawn once per process) is told
    /// to go away (HTTP/2 GOAWAY): its calls in flight finish, and the client's next call
    /// opens a new connection, which a Service may send to another replica. So clients
    /// behind one address, grpcurl and other tools included, spread over replicas
    /// added since they connected (0: never).
    #[arg(long, env = "MAX_CONNECTION_AGE_MS", default_value_t = 300_000)]
    pub max_connection_age_ms: u64,

    /// How long calls in flight on a connection past its age may still take before it is closed.
    #[arg(long, env = "MAX_CONNECTION_AGE_GRACE_MS", default_value_t = 30_000)]
    pub max_connection_age_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            max_concurrent_requests: 1024,
            max_concurrent_streams: 256,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 20_000,
            readiness_interval_ms: 500,
            max_header_list_bytes: 16 * 1024,
            max_frame_bytes: 16 * 1024,
            max_pending_reset_streams: 20,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_connection_age_ms: 300_000,
            max_connection_age_grace_ms: 30_000,
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

    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }

    pub fn readiness_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_interval_ms)
    }

    /// The maximum connection age with this process's jitter (uniform within +/-10%):
    /// replicas started together do not send all their clients away at once.
    pub fn max_connection_age(&self) -> Option<Duration> {
        (self.max_connection_age_ms > 0).then(|| jittered(Duration::from_millis(self.max_connection_age_ms), rand::random::<f64>()))
    }

    pub fn max_connection_age_grace(&self) -> Duration {
        Duration::from_millis(self.max_connection_age_grace_ms)
    }
}

/// `age` moved by up to 10% either way, `unit` in [0, 1) choosing where.
fn jittered(age: Duration, unit: f64) -> Duration {
    age.mul_f64(0.9 + 0.2 * unit)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerConfig,
    }

    #[test]
    fn connection_age_is_jittered_within_ten_percent_and_zero_turns_it_off() {
        let age = Duration::from_secs(300);
        assert_eq!(jittered(age, 0.0), Duration::from_secs(270));
        assert_eq!(jittered(age, 0.5), age);
        assert!(jittered(age, 0.999_999) < Duration::from_secs(330));
        let config = ServerConfig::default();
        let drawn = config.max_connection_age().unwrap_or_default();
        assert!(drawn >= Duration::from_secs(270) && drawn < Duration::from_secs(330), "{drawn:?}");
        let off = ServerConfig {
            max_connection_age_ms: 0,
            ..ServerConfig::default()
        };
        assert_eq!(off.max_connection_age(), None);
    }

    #[test]
    fn flag_defaults_are_the_documented_defaults() {
        let cli = Cli::try_parse_from(["server"]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(format!("{:?}", cli.server), format!("{:?}", ServerConfig::default()));
    }
}
