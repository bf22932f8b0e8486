//! A DNS server for tests (hickory-server), answering A queries from a table the
//! test changes while it runs: a headless Service whose pods come and go, and a
//! name server that fails.
//!
//! Resolvers read their server from resolv.conf, which cannot name a port, so
//! the server listens on port 53 (UDP and TCP) of a loopback address of its own
//! ([`DnsServer::start_on_loopback`] picks a free one in 127.53.0.0/16).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// From the table: the name's addresses, NXDOMAIN for a name it does not hold.
    Answer,
    /// SERVFAIL to every query.
    ServFail,
    /// No answer at all: the query times out at the resolver.
    Silent,
}

#[derive(Debug)]
struct State {
    records: HashMap<LowerName, Vec<Ipv4Addr>>,
    mode: DnsMode,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Queries for a name in the table, answered or not.
    queries: AtomicU64,
}

/// A running test DNS server; stopped when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Server<Handler>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Serves UDP and TCP on `addr`.
    pub async fn start(addr: SocketAddr) -> io::Result<Self> {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                records: HashMap::new(),
                mode: DnsMode::Answer,
            }),
            queries: AtomicU64::new(0),
        });
        let mut server = Server::new(Handler { shared: shared.clone() });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        Ok(Self { addr, shared, server })
    }

    /// Serves on port 53 of the first free address in 127.53.0.0/16 from a random
    /// start, so that tests running at once each have their own.
    pub async fn start_on_loopback() -> io::Result<Self> {
        let start = u16::try_from(std::process::id() % 65_000).unwrap_or(0) ^ rand_u16();
        let mut last_error = None;
        for step in 0..64u16 {
            let n = start.wrapping_add(step.wrapping_mul(257));
            let [high, low] = n.to_be_bytes();
            // .0 and .255 are avoided: odd as host addresses.
            let ip = Ipv4Addr::new(127, 53, high, low.clamp(1, 254));
            match Self::start(SocketAddr::new(IpAddr::V4(ip), 53)).await {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no loopback address free")))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A resolv.conf naming this server (and nothing else).
    pub fn resolv_conf(&self) -> String {
        format!("nameserver {}\noptions timeout:1 attempts:1\n", self.addr.ip())
    }

    /// `name` now resolves to `addresses` (none: the name exists with no address).
    pub fn set(&self, name: &str, addresses: &[Ipv4Addr]) {
        // Queries carry fully qualified names.
        let mut name = Name::from_ascii(name).expect("a DNS name");
        name.set_fqdn(true);
        let name = LowerName::from(name.to_lowercase());
        self.lock().records.insert(name, addresses.to_vec());
    }

    pub fn set_mode(&self, mode: DnsMode) {
        self.lock().mode = mode;
    }

    /// How many queries for names in the table have arrived. Every query counted
    /// after [`Self::set`] or [`Self::set_mode`] returned was answered by the new table.
    pub fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::Relaxed)
    }

    /// Stops serving and waits until the sockets are closed.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    u16::try_from(nanos % 65_536).unwrap_or(0)
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let Some(query) = request.queries.queries().first() else {
            return send(
                &mut response_handle,
                request,
                builder.error_msg(&request.metadata, ResponseCode::FormErr),
            )
            .await;
        };
        let (mode, found) = {
            let state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            let found = state.records.get(query.name()).cloned();
            // Counted under the lock: a query counted after a change has seen it.
            if found.is_some() {
                self.shared.queries.fetch_add(1, Ordering::Relaxed);
            }
            (state.mode, found)
        };
        match (mode, found) {
            (DnsMode::Silent, _) => ResponseInfo::from(hickory_server::proto::op::Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: hickory_server::proto::op::HeaderCounts::default(),
            }),
            (DnsMode::ServFail, _) => {
                send(
                    &mut response_handle,
                    request,
                    builder.error_msg(&request.metadata, ResponseCode::ServFail),
                )
                .await
            }
            (DnsMode::Answer, None) => {
                send(
                    &mut response_handle,
                    request,
                    builder.error_msg(&request.metadata, ResponseCode::NXDomain),
                )
                .await
            }
            (DnsMode::Answer, Some(addresses)) => {
                let name = Name::from(query.name().clone());
                let records: Vec<Record> = if query.query_type() == RecordType::A {
                    addresses
                        .iter()
                        .map(|ip| Record::from_rdata(name.clone(), 0, RData::A(A(*ip))))
                        .collect()
                } else {
                    Vec::new()
                };
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                let response = builder.build(metadata, records.iter(), None, None, None);
                send(&mut response_handle, request, response).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    request: &Request,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, "test DNS server could not send its answer");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata,
                counts: hickory_server::proto::op::HeaderCounts::default(),
            })
        }
    }
}
