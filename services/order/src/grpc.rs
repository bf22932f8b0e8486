//! `suite.order.v1.OrderService` over gRPC: parses requests into domain
//! values, decides what the caller may do (owner or back office) and where
//! its prices come from, checks users through the user service, calls the
//! store, converts back.

use std::sync::Arc;
use std::time::Duration;

use suite_grpc::client::Deadline;
use suite_grpc::fields::{parse_page_size, parse_uuid, parse_version, timestamp};
use suite_grpc::{PageTokens, Principal, Violations};
use suite_proto::suite::order::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{OrderRequest, Pricing, Transition};
use crate::error::OrderError;
use crate::prices::PriceList;
use crate::store::entity::order;
use crate::store::{Created, OrderRecord, OrderStore};
use crate::users::UserDirectory;

#[derive(Debug, Clone)]
pub struct OrderApi {
    store: OrderStore,
    users: UserDirectory,
    page_tokens: PageTokens,
    /// Deadline of the work for a request that came without one.
    default_deadline: Duration,
    /// `PRICE_LIST`; without it only the back office creates orders.
    prices: Option<Arc<PriceList>>,
}

impl OrderApi {
    pub fn new(
        store: OrderStore,
        users: UserDirectory,
        page_tokens: PageTokens,
        default_deadline: Duration,
        prices: Option<PriceList>,
    ) -> Self {
        Self {
            store,
            users,
            page_tokens,
            default_deadline,
            prices: prices.map(Arc::new),
        }
    }

    /// Where `principal`'s unit prices come from: the back office may set
    /// them, an end user only ever pays the list's, so an end user's order
    /// needs a list.
    fn pricing(&self, principal: &Principal) -> Result<Pricing<'_>, OrderError> {
        if is_back_office(principal) {
            return Ok(Pricing::BackOffice(self.prices.as_deref()));
        }
        self.prices.as_deref().map(Pricing::List).ok_or(OrderError::NoPriceList)
    }

    async fn transition(
        &self,
        principal: &Principal,
        id: &str,
        version: Option<i64>,
        transition: Transition,
    ) -> Result<pb::Order, OrderError> {
        let mut violations = Violations::default();
        let id = violations.check("id", parse_uuid(id));
        let version = version.map(|raw| violations.check("version", parse_version(raw)));
        violations.into_result()?;
        let Some(id) = id else { unreachable!("violations were checked") };
        if *principal != Principal::Service {
            // End users change only their own orders; services skip this read.
            // It comes before the back-office check, so that another user's
            // order still answers exactly like a missing one.
            self.visible_order(principal, id).await?;
        }
        if transition.back_office_only() && !is_back_office(principal) {
            return Err(OrderError::BackOfficeOnly { id, transition });
        }
        let record = self.store.transition(id, transition, version.flatten()).await?;
        to_proto(&record)
    }

    /// Order `id` without its items, if `principal` may see it. Services and
    /// admins see every order, an end user only its own. Another user's order
    /// is `NotOwned`, which answers exactly like a missing one: a different
    /// answer would let anyone probe which ids exist. For the same reason a
    /// gateway call that named no end user is refused before the read, and
    /// items are read only once the caller may see them, so a refusal costs
    /// about the work of a miss.
    async fn visible_order(&self, principal: &Principal, id: Uuid) -> Result<order::Model, OrderError> {
        if *principal == Principal::Anonymous {
            // The shared rule refuses an anonymous principal whoever the owner
            // is; asking it here, before the read, keeps its reason.
            principal.require_owner(&id.to_string())?;
        }
        let order = self.store.find(id).await?.ok_or(OrderError::NotFound(id))?;
        principal
            .require_owner(&order.user_id.to_string())
            .map_err(|_| OrderError::NotOwned(id))?;
        Ok(order)
    }
}

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderApi {
    #[tracing::instrument(target = "log_fields", skip_all)]
    async fn create_order(&self, request: Request<pb::CreateOrderRequest>) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let deadline = Deadline::of_request(request.metadata(), self.default_deadline);
        let principal = Principal::of(&request);
        let requested = OrderRequest::parse(request.get_ref()).map_err(OrderError::from)?;
        principal.require_owner(&requested.user_id.to_string()).map_err(OrderError::from)?;
        // Prices are settled before the key is looked up: the fingerprint
        // covers the prices the order gets, whoever chose them.
        let new = requested.priced(self.pricing(&principal)?).map_err(OrderError::from)?;
        let fingerprint = new.fingerprint();
        // A retry of a request that already succeeded needs no user check:
        // it answers even while the user service is down.
        // Keys are looked up within the user's own orders (checked above to
        // be the caller's), so another user's key is simply a new order.
        if let Some(existing) = self.store.find_by_key(new.user_id, &new.idempotency_key, &fingerprint).await? {
            return Ok(Response::new(pb::CreateOrderResponse {
                order: Some(to_proto(&existing)?),
            }));
        }
        self.users.ensure_exists(deadline, new.user_id).await?;
        let record = match self.store.create(&new, &fingerprint).await? {
            Created::New(record) => {
                tracing::info!(order_id = %record.order.id, user_id = %new.user_id, total_minor = new.total_minor, "order created");
                record
            }
            Created::Replayed(record) => record,
        };
        Ok(Response::new(pb::CreateOrderResponse {
            order: Some(to_proto(&record)?),
        }))
    }

    #[tracing::instrument(target = "log_fields", skip_all, fields(order_id = %request.get_ref().id))]
    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Result<Response<pb::GetOrderResponse>, Status> {
        let id = parse_uuid(&request.get_ref().id).map_err(|description| invalid("id", description))?;
        let order = self.visible_order(&Principal::of(&request), id).await?;
        let record = self.store.with_items(order).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(to_proto(&record)?),
        }))
    }

    #[tracing::instrument(target = "log_fields", skip_all)]
    async fn list_orders(&self, request: Request<pb::ListOrdersRequest>) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let user_id = violations.check("user_id", parse_uuid(&request.user_id));
        let page_size = violations.check("page_size", parse_page_size(request.page_size));
        // Tokens are bound to the user they list, so one user's token cannot page through another's orders.
        let scope = format!("orders:{}", request.user_id);
        let after = if request.page_token.is_empty() {
            Some(None)
        } else {
            violations
                .check("page_token", self.page_tokens.decode(&scope, &request.page_token))
                .map(Some)
        };
        violations.into_result().map_err(OrderError::from)?;
        let (Some(user_id), Some(page_size), Some(after)) = (user_id, page_size, after) else {
            unreachable!("violations were checked")
        };
        // PERMISSION_DENIED is safe here, unlike for one order: the answer
        // depends only on who asks for which user, never on what is stored.
        principal.require_owner(&user_id.to_string()).map_err(OrderError::from)?;
        // One row more than the page tells whether another page follows.
        let mut records = self.store.list(user_id, after, page_size + 1).await?;
        let next_page_token = if records.len() as u64 > page_size {
            records.truncate(usize::try_from(page_size).unwrap_or(usize::MAX));
            records
                .last()
                .map(|last| self.page_tokens.encode(&scope, last.order.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListOrdersResponse {
            orders: records.iter().map(to_proto).collect::<Result<_, _>>()?,
            next_page_token,
        }))
    }

    #[tracing::instrument(target = "log_fields", skip_all, fields(order_id = %request.get_ref().id))]
    async fn confirm_order(&self, request: Request<pb::ConfirmOrderRequest>) -> Result<Response<pb::ConfirmOrderResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        let order = self
            .transition(&principal, &request.id, request.version, Transition::Confirm)
            .await?;
        Ok(Response::new(pb::ConfirmOrderResponse { order: Some(order) }))
    }

    #[tracing::instrument(target = "log_fields", skip_all, fields(order_id = %request.get_ref().id))]
    async fn ship_order(&self, request: Request<pb::ShipOrderRequest>) -> Result<Response<pb::ShipOrderResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        let order = self.transition(&principal, &request.id, request.version, Transition::Ship).await?;
        Ok(Response::new(pb::ShipOrderResponse { order: Some(order) }))
    }

    #[tracing::instrument(target = "log_fields", skip_all, fields(order_id = %request.get_ref().id))]
    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        let order = self
            .transition(&principal, &request.id, request.version, Transition::Cancel)
            .await?;
        Ok(Response::new(pb::CancelOrderResponse { order: Some(order) }))
    }
}

/// The back office: a service (the authorization policy admitted it to the
/// method) or an end user with the admin role. It may confirm and ship
/// orders and set unit prices; other end users may do neither.
fn is_back_office(principal: &Principal) -> bool {
    principal.require_admin().is_ok()
}

fn invalid(field: &str, description: &str) -> OrderError {
    OrderError::Invalid(vec![suite_grpc::FieldViolation::new(field, description)])
}

fn money(currency: &str, amount_minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        currency_code: currency.to_owned(),
        amount_minor,
    })
}

fn to_proto(record: &OrderRecord) -> Result<pb::Order, OrderError> {
    let order = &record.order;
    Ok(pb::Order {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        items: record
            .items
            .iter()
            .map(|item| pb::LineItem {
                sku: item.sku.clone(),
                quantity: item.quantity,
                unit_price: money(&order.currency, item.unit_price_minor),
                line_total: money(&order.currency, item.line_total_minor),
            })
            .collect(),
        total: money(&order.currency, order.total_minor),
        status: record.status()?.to_proto().into(),
        create_time: Some(timestamp(order.create_time)),
        update_time: Some(timestamp(order.update_time)),
        version: order.version,
    })
}
