//! What a Kubernetes ClusterIP Service does to TCP, on loopback: one address
//! in front of several replicas, each new connection sent to the next replica
//! in turn and kept there for its whole life. A client that holds one
//! connection talks to one replica until that connection ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
pub struct ServiceProxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl ServiceProxy {
    /// Starts on a fresh loopback port in front of `replicas` (at least one).
    pub async fn start(replicas: Vec<SocketAddr>) -> std::io::Result<Self> {
        assert!(!replicas.is_empty(), "a Service needs a replica");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (accepted, forwarding) = (connections.clone(), open.clone());
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let replica = replicas[accepted.fetch_add(1, Ordering::Relaxed) % replicas.len()];
                forwarding.fetch_add(1, Ordering::Relaxed);
                let forwarding = forwarding.clone();
                tokio::spawn(async move {
                    forward(client, replica).await;
                    forwarding.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Ok(Self {
            addr,
            connections,
            open,
            accept_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections still open: a connection is closed here only once both
    /// its ends have closed theirs.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Waits (up to `patience`) until no connection is open; whether none is.
    pub async fn until_idle(&self, patience: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while self.open_connections() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn forward(mut client: TcpStream, replica: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(replica).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
