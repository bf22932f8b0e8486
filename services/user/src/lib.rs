//! The user service: accounts over gRPC (`suite.user.v1.UserService`),
//! persisted through sea-orm (PostgreSQL or embedded SQLite), read through a
//! Redis or in-process cache. `main.rs` only parses flags and calls [`app::run`].

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod migration;
pub mod store;
