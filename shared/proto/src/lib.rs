//! The suite's protobuf API, generated at build time from `proto/`.
//!
//! Modules follow the protobuf packages (`suite.user.v1` is [`suite::user::v1`]).
//! [`FILE_DESCRIPTOR_SET`] holds every file with its imports and comments, for
//! gRPC server reflection and contract checks.

pub mod codec;

/// Encoded `google.protobuf.FileDescriptorSet` of every suite API file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/suite_descriptor.bin"));

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod suite {
    pub mod user {
        pub mod v1 {
            tonic::include_proto!("suite.user.v1");
        }
    }
    pub mod order {
        pub mod v1 {
            tonic::include_proto!("suite.order.v1");
        }
    }
}

pub use prost_types::Timestamp;
