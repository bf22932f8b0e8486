//! What Redis itself counted over a measured window: `INFO commandstats`
//! (calls per command) and `INFO cpu` (the server's CPU time), read over a
//! plain connection of our own at both edges of the window.
//!
//! The bench crate carries no Redis client, and two read-only `INFO` commands
//! need none: each is one RESP array out and one bulk string back.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::RPC_TIMEOUT;

/// Where to read Redis's counters: the host and port of a `redis://` URL, and its credentials.
#[derive(Debug, Clone)]
pub struct RedisProbe {
    addr: String,
    /// `AUTH` arguments (password, or user and password) when the URL carries them.
    auth: Vec<String>,
}

/// Calls per command (`get`, `ping`, `client|setinfo`...) and CPU time, as Redis counts them.
#[derive(Debug, Clone, Default)]
pub struct RedisCounters {
    pub calls: BTreeMap<String, u64>,
    pub cpu: Duration,
}

impl RedisCounters {
    /// Growth since `earlier`; a command Redis no longer lists (a restart) counts from zero.
    pub fn minus(&self, earlier: &Self) -> Self {
        let calls = self
            .calls
            .iter()
            .map(|(command, &calls)| {
                let before = earlier.calls.get(command).copied().unwrap_or(0);
                (command.clone(), calls.checked_sub(before).unwrap_or(calls))
            })
            .filter(|&(_, calls)| calls > 0)
            .collect();
        Self {
            calls,
            cpu: self.cpu.saturating_sub(earlier.cpu),
        }
    }

    pub fn calls_of(&self, command: &str) -> u64 {
        self.calls.get(command).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

impl RedisProbe {
    /// From a `redis://[[user]:password@]host[:port][/db]` URL (TLS and Unix sockets are not supported).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("redis://") else {
            bail!("only redis:// URLs can be probed (not TLS or Unix sockets)");
        };
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        ensure!(!host_port.is_empty(), "no host in the Redis URL");
        // A bracketed IPv6 literal keeps its colons; a port follows the closing bracket.
        let has_port = host_port.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok())
            && (!host_port.starts_with('[') || host_port.contains("]:"));
        let addr = if has_port {
            host_port.to_owned()
        } else {
            format!("{host_port}:6379")
        };
        let auth = match userinfo.map(|userinfo| userinfo.split_once(':').unwrap_or(("", userinfo))) {
            None => Vec::new(),
            Some(("", password)) => vec![password.to_owned()],
            Some((user, password)) => vec![user.to_owned(), password.to_owned()],
        };
        Ok(Self { addr, auth })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Both sections, read on one fresh connection within [`RPC_TIMEOUT`].
    pub async fn read(&self) -> anyhow::Result<RedisCounters> {
        tokio::time::timeout(RPC_TIMEOUT, self.read_untimed())
            .await
            .with_context(|| format!("Redis at {} did not answer INFO within {RPC_TIMEOUT:?}", self.addr))?
    }

    async fn read_untimed(&self) -> anyhow::Result<RedisCounters> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", self.addr))?;
        let mut stream = BufReader::new(stream);
        if !self.auth.is_empty() {
            let mut auth = vec!["AUTH"];
            auth.extend(self.auth.iter().map(String::as_str));
            let reply = command(&mut stream, &auth).await?;
            ensure!(reply == "OK", "Redis refused AUTH: {reply}");
        }
        let commandstats = command(&mut stream, &["INFO", "commandstats"]).await?;
        let cpu = command(&mut stream, &["INFO", "cpu"]).await?;
        Ok(RedisCounters {
            calls: parse_commandstats(&commandstats)?,
            cpu: parse_cpu(&cpu)?,
        })
    }
}

/// Sends one command and reads its reply: a simple string or a bulk string.
async fn command(stream: &mut BufReader<TcpStream>, args: &[&str]) -> anyhow::Result<String> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut header = String::new();
    stream.read_line(&mut header).await?;
    let header = header.trim_end();
    match header.split_at_checked(1) {
        Some(("+", text)) => Ok(text.to_owned()),
        Some(("-", error)) => bail!("Redis answered {:?} with an error: {error}", args.join(" ")),
        Some(("$", length)) => {
            let length: usize = length.parse().with_context(|| format!("bad bulk length {length:?}"))?;
            // The text and its trailing CRLF.
            let mut body = vec![0_u8; length + 2];
            stream.read_exact(&mut body).await?;
            body.truncate(length);
            String::from_utf8(body).context("INFO is not UTF-8")
        }
        _ => bail!("unexpected reply to {:?}: {header:?}", args.join(" ")),
    }
}

/// `cmdstat_get:calls=12,usec=34,...` lines, by command name.
fn parse_commandstats(text: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let Some((command, stats)) = line.trim().strip_prefix("cmdstat_").and_then(|rest| rest.split_once(':')) else {
            continue;
        };
        let count = stats
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .with_context(|| format!("no calls= in {line:?}"))?
            .parse()
            .with_context(|| format!("bad calls= in {line:?}"))?;
        calls.insert(command.to_owned(), count);
    }
    Ok(calls)
}

/// `used_cpu_sys` + `used_cpu_user`, in seconds with decimals.
fn parse_cpu(text: &str) -> anyhow::Result<Duration> {
    let mut seconds = 0.0;
    for name in ["used_cpu_sys", "used_cpu_user"] {
        let value = text
            .lines()
            .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} in INFO cpu"))?;
        seconds += value.parse::<f64>().with_context(|| format!("bad {name}: {value:?}"))?;
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_host_port_and_credentials_from_urls() -> anyhow::Result<()> {
        let probe = RedisProbe::from_url("redis://127.0.0.1:6390/0")?;
        assert_eq!((probe.addr(), probe.auth.len()), ("127.0.0.1:6390", 0));
        let probe = RedisProbe::from_url("redis://cache.internal")?;
        assert_eq!(probe.addr(), "cache.internal:6379");
        let probe = RedisProbe::from_url("redis://:secret@cache:6380")?;
        assert_eq!((probe.addr(), probe.auth.clone()), ("cache:6380", vec!["secret".to_owned()]));
        let probe = RedisProbe::from_url("redis://bench:secret@[::1]:6381/2")?;
        assert_eq!((probe.addr(), probe.auth.len()), ("[::1]:6381", 2));
        assert_eq!(RedisProbe::from_url("redis://[::1]")?.addr(), "[::1]:6379");
        assert!(RedisProbe::from_url("rediss://cache:6380").is_err());
        Ok(())
    }

    #[test]
    fn parses_commandstats_and_cpu() -> anyhow::Result<()> {
        let stats = "# Commandstats\r\ncmdstat_get:calls=10,usec=20,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
                     cmdstat_client|setinfo:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n";
        let calls = parse_commandstats(stats)?;
        assert_eq!(calls.get("get"), Some(&10));
        assert_eq!(calls.get("client|setinfo"), Some(&2));
        let cpu = parse_cpu("# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250000\r\nused_cpu_sys_children:9.0\r\n")?;
        assert_eq!(cpu, Duration::from_millis(1_750));

        let before = RedisCounters {
            calls: BTreeMap::from([("get".to_owned(), 10), ("ping".to_owned(), 4)]),
            cpu: Duration::from_secs(1),
        };
        let after = RedisCounters {
            calls: BTreeMap::from([("get".to_owned(), 25), ("ping".to_owned(), 4), ("set".to_owned(), 1)]),
            cpu: Duration::from_secs(3),
        };
        let delta = after.minus(&before);
        assert_eq!((delta.calls_of("get"), delta.calls_of("ping"), delta.calls_of("set")), (15, 0, 1));
        assert_eq!((delta.total_calls(), delta.cpu), (16, Duration::from_secs(2)));
        Ok(())
    }
}
