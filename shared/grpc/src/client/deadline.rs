//! Deadlines that shrink hop by hop: an outgoing call gets what is left of the
//! incoming request's deadline, minus a margin for the work after it returns.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The moment work done for one incoming request must be finished by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
        }
    }

    /// The caller's deadline from the request's `grpc-timeout` header, or
    /// `default` from now when the caller sent none (or an unreadable one).
    /// Call it first thing in a handler: time already spent is not counted.
    pub fn of_request(metadata: &MetadataMap, default: Duration) -> Self {
        let timeout = metadata
            .get(GRPC_TIMEOUT_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(default);
        Self::after(timeout)
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The timeout for an outgoing call: what remains minus `margin`, or `None`
    /// when that leaves nothing and the call should not start.
    pub fn for_outgoing(&self, margin: Duration) -> Option<Duration> {
        self.remaining().checked_sub(margin).filter(|left| !left.is_zero())
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    // Checked: the last character of a `&str` may be more than one byte.
    let (digits, unit) = value.split_at_checked(value.len() - 1)?;
    // Digits only: `u64`'s parser also takes a sign ("+5S").
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_grpc_timeout_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "10", "10x", "-1S", "+1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn outgoing_budget_is_the_remainder_minus_the_margin() {
        let mut metadata = MetadataMap::new();
        metadata.insert(GRPC_TIMEOUT_HEADER, "1S".parse().unwrap_or_else(|_| unreachable!()));
        let deadline = Deadline::of_request(&metadata, Duration::from_secs(30));
        let outgoing = deadline.for_outgoing(Duration::from_millis(100)).unwrap_or_default();
        assert!(
            outgoing <= Duration::from_millis(900) && outgoing > Duration::from_millis(800),
            "{outgoing:?}"
        );

        let default = Deadline::of_request(&MetadataMap::new(), Duration::from_secs(2));
        assert!(default.remaining() > Duration::from_millis(1900));

        assert_eq!(
            Deadline::after(Duration::from_millis(5)).for_outgoing(Duration::from_millis(50)),
            None
        );
    }
}

/// `parse_grpc_timeout` is private and `Deadline` shows only the time left, so
/// the exact durations it reads are checked here.
#[cfg(test)]
mod grpc_timeout_properties {
    use proptest::prelude::*;

    use super::*;

    const UNITS: [(char, Duration); 6] = [
        ('H', Duration::from_secs(3600)),
        ('M', Duration::from_secs(60)),
        ('S', Duration::from_secs(1)),
        ('m', Duration::from_millis(1)),
        ('u', Duration::from_micros(1)),
        ('n', Duration::from_nanos(1)),
    ];

    proptest! {
        #[test]
        fn any_text_is_read_only_as_the_spec_says(
            text in prop_oneof![
                "\\PC{0,12}",
                "[+ -]?[0-9]{0,12}[HMSmunhs\u{e9}\u{2603} ]?",
                "[0-9]{1,8}\\PC",
            ]
        ) {
            let digits = text.get(..text.len().saturating_sub(1)).unwrap_or_default();
            let unit = text.chars().last().and_then(|unit| UNITS.iter().find(|(name, _)| *name == unit));
            let spec = match unit {
                Some((_, size)) if (1..=8).contains(&digits.len()) && digits.bytes().all(|byte| byte.is_ascii_digit()) => {
                    digits.parse::<u32>().ok().map(|amount| *size * amount)
                }
                _ => None,
            };
            prop_assert_eq!(parse_grpc_timeout(&text), spec, "{:?}", text);
        }

        #[test]
        fn every_amount_in_every_unit_is_its_duration(amount in 0..=99_999_999_u32, unit in 0..UNITS.len(), width in 1..=8_usize) {
            let (name, size) = UNITS[unit];
            // Leading zeros included, as long as there are at most 8 digits.
            let text = format!("{amount:0width$}{name}");
            let expected = (text.len() <= 9).then(|| size * amount);
            prop_assert_eq!(parse_grpc_timeout(&text), expected, "{:?}", text);
        }
    }
}
