//! Tower layers wrapped around every service a [`crate::GrpcServer`] serves.

pub mod authz;
pub mod body;
pub mod limit;
pub mod metrics;
pub mod trace;
