//! Orders as the service reasons about them: validated line items, money in
//! minor units with overflow-checked totals, the status machine, and the
//! idempotency key with the fingerprint of the request it was first used for.

use sha2::{Digest, Sha256};
use suite_grpc::{FieldViolation, Violations};
use suite_proto::suite::order::v1 as pb;
use uuid::Uuid;

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

/// One validated line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// A validated order to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: Uuid,
    pub currency: Currency,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub idempotency_key: String,
}

impl NewOrder {
    /// Validates a CreateOrder request, reporting every bad field at once.
    pub fn parse(request: &pb::CreateOrderRequest) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Violations::default();
        let user_id = violations.check("user_id", suite_grpc::fields::parse_uuid(&request.user_id));
        let idempotency_key = violations.check("idempotency_key", parse_idempotency_key(&request.idempotency_key));
        if request.items.is_empty() || request.items.len() > MAX_ITEMS {
            violations.add("items", format!("must hold 1 to {MAX_ITEMS} items"));
        }
        let mut currency: Option<Currency> = None;
        let mut lines = Vec::with_capacity(request.items.len());
        for (index, item) in request.items.iter().enumerate().take(MAX_ITEMS) {
            let field = |name: &str| format!("items[{index}].{name}");
            let sku = violations.check(&field("sku"), parse_sku(&item.sku));
            let quantity = violations.check(&field("quantity"), parse_quantity(item.quantity));
            let price = item.unit_price.as_ref();
            let item_currency = violations.check(
                &field("unit_price.currency_code"),
                price.map_or(Err("is required"), |price| Currency::parse(&price.currency_code)),
            );
            let unit_price = violations.check(
                &field("unit_price.amount_minor"),
                price.map_or(Err("is required"), |price| parse_amount(price.amount_minor)),
            );
            if let (Some(first), Some(this)) = (&currency, &item_currency)
                && first != this
            {
                violations.add(
                    &field("unit_price.currency_code"),
                    format!("must be {} like the first item", first.as_str()),
                );
            }
            if currency.is_none() {
                currency = item_currency;
            }
            if let (Some(sku), Some(quantity), Some(unit_price)) = (sku, quantity, unit_price) {
                match unit_price.checked_mul(i64::from(quantity)) {
                    Some(line_total_minor) => lines.push(Line {
                        sku,
                        quantity,
                        unit_price_minor: unit_price,
                        line_total_minor,
                    }),
                    None => violations.add(&field("unit_price.amount_minor"), "quantity x unit price overflows"),
                }
            }
        }
        let total_minor = lines.iter().try_fold(0_i64, |sum, line| sum.checked_add(line.line_total_minor));
        if total_minor.is_none() {
            violations.add("items", "the order total overflows");
        }
        violations.into_result()?;
        match (user_id, idempotency_key, currency, total_minor) {
            (Some(user_id), Some(idempotency_key), Some(currency), Some(total_minor)) => Ok(Self {
                user_id,
                currency,
                lines,
                total_minor,
                idempotency_key,
            }),
            _ => Err(vec![FieldViolation::new("items", "is incomplete")]),
        }
    }

    /// SHA-256 over the parts of the request that define the order, so a
    /// retry is recognised as the same request and a reused key is not.
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

fn parse_sku(raw: &str) -> Result<String, &'static str> {
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

fn parse_amount(raw: i64) -> Result<i64, &'static str> {
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

    fn request(items: Vec<pb::LineItem>) -> pb::CreateOrderRequest {
        pb::CreateOrderRequest {
            user_id: Uuid::now_v7().to_string(),
            items,
            idempotency_key: "key-1".into(),
        }
    }

    #[test]
    fn computes_line_totals_and_the_total() {
        let order =
            NewOrder::parse(&request(vec![item("A-1", 3, "EUR", 250), item("B.2", 1, "EUR", 1_000)])).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(order.lines[0].line_total_minor, 750);
        assert_eq!(order.total_minor, 1_750);
        assert_eq!(order.currency.as_str(), "EUR");
    }

    #[test]
    fn overflow_is_a_violation_not_a_panic() {
        let line_overflow = NewOrder::parse(&request(vec![item("A", 10_000, "EUR", i64::MAX / 2)])).unwrap_err();
        assert_eq!(line_overflow[0].field, "items[0].unit_price.amount_minor");
        let total_overflow = NewOrder::parse(&request(vec![item("A", 1, "EUR", i64::MAX), item("B", 1, "EUR", 1)])).unwrap_err();
        assert_eq!(total_overflow[0].field, "items");
    }

    #[test]
    fn reports_every_bad_field() {
        let mut bad = request(vec![item("", 0, "eur", -1), item("B", 1, "USD", 5)]);
        bad.user_id = "x".into();
        bad.idempotency_key = String::new();
        let fields: Vec<String> = NewOrder::parse(&bad).unwrap_err().into_iter().map(|v| v.field).collect();
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
        let mixed = NewOrder::parse(&request(vec![item("A", 1, "EUR", 5), item("B", 1, "USD", 5)])).unwrap_err();
        assert_eq!(mixed[0].field, "items[1].unit_price.currency_code");
        assert!(NewOrder::parse(&request(vec![])).is_err());
    }

    #[test]
    fn the_fingerprint_tells_requests_apart() {
        let first = NewOrder::parse(&request(vec![item("A", 1, "EUR", 5)])).unwrap_or_else(|v| panic!("{v:?}"));
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
