//! One downstream dependency as every service of the suite calls it: a
//! deadline carved from the caller's, bounded retries of idempotent calls under
//! a retry budget, a circuit breaker and a bulkhead. Written once here so every
//! service-to-service call behaves the same.
//!
//! Per attempt: deadline left? -> breaker admits? -> bulkhead slot? -> call with
//! `grpc-timeout` = what is left minus the margin. A retryable failure of an
//! idempotent call is retried after a jittered backoff if attempts, budget and
//! deadline all allow; otherwise the failure is returned as it is.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use suite_balance::{Lease, Pool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

use super::breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
use super::budget::RetryBudget;
use super::deadline::Deadline;
use super::traced::TracedChannel;

/// Every threshold of the client stack; the defaults are what the services ship with.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencyConfig {
    /// Deadline of outgoing calls made outside any incoming request with one.
    pub default_deadline: Duration,
    /// Kept back from the caller's remaining time for the work after the call returns.
    pub deadline_margin: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Retries may add this fraction of the requests in the budget window ...
    pub retry_budget_ratio: f64,
    /// ... plus this many per window.
    pub retry_budget_floor: u64,
    pub retry_budget_window: Duration,
    pub breaker: BreakerConfig,
    /// Calls in flight to the dependency at once; beyond it calls fail at once.
    pub max_concurrent_calls: usize,
}

impl Default for DependencyConfig {
    fn default() -> Self {
        Self {
            default_deadline: Duration::from_secs(2),
            deadline_margin: Duration::from_millis(20),
            max_attempts: 3,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            retry_budget_ratio: 0.1,
            retry_budget_floor: 10,
            retry_budget_window: Duration::from_secs(10),
            breaker: BreakerConfig {
                window: Duration::from_secs(10),
                min_requests: 20,
                failure_ratio: 0.5,
                open_for: Duration::from_secs(5),
                half_open_probes: 3,
            },
            max_concurrent_calls: 64,
        }
    }
}

/// Whether a call may be sent twice without changing its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Idempotent,
    NotIdempotent,
}

/// What one attempt gets: the channel (which carries the trace context) and the time it may take.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub channel: TracedChannel,
    pub timeout: Duration,
}

impl Attempt {
    /// A request carrying this attempt's deadline as `grpc-timeout`.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectionLabels {
    dependency: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ClientCallLabels {
    pub(crate) dependency: &'static str,
    pub(crate) rpc_service: &'static str,
    pub(crate) rpc_method: &'static str,
    pub(crate) rpc_grpc_status_code: i32,
}

/// Client call latency buckets in seconds, the server side's.
const CLIENT_DURATION_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The client stack's metric families, registered once per registry and
/// shared by every dependency (each labels its own series).
#[derive(Debug, Clone)]
pub struct ClientMetrics {
    pub(crate) call_duration: Family<ClientCallLabels, Histogram>,
    attempts: Family<DependencyLabels, Counter>,
    retries: Family<DependencyLabels, Counter>,
    rejected: Family<RejectionLabels, Counter>,
    circuit_state: Family<DependencyLabels, Gauge>,
    endpoints: Family<DependencyLabels, Gauge>,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self {
            call_duration: Family::new_with_constructor(|| Histogram::new(CLIENT_DURATION_BUCKETS)),
            attempts: Family::default(),
            retries: Family::default(),
            rejected: Family::default(),
            circuit_state: Family::default(),
            endpoints: Family::default(),
        }
    }
}

impl ClientMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "rpc_client_call_duration_seconds",
            "Duration of calls to other services, by dependency, method and status code (one observation per attempt).",
            metrics.call_duration.clone(),
        );
        registry.register(
            "client_attempts",
            "Outgoing call attempts to a dependency, retries included.",
            metrics.attempts.clone(),
        );
        registry.register(
            "client_retries",
            "Outgoing call attempts that were retries.",
            metrics.retries.clone(),
        );
        registry.register(
            "client_rejected_calls",
            "Outgoing calls failed locally without reaching the dependency, by reason (circuit_open, bulkhead_full, deadline, no_endpoint).",
            metrics.rejected.clone(),
        );
        registry.register(
            "client_circuit_state",
            "Circuit breaker state per dependency: 0 closed, 1 open, 2 half-open.",
            metrics.circuit_state.clone(),
        );
        registry.register(
            "client_endpoints",
            "Replicas of a dependency its calls are balanced over (what discovery found last).",
            metrics.endpoints.clone(),
        );
        metrics
    }

    /// Records how many endpoints `dependency` has now.
    pub fn set_endpoints(&self, dependency: &'static str, count: usize) {
        self.endpoints
            .get_or_create(&DependencyLabels { dependency })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

/// One dependency's breaker, bulkhead, retry budget and metrics, without a
/// channel: [`Dependency`] adds a tonic channel and the retry loop; the
/// gateway's proxy, which drives its own connections, uses [`Resilience::admit`].
/// Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Resilience {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    config: DependencyConfig,
    budget: RetryBudget,
    breaker: CircuitBreaker,
    bulkhead: Arc<Semaphore>,
    metrics: ClientMetrics,
}

impl Resilience {
    /// `name` labels metrics and logs (`user-service`).
    pub fn new(name: &'static str, config: DependencyConfig, metrics: &ClientMetrics) -> Self {
        metrics.circuit_state.get_or_create(&DependencyLabels { dependency: name }).set(0);
        Self {
            inner: Arc::new(Inner {
                name,
                budget: RetryBudget::new(config.retry_budget_ratio, config.retry_budget_floor, config.retry_budget_window),
                breaker: CircuitBreaker::new(config.breaker, Instant::now()),
                bulkhead: Arc::new(Semaphore::new(config.max_concurrent_calls)),
                config,
                metrics: metrics.clone(),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The metric families this dependency reports into.
    pub fn metrics(&self) -> &ClientMetrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &DependencyConfig {
        &self.inner.config
    }

    pub fn circuit_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// Admits one call through the breaker and the bulkhead without running
    /// it, for callers that drive the call themselves: the gateway's proxy
    /// streams bodies it cannot replay, so it never retries. Report the call's
    /// gRPC status with [`AdmittedCall::finish`]; dropping the permit without
    /// it (the caller went away) counts as neither success nor failure.
    pub fn admit(&self) -> Result<AdmittedCall, Status> {
        let inner = &*self.inner;
        let admission = match inner.breaker.admit(Instant::now()) {
            Ok((admission, transition)) => {
                self.announce(transition);
                admission
            }
            Err(_) => {
                self.count_rejection("circuit_open");
                return Err(Status::unavailable(format!(
                    "{} is failing; its circuit breaker is open",
                    inner.name
                )));
            }
        };
        // Built before the bulkhead check so a refusal there frees a half-open probe slot.
        let mut admitted = AdmittedCall {
            resilience: self.clone(),
            admission: Some(admission),
            _slot: None,
        };
        let Ok(slot) = inner.bulkhead.clone().try_acquire_owned() else {
            self.count_rejection("bulkhead_full");
            return Err(Status::resource_exhausted(format!("too many calls to {} in flight", inner.name)));
        };
        admitted._slot = Some(slot);
        inner.metrics.attempts.get_or_create(&self.labels()).inc();
        Ok(admitted)
    }

    /// Exponential backoff with full jitter, capped.
    fn backoff(&self, attempts_made: u32) -> Duration {
        let config = &self.inner.config;
        let exponential = config
            .backoff_base
            .saturating_mul(1 << attempts_made.min(16))
            .min(config.backoff_max);
        exponential.mul_f64(rand::random::<f64>())
    }

    fn announce(&self, transition: Option<BreakerState>) {
        let Some(state) = transition else { return };
        let name = self.inner.name;
        self.inner.metrics.circuit_state.get_or_create(&self.labels()).set(state as i64);
        match state {
            BreakerState::Open => tracing::warn!(dependency = name, "circuit breaker opened: failing calls fast"),
            BreakerState::HalfOpen => tracing::info!(dependency = name, "circuit breaker half-open: probing"),
            BreakerState::Closed => tracing::info!(dependency = name, "circuit breaker closed: dependency recovered"),
        }
    }

    fn count_rejection(&self, reason: &'static str) {
        let labels = RejectionLabels {
            dependency: self.inner.name,
            reason,
        };
        self.inner.metrics.rejected.get_or_create(&labels).inc();
    }

    fn labels(&self) -> DependencyLabels {
        DependencyLabels {
            dependency: self.inner.name,
        }
    }
}

/// A dependency's client stack for typed tonic calls: [`Resilience`] plus the
/// dependency's replicas (a [`Pool`] of channels, one endpoint picked per attempt)
/// and the retry loop. Cheap to clone; clones share state.
///
/// The breaker and the bulkhead stay per dependency, not per endpoint: an endpoint
/// that cannot be reached is set aside by the pool and a retry goes to another one,
/// so the breaker opens only when the dependency as a whole fails.
#[derive(Debug, Clone)]
pub struct Dependency {
    resilience: Resilience,
    pool: Pool<TracedChannel>,
}

impl Dependency {
    /// `name` labels metrics and logs (`user-service`); `pool` is usually from
    /// [`super::channel_pool`].
    pub fn new(name: &'static str, pool: Pool<TracedChannel>, config: DependencyConfig, metrics: &ClientMetrics) -> Self {
        Self {
            resilience: Resilience::new(name, config, metrics),
            pool,
        }
    }

    pub fn name(&self) -> &'static str {
        self.resilience.name()
    }

    pub fn config(&self) -> &DependencyConfig {
        self.resilience.config()
    }

    pub fn circuit_state(&self) -> BreakerState {
        self.resilience.circuit_state()
    }

    /// Runs `attempt` under the stack, within `deadline`. A retry goes to another
    /// endpoint than the attempt before it when there is one.
    pub async fn call<T, F, Fut>(&self, deadline: Deadline, idempotency: Idempotency, mut attempt: F) -> Result<T, Status>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let inner = &*self.resilience.inner;
        inner.budget.record_request(Instant::now());
        let mut attempts_made = 0;
        let mut previous = None;
        loop {
            let Some(timeout) = deadline.for_outgoing(inner.config.deadline_margin) else {
                self.resilience.count_rejection("deadline");
                return Err(Status::deadline_exceeded(format!(
                    "no time left in the caller's deadline to call {}",
                    inner.name
                )));
            };
            let Some(lease) = self.endpoint(previous, timeout).await else {
                self.resilience.count_rejection("no_endpoint");
                return Err(Status::unavailable(format!("no replica of {} is known", inner.name)));
            };
            previous = Some(lease.addr());
            let outcome = self
                .attempt_once(
                    &mut attempt,
                    Attempt {
                        channel: lease.connection().clone(),
                        timeout,
                    },
                )
                .await;
            attempts_made += 1;
            let status = match outcome {
                Ok(value) => {
                    lease.reached();
                    return Ok(value);
                }
                Err(AttemptError::Rejected(status)) => return Err(status),
                Err(AttemptError::Failed(status)) => status,
            };
            if unreached(&status) {
                lease.unreachable();
            } else {
                lease.reached();
            }
            drop(lease);
            // A request that never left (its connection was going away when it was about to be
            // sent: a server's maximum connection age or drain) is sent again whatever it is, as
            // gRPC's transparent retry does; the dependency cannot have acted on it.
            let retryable = suite_balance::never_processed(&status)
                || idempotency == Idempotency::Idempotent && matches!(status.code(), Code::Unavailable | Code::ResourceExhausted);
            if !retryable || attempts_made >= inner.config.max_attempts {
                return Err(status);
            }
            let backoff = self.resilience.backoff(attempts_made);
            if deadline.remaining() <= backoff + inner.config.deadline_margin || !inner.budget.try_retry(Instant::now()) {
                return Err(status);
            }
            tracing::debug!(dependency = inner.name, code = ?status.code(), ?backoff, "retrying");
            inner.metrics.retries.get_or_create(&self.resilience.labels()).inc();
            tokio::time::sleep(backoff).await;
        }
    }

    /// An endpoint other than `previous` when there is one; until discovery has found
    /// any, waits for one within `patience`.
    async fn endpoint(&self, previous: Option<std::net::SocketAddr>, patience: Duration) -> Option<Lease<TracedChannel>> {
        if let Some(lease) = self.pool.pick(previous) {
            return Some(lease);
        }
        self.pool.wait_for_endpoints(patience).await;
        self.pool.pick(previous)
    }

    async fn attempt_once<T, F, Fut>(&self, attempt: &mut F, context: Attempt) -> Result<T, AttemptError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let admitted = self.resilience.admit().map_err(AttemptError::Rejected)?;
        let name = self.resilience.inner.name;
        let timeout = context.timeout;
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, attempt(context)).await {
            // tonic's own grpc-timeout timer may fire first and call it CANCELLED.
            Ok(Err(status)) if status.code() == Code::Cancelled && started.elapsed() >= timeout => Err(deadline_exceeded(name, timeout)),
            Ok(result) => result,
            Err(_) => Err(deadline_exceeded(name, timeout)),
        };
        admitted.finish(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
        result.map_err(AttemptError::Failed)
    }
}

enum AttemptError {
    /// Refused locally; retrying now would be refused again.
    Rejected(Status),
    /// The attempt ran and failed.
    Failed(Status),
}

fn deadline_exceeded(dependency: &str, timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("{dependency} did not answer within {timeout:?}"))
}

/// Whether the call failed in the transport (no connection, a broken one) rather than
/// being answered by the endpoint.
fn unreached(status: &Status) -> bool {
    status.code() == Code::Unavailable && sources(status).any(|error| error.is::<tonic::transport::Error>())
}

fn sources(status: &Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |error| error.source())
}

/// Codes that say the dependency itself is unwell (as opposed to "no such user").
fn counts_against_dependency(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Internal | Code::Unknown | Code::DataLoss
    )
}

/// One call admitted by [`Resilience::admit`]: holds its bulkhead slot and,
/// until [`AdmittedCall::finish`], its breaker admission. Dropped unfinished,
/// it frees a half-open probe slot without counting an outcome.
#[derive(Debug)]
pub struct AdmittedCall {
    resilience: Resilience,
    admission: Option<Admission>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl AdmittedCall {
    /// Records the call's outcome in the breaker and releases the slot.
    pub fn finish(mut self, code: Code) {
        if let Some(admission) = self.admission.take() {
            let resilience = &self.resilience;
            let transition = resilience
                .inner
                .breaker
                .record(admission, counts_against_dependency(code), Instant::now());
            resilience.announce(transition);
        }
    }
}

impl Drop for AdmittedCall {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.resilience.inner.breaker.abandon(admission);
        }
    }
}
