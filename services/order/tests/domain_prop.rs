//! Properties of the order service's validation of what clients send
//! (`domain::NewOrder::parse`, `Currency::parse`): any request, any amounts and
//! quantities, never panics; a request is accepted exactly when every field is
//! valid, and then its line totals and total are the exact products and sum;
//! a total that would not fit in an i64 is a violation, never a wrapped number.
//!
//! Cases per property: `PROPTEST_CASES` (10,000, set in `.cargo/config.toml`).

use order_service::domain::{Currency, MAX_ITEMS, MAX_QUANTITY, NewOrder, Status};
use proptest::prelude::*;
use suite_proto::suite::order::v1 as pb;
use uuid::Uuid;

fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

fn valid_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase())
}

fn valid_key(key: &str) -> bool {
    (1..=128).contains(&key.len()) && key.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ')
}

/// What the rules say of `request`: its currency, line totals and total when it is valid.
fn expected(request: &pb::CreateOrderRequest) -> Option<(String, Vec<i64>, i64)> {
    let user_ok = !request.user_id.is_empty() && Uuid::try_parse(&request.user_id).is_ok();
    if !user_ok || !valid_key(&request.idempotency_key) || request.items.is_empty() || request.items.len() > MAX_ITEMS {
        return None;
    }
    let currency = request.items[0].unit_price.as_ref()?.currency_code.clone();
    let mut totals = Vec::new();
    for item in &request.items {
        let price = item.unit_price.as_ref()?;
        let valid = valid_sku(&item.sku)
            && (1..=MAX_QUANTITY).contains(&item.quantity)
            && valid_currency(&price.currency_code)
            && price.currency_code == currency
            && price.amount_minor >= 0;
        if !valid {
            return None;
        }
        totals.push(i64::try_from(i128::from(price.amount_minor) * i128::from(item.quantity)).ok()?);
    }
    let total = i64::try_from(totals.iter().map(|total| i128::from(*total)).sum::<i128>()).ok()?;
    Some((currency, totals, total))
}

fn sku() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[A-Za-z0-9._-]{1,8}",
        1 => "[A-Za-z0-9._-]{63,65}",
        1 => Just(String::new()),
        1 => "\\PC{1,8}",
    ]
}

fn quantity() -> impl Strategy<Value = i32> {
    prop_oneof![
        6 => 1..=MAX_QUANTITY,
        1 => Just(MAX_QUANTITY + 1),
        1 => any::<i32>(),
        1 => -1..=1_i32,
    ]
}

fn currency() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("EUR".to_owned()),
        1 => Just("USD".to_owned()),
        1 => "[A-Za-z]{2,4}",
        1 => "\\PC{0,4}",
    ]
}

/// Amounts small and huge, and those whose product with a quantity is at the edge of i64.
fn amount_for(quantity: i32) -> BoxedStrategy<i64> {
    let edge = i64::MAX / i64::from(quantity.max(1));
    prop_oneof![
        4 => 0..=100_000_i64,
        2 => edge - 2..=edge.saturating_add(2),
        1 => i64::MAX / 4..=i64::MAX,
        1 => any::<i64>(),
        1 => Just(i64::MIN),
    ]
    .boxed()
}

fn item() -> impl Strategy<Value = pb::LineItem> {
    (sku(), quantity(), currency(), any::<bool>())
        .prop_flat_map(|(sku, quantity, currency, priced)| (Just(sku), Just(quantity), Just(currency), Just(priced), amount_for(quantity)))
        .prop_map(|(sku, quantity, currency_code, priced, amount_minor)| pb::LineItem {
            sku,
            quantity,
            // Usually priced; sometimes the price is left out.
            unit_price: (priced || quantity % 7 != 0).then_some(pb::Money {
                currency_code,
                amount_minor,
            }),
            line_total: None,
        })
}

fn items() -> impl Strategy<Value = Vec<pb::LineItem>> {
    prop_oneof![
        8 => prop::collection::vec(item(), 0..6),
        // Around the item limit: the same line many times.
        1 => (item(), MAX_ITEMS - 1..=MAX_ITEMS + 2).prop_map(|(item, count)| vec![item; count]),
    ]
}

fn request() -> impl Strategy<Value = pb::CreateOrderRequest> {
    let user_id = prop_oneof![
        6 => any::<u128>().prop_map(|id| Uuid::from_u128(id).to_string()),
        1 => any::<u128>().prop_map(|id| Uuid::from_u128(id).simple().to_string()),
        1 => "[0-9a-fA-F{}-]{0,40}",
        1 => "\\PC{0,10}",
    ];
    let key = prop_oneof![
        6 => "[ -~]{1,20}",
        1 => "[ -~]{127,129}",
        1 => "\\PC{0,8}",
    ];
    (user_id, items(), key).prop_map(|(user_id, items, idempotency_key)| pb::CreateOrderRequest {
        user_id,
        items,
        idempotency_key,
    })
}

proptest! {
    #[test]
    fn a_request_is_accepted_exactly_when_valid_with_exact_totals(request in request()) {
        match (NewOrder::parse(&request), expected(&request)) {
            (Ok(order), Some((currency, totals, total))) => {
                prop_assert_eq!(order.currency.as_str(), currency.as_str());
                prop_assert_eq!(order.total_minor, total);
                prop_assert!(order.total_minor >= 0);
                prop_assert_eq!(order.lines.len(), request.items.len());
                for ((line, item), line_total) in order.lines.iter().zip(&request.items).zip(totals) {
                    prop_assert_eq!(&line.sku, &item.sku);
                    prop_assert_eq!(line.quantity, item.quantity);
                    prop_assert_eq!(Some(line.unit_price_minor), item.unit_price.as_ref().map(|price| price.amount_minor));
                    prop_assert_eq!(line.line_total_minor, line_total);
                }
                prop_assert_eq!(order.user_id.to_string().parse::<Uuid>().ok(), Uuid::try_parse(&request.user_id).ok());
                prop_assert_eq!(&order.idempotency_key, &request.idempotency_key);
            }
            (Err(violations), None) => {
                prop_assert!(!violations.is_empty());
                for violation in &violations {
                    prop_assert!(!violation.field.is_empty() && !violation.description.is_empty(), "{:?}", violation);
                }
            }
            (outcome, rules) => prop_assert!(false, "{:?}: parsed {:?}, the rules say {:?}", request, outcome, rules),
        }
    }

    #[test]
    fn totals_that_overflow_are_violations_not_wrapped(
        lines in prop::collection::vec((1..=MAX_QUANTITY, prop_oneof![3 => Just(3_i64), 1 => 0..=2_i64], -2..=2_i64), 1..5),
    ) {
        // Each line's total near i64::MAX / count: some sums fit, some overflow by little.
        let count = lines.len() as i64;
        let items: Vec<pb::LineItem> = lines
            .iter()
            .enumerate()
            .map(|(index, (quantity, share, nudge))| {
                let target = (i64::MAX / count) / 3 * share;
                pb::LineItem {
                    sku: format!("SKU-{index}"),
                    quantity: *quantity,
                    unit_price: Some(pb::Money {
                        currency_code: "EUR".into(),
                        amount_minor: (target / i64::from(*quantity)).saturating_add(*nudge).max(0),
                    }),
                    line_total: None,
                }
            })
            .collect();
        let request = pb::CreateOrderRequest {
            user_id: Uuid::from_u128(7).to_string(),
            items,
            idempotency_key: "key".into(),
        };
        let exact: i128 = request
            .items
            .iter()
            .map(|item| i128::from(item.quantity) * i128::from(item.unit_price.as_ref().map_or(0, |price| price.amount_minor)))
            .sum();
        match NewOrder::parse(&request) {
            Ok(order) => prop_assert_eq!(i128::from(order.total_minor), exact),
            Err(violations) => {
                prop_assert!(exact > i128::from(i64::MAX), "refused a total of {}: {:?}", exact, violations);
                prop_assert!(violations.iter().any(|violation| violation.description.contains("overflows")), "{:?}", violations);
            }
        }
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters(code in prop_oneof!["[A-Z]{3}", "[A-Za-z]{2,4}", "\\PC{0,5}"]) {
        match Currency::parse(&code) {
            Ok(currency) => {
                prop_assert!(valid_currency(&code), "{:?} accepted", code);
                prop_assert_eq!(currency.as_str(), code.as_str());
            }
            Err(_) => prop_assert!(!valid_currency(&code), "{:?} refused", code),
        }
    }

    #[test]
    fn stored_statuses_read_back_only_as_written(text in prop_oneof!["[a-z]{0,10}", "\\PC{0,10}"]) {
        if let Some(status) = Status::from_db(&text) {
            prop_assert_eq!(status.as_db(), text.as_str());
        }
    }
}
