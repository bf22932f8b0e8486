//! The `healthcheck` subcommand every binary has: asks a server's plaintext
//! admin port for gRPC health and succeeds only on SERVING. A container image
//! holds nothing but the binary, so this is how `helm test`, a Docker
//! HEALTHCHECK or an operator's shell checks a pod without grpcurl.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client::HostPort;

#[derive(Debug, Clone, clap::Args)]
pub struct HealthCheckArgs {
    /// The admin port to ask (host:port), e.g. user-service.shop.svc:9101.
    #[arg(long, env = "HEALTHCHECK_ADDR")]
    pub addr: HostPort,

    /// Health names that must all answer SERVING: "" is readiness (follows the
    /// dependencies), "liveness" only the process, or a gRPC service's name.
    #[arg(long = "service", default_values_t = [String::new()])]
    pub services: Vec<String>,

    /// Give up on each name after this long.
    #[arg(long, env = "HEALTHCHECK_TIMEOUT_MS", default_value_t = 5000)]
    pub timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthCheckError {
    #[error("cannot reach {addr}: {detail}")]
    Unreachable { addr: HostPort, detail: String },
    #[error("not serving: {0}")]
    NotServing(String),
}

/// Asks for every name in `args`, prints one line per answer on stdout, and
/// fails unless every answer is SERVING.
pub async fn health_check(args: &HealthCheckArgs) -> Result<(), HealthCheckError> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let unreachable = |detail: String| HealthCheckError::Unreachable {
        addr: args.addr.clone(),
        detail,
    };
    let channel = tokio::time::timeout(timeout, crate::client::connect_insecure(&args.addr))
        .await
        .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
        .map_err(|error| unreachable(error.to_string()))?;
    let mut client = HealthClient::new(channel);
    let mut not_serving = Vec::new();
    for service in &args.services {
        let answer = tokio::time::timeout(timeout, client.check(HealthCheckRequest { service: service.clone() })).await;
        let status = match answer {
            Ok(Ok(response)) => ServingStatus::try_from(response.into_inner().status)
                .map_or_else(|_| "an unknown status".to_owned(), |status| status.as_str_name().to_owned()),
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        // The answer is this command's output, for whoever runs it in a pod.
        #[allow(clippy::print_stdout)]
        {
            println!("{service:?}: {status}");
        }
        if status != ServingStatus::Serving.as_str_name() {
            not_serving.push(format!("{service:?} is {status}"));
        }
    }
    if not_serving.is_empty() {
        Ok(())
    } else {
        Err(HealthCheckError::NotServing(not_serving.join(", ")))
    }
}
