//! The order service: orders over gRPC (`suite.order.v1.OrderService`),
//! persisted through sea-orm in its own database (PostgreSQL or embedded
//! SQLite), with idempotent creation, checking users with the user service
//! through the suite's resilient client stack. `main.rs` only parses flags and
//! calls [`app::run`].

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod migration;
pub mod store;
pub mod users;
