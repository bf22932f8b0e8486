//! A server under test: a service binary run as a child process on free
//! loopback ports, with a cleared environment, stopped with SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::load::PhaseResult;
use super::pki::Dialer;
use super::with_timeout;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ServerProcess {
    name: String,
    child: Child,
    stopped: Option<ExitStatus>,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `binary serve --grpc-addr <free port> --admin-addr <free port>`
    /// with nothing from the caller's environment (embedded defaults whatever
    /// the shell exports), then lets `configure` add arguments and variables.
    /// The server's stdout goes to stderr so stdout stays the report.
    pub fn start(binary: &Path, configure: impl FnOnce(&mut Command)) -> anyhow::Result<Self> {
        let (grpc_addr, admin_addr) = free_ports()?;
        let mut command = Command::new(binary);
        command
            .env_clear()
            .arg("serve")
            .arg("--grpc-addr")
            .arg(grpc_addr.to_string())
            .arg("--admin-addr")
            .arg(admin_addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit());
        configure(&mut command);
        let child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let name = binary
            .file_name()
            .map_or_else(|| binary.display().to_string(), |name| name.to_string_lossy().into_owned());
        Ok(Self {
            name,
            child,
            stopped: None,
            grpc_addr,
            admin_addr,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls gRPC health (overall status) until it answers SERVING.
    pub async fn wait_until_serving(&mut self, dialer: &Dialer) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_problem = String::from("no answer yet");
        loop {
            if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
                self.stopped = Some(status);
                bail!("{} exited during start-up ({status}); its log is above", self.name);
            }
            if Instant::now() >= deadline {
                bail!("{} did not report SERVING within {STARTUP_TIMEOUT:?}: {last_problem}", self.name);
            }
            match dialer.connect().await {
                Ok(channel) => match HealthClient::new(channel)
                    .check(with_timeout(HealthCheckRequest { service: String::new() }))
                    .await
                {
                    Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
                    Ok(response) => last_problem = format!("health status {}", response.get_ref().status),
                    Err(status) => last_problem = format!("health check failed: {status}"),
                },
                Err(error) => last_problem = format!("cannot connect: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident set size of the server process, from /proc, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .with_context(|| format!("no VmRSS in {path}"))?;
        let kib = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim();
        kib.parse().with_context(|| format!("cannot parse {line:?}"))
    }

    /// Fails with the phase's failed-request count when the server died during it.
    pub fn ensure_running(&mut self, phase: &PhaseResult) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
            self.stopped = Some(status);
            let first = phase.first_error.as_deref().unwrap_or("none");
            bail!(
                "{} exited during the run ({status}); {} requests failed (first: {first})",
                self.name,
                phase.errors
            );
        }
        Ok(())
    }

    /// SIGTERM, then waits for the graceful drain; SIGKILL if it overruns.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.stopped {
            return Ok(status);
        }
        if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
            self.stopped = Some(status);
            return Ok(status);
        }
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .context("cannot run kill")?;
        ensure!(signalled.success(), "kill -TERM {} failed: {signalled}", self.pid());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
                self.stopped = Some(status);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.child.kill().context("cannot kill the server")?;
                let status = self.child.wait().context("cannot reap the server")?;
                self.stopped = Some(status);
                bail!("{} did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.stopped.is_none()
            && let Err(error) = self.stop()
        {
            eprintln!("{error:#}");
        }
    }
}

/// The service binary `name` beside the running executable (both come out of
/// `cargo build --release`), unless `explicit` names one.
pub fn sibling_binary(explicit: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let binary = match explicit {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .context("cannot locate this executable")?
            .with_file_name(name),
    };
    ensure!(
        binary.is_file(),
        "no {name} binary at {} (build it with `cargo build --release -p {name}`, or pass its path)",
        binary.display()
    );
    Ok(binary)
}

/// Two distinct free loopback ports: bound to port 0 together, then released.
fn free_ports() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let first = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    let second = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok((first.local_addr()?, second.local_addr()?))
}
