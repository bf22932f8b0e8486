//! Where a dependency's replicas are.
//!
//! An upstream is named by an address: `host:port`, or several separated by
//! commas. An IP literal is one endpoint for good. A DNS name stands for every
//! address it resolves to: in Kubernetes a headless Service's name resolves to
//! the IPs of its ready pods, so the replicas an HPA adds appear in the answer
//! and those that go away leave it. Names are resolved with hickory-resolver
//! (the system's resolv.conf, search domains included, no cache of its own so
//! an answer is never older than the resolution), every `resolve_interval`
//! and soon after a caller reports a connection failure ([`Endpoints::refresh_soon`]).
//! A resolution that fails or finds nothing keeps the last good endpoints and
//! says so in the log: a DNS hiccup must not empty a working pool.

use std::collections::BTreeSet;
use std::fmt::{self, Display};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use suite_telemetry::RateLimitedLog;
use tokio::sync::{Notify, watch};

/// Resolutions triggered by failures are at least this far apart.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);
/// Until a name has resolved once, it is tried again this soon.
const FIRST_RESOLUTION_RETRY: Duration = Duration::from_millis(200);

/// Where one host listens: `host:port`, the host a DNS name or an IP literal
/// (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    text: String,
    host: String,
    port: u16,
}

impl HostPort {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself when the host is an IP literal.
    pub fn ip_literal(&self) -> Option<SocketAddr> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{text:?} is not host:port (a DNS name or IP address, IPv6 in brackets, and a port)");
        let authority: http::uri::Authority = text.parse().map_err(|_| invalid())?;
        let host = authority.host();
        // An authority may carry credentials; an address may not.
        if host.is_empty() || authority.as_str().contains('@') {
            return Err(invalid());
        }
        // Digits only: the port parser also takes a sign ("host:+1").
        let port = authority
            .port()
            .filter(|port| port.as_str().bytes().all(|byte| byte.is_ascii_digit()))
            .map(|port| port.as_u16())
            .filter(|port| *port != 0)
            .ok_or_else(invalid)?;
        if host.starts_with('[') && host.trim_matches(['[', ']']).parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid());
        }
        Ok(Self {
            text: authority.as_str().to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

impl Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        Self {
            text: addr.to_string(),
            host: match addr.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            },
            port: addr.port(),
        }
    }
}

/// An upstream's address: one `host:port` or a comma-separated list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddress(Vec<HostPort>);

impl UpstreamAddress {
    pub fn hosts(&self) -> &[HostPort] {
        &self.0
    }
}

impl FromStr for UpstreamAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hosts = text
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<HostPort>, String>>()?;
        if hosts.is_empty() {
            return Err(format!("{text:?} names no host:port"));
        }
        Ok(Self(hosts))
    }
}

impl Display for UpstreamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, host) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{host}")?;
        }
        Ok(())
    }
}

impl From<SocketAddr> for UpstreamAddress {
    fn from(addr: SocketAddr) -> Self {
        Self(vec![addr.into()])
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution for {address}: {detail}")]
pub struct DiscoveryError {
    address: String,
    detail: String,
}

/// The current endpoints of one upstream, kept up to date by a task of its own
/// (stopped when the last clone is dropped). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Endpoints {
    current: watch::Receiver<Arc<[SocketAddr]>>,
    refresh: Arc<Notify>,
    _resolver: Arc<AbortOnDrop>,
}

impl Endpoints {
    /// Starts following `address`, re-resolving its names every `resolve_interval`.
    /// `name` says which upstream in the logs. Must be called inside a tokio runtime.
    pub fn watch(name: &'static str, address: &UpstreamAddress, resolve_interval: Duration) -> Result<Self, DiscoveryError> {
        let fixed: BTreeSet<SocketAddr> = address.hosts().iter().filter_map(HostPort::ip_literal).collect();
        let names: Vec<HostPort> = address.hosts().iter().filter(|host| host.ip_literal().is_none()).cloned().collect();
        let (publish, current) = watch::channel(fixed.iter().copied().collect::<Arc<[SocketAddr]>>());
        let refresh = Arc::new(Notify::new());
        let task = if names.is_empty() {
            None
        } else {
            let resolver = resolver().map_err(|detail| DiscoveryError {
                address: address.to_string(),
                detail,
            })?;
            let follow = Follow {
                name,
                resolver,
                names,
                fixed,
                publish,
                refresh: refresh.clone(),
                interval: resolve_interval,
                failures: RateLimitedLog::new(Duration::from_secs(60)),
            };
            Some(tokio::spawn(follow.run()))
        };
        Ok(Self {
            current,
            refresh,
            _resolver: Arc::new(AbortOnDrop(task)),
        })
    }

    /// A fixed set, never re-resolved.
    pub fn fixed(addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        let (_publish, current) = watch::channel(addresses.into_iter().collect::<Arc<[SocketAddr]>>());
        Self {
            current,
            refresh: Arc::new(Notify::new()),
            _resolver: Arc::new(AbortOnDrop(None)),
        }
    }

    /// Endpoints set by hand through the returned sender: for tests, and for callers
    /// that learn of replicas some other way.
    pub fn manual(initial: impl IntoIterator<Item = SocketAddr>) -> (watch::Sender<Arc<[SocketAddr]>>, Self) {
        let (publish, current) = watch::channel(initial.into_iter().collect::<Arc<[SocketAddr]>>());
        let endpoints = Self {
            current,
            refresh: Arc::new(Notify::new()),
            _resolver: Arc::new(AbortOnDrop(None)),
        };
        (publish, endpoints)
    }

    /// The endpoints known now (empty until a name has resolved once).
    pub fn current(&self) -> Arc<[SocketAddr]> {
        self.current.borrow().clone()
    }

    /// Changes to the endpoints, starting with the current ones.
    pub fn subscribe(&self) -> watch::Receiver<Arc<[SocketAddr]>> {
        self.current.clone()
    }

    /// Asks for a resolution soon: a connection failed, and the replica may be gone.
    pub fn refresh_soon(&self) {
        self.refresh.notify_one();
    }
}

#[derive(Debug)]
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// A resolver on the system's configuration, caching nothing: every resolution
/// asks the name server, whose answer for a headless Service follows the pods.
fn resolver() -> Result<TokioResolver, String> {
    let mut builder = TokioResolver::builder_tokio().map_err(|error| error.to_string())?;
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|error| error.to_string())
}

struct Follow {
    name: &'static str,
    resolver: TokioResolver,
    names: Vec<HostPort>,
    fixed: BTreeSet<SocketAddr>,
    publish: watch::Sender<Arc<[SocketAddr]>>,
    refresh: Arc<Notify>,
    interval: Duration,
    failures: RateLimitedLog,
}

impl Follow {
    async fn run(self) {
        let mut resolved_once = false;
        loop {
            match self.resolve().await {
                Ok(found) => {
                    resolved_once = true;
                    self.publish.send_if_modified(|current| {
                        if current.iter().copied().eq(found.iter().copied()) {
                            return false;
                        }
                        tracing::info!(upstream = self.name, endpoints = ?found, "upstream endpoints changed");
                        *current = found.iter().copied().collect();
                        true
                    });
                }
                Err(problem) => {
                    if let Some(suppressed) = self.failures.should_log() {
                        let kept = self.publish.borrow().len();
                        tracing::warn!(
                            upstream = self.name,
                            %problem,
                            kept_endpoints = kept,
                            failures_not_logged = suppressed,
                            "resolving the upstream failed; keeping the endpoints it had"
                        );
                    }
                }
            }
            let wait = if resolved_once { self.interval } else { FIRST_RESOLUTION_RETRY };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.refresh.notified() => tokio::time::sleep(MIN_REFRESH_GAP.min(wait)).await,
            }
        }
    }

    /// Every address of every name, with the fixed ones; an error when no name
    /// resolved to anything.
    async fn resolve(&self) -> Result<BTreeSet<SocketAddr>, String> {
        let mut found = self.fixed.clone();
        let mut problems = Vec::new();
        let mut any = false;
        for host in &self.names {
            match self.resolver.lookup_ip(host.host()).await {
                Ok(lookup) => {
                    let before = found.len();
                    found.extend(lookup.iter().map(|ip| SocketAddr::new(ip, host.port())));
                    if found.len() > before {
                        any = true;
                    } else {
                        problems.push(format!("{} resolved to no address", host.host()));
                    }
                }
                Err(error) => problems.push(format!("{}: {error}", host.host())),
            }
        }
        if any { Ok(found) } else { Err(problems.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses_are_one_or_more_host_ports() {
        for good in [
            "user-service:50051",
            "user-service-headless.shop.svc.cluster.local:50051",
            "127.0.0.1:50051",
            "[::1]:50051",
            "127.0.0.2:50051, 127.0.0.3:50051",
        ] {
            let address: UpstreamAddress = good.parse().unwrap_or_else(|error| panic!("{good}: {error}"));
            assert_eq!(address.to_string(), good.replace(", ", ","));
        }
        for bad in [
            "",
            ",",
            "user-service",
            "user-service:",
            ":50051",
            "user-service:0",
            "user-service:70000",
            "user-service:+1",
            "user@host:1",
            "::1:50051",
            "[nonsense]:1",
            "host/path:1",
            "a:1,b",
        ] {
            assert!(bad.parse::<UpstreamAddress>().is_err(), "{bad:?} was accepted");
        }
        let address: UpstreamAddress = "127.0.0.2:1,user-service:2,[::1]:3".parse().unwrap();
        let literals: Vec<_> = address.hosts().iter().map(HostPort::ip_literal).collect();
        assert_eq!(
            literals,
            [Some("127.0.0.2:1".parse().unwrap()), None, Some("[::1]:3".parse().unwrap())]
        );
    }

    #[tokio::test]
    async fn ip_literals_are_endpoints_without_any_resolution() {
        let address: UpstreamAddress = "127.0.0.3:50051,127.0.0.2:50051".parse().unwrap();
        let endpoints = Endpoints::watch("users", &address, Duration::from_secs(30)).unwrap();
        let current: Vec<SocketAddr> = endpoints.current().to_vec();
        assert_eq!(current, ["127.0.0.2:50051".parse().unwrap(), "127.0.0.3:50051".parse().unwrap()]);
    }
}
