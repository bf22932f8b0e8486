//! API contract checks for the suite's protobuf APIs.
//!
//! Two questions, two tools:
//!
//! - **Does a change break clients already deployed?** [`WireSnapshot`] is the wire-relevant
//!   surface of every `suite.*` proto file (services, methods, messages, fields with numbers,
//!   types and cardinality, enums, reserved numbers), rendered as canonical text. The committed
//!   baseline (`proto/wire-baseline.txt`) is compared with the current descriptors by
//!   [`compare_with_baseline`], which lists every wire-breaking change ([`WireBreak`]) and also
//!   flags a baseline that merely lacks compatible additions.
//! - **Does a provider still give each consumer what it relies on?** A [`Contract`]
//!   (`services/<consumer>/contracts/<provider>.toml`) names the methods a consumer calls, the
//!   request fields it sets and the response fields it reads (name, number, type), and
//!   interactions it relies on. [`Contract::check_structure`] checks the names against the
//!   provider's descriptors; [`play_interactions`] plays the interactions against the running
//!   provider, encoding requests with the consumer's own field numbers.

mod baseline;
mod compat;
mod contract;
mod diff;
mod play;
mod snapshot;
mod snapshot_text;
mod wire_values;

use std::path::PathBuf;

pub use baseline::{BaselineVerdict, compare_with_baseline};
pub use compat::{RpcSide, WireBreak, breaking_changes};
pub use contract::{Contract, ContractError, ContractViolation, FieldUse, Interaction, MethodUse, Mismatch, Value, consumer_contracts_of};
pub use play::{InteractionFailure, PlayReport, Variables, play_interactions};
pub use snapshot::{
    Cardinality, Enum, EnumValue, Field, FieldType, Message, Method, NumberRange, ProtoFile, Reserved, Service, WireSnapshot,
};
pub use snapshot_text::SnapshotParseError;

/// The committed wire baseline, relative to the workspace root.
pub const BASELINE_FILE: &str = "proto/wire-baseline.txt";

/// The workspace this crate was built in: baseline and contracts are files of the repository.
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Only for tidier paths in messages; the joined path works as well.
    root.canonicalize().unwrap_or(root)
}

/// The surface of the API this build was compiled from (`suite_proto::FILE_DESCRIPTOR_SET`),
/// every file included, so contracts can also name imported types.
pub fn current_api() -> Result<WireSnapshot, prost::DecodeError> {
    WireSnapshot::from_encoded(suite_proto::FILE_DESCRIPTOR_SET)
}
