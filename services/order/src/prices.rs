//! The price list (`PRICE_LIST`): what each SKU costs. End users order at
//! these prices only, and the back office gets them for every price it
//! leaves out. The file is read once at start-up and checked whole, so a
//! replica either serves with every price valid or does not start; a new
//! list takes a restart (the Helm chart rolls the pods when it changes).
//!
//! ```toml
//! [prices]
//! BOOK-1 = { currency_code = "EUR", amount_minor = 1250 }
//! "mug.large" = { currency_code = "EUR", amount_minor = 899 }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use crate::domain::{Currency, Price, parse_amount, parse_sku};

/// Unit prices by SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceList {
    prices: HashMap<String, Price>,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceListError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("SKU {sku:?}: {detail}")]
    Entry { sku: String, detail: String },
    /// A list without prices would leave end users unable to order anything,
    /// which is far more likely a mistake than a wish.
    #[error("it prices no SKU; a [prices] table needs at least one entry")]
    Empty,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceListFile {
    prices: BTreeMap<String, PriceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    currency_code: String,
    amount_minor: i64,
}

impl PriceList {
    pub fn from_file(path: &Path) -> Result<Self, PriceListError> {
        Self::from_toml(&std::fs::read_to_string(path).map_err(PriceListError::Read)?)
    }

    /// Parses and checks a list: every SKU and price must be one an order
    /// could carry, so what the list says is never refused later.
    pub fn from_toml(text: &str) -> Result<Self, PriceListError> {
        let file: PriceListFile = toml::from_str(text)?;
        if file.prices.is_empty() {
            return Err(PriceListError::Empty);
        }
        let prices = file
            .prices
            .into_iter()
            .map(|(sku, entry)| {
                let entry_error = |detail: &str| PriceListError::Entry {
                    sku: sku.clone(),
                    detail: detail.to_owned(),
                };
                parse_sku(&sku).map_err(|detail| entry_error(&format!("the SKU {detail}")))?;
                let currency = Currency::parse(&entry.currency_code).map_err(|detail| entry_error(&format!("currency_code {detail}")))?;
                let amount_minor = parse_amount(entry.amount_minor).map_err(|detail| entry_error(&format!("amount_minor {detail}")))?;
                Ok((sku, Price { currency, amount_minor }))
            })
            .collect::<Result<_, PriceListError>>()?;
        Ok(Self { prices })
    }

    pub fn get(&self, sku: &str) -> Option<&Price> {
        self.prices.get(sku)
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_prices_by_sku() {
        let list = PriceList::from_toml(
            r#"
            [prices]
            BOOK-1 = { currency_code = "EUR", amount_minor = 1250 }
            "mug.large" = { currency_code = "USD", amount_minor = 0 }
            "#,
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        let book = list.get("BOOK-1").unwrap();
        assert_eq!((book.currency.as_str(), book.amount_minor), ("EUR", 1250));
        assert_eq!(list.get("mug.large").unwrap().amount_minor, 0);
        assert!(list.get("book-1").is_none(), "SKUs are compared exactly");
    }

    #[test]
    fn refuses_a_list_an_order_could_not_use() {
        let cases = [
            ("", "missing field `prices`"),
            ("[prices]\n", "prices no SKU"),
            ("[prices]\nA = { currency_code = \"eur\", amount_minor = 1 }\n", "currency_code"),
            ("[prices]\nA = { currency_code = \"EUR\", amount_minor = -1 }\n", "amount_minor"),
            (
                "[prices]\n\"bad sku\" = { currency_code = \"EUR\", amount_minor = 1 }\n",
                "the SKU must be",
            ),
            ("[prices]\nA = { currency_code = \"EUR\" }\n", "amount_minor"),
            ("[prices]\nA = { currency_code = \"EUR\", amount_minor = \"1\" }\n", "amount_minor"),
            (
                "[prices]\nA = { currency_code = \"EUR\", amount_minor = 1, note = \"x\" }\n",
                "note",
            ),
            (
                "[prices]\nA = { currency_code = \"EUR\", amount_minor = 1 }\nA = { currency_code = \"EUR\", amount_minor = 2 }\n",
                "duplicate",
            ),
            (
                "currency = \"EUR\"\n[prices]\nA = { currency_code = \"EUR\", amount_minor = 1 }\n",
                "currency",
            ),
            ("[prices\n", "expected"),
        ];
        for (text, expected) in cases {
            let error = PriceList::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_development_list_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/dev/order-service.prices.toml");
        let list = PriceList::from_file(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(!list.is_empty());
    }
}
