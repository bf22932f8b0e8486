//! Wiring: configuration in, a running gateway out.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use suite_grpc::client::Dial;
use suite_grpc::layers::trace::RemoteTraceContext;
use suite_grpc::process::UsageError;
use suite_grpc::{GrpcServer, Listeners, RouteService, Transport, shutdown_signal};
use suite_tls::{Credentials, ListenerCredentials, ListenerPaths, MtlsConnector, ServerTls, TransportMode};

use crate::auth::Authenticator;
use crate::config::{Command, ServeConfig};
use crate::edge::{Edge, EdgeConfig, PublicMethods};
use crate::metrics::GatewayMetrics;
use crate::proxy::Proxy;
use crate::ratelimit::{InFlightLimiter, RateLimiter};
use crate::routes::{RouteTable, RoutesConfig, RoutesError};

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => {
            let listeners = Listeners::bind(config.grpc_addr, config.admin_addr)
                .await
                .context("cannot bind the gRPC or admin address")?;
            serve(*config, listeners, shutdown_signal()).await
        }
        Command::DevToken(args) => crate::dev_token::print(&args),
        Command::Healthcheck(args) => Ok(suite_grpc::health_check(&args).await?),
    }
}

/// Serves on `listeners` until `shutdown` completes, then drains.
pub async fn serve(config: ServeConfig, listeners: Listeners, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let usage = |error: &dyn std::fmt::Display| UsageError(error.to_string());
    let tls_args = &config.security.tls;
    // The gateway's SPIFFE identity towards the services, and the certificate clients see.
    let (transport, identity) = match tls_args.mode().map_err(suite_grpc::SecurityError::from)? {
        TransportMode::InsecurePlaintext => (Transport::InsecurePlaintext, None),
        TransportMode::Mtls(paths) => {
            let identity = Credentials::load(paths.clone()).context("cannot load the gateway's identity certificate")?;
            identity.watch(tls_args.reload_interval());
            let listener = ListenerCredentials::load(ListenerPaths {
                cert: config.listener.listener_tls_cert.clone().unwrap_or(paths.cert),
                key: config.listener.listener_tls_key.clone().unwrap_or(paths.key),
            })
            .context("cannot load the listener certificate")?;
            listener.watch(tls_args.reload_interval());
            let tls = ServerTls::server_only(listener, tls_args.options())?;
            (Transport::ServerOnlyTls { tls }, Some(identity))
        }
    };

    let remote_trace_context = if config.trust_client_trace_context {
        RemoteTraceContext::Trust
    } else {
        RemoteTraceContext::Ignore
    };
    let mut server = GrpcServer::new(config.server.clone(), transport).with_remote_trace_context(remote_trace_context);
    let registry = server.metrics_registry();
    let metrics = GatewayMetrics::register(registry);
    if let Some(identity) = &identity {
        identity.metrics().register(registry.sub_registry_with_prefix("upstream"));
    }
    let routes_config = match &config.routes {
        Some(path) => RoutesConfig::from_file(path).map_err(|error| usage(&error))?,
        None => RoutesConfig::local_defaults(),
    };
    let resolve_interval = std::time::Duration::from_millis(config.resolve_interval_ms);
    let routes = RouteTable::build(&routes_config, registry, resolve_interval, |spec| match &identity {
        Some(identity) => {
            let own = identity.identity();
            let expected = spec.identity(Some(&own))?.ok_or_else(|| RoutesError::Invalid(spec.name.clone()))?;
            tracing::info!(upstream = %spec.name, address = %spec.address, %expected, services = ?spec.services, "route");
            let connector = MtlsConnector::new(identity, expected, tls_args.options())
                .map_err(|error| RoutesError::Invalid(format!("upstream {}: {error}", spec.name)))?;
            Ok(Dial::Mtls(connector))
        }
        None => Ok(Dial::Plaintext),
    })
    .map_err(|error| usage(&error))?;

    let public = PublicMethods::parse(&config.auth.public_methods).map_err(|error| usage(&error))?;
    let authenticator = Authenticator::from_config(&config.auth, metrics.clone())
        .await
        .map_err(|error| usage(&error))?;
    let routes = routes.with_known_methods(suite_grpc::method_paths(suite_proto::FILE_DESCRIPTOR_SET));
    let routed: HashSet<&str> = routes.services().collect();
    let (descriptors, undescribed) =
        crate::descriptors::routed(suite_proto::FILE_DESCRIPTOR_SET, &routed).context("the built-in descriptor set is corrupt")?;
    if !undescribed.is_empty() {
        tracing::warn!(
            services = ?undescribed,
            "routed services without descriptors: reflection at the gateway will not list them, and any method name \
             that is a protobuf identifier is forwarded to them"
        );
    }
    // Reflection needs the bytes for the life of the process.
    let descriptors: &'static [u8] = Box::leak(descriptors.into_boxed_slice());

    let edge = Arc::new(EdgeConfig {
        authenticator,
        public,
        limiter: RateLimiter::new(&config.rate_limit),
        verifications: RateLimiter::for_verifications(&config.rate_limit),
        in_flight: InFlightLimiter::new(&config.rate_limit),
        proxy: Proxy::new(
            config.server.max_message_bytes,
            std::time::Duration::from_millis(config.request_body_idle_timeout_ms),
            metrics.clone(),
            suite_grpc::method_paths(descriptors),
        ),
        routes,
        metrics,
    });
    // Not ready while no token can be verified, so no traffic is sent to a gateway that would refuse it all.
    let keys = edge.authenticator.clone();
    server
        .with_readiness(move || std::future::ready(keys.has_keys()))
        .with_descriptor_set(descriptors)
        .wrap_routes(move |local| RouteService::new(Edge::new(edge.clone(), local)))
        .serve(listeners, shutdown)
        .await?;
    Ok(())
}
