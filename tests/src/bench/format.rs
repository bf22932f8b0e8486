//! Numbers as the Markdown reports print them.

pub fn percent(part: f64, whole: f64) -> f64 {
    100.0 * part / whole
}

/// VmRSS is in KiB; targets are in MB (10^6 bytes).
pub fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1_000_000.0
}

/// A whole number with thousands separators: 23456.7 -> "23,457".
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A target the issue names, what the run measured against it, and whether it was met.
pub struct Target {
    pub name: String,
    pub measured: String,
    pub met: bool,
}

/// The targets as a Markdown table; `note` follows the first column's heading.
pub fn targets_table(out: &mut String, note: &str, targets: &[Target]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "| target{note} | measured | result |");
    let _ = writeln!(out, "|---|---:|---|");
    for target in targets {
        let result = if target.met { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "| {} | {} | {result} |", target.name, target.measured);
    }
}

/// A failed call in one line.
pub fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_and_rounds() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(23_456.7), "23,457");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
