//! CPU time of the servers under test and of the load generator, from
//! `/proc/<pid>/stat`, and of the whole machine, from `/proc/stat`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};

#[derive(Debug, Clone)]
pub struct CpuClock {
    server_pids: Vec<u32>,
    ticks_per_second: u64,
}

impl CpuClock {
    /// `server_pids`: the processes whose CPU time is "the server's" (summed).
    pub fn new(server_pids: Vec<u32>) -> Self {
        // USER_HZ, the unit of utime and stime; 100 on every mainstream Linux.
        let ticks_per_second = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100);
        Self {
            server_pids,
            ticks_per_second,
        }
    }

    pub fn server(&self) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for pid in &self.server_pids {
            total += self.read(&format!("/proc/{pid}/stat"))?;
        }
        Ok(total)
    }

    pub fn own(&self) -> anyhow::Result<Duration> {
        self.read("/proc/self/stat")
    }

    /// Busy time summed over every CPU: user, nice, system, irq, softirq and steal (not idle or iowait).
    pub fn machine(&self) -> anyhow::Result<Duration> {
        let path = "/proc/stat";
        let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        let line = stat
            .lines()
            .find(|line| line.starts_with("cpu "))
            .with_context(|| format!("no aggregate cpu line in {path}"))?;
        let fields = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<Vec<u64>, _>>()
            .with_context(|| format!("unexpected {path}: {line:?}"))?;
        ensure!(fields.len() >= 8, "short cpu line in {path}: {line:?}");
        let busy: u64 = [0, 1, 2, 5, 6, 7].iter().map(|&index| fields[index]).sum();
        Ok(self.ticks(busy))
    }

    fn ticks(&self, ticks: u64) -> Duration {
        Duration::from_secs_f64(ticks as f64 / self.ticks_per_second as f64)
    }

    /// utime + stime of every thread of the process.
    fn read(&self, path: &str) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        // Fields after the parenthesised command name, which may contain spaces: state is field 3,
        // utime and stime are fields 14 and 15.
        let (_, rest) = stat.rsplit_once(')').with_context(|| format!("unexpected {path}: {stat:?}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |index: usize| -> anyhow::Result<u64> {
            fields
                .get(index)
                .with_context(|| format!("short {path}"))?
                .parse()
                .with_context(|| format!("unexpected {path}: {stat:?}"))
        };
        Ok(self.ticks(ticks(11)? + ticks(12)?))
    }
}
