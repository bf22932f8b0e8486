//! Orders as the service reasons about them: validated line items, where each
//! unit price comes from (the caller or the price list), money in minor units
//! with overflow-checked totals, the status machine and who may move an order
//! along it, and the idempotency key with the fingerprint of the request it
//! was first used for.

use std::fmt;

use sha2::{Digest, Sha256};
use suite_grpc::{FieldViolation, Violations};
use suite_proto::suite::order::v1 as pb;
use uuid::Uuid;

use crate::prices::PriceList;

pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: i32 = 10_000;
const MAX_SKU_LENGTH: usize = 64;
const MAX_IDEMPOTENCY_KEY_LENGTH: usize = 128;

/// ISO 4217 currency code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.len() == 3 && raw.bytes().all(|byte| byte.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be an ISO 4217 code: three upper-case letters")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A unit price: an amount of `currency`'s minor unit, 0 or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub currency: Currency,
    pub amount_minor: i64,
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.currency.as_str(), self.amount_minor)
    }
}

/// One validated line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// A line as the caller asked for it: its unit price, if sent, is only
/// well-formed so far; [`OrderRequest::priced`] decides what the line costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price: Option<Price>,
}

/// A well-formed CreateOrder request whose prices are not settled yet: who
/// may set a price depends on the caller, which parsing does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub user_id: Uuid,
    pub lines: Vec<RequestedLine>,
    pub idempotency_key: String,
}

/// Where the unit prices of an order come from.
#[derive(Debug, Clone, Copy)]
pub enum Pricing<'a> {
    /// An end user's order: every price is the list's. A SKU the list lacks
    /// cannot be ordered, and a sent price is the caller's expectation: one
    /// that is not the list's is refused rather than replaced, so nobody is
    /// charged a price other than the one their client showed them.
    List(&'a PriceList),
    /// The back office's order (an admin, a service): a sent price stands,
    /// because setting prices is its job; a missing one is the list's.
    BackOffice(Option<&'a PriceList>),
}

/// A validated order to create, priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: Uuid,
    pub currency: Currency,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub idempotency_key: String,
}

impl OrderRequest {
    /// Validates the form of a CreateOrder request, reporting every bad field at once.
    pub fn parse(request: &pb::CreateOrderRequest) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Violations::default();
        let user_id = violations.check("user_id", suite_grpc::fields::parse_uuid(&request.user_id));
        let idempotency_key = violations.check("idempotency_key", parse_idempotency_key(&request.idempotency_key));
        if request.items.is_empty() || request.items.len() > MAX_ITEMS {
            violations.add("items", format!("must hold 1 to {MAX_ITEMS} items"));
        }
        let mut lines = Vec::with_capacity(request.items.len());
        for (index, item) in request.items.iter().enumerate().take(MAX_ITEMS) {
            let field = |name: &str| format!("items[{index}].{name}");
            let sku = violations.check(&field("sku"), parse_sku(&item.sku));
            let quantity = violations.check(&field("quantity"), parse_quantity(item.quantity));
            let unit_price = match &item.unit_price {
                None => Some(None),
                Some(price) => {
                    let currency = violations.check(&field("unit_price.currency_code"), Currency::parse(&price.currency_code));
                    let amount_minor = violations.check(&field("unit_price.amount_minor"), parse_amount(price.amount_minor));
                    currency
                        .zip(amount_minor)
                        .map(|(currency, amount_minor)| Some(Price { currency, amount_minor }))
                }
            };
            if let (Some(sku), Some(quantity), Some(unit_price)) = (sku, quantity, unit_price) {
                lines.push(RequestedLine { sku, quantity, unit_price });
            }
        }
        violations.into_result()?;
        match (user_id, idempotency_key) {
            (Some(user_id), Some(idempotency_key)) => Ok(Self {
                user_id,
                lines,
                idempotency_key,
            }),
            _ => Err(vec![FieldViolation::new("items", "is incomplete")]),
        }
    }

    /// Settles every line's unit price by `pricing`, then checks that the
    /// order has one currency and that no total overflows, reporting every
    /// bad field at once.
    pub fn priced(self, pricing: Pricing<'_>) -> Result<NewOrder, Vec<FieldViolation>> {
        let mut violations = Violations::default();
        let mut currency: Option<Currency> = None;
        let mut lines = Vec::with_capacity(self.lines.len());
        for (index, line) in self.lines.into_iter().enumerate() {
            let field = |name: &str| format!("items[{index}].{name}");
            let Some((price, listed)) = settle(&line, pricing, &field, &mut violations) else {
                continue;
            };
            // A listed price was not the caller's choice: point at the SKU
            // that brought it rather than at a field the caller left out.
            let (currency_field, amount_field) = if listed {
                (field("sku"), field("quantity"))
            } else {
                (field("unit_price.currency_code"), field("unit_price.amount_minor"))
            };
            match &currency {
                Some(first) if *first != price.currency => {
                    violations.add(
                        &currency_field,
                        format!(
                            "is priced in {}; every item of an order has the first item's currency, {}",
                            price.currency.as_str(),
                            first.as_str()
                        ),
                    );
                    continue;
                }
                Some(_) => {}
                None => currency = Some(price.currency.clone()),
            }
            match price.amount_minor.checked_mul(i64::from(line.quantity)) {
                Some(line_total_minor) => lines.push(Line {
                    sku: line.sku,
                    quantity: line.quantity,
                    unit_price_minor: price.amount_minor,
                    line_total_minor,
                }),
                None => violations.add(&amount_field, "quantity x unit price overflows"),
            }
        }
        let total_minor = lines.iter().try_fold(0_i64, |sum, line| sum.checked_add(line.line_total_minor));
        if total_minor.is_none() {
            violations.add("items", "the order total overflows");
        }
        violations.into_result()?;
        match (currency, total_minor) {
            (Some(currency), Some(total_minor)) => Ok(NewOrder {
                user_id: self.user_id,
                currency,
                lines,
                total_minor,
                idempotency_key: self.idempotency_key,
            }),
            _ => Err(vec![FieldViolation::new("items", "is incomplete")]),
        }
    }
}

/// The unit price `line` gets under `pricing`, and whether it is the list's;
/// `None` after recording why it gets none.
fn settle(
    line: &RequestedLine,
    pricing: Pricing<'_>,
    field: &dyn Fn(&str) -> String,
    violations: &mut Violations,
) -> Option<(Price, bool)> {
    match pricing {
        Pricing::List(list) => {
            let Some(listed) = list.get(&line.sku) else {
                violations.add(&field("sku"), format!("{} is not on the price list", line.sku));
                return None;
            };
            match &line.unit_price {
                Some(sent) if sent != listed => {
                    violations.add(
                        &field("unit_price"),
                        format!("must be left out or be the list price of {}, {listed}", line.sku),
                    );
                    None
                }
                _ => Some((listed.clone(), true)),
            }
        }
        Pricing::BackOffice(list) => match (&line.unit_price, list.and_then(|list| list.get(&line.sku))) {
            (Some(sent), _) => Some((sent.clone(), false)),
            (None, Some(listed)) => Some((listed.clone(), true)),
            (None, None) => {
                violations.add(&field("unit_price"), format!("is required: {} is not on the price list", line.sku));
                None
            }
        },
    }
}

impl NewOrder {
    /// Validates and prices a CreateOrder request whose every item carries its
    /// unit price, as the back office may send it with no price list.
    pub fn parse(request: &pb::CreateOrderRequest) -> Result<Self, Vec<FieldViolation>> {
        OrderRequest::parse(request)?.priced(Pricing::BackOffice(None))
    }

    /// SHA-256 over the parts of the request that define the order, so a
    /// retry is recognised as the same request and a reused key is not. The
    /// prices are the ones the order gets, not the ones sent: leaving a
    /// price out or sending the list's makes the same order, and the same
    /// request sent after the list changed makes a different one.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.user_id.as_bytes());
        hash.update(self.currency.as_str().as_bytes());
        for line in &self.lines {
            hash.update((line.sku.len() as u64).to_be_bytes());
            hash.update(line.sku.as_bytes());
            hash.update(line.quantity.to_be_bytes());
            hash.update(line.unit_price_minor.to_be_bytes());
        }
        hash.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

pub(crate) fn parse_sku(raw: &str) -> Result<String, &'static str> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if raw.is_empty() || raw.len() > MAX_SKU_LENGTH || !raw.chars().all(valid) {
        return Err("must be 1 to 64 characters: letters, digits, '-', '_' or '.'");
    }
    Ok(raw.to_owned())
}

fn parse_quantity(raw: i32) -> Result<i32, &'static str> {
    if (1..=MAX_QUANTITY).contains(&raw) {
        Ok(raw)
    } else {
        Err("must be 1 to 10000")
    }
}

pub(crate) fn parse_amount(raw: i64) -> Result<i64, &'static str> {
    if raw >= 0 { Ok(raw) } else { Err("must not be negative") }
}

fn parse_idempotency_key(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY_LENGTH || !raw.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ') {
        return Err("must be 1 to 128 printable ASCII characters, unique per intended order");
    }
    Ok(raw.to_owned())
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Confirmed,
    Shipped,
    Cancelled,
}

/// The status changes clients ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Confirm,
    Ship,
    Cancel,
}

impl Status {
    /// The status `transition` leads to from here, or `None` if it is not allowed.
    pub fn after(self, transition: Transition) -> Option<Self> {
        match (self, transition) {
            (Self::Pending, Transition::Confirm) => Some(Self::Confirmed),
            (Self::Confirmed, Transition::Ship) => Some(Self::Shipped),
            (Self::Pending | Self::Confirmed, Transition::Cancel) => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// The statuses `transition` may start from.
    pub fn sources(transition: Transition) -> &'static [Self] {
        match transition {
            Transition::Confirm => &[Self::Pending],
            Transition::Ship => &[Self::Confirmed],
            Transition::Cancel => &[Self::Pending, Self::Confirmed],
        }
    }

    /// The stored form (a short stable word, readable in SQL).
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "confirmed" => Some(Self::Confirmed),
            "shipped" => Some(Self::Shipped),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    pub fn to_proto(self) -> pb::OrderStatus {
        match self {
            Self::Pending => pb::OrderStatus::Pending,
            Self::Confirmed => pb::OrderStatus::Confirmed,
            Self::Shipped => pb::OrderStatus::Shipped,
            Self::Cancelled => pb::OrderStatus::Cancelled,
        }
    }
}

impl Transition {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Ship => "ship",
            Self::Cancel => "cancel",
        }
    }

    /// Whether only the back office (an admin, a service) may make this
    /// change. Confirming accepts an order and shipping says it left the
    /// warehouse: both are the seller's word, so a buyer must not be able
    /// to say them about their own order. Cancelling is the buyer's right
    /// for as long as the status machine allows it.
    pub fn back_office_only(self) -> bool {
        match self {
            Self::Confirm | Self::Ship => true,
            Self::Cancel => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn item(sku: &str, quantity: i32, currency: &str, amount: i64) -> pb::LineItem {
        pb::LineItem {
            sku: sku.into(),
            quantity,
            unit_price: Some(pb::Money {
                currency_code: currency.into(),
                amount_minor: amount,
            }),
            line_total: None,
        }
    }

    fn unpriced(sku: &str, quantity: i32) -> pb::LineItem {
        pb::LineItem {
            unit_price: None,
            ..item(sku, quantity, "EUR", 0)
        }
    }

    fn request(items: Vec<pb::LineItem>) -> pb::CreateOrderRequest {
        pb::CreateOrderRequest {
            user_id: Uuid::now_v7().to_string(),
            items,
            idempotency_key: "key-1".into(),
        }
    }

    fn list() -> PriceList {
        PriceList::from_toml(
            r#"
            [prices]
            A = { currency_code = "EUR", amount_minor = 100 }
            B = { currency_code = "EUR", amount_minor = 250 }
            D = { currency_code = "USD", amount_minor = 5 }
            HUGE = { currency_code = "EUR", amount_minor = 9223372036854775807 }
            "#,
        )
        .unwrap()
    }

    fn priced(request: &pb::CreateOrderRequest, pricing: Pricing<'_>) -> Result<NewOrder, Vec<FieldViolation>> {
        OrderRequest::parse(request)?.priced(pricing)
    }

    /// As the back office without a price list: the prices sent.
    fn as_sent(request: &pb::CreateOrderRequest) -> Result<NewOrder, Vec<FieldViolation>> {
        NewOrder::parse(request)
    }

    fn fields(violations: Vec<FieldViolation>) -> Vec<String> {
        violations.into_iter().map(|violation| violation.field).collect()
    }

    #[test]
    fn computes_line_totals_and_the_total() {
        let order = as_sent(&request(vec![item("A-1", 3, "EUR", 250), item("B.2", 1, "EUR", 1_000)])).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(order.lines[0].line_total_minor, 750);
        assert_eq!(order.total_minor, 1_750);
        assert_eq!(order.currency.as_str(), "EUR");
    }

    #[test]
    fn overflow_is_a_violation_not_a_panic() {
        let line_overflow = as_sent(&request(vec![item("A", 10_000, "EUR", i64::MAX / 2)])).unwrap_err();
        assert_eq!(line_overflow[0].field, "items[0].unit_price.amount_minor");
        let total_overflow = as_sent(&request(vec![item("A", 1, "EUR", i64::MAX), item("B", 1, "EUR", 1)])).unwrap_err();
        assert_eq!(total_overflow[0].field, "items");
    }

    #[test]
    fn reports_every_bad_field() {
        let mut bad = request(vec![item("", 0, "eur", -1), item("B", 1, "USD", 5)]);
        bad.user_id = "x".into();
        bad.idempotency_key = String::new();
        let fields = fields(OrderRequest::parse(&bad).unwrap_err());
        for expected in [
            "user_id",
            "idempotency_key",
            "items[0].sku",
            "items[0].quantity",
            "items[0].unit_price.currency_code",
            "items[0].unit_price.amount_minor",
        ] {
            assert!(fields.iter().any(|field| field == expected), "{expected} missing from {fields:?}");
        }
        let mixed = as_sent(&request(vec![item("A", 1, "EUR", 5), item("B", 1, "USD", 5)])).unwrap_err();
        assert_eq!(mixed[0].field, "items[1].unit_price.currency_code");
        assert!(OrderRequest::parse(&request(vec![])).is_err());
    }

    #[test]
    fn an_end_user_gets_the_list_price_or_a_violation() {
        let list = list();
        let order = priced(&request(vec![unpriced("A", 3), item("B", 1, "EUR", 250)]), Pricing::List(&list)).unwrap();
        assert_eq!(
            order.lines.iter().map(|line| line.unit_price_minor).collect::<Vec<_>>(),
            [100, 250],
            "left out or sent as listed, the price is the list's"
        );
        assert_eq!(order.total_minor, 550);

        let refused = priced(
            &request(vec![
                item("A", 1, "EUR", 1),
                item("B", 1, "USD", 250),
                unpriced("NOPE", 1),
                item("NOPE", 1, "EUR", 1),
            ]),
            Pricing::List(&list),
        )
        .unwrap_err();
        assert_eq!(
            fields(refused.clone()),
            ["items[0].unit_price", "items[1].unit_price", "items[2].sku", "items[3].sku"],
            "{refused:?}"
        );
        assert!(refused[0].description.contains("EUR 100"), "the list price is named: {refused:?}");

        let mixed = priced(&request(vec![unpriced("A", 1), unpriced("D", 1)]), Pricing::List(&list)).unwrap_err();
        assert_eq!(fields(mixed), ["items[1].sku"]);
        let overflow = priced(&request(vec![unpriced("HUGE", 2)]), Pricing::List(&list)).unwrap_err();
        assert_eq!(
            fields(overflow),
            ["items[0].quantity"],
            "the caller chose the quantity, not the price"
        );
    }

    #[test]
    fn the_back_office_sets_prices_and_the_list_fills_the_rest() {
        let list = list();
        let order = priced(
            &request(vec![item("A", 1, "EUR", 7), unpriced("B", 2), item("OFF-LIST", 1, "EUR", 3)]),
            Pricing::BackOffice(Some(&list)),
        )
        .unwrap();
        assert_eq!(
            order.lines.iter().map(|line| line.unit_price_minor).collect::<Vec<_>>(),
            [7, 250, 3]
        );
        let missing = priced(&request(vec![unpriced("OFF-LIST", 1)]), Pricing::BackOffice(Some(&list))).unwrap_err();
        assert_eq!(fields(missing), ["items[0].unit_price"]);
        let no_list = as_sent(&request(vec![unpriced("A", 1)])).unwrap_err();
        assert_eq!(fields(no_list), ["items[0].unit_price"]);
    }

    #[test]
    fn the_fingerprint_tells_requests_apart() {
        let first = as_sent(&request(vec![item("A", 1, "EUR", 5)])).unwrap_or_else(|v| panic!("{v:?}"));
        let mut same = first.clone();
        same.idempotency_key = "other".into();
        assert_eq!(
            first.fingerprint(),
            same.fingerprint(),
            "the key is not part of the request it names"
        );
        let mut more = first.clone();
        more.lines[0].quantity = 2;
        assert_ne!(first.fingerprint(), more.fingerprint());
    }

    #[test]
    fn the_fingerprint_covers_the_prices_the_order_gets() {
        let list = list();
        let mut left_out = request(vec![unpriced("A", 1)]);
        let mut sent = request(vec![item("A", 1, "EUR", 100)]);
        sent.user_id.clone_from(&left_out.user_id);
        let by_list = priced(&left_out, Pricing::List(&list)).unwrap();
        assert_eq!(by_list.fingerprint(), priced(&sent, Pricing::List(&list)).unwrap().fingerprint());
        assert_eq!(by_list.fingerprint(), as_sent(&sent).unwrap().fingerprint());
        left_out.items[0].unit_price = Some(pb::Money {
            currency_code: "EUR".into(),
            amount_minor: 99,
        });
        assert_ne!(by_list.fingerprint(), as_sent(&left_out).unwrap().fingerprint());
    }

    #[test]
    fn only_cancelling_is_the_buyers() {
        assert!(Transition::Confirm.back_office_only());
        assert!(Transition::Ship.back_office_only());
        assert!(!Transition::Cancel.back_office_only());
    }

    #[test]
    fn status_machine() {
        use Status::*;
        use Transition::*;
        let table = [
            (Pending, Confirm, Some(Confirmed)),
            (Pending, Ship, None),
            (Pending, Cancel, Some(Cancelled)),
            (Confirmed, Confirm, None),
            (Confirmed, Ship, Some(Shipped)),
            (Confirmed, Cancel, Some(Cancelled)),
            (Shipped, Confirm, None),
            (Shipped, Ship, None),
            (Shipped, Cancel, None),
            (Cancelled, Confirm, None),
            (Cancelled, Ship, None),
            (Cancelled, Cancel, None),
        ];
        for (from, transition, to) in table {
            assert_eq!(from.after(transition), to, "{from:?} --{transition:?}-->");
            assert_eq!(Status::sources(transition).contains(&from), to.is_some(), "{from:?} {transition:?}");
            assert_eq!(Status::from_db(from.as_db()), Some(from));
        }
    }
}
