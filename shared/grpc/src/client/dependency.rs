//! One downstream dependency as every service of the suite calls it: a
//! deadline carved from the caller's, bounded retries of idempotent calls under
//! a retry budget, a circuit breaker and a bulkhead. Written once here so every
//! service-to-service call behaves the same.
//!
//! Per attempt: deadline left? -> breaker admits? -> bulkhead slot? -> call with
//! `grpc-timeout` = what is left minus the margin. A transport failure (the
//! connection broke or was refused) becomes UNAVAILABLE whatever tonic called
//! it. A retryable failure of an idempotent call, or any call the dependency
//! provably never processed, is retried after a jittered backoff if attempts,
//! budget and deadline all allow; otherwise the last failure is returned, with
//! why it was not retried when the breaker or the budget refused.

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

use super::breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker, Verdict};
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
            breaker: BreakerConfig::default(),
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
    /// `allowed` is the call's deadline, if it has one: a DEADLINE_EXCEEDED
    /// under a deadline shorter than a healthy call may take is the caller's
    /// doing, not the dependency's.
    pub fn admit(&self, allowed: Option<Duration>) -> Result<AdmittedCall, Status> {
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
            started: Instant::now(),
            allowed,
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
    /// endpoint than the attempt before it when there is one. An endpoint that
    /// cannot be reached is set aside at once; one that fails calls in a row
    /// (frozen, overloaded) is set aside too, so calls keep going to the others.
    pub async fn call<T, F, Fut>(&self, deadline: Deadline, idempotency: Idempotency, mut attempt: F) -> Result<T, Status>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let inner = &*self.resilience.inner;
        inner.budget.record_request(Instant::now());
        let mut attempts_made = 0;
        let mut previous = None;
        // What the dependency did last, returned if a retry is refused.
        let mut last_failure: Option<Status> = None;
        loop {
            let Some(timeout) = deadline.for_outgoing(inner.config.deadline_margin) else {
                self.resilience.count_rejection("deadline");
                let why = "no time left in the caller's deadline";
                return Err(last_failure.map_or_else(
                    || Status::deadline_exceeded(format!("{why} to call {}", inner.name)),
                    |last| not_retried(last, why),
                ));
            };
            let Some(lease) = self.endpoint(previous, timeout).await else {
                self.resilience.count_rejection("no_endpoint");
                return Err(Status::unavailable(format!("no replica of {} is known", inner.name)));
            };
            previous = Some(lease.addr());
            let outcome = self.attempt_once(&mut attempt, &lease, timeout).await;
            drop(lease);
            attempts_made += 1;
            let failure = match outcome {
                Ok(value) => return Ok(value),
                Err(AttemptError::Rejected(status)) => {
                    return Err(match last_failure {
                        Some(last) => not_retried(last, status.message()),
                        None => status,
                    });
                }
                Err(AttemptError::Failed(failure)) => failure,
            };
            let status = failure.status;
            // A request that never left (its connection was going away when it was about to be
            // sent: a server's maximum connection age or drain, a refused connection) is sent
            // again whatever it is, as gRPC's transparent retry does; the dependency cannot have
            // acted on it.
            let retryable = failure.never_processed
                || idempotency == Idempotency::Idempotent && matches!(status.code(), Code::Unavailable | Code::ResourceExhausted);
            if !retryable || attempts_made >= inner.config.max_attempts {
                return Err(status);
            }
            let backoff = self.resilience.backoff(attempts_made);
            if deadline.remaining() <= backoff + inner.config.deadline_margin {
                return Err(status);
            }
            if !inner.budget.try_retry(Instant::now()) {
                self.resilience.count_rejection("retry_budget");
                return Err(not_retried(status, "the retry budget is spent"));
            }
            tracing::debug!(dependency = inner.name, code = ?status.code(), ?backoff, "retrying");
            last_failure = Some(status);
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

    /// One attempt on `lease`'s endpoint, its outcome told to the breaker and the pool.
    async fn attempt_once<T, F, Fut>(&self, attempt: &mut F, lease: &Lease<TracedChannel>, timeout: Duration) -> Result<T, AttemptError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let admitted = self.resilience.admit(Some(timeout)).map_err(AttemptError::Rejected)?;
        let name = self.resilience.inner.name;
        let context = Attempt {
            channel: lease.connection().clone(),
            timeout,
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, attempt(context)).await {
            // tonic's own grpc-timeout timer may fire first and call it CANCELLED.
            Ok(Err(status)) if status.code() == Code::Cancelled && started.elapsed() >= timeout => Err(deadline_exceeded(name, timeout)),
            Ok(result) => result,
            Err(_) => Err(deadline_exceeded(name, timeout)),
        };
        match result {
            Ok(value) => {
                admitted.finish(Some(lease), Code::Ok, false);
                Ok(value)
            }
            Err(status) => {
                let never_processed = suite_balance::never_processed(&status);
                let transport = transport_failure(&status);
                let status = if transport { honest(name, status) } else { status };
                admitted.finish(Some(lease), status.code(), transport);
                Err(AttemptError::Failed(Failure { status, never_processed }))
            }
        }
    }
}

enum AttemptError {
    /// Refused locally; retrying now would be refused again.
    Rejected(Status),
    /// The attempt ran and failed.
    Failed(Failure),
}

struct Failure {
    status: Status,
    /// The endpoint cannot have acted on the request.
    never_processed: bool,
}

fn deadline_exceeded(dependency: &str, timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("{dependency} did not answer within {timeout:?}"))
}

/// Whether the call failed in the transport (no connection, a broken or reset
/// one) rather than being answered by the endpoint: the error came from the
/// connection (tonic's transport, hyper, h2, the socket), not from a status the
/// endpoint sent.
fn transport_failure(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled)
        && sources(status).any(|error| {
            error.is::<tonic::transport::Error>() || error.is::<hyper::Error>() || error.is::<h2::Error>() || error.is::<std::io::Error>()
        })
}

/// A transport failure as the caller should see it: UNAVAILABLE (which callers
/// retry), whatever code tonic gave it (a reset connection surfaces as UNKNOWN,
/// a broken stream as INTERNAL); the cause stays attached as the source.
fn honest(dependency: &str, status: Status) -> Status {
    if status.code() == Code::Unavailable {
        return status;
    }
    let mut unavailable = Status::unavailable(format!("connection to {dependency} failed: {}", status.message()));
    unavailable.set_source(std::sync::Arc::new(status));
    unavailable
}

/// `last`, the dependency's own last error, with why it was not tried again.
fn not_retried(last: Status, why: &str) -> Status {
    Status::new(last.code(), format!("{} (not retried: {why})", last.message()))
}

fn sources(status: &Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |error| error.source())
}

/// One call admitted by [`Resilience::admit`]: holds its bulkhead slot and,
/// until [`AdmittedCall::finish`], its breaker admission. Dropped unfinished,
/// it frees a half-open probe slot without counting an outcome.
#[derive(Debug)]
pub struct AdmittedCall {
    resilience: Resilience,
    admission: Option<Admission>,
    started: Instant,
    allowed: Option<Duration>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl AdmittedCall {
    /// Records the call's outcome (its gRPC status) in the breaker and releases
    /// the slot. The endpoint the call went to, if any (`lease`), hears how it
    /// went there too (`transport`: the connection failed, not the endpoint's
    /// answer). A failure that sets the endpoint aside while others
    /// are left to take its calls is that endpoint's, not the dependency's: the
    /// breaker does not count it, so one frozen replica of three is ejected
    /// without opening the breaker for the whole dependency.
    pub fn finish<C: Send + Sync + 'static>(self, lease: Option<&Lease<C>>, code: Code, transport: bool) {
        let verdict = self.judge(code);
        let endpoints_own = match (lease, verdict) {
            (Some(lease), _) if transport => lease.unreachable(),
            (Some(lease), Verdict::Failed) => lease.failed(),
            (Some(lease), Verdict::Answered { .. }) => {
                lease.reached();
                false
            }
            _ => false,
        };
        self.record(if endpoints_own { Verdict::Silent } else { verdict });
    }

    fn judge(&self, code: Code) -> Verdict {
        self.resilience
            .inner
            .breaker
            .config()
            .judge(code, self.started.elapsed(), self.allowed)
    }

    fn record(mut self, verdict: Verdict) {
        if let Some(admission) = self.admission.take() {
            let transition = self.resilience.inner.breaker.record(admission, verdict, Instant::now());
            self.resilience.announce(transition);
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
