//! A TCP proxy that tests put between a service and a real dependency to
//! break it on demand: refuse connections (the dependency died), hold them
//! silently (it hangs), or slow every read (it is overloaded).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the proxy treats traffic right now. Changing the mode cuts every
/// connection opened under the previous one, as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Pass bytes through.
    Forward,
    /// Close connections as soon as they arrive.
    Refuse,
    /// Accept connections and never answer.
    Blackhole,
    /// Pass bytes through, waiting this long before forwarding each chunk.
    Delay(Duration),
}

#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<(ProxyMode, u64)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding from a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, modes) = watch::channel((ProxyMode::Forward, 0));
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(handle(client, target, modes.clone()));
            }
        });
        Self { addr, mode, accept_task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_modify(|(current, generation)| {
            *current = mode;
            *generation += 1;
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn handle(client: TcpStream, target: SocketAddr, mut modes: watch::Receiver<(ProxyMode, u64)>) {
    let (mode, generation) = *modes.borrow_and_update();
    let cut = async move {
        while modes.changed().await.is_ok() {
            if modes.borrow().1 != generation {
                return;
            }
        }
    };
    match mode {
        ProxyMode::Refuse => drop(client),
        ProxyMode::Blackhole => {
            cut.await;
            drop(client);
        }
        ProxyMode::Forward | ProxyMode::Delay(_) => {
            let delay = if let ProxyMode::Delay(delay) = mode {
                delay
            } else {
                Duration::ZERO
            };
            let Ok(upstream) = TcpStream::connect(target).await else { return };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            tokio::select! {
                () = pipe(client_read, upstream_write, delay) => {}
                () = pipe(upstream_read, client_write, delay) => {}
                () = cut => {}
            }
        }
    }
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else { return };
        if read == 0 {
            return;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
