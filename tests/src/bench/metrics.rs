//! Counters read from a server's admin port (`/metrics`, Prometheus text).

use std::net::SocketAddr;

use anyhow::{Context as _, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::RPC_TIMEOUT;

/// The body of `GET /metrics` (HTTP/1.0, so it is neither chunked nor kept alive).
pub async fn scrape(admin_addr: SocketAddr) -> anyhow::Result<String> {
    let text = tokio::time::timeout(RPC_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(admin_addr).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {admin_addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    })
    .await
    .context("timed out reading /metrics")?
    .context("cannot read /metrics")?;
    ensure!(
        text.starts_with("HTTP/1.") && text.split(' ').nth(1) == Some("200"),
        "/metrics answered {:?}",
        text.lines().next()
    );
    Ok(text)
}

/// Every sample of `metric` (with labels) as `(labels, value)`.
pub fn samples<'a>(text: &'a str, metric: &'a str) -> impl Iterator<Item = anyhow::Result<(&'a str, u64)>> + 'a {
    text.lines()
        .filter(move |line| line.strip_prefix(metric).is_some_and(|rest| rest.starts_with('{')))
        .filter_map(|line| {
            let (labels, value) = line.rsplit_once(' ')?;
            Some(
                value
                    .trim()
                    .parse::<u64>()
                    .map(|value| (labels, value))
                    .with_context(|| format!("cannot parse {line:?}")),
            )
        })
}

/// The sum of `metric`'s samples whose labels include every `(name, value)` of `matching`.
pub fn sum(text: &str, metric: &str, matching: &[(&str, &str)]) -> anyhow::Result<u64> {
    let mut total = 0;
    for sample in samples(text, metric) {
        let (labels, value) = sample?;
        if matching.iter().all(|&(name, wanted)| label(labels, name) == Some(wanted)) {
            total += value;
        }
    }
    Ok(total)
}

pub fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// A server's cache and TLS handshake counters (or their growth between two scrapes).
#[derive(Debug, Default, Clone)]
pub struct ServerCounters {
    pub backend: Option<String>,
    pub hits: u64,
    pub misses: u64,
    pub handshakes: Handshakes,
}

/// `tls_server_handshakes_total` by outcome.
#[derive(Debug, Default, Clone, Copy)]
pub struct Handshakes {
    pub accepted: u64,
    pub rejected: u64,
    pub timed_out: u64,
}

impl ServerCounters {
    /// Sums `cache_lookups_total` by result and reads `tls_server_handshakes_total` by outcome.
    pub async fn scrape(admin_addr: SocketAddr) -> anyhow::Result<Self> {
        Self::parse(&scrape(admin_addr).await?)
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut counters = Self::default();
        for sample in samples(text, "cache_lookups_total") {
            let (labels, value) = sample?;
            if counters.backend.is_none() {
                counters.backend = label(labels, "backend").map(str::to_owned);
            }
            match label(labels, "result") {
                Some("hit") => counters.hits += value,
                Some("miss") => counters.misses += value,
                _ => {}
            }
        }
        let handshakes = "tls_server_handshakes_total";
        counters.handshakes = Handshakes {
            accepted: sum(text, handshakes, &[("outcome", "accepted")])?,
            rejected: sum(text, handshakes, &[("outcome", "rejected")])?,
            timed_out: sum(text, handshakes, &[("outcome", "timeout")])?,
        };
        Ok(counters)
    }

    pub fn minus(&self, earlier: &Self) -> Self {
        Self {
            backend: self.backend.clone(),
            hits: self.hits.saturating_sub(earlier.hits),
            misses: self.misses.saturating_sub(earlier.misses),
            handshakes: Handshakes {
                accepted: self.handshakes.accepted.saturating_sub(earlier.handshakes.accepted),
                rejected: self.handshakes.rejected.saturating_sub(earlier.handshakes.rejected),
                timed_out: self.handshakes.timed_out.saturating_sub(earlier.handshakes.timed_out),
            },
        }
    }

    pub fn lookups(&self) -> u64 {
        self.hits + self.misses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP cache_lookups Cache lookups by result.
# TYPE cache_lookups counter
cache_lookups_total{backend=\"memory\",result=\"hit\"} 7
cache_lookups_total{backend=\"memory\",result=\"miss\"} 2
cache_lookups_created{backend=\"memory\",result=\"hit\"} 1700000000
tls_server_handshakes_total{outcome=\"accepted\"} 4
tls_server_handshakes_total{outcome=\"timeout\"} 1
client_attempts_total{dependency=\"user-service\"} 12
client_attempts_total{dependency=\"other\"} 3
";

    #[test]
    fn parses_cache_and_handshake_counters() -> anyhow::Result<()> {
        let counters = ServerCounters::parse(TEXT)?;
        assert_eq!(counters.backend.as_deref(), Some("memory"));
        assert_eq!((counters.hits, counters.misses), (7, 2));
        assert_eq!(counters.handshakes.accepted, 4);
        assert_eq!(counters.handshakes.rejected, 0);
        assert_eq!(counters.handshakes.timed_out, 1);
        Ok(())
    }

    #[test]
    fn sums_only_matching_samples_of_the_named_metric() -> anyhow::Result<()> {
        assert_eq!(sum(TEXT, "client_attempts_total", &[("dependency", "user-service")])?, 12);
        assert_eq!(sum(TEXT, "client_attempts_total", &[])?, 15);
        assert_eq!(sum(TEXT, "cache_lookups", &[])?, 0);
        Ok(())
    }
}
