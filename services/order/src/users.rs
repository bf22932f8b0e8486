//! The order service's view of the user service: does a user exist? Every
//! call goes through the shared client stack (deadline, retries, breaker, bulkhead).

use suite_grpc::client::{Deadline, Dependency, Idempotency};
use suite_proto::suite::user::v1::GetUserRequest;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use tonic::Code;
use uuid::Uuid;

use crate::error::OrderError;

#[derive(Debug, Clone)]
pub struct UserDirectory {
    dependency: Dependency,
}

impl UserDirectory {
    pub fn new(dependency: Dependency) -> Self {
        Self { dependency }
    }

    /// Ok if the user exists; `UserNotFound` if the user service says it does not.
    pub async fn ensure_exists(&self, deadline: Deadline, user_id: Uuid) -> Result<(), OrderError> {
        let id = user_id.to_string();
        let result = self
            .dependency
            .call(deadline, Idempotency::Idempotent, |attempt| {
                let request = attempt.request(GetUserRequest { id: id.clone() });
                async move { UserServiceClient::new(attempt.channel).get_user(request).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Err(OrderError::UserNotFound(user_id)),
            Err(status) => Err(OrderError::UserService(status)),
        }
    }
}
