//! Helpers every service uses in its one error-to-`Status` mapping.
//!
//! Clients get a code they can act on and a message safe to show; internal
//! detail goes to the logs only.

use std::fmt::Write as _;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One invalid field of a request, reported as a `google.rpc.BadRequest` violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message, as in the proto (`display_name`).
    pub field: String,
    /// What is wrong, phrased for the caller.
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Collects every invalid field of a request, so the caller learns all of
/// them at once rather than one per round trip.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps the value when `result` is `Ok`; otherwise records the violation.
    pub fn check<T, D: Into<String>>(&mut self, field: &str, result: Result<T, D>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field, description);
                None
            }
        }
    }

    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// `Err` with every violation when there is at least one.
    pub fn into_result(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

/// INVALID_ARGUMENT with every violation in the status details and a readable
/// summary in the message (grpcurl shows the message, SDKs read the details).
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let mut details = ErrorDetails::new();
    let mut message = String::from("invalid request");
    for (index, violation) in violations.iter().enumerate() {
        details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
        let separator = if index == 0 { ": " } else { "; " };
        let _ = write!(message, "{separator}{}: {}", violation.field, violation.description);
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// FAILED_PRECONDITION about one field of the request (the system is not in
/// the state the field assumes, say a referenced user does not exist), with the
/// field as a `google.rpc.BadRequest` violation so clients can point at it.
pub fn failed_precondition(violation: &FieldViolation) -> Status {
    let details = ErrorDetails::with_bad_request_violation(violation.field.clone(), violation.description.clone());
    let message = format!("{}: {}", violation.field, violation.description);
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

/// INTERNAL with a generic message; the real error is logged, never sent.
pub fn internal(error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %error_chain(error), "internal error");
    Status::internal("internal error")
}

/// UNAVAILABLE for a dependency that cannot serve right now; retryable.
pub fn unavailable(dependency: &str, error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::warn!(dependency, error = %error_chain(error), "dependency unavailable");
    Status::unavailable(format!("{dependency} is unavailable; retry later"))
}

/// The error and all its sources on one line, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(line, ": {cause}");
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_violation_in_details() {
        let status = invalid_argument(&[
            FieldViolation::new("email", "must be a valid address"),
            FieldViolation::new("display_name", "must not be empty"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid request: email: must be a valid address; display_name: must not be empty"
        );
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("bad request details");
        let fields: Vec<_> = bad_request.field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["email", "display_name"]);
    }

    #[test]
    fn internal_hides_the_error_text() {
        let error = std::io::Error::other("password=hunter2 at db-3");
        let status = internal(&error);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
