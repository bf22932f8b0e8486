//! Tower layers wrapped around every service a [`crate::GrpcServer`] serves.

pub mod authz;
mod body;
pub mod limit;
pub mod metrics;
