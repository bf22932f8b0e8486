//! gRPC plumbing shared by every service of the suite: the server harness,
//! its transport security (mutual TLS and per-method authorization), its tower
//! layers, server tuning, client channels, and the helpers each service's
//! single error-to-`Status` mapping is built from.

pub mod authz;
pub mod client;
pub mod codec;
pub mod config;
mod connection;
pub mod end_user;
pub mod fields;
pub mod healthcheck;
pub mod layers;
mod methods;
pub mod page_token;
pub mod process;
pub mod security;
pub mod server;
pub mod status;

pub use authz::{AuthorizationPolicy, PolicyError};
pub use config::ServerConfig;
pub use connection::{PeerInfo, peer_identity};
pub use end_user::{AccessDenied, Principal};
pub use healthcheck::{HealthCheckArgs, health_check};
pub use methods::{KnownMethods, MethodNames, method_paths, split_method_path};
pub use page_token::PageTokens;
pub use security::{SecurityArgs, SecurityError, Transport};
pub use server::{GrpcServer, LIVENESS_SERVICE, Listeners, RouteService, ServeError, shutdown_signal};
pub use status::{FieldViolation, Violations};
