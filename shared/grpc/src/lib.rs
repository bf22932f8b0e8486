//! gRPC plumbing shared by every service of the suite: the server harness,
//! its tower layers, server tuning, and the helpers each service's single
//! error-to-`Status` mapping is built from.

pub mod config;
pub mod layers;
pub mod server;
pub mod status;

pub use config::ServerConfig;
pub use server::{GrpcServer, LIVENESS_SERVICE, Listeners, ServeError, shutdown_signal};
pub use status::{FieldViolation, Violations};
