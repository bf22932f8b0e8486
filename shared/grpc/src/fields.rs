//! Request fields every API of the suite parses the same way, and the
//! protobuf form of values every API returns.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use uuid::Uuid;

/// Page size when a List request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Larger requested page sizes are served as this many (AIP-158).
pub const MAX_PAGE_SIZE: u64 = 1000;

/// An id as a client sends it: a UUID.
pub fn parse_uuid(raw: &str) -> Result<Uuid, &'static str> {
    if raw.is_empty() {
        return Err("is required");
    }
    Uuid::try_parse(raw).map_err(|_| "must be a UUID")
}

/// A version a client carries back: versions start at 1.
pub fn parse_version(raw: i64) -> Result<i64, &'static str> {
    if raw >= 1 {
        Ok(raw)
    } else {
        Err("must be the version last read (1 or more)")
    }
}

/// A List request's page size: 0 is the default, more than the maximum is the maximum.
pub fn parse_page_size(raw: i32) -> Result<u64, &'static str> {
    match u64::try_from(raw) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
        Err(_) => Err("must not be negative"),
    }
}

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(parse_page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(parse_page_size(7), Ok(7));
        assert_eq!(parse_page_size(5_000), Ok(MAX_PAGE_SIZE));
        assert!(parse_page_size(-1).is_err());
    }

    #[test]
    fn ids_and_versions() {
        assert_eq!(parse_uuid(""), Err("is required"));
        assert_eq!(parse_uuid("nope"), Err("must be a UUID"));
        assert!(parse_uuid("0190d7a4-0000-7000-8000-000000000000").is_ok());
        assert!(parse_version(0).is_err());
        assert_eq!(parse_version(3), Ok(3));
    }
}
