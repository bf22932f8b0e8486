//! `suite.user.v1.UserService` over gRPC: parses requests into domain values,
//! calls the store through the read-through cache, converts back to protobuf.

use std::sync::Arc;

use prost::Message;
use suite_cache::{Cache, Cacheable};
use suite_grpc::fields::{parse_page_size, parse_uuid, parse_version, timestamp};
use suite_grpc::{Principal, Violations};
use suite_proto::suite::user::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{DisplayName, Email, NewUser, UserChanges};
use crate::error::UserError;
use crate::store::UserStore;
use crate::store::entity::Model as UserRow;
use suite_grpc::PageTokens;

/// Scope of ListUsers page tokens.
const LIST_SCOPE: &str = "users";

/// What the cache holds: the protobuf `User`, ready to send.
#[derive(Debug, Clone)]
pub struct CachedUser(pub pb::User);

impl Cacheable for CachedUser {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.encode_to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        pb::User::decode(bytes).ok().map(Self)
    }
}

#[derive(Debug, Clone)]
pub struct UserApi {
    store: UserStore,
    cache: Arc<Cache<CachedUser>>,
    page_tokens: PageTokens,
}

impl UserApi {
    pub fn new(store: UserStore, cache: Arc<Cache<CachedUser>>, page_tokens: PageTokens) -> Self {
        Self { store, cache, page_tokens }
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserApi {
    #[tracing::instrument(target = "log_fields", skip_all)]
    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Result<Response<pb::CreateUserResponse>, Status> {
        Principal::of(&request).require_admin().map_err(UserError::from)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&request.email));
        let display_name = violations.check("display_name", DisplayName::parse(&request.display_name));
        violations.into_result().map_err(UserError::from)?;
        let (Some(email), Some(display_name)) = (email, display_name) else {
            unreachable!("violations were checked")
        };
        let user = self.store.create(NewUser { email, display_name }).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    #[tracing::instrument(target = "log_fields", skip_all, fields(user_id = %request.get_ref().id))]
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let id = parse_id(&request.get_ref().id)?;
        require_owner(&request, id)?;
        let user = self
            .cache
            .get_or_load(&id.to_string(), || async {
                Ok::<_, UserError>(self.store.get(id).await?.map(|row| CachedUser(to_proto(&row))))
            })
            .await?
            .ok_or(UserError::NotFound(id))?;
        Ok(Response::new(pb::GetUserResponse { user: Some(user.0) }))
    }

    #[tracing::instrument(target = "log_fields", skip_all, fields(user_id = %request.get_ref().id))]
    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("id", parse_uuid(&request.id));
        let version = violations.check("version", parse_version(request.version));
        let email = request.email.as_deref().map(|raw| violations.check("email", Email::parse(raw)));
        let display_name = request
            .display_name
            .as_deref()
            .map(|raw| violations.check("display_name", DisplayName::parse(raw)));
        if email.is_none() && display_name.is_none() {
            violations.add("email", "set email, display_name or both: an update must change something");
        }
        violations.into_result().map_err(UserError::from)?;
        let (Some(id), Some(version)) = (id, version) else {
            unreachable!("violations were checked")
        };
        principal.require_owner(&id.to_string()).map_err(UserError::from)?;
        let changes = UserChanges {
            email: email.flatten(),
            display_name: display_name.flatten(),
        };
        let result = self.store.update(id, version, changes).await;
        // Invalidate even when the write failed: it may have committed before
        // the error reached us, and a spurious invalidation costs one read.
        self.cache.invalidate(&id.to_string()).await;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(to_proto(&result?)),
        }))
    }

    #[tracing::instrument(target = "log_fields", skip_all, fields(user_id = %request.get_ref().id))]
    async fn delete_user(&self, request: Request<pb::DeleteUserRequest>) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("id", parse_uuid(&request.id));
        let version = request.version.map(|raw| violations.check("version", parse_version(raw)));
        violations.into_result().map_err(UserError::from)?;
        let Some(id) = id else { unreachable!("violations were checked") };
        principal.require_owner(&id.to_string()).map_err(UserError::from)?;
        let result = self.store.delete(id, version.flatten()).await;
        self.cache.invalidate(&id.to_string()).await;
        result?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    #[tracing::instrument(target = "log_fields", skip_all)]
    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        Principal::of(&request).require_admin().map_err(UserError::from)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let page_size = violations.check("page_size", parse_page_size(request.page_size));
        let after = if request.page_token.is_empty() {
            Some(None)
        } else {
            violations
                .check("page_token", self.page_tokens.decode(LIST_SCOPE, &request.page_token))
                .map(Some)
        };
        violations.into_result().map_err(UserError::from)?;
        let (Some(page_size), Some(after)) = (page_size, after) else {
            unreachable!("violations were checked")
        };
        // One row more than the page tells whether another page follows.
        let mut rows = self.store.list(after, page_size + 1).await?;
        let next_page_token = if rows.len() as u64 > page_size {
            rows.truncate(usize::try_from(page_size).unwrap_or(usize::MAX));
            rows.last()
                .map(|last| self.page_tokens.encode(LIST_SCOPE, last.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }
}

/// End users reach only their own record (their token's subject is their user id).
fn require_owner<T>(request: &Request<T>, id: Uuid) -> Result<(), UserError> {
    Ok(Principal::of(request).require_owner(&id.to_string())?)
}

fn parse_id(raw: &str) -> Result<Uuid, UserError> {
    parse_uuid(raw).map_err(|description| UserError::Invalid(vec![suite_grpc::FieldViolation::new("id", description)]))
}

fn to_proto(row: &UserRow) -> pb::User {
    pb::User {
        id: row.id.to_string(),
        email: row.email.clone(),
        display_name: row.display_name.clone(),
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
        version: row.version,
    }
}
