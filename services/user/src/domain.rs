//! Validated values of the user domain. A request is parsed into these at the
//! edge; everything past the gRPC layer can rely on them being valid.

/// Longest email address accepted (the limit of an SMTP forward path).
pub const EMAIL_MAX_BYTES: usize = 254;
/// Longest display name, in characters, after trimming.
pub const DISPLAY_NAME_MAX_CHARS: usize = 100;

/// An email address: syntax checked, at most 254 bytes, ASCII only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("is required");
        }
        if raw.len() > EMAIL_MAX_BYTES {
            return Err("must be at most 254 bytes");
        }
        if !raw.is_ascii() || raw.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err("must be ASCII without spaces or control characters");
        }
        let (local, domain) = raw.rsplit_once('@').ok_or("must be an address like name@example.com")?;
        if !is_valid_local_part(local) || !is_valid_domain(domain) {
            return Err("must be an address like name@example.com");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is enforced on: addresses differing only in case
    /// belong to the same person.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

fn is_valid_local_part(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-.";
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c))
}

fn is_valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("is required");
        }
        if trimmed.chars().count() > DISPLAY_NAME_MAX_CHARS {
            return Err("must be at most 100 characters");
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub display_name: DisplayName,
}

/// The fields an update changes; `None` leaves a field as it is.
#[derive(Debug, Clone)]
pub struct UserChanges {
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for email in ["a@b.co", "first.last+tag@sub.example.com", "x_y-z@EXAMPLE.org"] {
            assert!(Email::parse(email).is_ok(), "{email}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for email in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a..b@example.com",
            ".a@example.com",
            "a@-x.com",
            "a b@example.com",
            "a@exa mple.com",
            "ä@example.com",
            "a@b@c",
            "a\n@example.com",
        ] {
            assert!(Email::parse(email).is_err(), "{email:?}");
        }
    }

    #[test]
    fn email_length_limit_is_254_bytes() {
        let domain = format!("{}.{}.{}.{}.com", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(40));
        let at_limit = format!("{}@{domain}", "x".repeat(EMAIL_MAX_BYTES - domain.len() - 1));
        assert_eq!(at_limit.len(), EMAIL_MAX_BYTES);
        assert!(Email::parse(&at_limit).is_ok());
        assert_eq!(Email::parse(&format!("x{at_limit}")), Err("must be at most 254 bytes"));
    }

    #[test]
    fn email_key_ignores_case() {
        assert_eq!(Email::parse("Ann@Example.COM").map(|e| e.key()), Ok("ann@example.com".to_owned()));
    }

    #[test]
    fn display_name_is_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Ann Lee \t").map(|n| n.as_str().to_owned()),
            Ok("Ann Lee".to_owned())
        );
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("Ann\u{7}Lee").is_err());
        assert!(DisplayName::parse("Ann\u{0}").is_err());
    }
}
