//! The user service's errors and their single mapping to gRPC statuses.

use suite_db::{DbFailure, sea_orm::DbErr};
use suite_grpc::status;
use suite_grpc::{AccessDenied, FieldViolation};
use tonic::Status;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("user {0} not found")]
    NotFound(Uuid),
    #[error("email already in use")]
    EmailTaken,
    #[error("version mismatch: current {current}, requested {requested}")]
    VersionMismatch { current: i64, requested: i64 },
    #[error("permission denied: {0}")]
    Denied(#[from] AccessDenied),
    #[error("database error")]
    Database(#[source] DbErr),
}

impl suite_db::DbOutcome for UserError {
    fn database_error(&self) -> Option<&DbErr> {
        match self {
            Self::Database(error) => Some(error),
            _ => None,
        }
    }
}

impl From<DbErr> for UserError {
    fn from(error: DbErr) -> Self {
        // The only unique constraint besides the (server-generated) id is the email.
        match suite_db::classify_and_record(&error) {
            DbFailure::UniqueViolation => Self::EmailTaken,
            _ => Self::Database(error),
        }
    }
}

impl From<Vec<FieldViolation>> for UserError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::Invalid(violations)
    }
}

impl From<UserError> for Status {
    fn from(error: UserError) -> Self {
        match error {
            UserError::Invalid(violations) => status::invalid_argument(&violations),
            UserError::NotFound(id) => Status::not_found(format!("user {id} not found")),
            UserError::EmailTaken => Status::already_exists("a user with this email already exists"),
            UserError::VersionMismatch { current, requested } => Status::aborted(format!(
                "the user has changed: current version is {current}, the request carried {requested}; read it again and retry"
            )),
            UserError::Denied(denied) => Status::permission_denied(denied.to_string()),
            UserError::Database(error) => match suite_db::classify(&error) {
                DbFailure::Unavailable => status::unavailable("the user database", &error),
                DbFailure::UniqueViolation | DbFailure::Other => status::internal(&error),
            },
        }
    }
}
