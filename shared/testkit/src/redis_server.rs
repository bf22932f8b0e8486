//! A private `redis-server` for tests that must stop and restart Redis, which
//! the shared server on this machine must never be: its own ephemeral
//! loopback port, no persistence (`--save "" --appendonly no`), killed when
//! dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const START_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits until it answers PING;
    /// `None` (after a loud skip) outside CI when there is no `redis-server`
    /// (`$REDIS_SERVER`, `/usr/bin/redis-server`, or on `PATH`).
    pub async fn start() -> Option<Self> {
        let Some(binary) = redis_server_path() else {
            return crate::unavailable("redis-server", "no redis-server binary (set REDIS_SERVER)");
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("find a free port")
            .port();
        let mut server = Self {
            binary,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server at once (SIGKILL, as a crash would) and reaps it: its
    /// clients' connections drop and new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing persists) and
    /// waits until it answers PING.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.binary)
            .args(["--port", &self.addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(reply) = self.command(&["PING"]).await
                && reply == "PONG"
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("redis-server on {} exited at start-up ({status}); is the port taken?", self.addr);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer PING in {START_TIMEOUT:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `INFO <section>` as a map of its `name:value` lines.
    pub async fn info(&self, section: &str) -> HashMap<String, String> {
        let text = self
            .command(&["INFO", section])
            .await
            .unwrap_or_else(|error| panic!("INFO {section} on {}: {error}", self.addr));
        text.lines()
            .filter_map(|line| line.trim().split_once(':'))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }

    /// Calls of `command` (`get`, `ping`, `client|setinfo`...) counted by `INFO commandstats`.
    pub async fn command_calls(&self, command: &str) -> u64 {
        self.info("commandstats")
            .await
            .get(&format!("cmdstat_{command}"))
            .and_then(|stats| stats.split(',').find_map(|field| field.strip_prefix("calls=")))
            .map_or(0, |calls| calls.parse().expect("numeric calls= in INFO commandstats"))
    }

    /// One command on a fresh connection: its simple-string, integer or bulk-string reply.
    pub async fn command(&self, args: &[&str]) -> std::io::Result<String> {
        tokio::time::timeout(COMMAND_TIMEOUT, self.command_untimed(args))
            .await
            .map_err(|_| std::io::Error::other(format!("no reply to {args:?} in {COMMAND_TIMEOUT:?}")))?
    }

    async fn command_untimed(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = BufReader::new(TcpStream::connect(self.addr).await?);
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut header = String::new();
        stream.read_line(&mut header).await?;
        let header = header.trim_end();
        match header.split_at_checked(1) {
            Some(("+" | ":", value)) => Ok(value.to_owned()),
            Some(("$", length)) => {
                let length: usize = length.parse().map_err(std::io::Error::other)?;
                let mut body = vec![0_u8; length + 2];
                stream.read_exact(&mut body).await?;
                body.truncate(length);
                String::from_utf8(body).map_err(std::io::Error::other)
            }
            _ => Err(std::io::Error::other(format!("reply to {args:?}: {header}"))),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_server_path() -> Option<PathBuf> {
    let candidates = std::env::var_os("REDIS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/redis-server")])
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|path| std::env::split_paths(&path).map(|dir| dir.join("redis-server")).collect::<Vec<_>>()),
        );
    candidates.into_iter().find(|candidate| candidate.is_file())
}
