//! A fixed number of requests in flight: one looping task per slot, a warm-up,
//! then a measured window whose requests, latencies and CPU time are summed.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;

use super::cpu::CpuClock;
use super::metrics::ServerCounters;

/// One kind of request, issued over and over by one in-flight slot; an error
/// is described in one line.
pub trait Call: Send + 'static {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send + '_;
}

/// Figures of one phase's measured window (errors count warm-up too).
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    pub latency_us: Histogram<u64>,
    /// CPU time (user + system) over the measured window: the servers', this
    /// process's, and every CPU's busy time (all processes and the kernel).
    pub server_cpu: Duration,
    pub client_cpu: Duration,
    pub machine_cpu: Duration,
    /// The server's counters over the measured window, when they were scraped at its edges.
    pub counters: Option<WindowCounters>,
}

/// Counter deltas between scrapes at the two edges of a window, and the time between the scrapes.
#[derive(Debug, Clone)]
pub struct WindowCounters {
    pub delta: ServerCounters,
    pub elapsed: Duration,
}

impl PhaseResult {
    /// CPU time per request; steadier than throughput on a shared machine.
    pub fn cpu_us_per_request(&self, cpu: Duration) -> f64 {
        cpu_us_per(cpu, self.requests)
    }

    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1_000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1_000.0
    }

    /// CPUs kept busy by everything but the servers and the load generator over
    /// the window (other work on a shared machine, the kernel's own threads).
    pub fn other_cpus(&self) -> f64 {
        let ours = self.server_cpu + self.client_cpu;
        self.machine_cpu.saturating_sub(ours).as_secs_f64() / self.window.as_secs_f64()
    }

    /// Handshakes the server accepted in the window (0 when not scraped).
    pub fn accepted_handshakes(&self) -> u64 {
        self.counters.as_ref().map_or(0, |counters| counters.delta.handshakes.accepted)
    }

    /// The server's accepted handshakes per second over the window.
    pub fn handshakes_per_second(&self) -> f64 {
        self.counters.as_ref().map_or(0.0, |counters| {
            counters.delta.handshakes.accepted as f64 / counters.elapsed.as_secs_f64()
        })
    }
}

impl PhaseResult {
    /// Folds another window of the same kind into this one, as if measured in
    /// one longer window: counts, window lengths, latencies and CPU time add up.
    pub fn absorb(&mut self, other: Self) -> anyhow::Result<()> {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.window += other.window;
        self.latency_us.add(&other.latency_us).context("cannot merge latency histograms")?;
        self.server_cpu += other.server_cpu;
        self.client_cpu += other.client_cpu;
        self.machine_cpu += other.machine_cpu;
        self.counters = None;
        Ok(())
    }
}

pub fn cpu_us_per(cpu: Duration, count: u64) -> f64 {
    if count == 0 { 0.0 } else { cpu.as_secs_f64() * 1e6 / count as f64 }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    measure_until: Instant,
}

/// What is read at each edge of a measured window.
struct Sample {
    at: Instant,
    server_cpu: Duration,
    client_cpu: Duration,
    machine_cpu: Duration,
    counters: Option<ServerCounters>,
}

impl Sample {
    async fn take(cpu: &CpuClock, admin_addr: Option<SocketAddr>) -> anyhow::Result<Self> {
        let counters = match admin_addr {
            Some(addr) => Some(ServerCounters::scrape(addr).await?),
            None => None,
        };
        Ok(Self {
            at: Instant::now(),
            server_cpu: cpu.server()?,
            client_cpu: cpu.own()?,
            machine_cpu: cpu.machine()?,
            counters,
        })
    }
}

/// Something else read at both edges of a measured window, beside CPU time and
/// the server's counters (for example what a backend counted itself). A reading
/// that can fail carries its error in `Reading`, so it never breaks the run.
pub trait WindowProbe: Send + 'static {
    type Reading: Send + 'static;
    fn read(&self) -> impl Future<Output = Self::Reading> + Send + '_;
}

/// No reading beyond CPU time and the server's counters.
struct NoProbe;

impl WindowProbe for NoProbe {
    type Reading = ();
    async fn read(&self) {}
}

/// Runs one looping task per call: a warm-up, then the measured window. A
/// call counts in the window when it started inside it. With `admin_addr`, the
/// server's counters are also scraped at both edges of the window.
pub async fn run_load<C: Call>(
    calls: Vec<C>,
    cpu: CpuClock,
    warmup: Duration,
    window: Duration,
    admin_addr: Option<SocketAddr>,
) -> anyhow::Result<PhaseResult> {
    let (result, (), ()) = run_load_probed(calls, cpu, warmup, window, admin_addr, NoProbe).await?;
    Ok(result)
}

/// [`run_load`], and `probe` read at both edges of the measured window (just
/// inside them: first at the start, last at the end): its readings before and after.
pub async fn run_load_probed<C: Call, P: WindowProbe>(
    calls: Vec<C>,
    cpu: CpuClock,
    warmup: Duration,
    window: Duration,
    admin_addr: Option<SocketAddr>,
    probe: P,
) -> anyhow::Result<(PhaseResult, P::Reading, P::Reading)> {
    let start = Instant::now();
    let timing = Window {
        measure_from: start + warmup,
        measure_until: start + warmup + window,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for call in calls {
        tasks.spawn(drive(call, timing));
    }
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(timing.measure_from.into()).await;
        let probed_before = probe.read().await;
        let before = Sample::take(&cpu, admin_addr).await?;
        tokio::time::sleep_until(timing.measure_until.into()).await;
        let after = Sample::take(&cpu, admin_addr).await?;
        let probed_after = probe.read().await;
        Ok::<_, anyhow::Error>((before, after, probed_before, probed_after))
    });

    let mut result = PhaseResult {
        requests: 0,
        errors: 0,
        first_error: None,
        window,
        latency_us: new_histogram()?,
        server_cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
        machine_cpu: Duration::ZERO,
        counters: None,
    };
    while let Some(joined) = tasks.join_next().await {
        let slot = joined.context("a load task panicked")??;
        result.requests += slot.requests;
        result.errors += slot.errors;
        if result.first_error.is_none() {
            result.first_error = slot.first_error;
        }
        result.latency_us.add(&slot.latency_us).context("cannot merge latency histograms")?;
    }
    let (before, after, probed_before, probed_after) = sampler.await.context("the window sampler panicked")??;
    result.server_cpu = after.server_cpu.saturating_sub(before.server_cpu);
    result.client_cpu = after.client_cpu.saturating_sub(before.client_cpu);
    result.machine_cpu = after.machine_cpu.saturating_sub(before.machine_cpu);
    if let (Some(first), Some(last)) = (&before.counters, &after.counters) {
        result.counters = Some(WindowCounters {
            delta: last.minus(first),
            elapsed: after.at.saturating_duration_since(before.at),
        });
    }
    Ok((result, probed_before, probed_after))
}

struct SlotResult {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
}

async fn drive<C: Call>(mut call: C, timing: Window) -> anyhow::Result<SlotResult> {
    let mut slot = SlotResult {
        requests: 0,
        errors: 0,
        first_error: None,
        latency_us: new_histogram()?,
    };
    loop {
        let started = Instant::now();
        if started >= timing.measure_until {
            return Ok(slot);
        }
        let outcome = call.call().await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(()) if started >= timing.measure_from => {
                slot.requests += 1;
                slot.latency_us
                    .saturating_record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1));
            }
            Ok(()) => {}
            Err(error) => {
                slot.errors += 1;
                if slot.first_error.is_none() {
                    slot.first_error = Some(error);
                }
            }
        }
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 60 s at three significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).context("cannot create a latency histogram")
}
