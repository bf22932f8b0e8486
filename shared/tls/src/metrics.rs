//! TLS metrics: handshake outcomes, reload outcomes, and when this service's
//! certificate expires (so an alert fires before a stuck rotation bites).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Handle to the TLS metric families; clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct TlsMetrics {
    handshakes: Family<OutcomeLabels, Counter>,
    reloads: Family<OutcomeLabels, Counter>,
    certificate_expiry: Gauge,
}

/// How a server-side handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeOutcome {
    Accepted,
    /// The peer failed verification or spoke bad TLS.
    Rejected,
    /// The peer did not finish within the handshake timeout.
    TimedOut,
}

impl TlsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_server_handshakes",
            "TLS handshakes on the gRPC port, by outcome (accepted, rejected, timeout).",
            self.handshakes.clone(),
        );
        registry.register(
            "tls_credential_reloads",
            "Attempts to load changed certificate files, by outcome (applied, rejected).",
            self.reloads.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate this service presents stops being valid (Unix seconds).",
            self.certificate_expiry.clone(),
        );
    }

    pub(crate) fn handshake(&self, outcome: HandshakeOutcome) {
        let outcome = match outcome {
            HandshakeOutcome::Accepted => "accepted",
            HandshakeOutcome::Rejected => "rejected",
            HandshakeOutcome::TimedOut => "timeout",
        };
        self.handshakes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn certificate_expires_at(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }
}
