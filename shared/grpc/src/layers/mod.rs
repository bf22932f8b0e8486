//! Tower layers wrapped around every service a [`crate::GrpcServer`] serves.

mod body;
pub mod limit;
pub mod metrics;
