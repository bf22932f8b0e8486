//! The suite's edge gateway: the one door external clients use.
//!
//! TLS for clients (rustls, reloading certificate), bearer-token (JWT)
//! authentication against a JWKS, a token bucket per subject, and a gRPC proxy
//! that streams calls to the service that owns them over mutual TLS with the
//! gateway's own identity, forwarding the verified end user in metadata.

pub mod app;
pub mod auth;
pub mod config;
pub mod descriptors;
pub mod dev_token;
pub mod edge;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod upstream;
