//! Which upstream serves which gRPC service, and how the gateway calls it.
//!
//! The routes file (`GATEWAY_ROUTES`) lists upstreams:
//!
//! ```toml
//! [[upstreams]]
//! name = "user-service"               # labels metrics and logs
//! address = "user-service-headless.suite.svc:50051"   # or "10.0.0.7:50051,10.0.0.8:50051"
//! services = ["suite.user.v1.UserService"]
//! # identity = "spiffe://suite.local/ns/prod/sa/user-service"
//! #   default: the gateway's trust domain and namespace, service account = name
//! # max_concurrent_calls = 1024       # bulkhead
//! # breaker_consecutive_failures = 5, breaker_failure_ratio = 0.5, breaker_min_requests = 20,
//! # breaker_window_ms = 10000, breaker_slow_call_ms = 1000, breaker_slow_call_ratio = 0.5,
//! # breaker_open_ms = 1000, breaker_open_max_ms = 10000, breaker_half_open_probes = 1
//! ```
//!
//! An upstream's address stands for every address its names resolve to (a
//! headless Service: one per ready pod), re-resolved every `RESOLVE_INTERVAL_MS`
//! and soon after a connection fails. The gateway keeps one long-lived
//! multiplexed HTTP/2 connection over mutual TLS to each of those endpoints
//! ([`crate::upstream`]), the expected identity checked on every one, and sends
//! each call to the less busy of two ([`Pool`]). A call that could not reach its
//! endpoint (no connection, or the one there had just gone away) goes to another
//! before anything of it was sent; once sent, the proxy never retries, since it
//! streams bodies it cannot replay. The breaker and bulkhead ([`Resilience`]) are
//! per upstream: they protect the gateway and the service as a whole, while an
//! endpoint that cannot be reached, or fails calls in a row, is set aside by
//! the pool, per endpoint.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use prometheus_client::registry::Registry;
use suite_balance::Pool;
use suite_discovery::Endpoints;
use suite_grpc::client::{BreakerConfig, ClientMetrics, DependencyConfig, Dial, Resilience, UpstreamAddress};
use suite_grpc::split_method_path;
use suite_tls::SpiffeId;

use crate::upstream::UpstreamConnection;

/// Calls in flight to one upstream before the bulkhead refuses: the gateway
/// carries every client's traffic, so far more than one service calling another.
const DEFAULT_MAX_CONCURRENT_CALLS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("cannot read routes file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("routes file is not valid TOML of the expected shape: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("routes file: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    upstreams: Vec<UpstreamSpec>,
}

/// One upstream as configured.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    /// `host:port`, or several separated by commas; a DNS name stands for every
    /// address it resolves to.
    pub address: String,
    pub services: Vec<String>,
    pub identity: Option<String>,
    pub max_concurrent_calls: Option<usize>,
    pub breaker_consecutive_failures: Option<u32>,
    pub breaker_failure_ratio: Option<f64>,
    pub breaker_min_requests: Option<u64>,
    pub breaker_window_ms: Option<u64>,
    pub breaker_slow_call_ms: Option<u64>,
    pub breaker_slow_call_ratio: Option<f64>,
    pub breaker_open_ms: Option<u64>,
    pub breaker_open_max_ms: Option<u64>,
    pub breaker_half_open_probes: Option<u32>,
}

impl UpstreamSpec {
    fn new(name: &str, address: &str, service: &str) -> Self {
        Self {
            name: name.to_owned(),
            address: address.to_owned(),
            services: vec![service.to_owned()],
            identity: None,
            max_concurrent_calls: None,
            breaker_consecutive_failures: None,
            breaker_failure_ratio: None,
            breaker_min_requests: None,
            breaker_window_ms: None,
            breaker_slow_call_ms: None,
            breaker_slow_call_ratio: None,
            breaker_open_ms: None,
            breaker_open_max_ms: None,
            breaker_half_open_probes: None,
        }
    }

    /// The identity the upstream must present: as configured, or the gateway's
    /// own trust domain and namespace with the upstream's name as service account.
    pub fn identity(&self, own: Option<&SpiffeId>) -> Result<Option<SpiffeId>, RoutesError> {
        let invalid = |error: suite_tls::IdentityError| RoutesError::Invalid(format!("upstream {}: identity: {error}", self.name));
        match (&self.identity, own) {
            (Some(identity), _) => identity.parse().map(Some).map_err(invalid),
            (None, Some(own)) => SpiffeId::new(own.trust_domain(), own.namespace(), &self.name)
                .map(Some)
                .map_err(invalid),
            (None, None) => Ok(None),
        }
    }

    /// The client stack's settings: the suite's defaults, a larger bulkhead, and what the file overrides.
    pub fn dependency_config(&self) -> DependencyConfig {
        let defaults = DependencyConfig::default();
        let breaker = defaults.breaker;
        let ms = Duration::from_millis;
        DependencyConfig {
            // Never used: the proxy does not retry.
            max_attempts: 1,
            max_concurrent_calls: self.max_concurrent_calls.unwrap_or(DEFAULT_MAX_CONCURRENT_CALLS).max(1),
            breaker: BreakerConfig {
                window: self.breaker_window_ms.map_or(breaker.window, ms),
                min_requests: self.breaker_min_requests.unwrap_or(breaker.min_requests),
                failure_ratio: self.breaker_failure_ratio.unwrap_or(breaker.failure_ratio),
                consecutive_failures: self.breaker_consecutive_failures.unwrap_or(breaker.consecutive_failures).max(1),
                slow_call: self.breaker_slow_call_ms.map_or(breaker.slow_call, ms),
                slow_call_ratio: self.breaker_slow_call_ratio.unwrap_or(breaker.slow_call_ratio),
                open_for: self.breaker_open_ms.map_or(breaker.open_for, ms),
                open_for_max: self.breaker_open_max_ms.map_or(breaker.open_for_max, ms),
                half_open_probes: self.breaker_half_open_probes.unwrap_or(breaker.half_open_probes).max(1),
            },
            ..defaults
        }
    }
}

/// The parsed routes file: upstreams and the services each serves.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutesConfig {
    pub upstreams: Vec<UpstreamSpec>,
}

impl RoutesConfig {
    /// The suite on one machine: what `just up` starts.
    pub fn local_defaults() -> Self {
        Self {
            upstreams: vec![
                UpstreamSpec::new("user-service", "127.0.0.1:50051", "suite.user.v1.UserService"),
                UpstreamSpec::new("order-service", "127.0.0.1:50052", "suite.order.v1.OrderService"),
            ],
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|error| RoutesError::Read(path.display().to_string(), error))?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, RoutesError> {
        let file: RoutesFile = toml::from_str(text)?;
        let config = Self { upstreams: file.upstreams };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), RoutesError> {
        let invalid = |detail: String| Err(RoutesError::Invalid(detail));
        if self.upstreams.is_empty() {
            return invalid("no upstreams".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut services = std::collections::HashSet::new();
        for upstream in &self.upstreams {
            if !names.insert(upstream.name.as_str()) {
                return invalid(format!("upstream {} is listed twice", upstream.name));
            }
            if let Err(error) = upstream.address.parse::<UpstreamAddress>() {
                return invalid(format!("upstream {}: address {error}", upstream.name));
            }
            if upstream.services.is_empty() {
                return invalid(format!("upstream {} serves no services", upstream.name));
            }
            for service in &upstream.services {
                let well_formed = !service.is_empty() && service.contains('.') && !service.contains('/');
                if !well_formed {
                    return invalid(format!(
                        "upstream {}: service {service:?} must be a fully qualified name like suite.user.v1.UserService",
                        upstream.name
                    ));
                }
                if !services.insert(service.as_str()) {
                    return invalid(format!("service {service} is routed to two upstreams"));
                }
            }
        }
        Ok(())
    }
}

/// A connected upstream: its name and client stack.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: &'static str,
    pub resilience: Resilience,
    /// A connection to each of the upstream's endpoints.
    pub pool: Pool<UpstreamConnection>,
}

/// Service name -> upstream, and the methods each routed service has.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_service: HashMap<String, Upstream>,
    /// The methods of every routed service a descriptor set describes. A path
    /// naming another method of such a service is never forwarded.
    methods: HashMap<String, HashSet<String>>,
}

impl RouteTable {
    /// Builds the table and starts following each upstream's endpoints (every
    /// `resolve_interval`); `dial` says how each upstream is reached. Must be
    /// called inside a tokio runtime.
    pub fn build(
        config: &RoutesConfig,
        registry: &mut Registry,
        resolve_interval: Duration,
        mut dial: impl FnMut(&UpstreamSpec) -> Result<Dial, RoutesError>,
    ) -> Result<Self, RoutesError> {
        let mut by_service = HashMap::new();
        let metrics = ClientMetrics::register(registry);
        for spec in &config.upstreams {
            let invalid = |error: &dyn std::fmt::Display| RoutesError::Invalid(format!("upstream {}: {error}", spec.name));
            let address: UpstreamAddress = spec.address.parse().map_err(|error| invalid(&error))?;
            // Every request carries the first configured name, as it would through a ClusterIP Service.
            let authority: http::uri::Authority = address.hosts()[0].to_string().parse().map_err(|error| invalid(&error))?;
            // Metric labels need 'static names; upstreams live as long as the process.
            let name: &'static str = Box::leak(spec.name.clone().into_boxed_str());
            let endpoints = Endpoints::watch(name, &address, resolve_interval).map_err(|error| invalid(&error))?;
            let dial = dial(spec)?;
            let counted = metrics.clone();
            let pool = Pool::new(
                endpoints,
                move |addr| UpstreamConnection::new(addr, authority.clone(), dial.clone()),
                move |count| counted.set_endpoints(name, count),
            );
            let upstream = Upstream {
                name,
                resilience: Resilience::new(name, spec.dependency_config(), &metrics),
                pool,
            };
            for service in &spec.services {
                by_service.insert(service.clone(), upstream.clone());
            }
        }
        Ok(Self {
            by_service,
            methods: HashMap::new(),
        })
    }

    /// Restricts each routed service that `method_paths` (`/package.Service/Method`,
    /// from the descriptor sets) describes to the methods listed there.
    pub fn with_known_methods(mut self, method_paths: impl IntoIterator<Item = String>) -> Self {
        for path in method_paths {
            if let Some((service, method)) = split_method_path(&path)
                && self.by_service.contains_key(service)
            {
                self.methods.entry(service.to_owned()).or_default().insert(method.to_owned());
            }
        }
        self
    }

    /// The upstream that serves `path` (`/package.Service/Method`), or `None`
    /// when no upstream serves it: the service is not routed, the method is not
    /// one of a described service's, or (for a service no descriptor describes)
    /// the method is not a protobuf identifier. So an encoded, dotted or
    /// slashed method name never reaches an upstream.
    pub fn route(&self, path: &str) -> Option<&Upstream> {
        let (service, method) = split_method_path(path)?;
        let upstream = self.by_service.get(service)?;
        let known = match self.methods.get(service) {
            Some(methods) => methods.contains(method),
            None => is_identifier(method),
        };
        known.then_some(upstream)
    }

    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.by_service.keys().map(String::as_str)
    }
}

/// A protobuf identifier: a letter or `_`, then letters, digits and `_`.
fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_a_routes_file() {
        let config = RoutesConfig::from_toml(
            r#"
            [[upstreams]]
            name = "user-service"
            address = "user-service.suite.svc:50051"
            services = ["suite.user.v1.UserService"]
            max_concurrent_calls = 10
            breaker_open_ms = 100
            "#,
        )
        .unwrap();
        let upstream = &config.upstreams[0];
        let dependency = upstream.dependency_config();
        assert_eq!(dependency.max_concurrent_calls, 10);
        assert_eq!(dependency.breaker.open_for, Duration::from_millis(100));
        assert_eq!(dependency.breaker.min_requests, DependencyConfig::default().breaker.min_requests);
        let own = SpiffeId::new("suite.local", "prod", "edge-gateway").unwrap();
        assert_eq!(
            upstream.identity(Some(&own)).unwrap().unwrap().to_string(),
            "spiffe://suite.local/ns/prod/sa/user-service"
        );
    }

    #[tokio::test]
    async fn routes_only_the_methods_a_routed_service_has() {
        let config = RoutesConfig::from_toml(
            r#"
            [[upstreams]]
            name = "user-service"
            address = "127.0.0.1:1"
            services = ["suite.user.v1.UserService", "acme.v1.Undescribed"]
            "#,
        )
        .unwrap();
        let table = RouteTable::build(&config, &mut Registry::default(), Duration::from_secs(30), |_| Ok(Dial::Plaintext))
            .unwrap()
            .with_known_methods(suite_grpc::method_paths(suite_proto::FILE_DESCRIPTOR_SET));
        let routed = |path: &str| table.route(path).map(|upstream| upstream.name);
        assert_eq!(routed("/suite.user.v1.UserService/GetUser"), Some("user-service"));
        assert_eq!(routed("/acme.v1.Undescribed/Anything_2"), Some("user-service"));
        for refused in [
            "/suite.user.v1.UserService/NoSuchMethod",
            "/suite.user.v1.UserService/../x",
            "/suite.user.v1.UserService/Get%55ser",
            "/suite.user.v1.UserService/GetUser/",
            "/suite.user.v1.UserService/GetUser/x",
            "/suite.user.v1.UserService/",
            "/suite.user.v1.UserService",
            "/suite.order.v1.OrderService/GetOrder",
            "/acme.v1.Undescribed/../x",
            "/acme.v1.Undescribed/Do%20It",
            "/acme.v1.Undescribed/9lives",
            "/acme.v1.Undescribed/",
            "",
            "/",
        ] {
            assert_eq!(routed(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn refuses_bad_files() {
        for bad in [
            "upstreams = []",
            r#"[[upstreams]]
               name = "a"
               address = "nowhere"
               services = ["x.Y"]"#,
            r#"[[upstreams]]
               name = "a"
               address = "h:1"
               services = ["/x.Y/Z"]"#,
            r#"[[upstreams]]
               name = "a"
               address = "h:1"
               services = ["x.Y"]
               [[upstreams]]
               name = "b"
               address = "h:2"
               services = ["x.Y"]"#,
            r#"[[upstreams]]
               name = "a"
               address = "h:1"
               services = ["x.Y"]
               typo = 1"#,
        ] {
            assert!(RoutesConfig::from_toml(bad).is_err(), "{bad}");
        }
    }
}
