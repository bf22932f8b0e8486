//! The gateway's own metrics, beside the harness's per-method RPC metrics
//! (requests, latency and status codes per route) and the client stack's
//! per-upstream metrics (attempts, circuit state, local rejections).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RateLimitLabels {
    /// `subject`, `address`, `verification` or `in_flight`.
    key: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Handle to the gateway's metric families; clones share the series.
#[derive(Debug, Clone, Default)]
pub struct GatewayMetrics {
    auth_failures: Family<ReasonLabels, Counter>,
    rate_limited: Family<RateLimitLabels, Counter>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    jwks_refreshes: Family<OutcomeLabels, Counter>,
    token_verifications: Counter,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "gateway_auth_failures",
            "Requests refused UNAUTHENTICATED, by reason (missing, malformed, expired, signature, ...).",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "gateway_rate_limited",
            "Requests refused RESOURCE_EXHAUSTED before reaching an upstream, by limit: subject or address (their token bucket), verification (the address's token verifications), in_flight (the subject's calls in flight).",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "gateway_upstream_errors",
            "Proxied calls that failed at the gateway, by upstream and kind (unavailable, circuit_open, bulkhead_full, too_large).",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "gateway_token_verifications",
            "Tokens whose signature and claims were checked (token cache misses, refused or not).",
            metrics.token_verifications.clone(),
        );
        registry.register(
            "gateway_jwks_refreshes",
            "JWKS loads, by outcome (ok, failed).",
            metrics.jwks_refreshes.clone(),
        );
        metrics
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn token_verified(&self) {
        self.token_verifications.inc();
    }

    pub fn rate_limited(&self, key: &'static str) {
        self.rate_limited.get_or_create(&RateLimitLabels { key }).inc();
    }

    pub fn upstream_error(&self, upstream: &'static str, kind: &'static str) {
        self.upstream_errors.get_or_create(&UpstreamLabels { upstream, kind }).inc();
    }

    pub fn jwks_refresh(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.jwks_refreshes.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
