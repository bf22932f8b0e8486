//! The order service's errors and their single mapping to gRPC statuses.

use suite_db::{DbFailure, sea_orm::DbErr};
use suite_grpc::status;
use suite_grpc::{AccessDenied, FieldViolation};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::domain::{Status as OrderStatus, Transition};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("order {0} not found")]
    NotFound(Uuid),
    /// An end user asked for an order of another user. It is told exactly
    /// what a missing order tells (see the mapping below): any other answer
    /// would let it find out which order ids exist.
    #[error("order {0} belongs to another user")]
    NotOwned(Uuid),
    #[error("user {0} does not exist")]
    UserNotFound(Uuid),
    #[error("idempotency key already used by this user for order {order_id} with a different request")]
    IdempotencyConflict { order_id: Uuid },
    #[error("order {id} is {from:?}; cannot {}", transition.verb())]
    IllegalTransition {
        id: Uuid,
        from: OrderStatus,
        transition: Transition,
    },
    #[error("version mismatch: current {current}, requested {requested}")]
    VersionMismatch { current: i64, requested: i64 },
    #[error("the user service failed: {0}")]
    UserService(Status),
    #[error("stored order {0} is unreadable")]
    Corrupt(Uuid),
    #[error("permission denied: {0}")]
    Denied(#[from] AccessDenied),
    /// An end user without the admin role asked to confirm or ship an order
    /// it may see (its own): that is the back office's word, not the buyer's.
    #[error("end user may not {} order {id}", transition.verb())]
    BackOfficeOnly { id: Uuid, transition: Transition },
    /// An end user's order needs list prices and this replica has no list.
    #[error("no price list is configured")]
    NoPriceList,
    #[error("database error")]
    Database(#[source] DbErr),
}

impl suite_db::DbOutcome for OrderError {
    fn database_error(&self) -> Option<&DbErr> {
        match self {
            Self::Database(error) => Some(error),
            _ => None,
        }
    }
}

impl From<DbErr> for OrderError {
    fn from(error: DbErr) -> Self {
        suite_db::classify_and_record(&error);
        Self::Database(error)
    }
}

impl From<Vec<FieldViolation>> for OrderError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::Invalid(violations)
    }
}

impl From<OrderError> for Status {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::Invalid(violations) => status::invalid_argument(&violations),
            OrderError::NotFound(id) => order_not_found(id),
            OrderError::NotOwned(id) => {
                // The answer hides the refusal; the log keeps it.
                tracing::info!(order_id = %id, "an end user asked for another user's order; answered as not found");
                order_not_found(id)
            }
            OrderError::UserNotFound(id) => {
                status::failed_precondition(&FieldViolation::new("user_id", format!("user {id} does not exist")))
            }
            // Keys are per user, so `order_id` is always the order of the user
            // the request is for, never someone else's.
            OrderError::IdempotencyConflict { order_id } => Status::already_exists(format!(
                "this user already used this idempotency key for order {order_id} with a different request; use a new key for a new order"
            )),
            OrderError::IllegalTransition { id, from, transition } => Status::failed_precondition(format!(
                "order {id} is {}; it cannot {} from there",
                from.as_db(),
                transition.verb()
            )),
            OrderError::VersionMismatch { current, requested } => Status::aborted(format!(
                "the order has changed: current version is {current}, the request carried {requested}; read it again and retry"
            )),
            OrderError::UserService(upstream) => match upstream.code() {
                Code::Unavailable | Code::ResourceExhausted => {
                    tracing::warn!(code = ?upstream.code(), message = upstream.message(), "user service unavailable");
                    Status::unavailable(format!("the user service is unavailable ({}); retry later", upstream.message()))
                }
                Code::DeadlineExceeded | Code::Cancelled => Status::new(upstream.code(), upstream.message()),
                // A refused identity, a broken contract or the user service's own fault: this
                // deployment's problem, never the caller's, and never INTERNAL, which callers
                // take as not worth retrying. Its message stays in the log.
                code => {
                    tracing::error!(
                        ?code,
                        message = upstream.message(),
                        "the user service failed a call it should have answered"
                    );
                    Status::unavailable("the user service failed; retry later")
                }
            },
            OrderError::Denied(denied) => Status::permission_denied(denied.to_string()),
            OrderError::BackOfficeOnly { id, transition } => {
                tracing::info!(order_id = %id, transition = transition.verb(), "an end user asked for a back-office status change; refused");
                Status::permission_denied(format!(
                    "only the back office may {} an order; end users may cancel their own",
                    transition.verb()
                ))
            }
            OrderError::NoPriceList => {
                Status::failed_precondition("the order service has no price list, so it takes no orders from end users")
            }
            OrderError::Corrupt(_) => status::internal(&error),
            OrderError::Database(error) => match suite_db::classify(&error) {
                DbFailure::Unavailable => status::unavailable("the order database", &error),
                DbFailure::UniqueViolation | DbFailure::Other => status::internal(&error),
            },
        }
    }
}

/// The one answer for an order the caller cannot see, missing or not its own:
/// same code, same message, no details.
fn order_not_found(id: Uuid) -> Status {
    Status::not_found(format!("order {id} not found"))
}
