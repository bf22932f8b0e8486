//! The order service: orders over gRPC (`suite.order.v1.OrderService`),
//! persisted through sea-orm in its own database (PostgreSQL or embedded
//! SQLite), with idempotent creation, checking users with the user service
//! through the suite's resilient client stack; end users order at the prices
//! of the price list and only the back office confirms and ships. `main.rs` only parses flags and
//! calls [`app::run`].

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod migration;
pub mod prices;
pub mod store;
pub mod users;
