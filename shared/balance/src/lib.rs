//! Per-request balancing over a dependency's replicas.
//!
//! A [`Pool`] keeps one connection (of the caller's kind: a tonic channel, the
//! gateway's HTTP/2 connection) per endpoint its [`Endpoints`] know, and gives
//! each call one of them: power of two choices over the fewest calls in flight
//! (two endpoints drawn at random, the less busy one taken), which spreads load
//! evenly without a queue or a lock on the call path. An endpoint whose call
//! failed to reach it is set aside for a while (longer each time it fails again)
//! unless nothing else is left, and the endpoints are re-resolved soon; so is one
//! that reached fails [`FAILURES_TO_SET_ASIDE`] calls in a row (frozen, shedding
//! load): outlier ejection, as Envoy calls it, so the others carry its calls.
//! A pool given a [`Probe`] takes such an endpoint back only once a probe of it
//! (a health check) succeeds, tried after the same growing intervals, so no
//! caller's call is what finds a still frozen replica frozen again. An
//! endpoint that discovery no longer lists leaves the pool at once: no new call
//! goes there, and the calls it has finish on its connection, which closes when
//! the last of them lets go.
//!
//! Why not tower's `balance`: its `Balance` service needs exclusive access for
//! `poll_ready` and is shared through a `Buffer`, a task hop per call that the
//! gateway's one-write path is built to avoid; and a retry must be able to ask
//! for another endpoint than the one that just failed, which a `Service` that
//! picks inside `call` cannot be told.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use suite_discovery::Endpoints;

/// How long an endpoint whose call failed to reach it is set aside, the first time ...
const FIRST_SET_ASIDE: Duration = Duration::from_millis(500);
/// ... doubling with each failure in a row, up to this.
const LONGEST_SET_ASIDE: Duration = Duration::from_secs(30);
/// Failed calls in a row (the endpoint reached, but unavailable or too slow)
/// that set an endpoint aside. More than one, so that a single unlucky call
/// does not; few, so that a frozen replica costs few callers a full deadline.
pub const FAILURES_TO_SET_ASIDE: u32 = 3;
/// The longest a probe may take; no answer by then is a failed probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks an endpoint, over its connection, whether it is healthy (a gRPC health
/// check, say): true when it answers that it is.
pub type Probe<C> = Arc<dyn Fn(&C) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// The replicas of one dependency and a connection to each. Cheap to clone; clones share state.
pub struct Pool<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field(
                "endpoints",
                &self.shared.members.load().iter().map(|member| member.addr).collect::<Vec<_>>(),
            )
            .finish()
    }
}

struct Shared<C> {
    /// Written by the follower task as endpoints come and go, read by every pick.
    members: Arc<ArcSwap<Vec<Arc<Member<C>>>>>,
    endpoints: Endpoints,
    /// When the pool started: set-aside deadlines are kept as milliseconds since.
    epoch: Instant,
    /// How an endpoint set aside for failing calls is checked before it takes calls again.
    probe: Option<Probe<C>>,
    _follower: AbortOnDrop,
}

/// One endpoint and its connection.
struct Member<C> {
    addr: SocketAddr,
    connection: C,
    in_flight: AtomicUsize,
    /// Failed calls in a row.
    failures: AtomicU32,
    /// Times set aside since it last answered: each doubles the time.
    set_asides: AtomicU32,
    /// A probe task is following it.
    probing: AtomicBool,
    /// Milliseconds since the pool's epoch until which the endpoint is set aside.
    set_aside_until: AtomicU64,
}

impl<C> Member<C> {
    fn new(addr: SocketAddr, connection: C) -> Self {
        Self {
            addr,
            connection,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            set_asides: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            set_aside_until: AtomicU64::new(0),
        }
    }

    fn usable_at(&self, now_ms: u64) -> bool {
        self.set_aside_until.load(Ordering::Relaxed) <= now_ms
    }
}

impl<C: Send + Sync + 'static> Pool<C> {
    /// Follows `endpoints`, opening a connection with `connect` for each endpoint
    /// that appears; `on_change` hears the number of endpoints after each change.
    /// Must be called inside a tokio runtime.
    pub fn new(
        endpoints: Endpoints,
        connect: impl Fn(SocketAddr) -> C + Send + Sync + 'static,
        on_change: impl Fn(usize) + Send + Sync + 'static,
    ) -> Self {
        Self::build(endpoints, connect, on_change, None)
    }

    /// [`Pool::new`], with endpoints set aside for failing calls taken back only
    /// once `probe` says they are healthy.
    pub fn probed(
        endpoints: Endpoints,
        connect: impl Fn(SocketAddr) -> C + Send + Sync + 'static,
        on_change: impl Fn(usize) + Send + Sync + 'static,
        probe: Probe<C>,
    ) -> Self {
        Self::build(endpoints, connect, on_change, Some(probe))
    }

    fn build(
        endpoints: Endpoints,
        connect: impl Fn(SocketAddr) -> C + Send + Sync + 'static,
        on_change: impl Fn(usize) + Send + Sync + 'static,
        probe: Option<Probe<C>>,
    ) -> Self {
        let mut changes = endpoints.subscribe();
        let first: Vec<Arc<Member<C>>> = changes
            .borrow_and_update()
            .iter()
            .map(|addr| Arc::new(Member::new(*addr, connect(*addr))))
            .collect();
        on_change(first.len());
        let members = Arc::new(ArcSwap::from_pointee(first));
        let written = members.clone();
        let follower = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let wanted = changes.borrow_and_update().clone();
                let current = written.load_full();
                let next: Vec<Arc<Member<C>>> = wanted
                    .iter()
                    .map(|addr| match current.iter().find(|member| member.addr == *addr) {
                        Some(kept) => kept.clone(),
                        None => Arc::new(Member::new(*addr, connect(*addr))),
                    })
                    .collect();
                on_change(next.len());
                // Members left out are dropped once their calls in flight end.
                written.store(Arc::new(next));
            }
        });
        Self {
            shared: Arc::new(Shared {
                members,
                endpoints,
                epoch: Instant::now(),
                probe,
                _follower: AbortOnDrop(follower),
            }),
        }
    }
}

impl<C> Pool<C> {
    /// An endpoint for one call, other than `avoid` when another is usable: of two
    /// drawn at random among those not set aside, the one with fewer calls in
    /// flight. `None` when no endpoint is known.
    pub fn pick(&self, avoid: Option<SocketAddr>) -> Option<Lease<C>> {
        let members = self.shared.members.load();
        let now = self.now_ms();
        let chosen = choose(&members, |member| member.usable_at(now) && Some(member.addr) != avoid)
            .or_else(|| choose(&members, |member| Some(member.addr) != avoid))
            .or_else(|| choose(&members, |_| true))?;
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            member: chosen.clone(),
            pool: self.shared.clone(),
        })
    }

    /// The endpoints the pool holds now.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.shared.members.load().iter().map(|member| member.addr).collect()
    }

    /// Waits until the pool holds an endpoint, for at most `patience`.
    pub async fn wait_for_endpoints(&self, patience: Duration) -> bool {
        if !self.shared.members.load().is_empty() {
            return true;
        }
        let mut changes = self.shared.endpoints.subscribe();
        let appeared = async {
            while changes.changed().await.is_ok() {
                if !changes.borrow_and_update().is_empty() {
                    // Let the follower add them.
                    tokio::task::yield_now().await;
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(patience, appeared).await;
        !self.shared.members.load().is_empty()
    }

    fn now_ms(&self) -> u64 {
        self.shared.now_ms()
    }
}

impl<C> Shared<C> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Power of two choices among the members `eligible` accepts, without allocating:
/// two positions drawn at random in the eligible sequence.
fn choose<C>(members: &[Arc<Member<C>>], eligible: impl Fn(&Member<C>) -> bool) -> Option<&Arc<Member<C>>> {
    let count = members.iter().filter(|member| eligible(member)).count();
    let nth = |index: usize| members.iter().filter(|member| eligible(member)).nth(index);
    match count {
        0 => None,
        1 => nth(0),
        _ => {
            let first = rand::random_range(0..count);
            let second = (first + rand::random_range(1..count)) % count;
            let (a, b) = (nth(first)?, nth(second)?);
            Some(if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) {
                b
            } else {
                a
            })
        }
    }
}

/// Checks an endpoint set aside for failing calls with the pool's probe, after
/// [`FIRST_SET_ASIDE`] and then doubling intervals, until it passes; then it
/// takes calls again. Ends when the endpoint leaves the pool.
async fn probe_until_healthy<C: Send + Sync + 'static>(member: Weak<Member<C>>, probe: Probe<C>, addr: SocketAddr) {
    let mut wait = FIRST_SET_ASIDE;
    loop {
        tokio::time::sleep(wait).await;
        let Some(member) = member.upgrade() else { return };
        let healthy = tokio::time::timeout(PROBE_TIMEOUT, probe(&member.connection))
            .await
            .unwrap_or(false);
        if healthy {
            member.failures.store(0, Ordering::Relaxed);
            member.set_asides.store(0, Ordering::Relaxed);
            member.set_aside_until.store(0, Ordering::Relaxed);
            member.probing.store(false, Ordering::Relaxed);
            tracing::info!(endpoint = %addr, "endpoint passed its probe; taking calls again");
            return;
        }
        tracing::debug!(endpoint = %addr, "endpoint failed its probe; still set aside");
        wait = wait.saturating_mul(2).min(LONGEST_SET_ASIDE);
    }
}

/// One call's use of an endpoint: counted in flight until dropped.
pub struct Lease<C> {
    member: Arc<Member<C>>,
    pool: Arc<Shared<C>>,
}

impl<C> fmt::Debug for Lease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("endpoint", &self.member.addr).finish()
    }
}

impl<C> Lease<C> {
    pub fn addr(&self) -> SocketAddr {
        self.member.addr
    }

    pub fn connection(&self) -> &C {
        &self.member.connection
    }

    /// The call could not reach the endpoint (no connection, the connection broke):
    /// it is set aside for a while and the endpoints are re-resolved soon. True
    /// when the failure is this endpoint's alone: others are left to take its calls.
    pub fn unreachable(&self) -> bool {
        self.member.failures.fetch_add(1, Ordering::Relaxed);
        if self.set_aside() {
            self.pool.endpoints.refresh_soon();
        }
        self.others_usable()
    }

    /// The endpoint was reached but failed the call in a way that says it is
    /// unwell (unavailable, shedding load, no answer within the deadline): after
    /// [`FAILURES_TO_SET_ASIDE`] in a row it is set aside; in a pool with a
    /// probe, until a probe passes. True when the failure is this endpoint's
    /// alone: it is set aside and others are left to take its calls.
    pub fn failed(&self) -> bool
    where
        C: Send + Sync + 'static,
    {
        let failures = self.member.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= FAILURES_TO_SET_ASIDE {
            match &self.pool.probe {
                None => {
                    self.set_aside();
                }
                Some(probe) if !self.member.probing.swap(true, Ordering::Relaxed) => {
                    self.member.set_aside_until.store(u64::MAX, Ordering::Relaxed);
                    tracing::warn!(endpoint = %self.member.addr, "endpoint failing; set aside until a probe passes");
                    tokio::spawn(probe_until_healthy(Arc::downgrade(&self.member), probe.clone(), self.member.addr));
                }
                Some(_) => {}
            }
        }
        !self.member.usable_at(self.pool.now_ms()) && self.others_usable()
    }

    /// Whether another endpoint of the pool is not set aside.
    fn others_usable(&self) -> bool {
        let now = self.pool.now_ms();
        self.pool
            .members
            .load()
            .iter()
            .any(|member| member.addr != self.member.addr && member.usable_at(now))
    }

    /// The endpoint answered: it is trusted again.
    pub fn reached(&self) {
        if self.member.probing.load(Ordering::Relaxed) {
            // A call that went there because nothing else was left; the probe decides.
            self.member.failures.store(0, Ordering::Relaxed);
            return;
        }
        if self.member.failures.load(Ordering::Relaxed) != 0 || self.member.set_asides.load(Ordering::Relaxed) != 0 {
            self.member.failures.store(0, Ordering::Relaxed);
            self.member.set_asides.store(0, Ordering::Relaxed);
            self.member.set_aside_until.store(0, Ordering::Relaxed);
        }
    }

    /// Sets the endpoint aside, unless it already is (the calls that were in
    /// flight when it failed, failing one after the other, do not lengthen it):
    /// the first time for [`FIRST_SET_ASIDE`], doubling each time after until it
    /// answers again. Whether it was set aside now.
    fn set_aside(&self) -> bool {
        let now_ms = self.pool.now_ms();
        let current = self.member.set_aside_until.load(Ordering::Relaxed);
        if current > now_ms {
            return false;
        }
        let times = self.member.set_asides.fetch_add(1, Ordering::Relaxed);
        let set_aside = FIRST_SET_ASIDE.saturating_mul(1 << times.min(16)).min(LONGEST_SET_ASIDE);
        let until = now_ms.saturating_add(u64::try_from(set_aside.as_millis()).unwrap_or(u64::MAX));
        if self
            .member
            .set_aside_until
            .compare_exchange(current, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            // Another call set it aside at the same moment.
            return false;
        }
        tracing::warn!(endpoint = %self.member.addr, ?set_aside, "endpoint failing; set aside");
        true
    }
}

impl<C> Drop for Lease<C> {
    fn drop(&mut self) {
        self.member.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `error` (or an error it was caused by) says the endpoint never
/// processed the request, so that sending it again, to this endpoint or
/// another, cannot act twice: what gRPC retries transparently. That is a
/// request hyper cancelled before handing it to a connection that closed or
/// went away, a stream the server refused (`REFUSED_STREAM`), or one its
/// graceful GOAWAY left out (h2 reports streams above the GOAWAY's last stream
/// id, and any stream opened after it, with that remote GOAWAY; a stream the
/// server did accept ends with the connection as a broken pipe instead).
pub fn never_processed(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|error| {
        if let Some(error) = error.downcast_ref::<hyper::Error>() {
            return error.is_canceled();
        }
        error.downcast_ref::<h2::Error>().is_some_and(|error| {
            error.is_remote()
                && (error.is_go_away() && error.reason() == Some(h2::Reason::NO_ERROR)
                    || error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM))
        })
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 50051))
    }

    fn pool(addresses: &[SocketAddr]) -> Pool<SocketAddr> {
        Pool::new(Endpoints::fixed(addresses.iter().copied()), |addr| addr, |_| {})
    }

    #[tokio::test]
    async fn calls_spread_over_every_endpoint_and_the_least_busy_of_two_wins() {
        let pool = pool(&[addr(2), addr(3), addr(4)]);
        let mut chosen: HashMap<SocketAddr, usize> = HashMap::new();
        for _ in 0..3000 {
            let lease = pool.pick(None).unwrap();
            assert_eq!(*lease.connection(), lease.addr());
            *chosen.entry(lease.addr()).or_default() += 1;
        }
        for count in chosen.values() {
            assert!((800..=1200).contains(count), "{chosen:?}");
        }
        // A call held on one endpoint: of any two drawn, the other is less busy, so
        // the busy one is not chosen while every other is free.
        let busy = loop {
            let lease = pool.pick(None).unwrap();
            if lease.addr() == addr(2) {
                break lease;
            }
        };
        for _ in 0..200 {
            assert_ne!(pool.pick(None).unwrap().addr(), addr(2), "the busier endpoint loses every draw");
        }
        drop(busy);
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_set_aside_and_a_retry_goes_elsewhere() {
        let pool = pool(&[addr(2), addr(3)]);
        let lease = pool.pick(Some(addr(3))).unwrap();
        assert_eq!(lease.addr(), addr(2), "avoided when another is usable");
        assert!(lease.unreachable(), "the other endpoint takes its calls");
        drop(lease);
        for _ in 0..50 {
            assert_eq!(pool.pick(None).unwrap().addr(), addr(3), "set aside");
        }
        // Failed calls set an endpoint aside only when they come in a row.
        let failing = self::pool(&[addr(2), addr(3)]);
        for _ in 0..FAILURES_TO_SET_ASIDE - 1 {
            assert!(!failing.pick(Some(addr(3))).unwrap().failed());
        }
        failing.pick(Some(addr(3))).unwrap().reached();
        for _ in 0..FAILURES_TO_SET_ASIDE - 1 {
            assert!(!failing.pick(Some(addr(3))).unwrap().failed(), "not yet the endpoint's alone");
        }
        assert_eq!(failing.pick(Some(addr(3))).unwrap().addr(), addr(2), "not yet set aside");
        assert!(failing.pick(Some(addr(3))).unwrap().failed(), "set aside: its own failure");
        for _ in 0..50 {
            assert_eq!(failing.pick(None).unwrap().addr(), addr(3), "set aside after failures in a row");
        }

        // Nothing else left: a set-aside endpoint is still tried.
        let single = self::pool(&[addr(2)]);
        assert!(
            !single.pick(None).unwrap().unreachable(),
            "no other endpoint: the dependency's failure"
        );
        assert_eq!(single.pick(None).unwrap().addr(), addr(2));
        assert!(self::pool(&[]).pick(None).is_none());
    }

    #[tokio::test]
    async fn an_endpoint_failing_calls_takes_none_until_its_probe_passes() {
        let healthy = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicU32::new(0));
        let (answer, counted) = (healthy.clone(), probes.clone());
        let probe: Probe<SocketAddr> = Arc::new(move |_: &SocketAddr| {
            counted.fetch_add(1, Ordering::SeqCst);
            let healthy = answer.load(Ordering::SeqCst);
            Box::pin(async move { healthy })
        });
        let pool = Pool::probed(Endpoints::fixed([addr(2), addr(3)]), |addr| addr, |_| {}, probe);
        for _ in 0..FAILURES_TO_SET_ASIDE {
            let _ = pool.pick(Some(addr(3))).unwrap().failed();
        }
        // Twice the first interval: one probe has run, and failed.
        tokio::time::sleep(FIRST_SET_ASIDE * 2).await;
        assert!(probes.load(Ordering::SeqCst) >= 1);
        for _ in 0..50 {
            let lease = pool.pick(None).unwrap();
            assert_eq!(lease.addr(), addr(3), "set aside while its probes fail");
            lease.reached();
        }
        healthy.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), async {
            while (0..20).all(|_| pool.pick(None).unwrap().addr() == addr(3)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn endpoints_that_leave_take_no_new_call_and_keep_their_calls() {
        let (publish, endpoints) = Endpoints::manual([addr(2), addr(3)]);
        let counts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let heard = counts.clone();
        let pool = Pool::new(endpoints, |addr| addr, move |count| heard.lock().unwrap().push(count));
        let held = loop {
            let lease = pool.pick(None).unwrap();
            if lease.addr() == addr(2) {
                break lease;
            }
        };
        publish.send(vec![addr(3), addr(4)].into()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.endpoints() != [addr(3), addr(4)] {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        for _ in 0..100 {
            assert_ne!(pool.pick(None).unwrap().addr(), addr(2));
        }
        assert_eq!(*held.connection(), addr(2), "the call in flight keeps its connection");
        assert_eq!(*counts.lock().unwrap(), [2, 2]);
    }
}
