//! A read-through cache in front of a service's database.
//!
//! With `REDIS_URL` the entries live in Redis (shared by every replica);
//! without it, in a bounded in-process cache. Either way:
//! - entries expire after the TTL plus up to `ttl_jitter_percent` more, so keys
//!   written together do not all expire in the same instant;
//! - concurrent misses for one key share a single load from the database;
//! - a write invalidates its key after it commits, and a load that started
//!   before that invalidation never repopulates the key on this replica;
//! - a Redis error or timeout (bounded, tens of milliseconds) never fails a
//!   request: the caller reads the database, the error is counted in
//!   `cache_errors_total` and logged at most once per interval, and reads skip
//!   Redis briefly so a dead Redis costs each request nothing. Invalidations
//!   are always attempted; one that fails is kept pending, and this replica
//!   neither reads nor fills the cache until every pending key is deleted, so
//!   an entry a write made stale cannot resurface when Redis comes back.
//!
//! On Redis, a few multiplexed connections taken once from the deadpool-redis
//! pool are shared by every request (no `PING` per request, see
//! `RedisBackend`); one that Redis closed is replaced by the request that
//! finds it closed, which retries once and does not fail.
//!
//! A replica that loaded a value just before another replica's write commits
//! can still store it; the TTL bounds how long such an entry can live.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use deadpool_redis::redis::aio::MultiplexedConnection;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rand::Rng;
use suite_telemetry::RateLimitedLog;
use suite_telemetry::spans::CallSpan;
use tokio::sync::OnceCell;

/// Cache settings shared by every service (each picks its own key namespace).
#[derive(Debug, Clone, clap::Args)]
pub struct CacheConfig {
    /// Redis URL (redis://host:6379/0). Without it the cache is in-process.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// How long an entry lives, in seconds, before jitter.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 300)]
    pub ttl_secs: u64,

    /// Extra lifetime added at random to each entry, as a percentage of the TTL.
    #[arg(long, env = "CACHE_TTL_JITTER_PERCENT", default_value_t = 10)]
    pub ttl_jitter_percent: u8,

    /// Bound on any one Redis operation, including taking a pooled connection.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 50)]
    pub redis_timeout_ms: u64,

    /// After a Redis failure, reads bypass Redis for this long.
    #[arg(long, env = "REDIS_BACKOFF_MS", default_value_t = 1_000)]
    pub redis_backoff_ms: u64,

    /// Redis connections kept open and shared by every request: each is
    /// multiplexed (pipelines concurrent commands), taken once from the
    /// deadpool-redis pool and replaced when it fails. One batches the most
    /// commands per write and read; more can help a process with many cores.
    #[arg(long, env = "REDIS_CONNECTIONS", default_value_t = 1)]
    pub redis_connections: usize,

    /// Entries kept by the in-process cache (used when no REDIS_URL is set).
    #[arg(long, env = "CACHE_MEMORY_CAPACITY", default_value_t = 100_000)]
    pub memory_capacity: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            ttl_secs: 300,
            ttl_jitter_percent: 10,
            redis_timeout_ms: 50,
            redis_backoff_ms: 1_000,
            redis_connections: 1,
            memory_capacity: 100_000,
        }
    }
}

/// A value that can be stored in the cache.
pub trait Cacheable: Clone + Send + Sync + 'static {
    fn to_bytes(&self) -> Vec<u8>;
    /// `None` for bytes that do not decode (an older format): treated as a miss.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

#[derive(Debug, thiserror::Error)]
pub enum CacheBuildError {
    #[error("invalid Redis URL: {0}")]
    RedisUrl(#[from] redis::RedisError),
    #[error("invalid Redis pool configuration: {0}")]
    RedisPool(#[from] deadpool_redis::BuildError),
}

#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("no pooled connection: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("command failed: {0}")]
    Command(#[from] redis::RedisError),
}

enum Backend {
    Redis(RedisBackend),
    Memory(moka::sync::Cache<String, Entry>),
}

/// Redis through deadpool-redis, with no round trip to Redis to take a connection.
///
/// deadpool-redis checks a connection each time it leaves the pool (an
/// `UNWATCH` + `PING` pipeline), which would double the round trips of every
/// cache hit. A multiplexed connection needs no exclusive checkout, so each
/// one taken from the pool is kept in a slot and shared: every request clones
/// it (a handle on the same socket) and pipelines its command with the others'.
/// A connection that fails at the socket (Redis restarted, connection cut) is
/// detached from the pool and the command retried once on a fresh one, so a
/// restart between two requests costs neither of them; a command that times
/// out also retires its connection, which a hung server may have wedged.
struct RedisBackend {
    pool: deadpool_redis::Pool,
    slots: Box<[Slot]>,
    next_slot: AtomicUsize,
    next_lease_id: AtomicU64,
    timeout: Duration,
    backoff: Duration,
    skip_reads_until_ms: AtomicU64,
    epoch: Instant,
}

/// One shared connection, and a lock held only while one is taken from the pool.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<Lease>>,
    refill: tokio::sync::Mutex<()>,
}

/// A connection taken from the pool for good (until it fails).
struct Lease {
    id: u64,
    /// Cloned for each command; every clone shares the pooled connection's socket.
    connection: MultiplexedConnection,
    /// Holds the connection's place in the pool.
    pooled: deadpool_redis::Connection,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Lease>> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shared(&self) -> Option<(u64, MultiplexedConnection)> {
        self.lock().as_ref().map(|lease| (lease.id, lease.connection.clone()))
    }
}

impl RedisBackend {
    fn new(config: &CacheConfig, url: &str) -> Result<Self, CacheBuildError> {
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let connections = config.redis_connections.max(1);
        // Every command is bounded by `timeout` here, so redis-rs needs no timer of its own per command.
        let connection_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        let manager = deadpool_redis::Manager::new_with_config(url, connection_config)?;
        // Only the shared connections come from the pool (and a spare while one is replaced).
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(connections + 1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()?;
        Ok(Self {
            pool,
            slots: (0..connections).map(|_| Slot::default()).collect(),
            next_slot: AtomicUsize::new(0),
            next_lease_id: AtomicU64::new(0),
            timeout,
            backoff: Duration::from_millis(config.redis_backoff_ms),
            skip_reads_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Runs `command` on a shared connection, within the timeout.
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, BackendError> {
        let slot = &self.slots[self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut in_use = None;
        match tokio::time::timeout(self.timeout, self.query_untimed(slot, command, &mut in_use)).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(id) = in_use {
                    self.retire(slot, id);
                }
                Err(BackendError::Timeout(self.timeout))
            }
        }
    }

    async fn query_untimed<T: redis::FromRedisValue>(
        &self,
        slot: &Slot,
        command: &redis::Cmd,
        in_use: &mut Option<u64>,
    ) -> Result<T, BackendError> {
        let (id, mut connection) = self.connection(slot).await?;
        *in_use = Some(id);
        match command.query_async(&mut connection).await {
            Err(error) if connection_lost(&error) => {
                // Redis closed this connection (a restart, a cut): one retry on a fresh
                // connection, which either works or fails to connect. GET, SET and DEL
                // may run twice.
                self.retire(slot, id);
                let (id, mut connection) = self.connection(slot).await?;
                *in_use = Some(id);
                let result = command.query_async(&mut connection).await;
                if result.as_ref().is_err_and(connection_lost) {
                    self.retire(slot, id);
                }
                Ok(result?)
            }
            result => Ok(result?),
        }
    }

    /// The slot's shared connection, taken from the pool if it has none.
    async fn connection(&self, slot: &Slot) -> Result<(u64, MultiplexedConnection), BackendError> {
        if let Some(shared) = slot.shared() {
            return Ok(shared);
        }
        // One caller takes a connection from the pool; the others wait and share it.
        let _refill = slot.refill.lock().await;
        if let Some(shared) = slot.shared() {
            return Ok(shared);
        }
        let pooled = self.pool.get().await?;
        let lease = Lease {
            id: self.next_lease_id.fetch_add(1, Ordering::Relaxed),
            connection: MultiplexedConnection::clone(&pooled),
            pooled,
        };
        let shared = (lease.id, lease.connection.clone());
        *slot.lock() = Some(lease);
        Ok(shared)
    }

    /// Takes the slot's connection `id` (if still there) out of the pool for good:
    /// it is not recycled, and the next request takes a new one.
    fn retire(&self, slot: &Slot, id: u64) {
        let retired = {
            let mut current = slot.lock();
            if current.as_ref().is_some_and(|lease| lease.id == id) {
                current.take()
            } else {
                None
            }
        };
        // Commands still in flight on it finish (or fail) on their own clones.
        if let Some(lease) = retired {
            drop(deadpool_redis::Connection::take(lease.pooled));
        }
    }
}

/// The error says the connection is gone (closed, reset, refused): a new one may work.
fn connection_lost(error: &redis::RedisError) -> bool {
    error.is_connection_dropped() || error.is_unrecoverable_error()
}

#[derive(Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Memory(_) => "memory",
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<[u8]>>, BackendError> {
        match self {
            Self::Redis(_) => {
                let bytes: Option<Vec<u8>> = self.redis(redis::cmd("GET").arg(key)).await?;
                Ok(bytes.map(Arc::from))
            }
            Self::Memory(cache) => Ok(cache.get(key).map(|entry| entry.bytes)),
        }
    }

    async fn set(&self, key: &str, bytes: Vec<u8>, ttl: Duration) -> Result<(), BackendError> {
        match self {
            Self::Redis(_) => {
                let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                self.redis::<()>(redis::cmd("SET").arg(key).arg(bytes).arg("PX").arg(millis)).await
            }
            Self::Memory(cache) => {
                cache.insert(
                    key.to_owned(),
                    Entry {
                        bytes: Arc::from(bytes),
                        ttl,
                    },
                );
                Ok(())
            }
        }
    }

    async fn delete(&self, keys: &[String]) -> Result<(), BackendError> {
        match self {
            Self::Redis(_) => self.redis::<()>(redis::cmd("DEL").arg(keys)).await,
            Self::Memory(cache) => {
                keys.iter().for_each(|key| cache.invalidate(key));
                Ok(())
            }
        }
    }

    async fn redis<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, BackendError> {
        let Self::Redis(redis) = self else {
            unreachable!("redis command on the memory backend")
        };
        redis.query(command).await
    }

    /// Reads skip Redis for a moment after it failed, so a dead Redis adds no
    /// latency to every request; the database answers instead.
    fn reads_paused(&self) -> bool {
        match self {
            Self::Redis(redis) => elapsed_ms(redis.epoch) < redis.skip_reads_until_ms.load(Ordering::Relaxed),
            Self::Memory(_) => false,
        }
    }

    fn pause_reads(&self) {
        if let Self::Redis(redis) = self {
            let until = elapsed_ms(redis.epoch).saturating_add(u64::try_from(redis.backoff.as_millis()).unwrap_or(u64::MAX));
            redis.skip_reads_until_ms.store(until, Ordering::Relaxed);
        }
    }
}

fn elapsed_ms(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LookupLabels {
    cache: String,
    backend: String,
    result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    cache: String,
    backend: String,
    operation: String,
}

#[derive(Debug, Clone, Copy)]
enum Operation {
    Get,
    Set,
    Delete,
}

/// Ends a cache span (if any) with what happened: `hit`, `miss`, `stored`, `deleted`, `error`...
fn record_outcome(span: Option<CallSpan>, outcome: &'static str) {
    if let Some(mut span) = span {
        span.set_attribute(KeyValue::new("cache.outcome", outcome));
    }
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Set => "set",
            Self::Delete => "delete",
        }
    }

    /// The span name and `db.operation.name` of a cache span.
    fn span_names(self) -> (&'static str, &'static str) {
        match self {
            Self::Get => ("cache GET", "GET"),
            Self::Set => ("cache SET", "SET"),
            Self::Delete => ("cache DEL", "DEL"),
        }
    }
}

/// The metric families every cache writes to; register once per process.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    lookups: Family<LookupLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
}

impl CacheMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("cache_lookups", "Cache lookups by result (hit or miss).", metrics.lookups.clone());
        registry.register(
            "cache_errors",
            "Cache backend errors and timeouts, by operation; each one fell back to the database.",
            metrics.errors.clone(),
        );
        metrics
    }
}

/// A read-through cache of `V` values under one key namespace.
pub struct Cache<V> {
    /// Shared with every cache span's `cache.name`, which then copies no text.
    namespace: Arc<str>,
    backend: Backend,
    ttl: Duration,
    jitter_percent: u8,
    metrics: CacheMetrics,
    /// This cache's `hit` and `miss` counters in `metrics.lookups`, once used.
    hit_counter: std::sync::OnceLock<Counter>,
    miss_counter: std::sync::OnceLock<Counter>,
    error_log: RateLimitedLog,
    flights: Mutex<HashMap<String, Arc<OnceCell<Option<V>>>>>,
    pending_invalidations: Mutex<HashSet<String>>,
}

/// Keys whose invalidation failed are remembered up to this many; past it the
/// oldest knowledge is dropped with an error log (entries then live out their TTL).
const MAX_PENDING_INVALIDATIONS: usize = 10_000;
/// Pending keys retried in one DEL.
const PENDING_BATCH: usize = 256;

impl<V> fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.namespace)
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

impl<V: Cacheable> Cache<V> {
    /// `namespace` prefixes every key (`suite:user:v1`), so services and
    /// format versions never read each other's entries.
    pub fn new(config: &CacheConfig, namespace: impl Into<String>, metrics: CacheMetrics) -> Result<Self, CacheBuildError> {
        let backend = match &config.redis_url {
            Some(url) => Backend::Redis(RedisBackend::new(config, url)?),
            None => Backend::Memory(
                moka::sync::Cache::builder()
                    .max_capacity(config.memory_capacity)
                    .expire_after(EntryExpiry)
                    .build(),
            ),
        };
        Ok(Self {
            namespace: namespace.into().into(),
            backend,
            ttl: Duration::from_secs(config.ttl_secs),
            jitter_percent: config.ttl_jitter_percent,
            metrics,
            hit_counter: std::sync::OnceLock::new(),
            miss_counter: std::sync::OnceLock::new(),
            error_log: RateLimitedLog::new(Duration::from_secs(10)),
            flights: Mutex::new(HashMap::new()),
            pending_invalidations: Mutex::new(HashSet::new()),
        })
    }

    /// `"redis"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The cached value for `key`, or the result of `load` (cached when `Some`).
    /// Concurrent callers that miss on the same key share one `load`.
    pub async fn get_or_load<E, F, Fut>(&self, key: &str, load: F) -> Result<Option<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        let full_key = self.full_key(key);
        if let Some(value) = self.lookup(&full_key).await {
            return Ok(Some(value));
        }
        let flight = self.join_flight(&full_key);
        let result = flight
            .get_or_try_init(|| async {
                let loaded = load().await?;
                if let Some(value) = &loaded {
                    // An invalidation while we loaded replaced our flight: the
                    // value may predate the write, so it must not be cached.
                    if self.is_current_flight(&full_key, &flight) {
                        self.store(&full_key, value).await;
                    }
                }
                Ok(loaded)
            })
            .await
            .cloned();
        self.leave_flight(&full_key, &flight);
        result
    }

    /// Removes `key`; call after the write that changed it has committed.
    pub async fn invalidate(&self, key: &str) {
        let full_key = self.full_key(key);
        self.lock_flights().remove(&full_key);
        let span = self.span(Operation::Delete);
        let deleted = self.backend.delete(std::slice::from_ref(&full_key)).await;
        record_outcome(span, if deleted.is_ok() { "deleted" } else { "error" });
        if let Err(error) = deleted {
            self.record_error(Operation::Delete, &error);
            let mut pending = self.lock_pending();
            if pending.len() >= MAX_PENDING_INVALIDATIONS {
                tracing::error!(cache = %self.namespace, "too many failed invalidations to track; some stale entries may live until their TTL");
                pending.clear();
            }
            pending.insert(full_key);
        }
    }

    /// Retries failed invalidations; true once none is pending.
    async fn settle_pending_invalidations(&self) -> bool {
        let batch: Vec<String> = {
            let pending = self.lock_pending();
            if pending.is_empty() {
                return true;
            }
            pending.iter().take(PENDING_BATCH).cloned().collect()
        };
        match self.backend.delete(&batch).await {
            Ok(()) => {
                let mut pending = self.lock_pending();
                batch.iter().for_each(|key| {
                    pending.remove(key);
                });
                pending.is_empty()
            }
            Err(error) => {
                self.record_error(Operation::Delete, &error);
                false
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending_invalidations.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace)
    }

    async fn lookup(&self, full_key: &str) -> Option<V> {
        let span = self.span(Operation::Get);
        let (value, outcome) = self.lookup_untraced(full_key).await;
        record_outcome(span, outcome);
        value
    }

    /// The value, and what happened: `hit`, `miss`, `error` or `skipped` (Redis paused after an error).
    async fn lookup_untraced(&self, full_key: &str) -> (Option<V>, &'static str) {
        if self.backend.reads_paused() || !self.settle_pending_invalidations().await {
            return (None, "skipped");
        }
        let found = match self.backend.get(full_key).await {
            Ok(found) => found,
            Err(error) => {
                self.record_error(Operation::Get, &error);
                return (None, "error");
            }
        };
        let value = found.and_then(|bytes| V::from_bytes(&bytes));
        let outcome = if value.is_some() { "hit" } else { "miss" };
        self.count_lookup(outcome);
        (value, outcome)
    }

    /// A client span for one cache operation, a child of the current context, when
    /// this process exports traces (none otherwise, which costs nothing on a hot read).
    /// It ends when dropped; `cache.outcome` says what happened.
    fn span(&self, operation: Operation) -> Option<CallSpan> {
        let (name, operation) = operation.span_names();
        CallSpan::start_in_current(SpanKind::Client, name, || {
            // Room for `cache.outcome` when the operation ends.
            let mut attributes = Vec::with_capacity(4);
            attributes.extend([
                KeyValue::new("db.system", self.backend.name()),
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("cache.name", self.namespace.clone()),
            ]);
            attributes
        })
    }

    async fn store(&self, full_key: &str, value: &V) {
        if self.backend.reads_paused() || !self.lock_pending().is_empty() {
            return;
        }
        let span = self.span(Operation::Set);
        let outcome = match self.backend.set(full_key, value.to_bytes(), self.jittered_ttl()).await {
            Ok(()) => "stored",
            Err(error) => {
                self.record_error(Operation::Set, &error);
                "error"
            }
        };
        record_outcome(span, outcome);
    }

    fn jittered_ttl(&self) -> Duration {
        let max_extra = self.ttl.as_millis() * u128::from(self.jitter_percent) / 100;
        let extra = if max_extra == 0 {
            0
        } else {
            rand::rng().random_range(0..=u64::try_from(max_extra).unwrap_or(u64::MAX))
        };
        self.ttl + Duration::from_millis(extra)
    }

    fn join_flight(&self, full_key: &str) -> Arc<OnceCell<Option<V>>> {
        self.lock_flights().entry(full_key.to_owned()).or_default().clone()
    }

    fn is_current_flight(&self, full_key: &str, flight: &Arc<OnceCell<Option<V>>>) -> bool {
        self.lock_flights()
            .get(full_key)
            .is_some_and(|current| Arc::ptr_eq(current, flight))
    }

    fn leave_flight(&self, full_key: &str, flight: &Arc<OnceCell<Option<V>>>) {
        let mut flights = self.lock_flights();
        // Whoever finishes first retires the flight; later callers start afresh
        // (and read the cache, which the flight has just filled).
        if flights.get(full_key).is_some_and(|current| Arc::ptr_eq(current, flight)) && flight.initialized() {
            flights.remove(full_key);
        }
    }

    fn lock_flights(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Option<V>>>>> {
        self.flights.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a `hit` or `miss`; the counter is looked up in its family once,
    /// not on every lookup.
    fn count_lookup(&self, result: &'static str) {
        let counter = if result == "hit" { &self.hit_counter } else { &self.miss_counter };
        counter
            .get_or_init(|| {
                let labels = LookupLabels {
                    cache: self.namespace.to_string(),
                    backend: self.backend.name().to_owned(),
                    result: result.to_owned(),
                };
                self.metrics.lookups.get_or_create(&labels).clone()
            })
            .inc();
    }

    fn record_error(&self, operation: Operation, error: &BackendError) {
        let labels = ErrorLabels {
            cache: self.namespace.to_string(),
            backend: self.backend.name().to_owned(),
            operation: operation.as_str().to_owned(),
        };
        self.metrics.errors.get_or_create(&labels).inc();
        self.backend.pause_reads();
        if let Some(suppressed) = self.error_log.should_log() {
            tracing::warn!(cache = %self.namespace, operation = operation.as_str(), %error, suppressed, "cache unavailable; serving from the database");
        }
    }
}
