//! End users the edge gateway calls on behalf of.
//!
//! The gateway verifies a client's token and forwards who it is in metadata
//! ([`SUBJECT_HEADER`], [`ROLES_HEADER`]), after stripping any copies the
//! client sent. A service believes that metadata only from callers its
//! authorization policy lists as `end_user_gateways`; the authorization layer
//! then attaches a [`Principal`] to the request. Handlers enforce ownership
//! with it: an end user reaches only what it owns unless it holds [`ADMIN_ROLE`].

use http::HeaderMap;

/// The verified subject (the token's `sub`).
pub const SUBJECT_HEADER: &str = "x-suite-subject";
/// The subject's roles, comma separated.
pub const ROLES_HEADER: &str = "x-suite-roles";
/// The role that may act on every user's records.
pub const ADMIN_ROLE: &str = "admin";

const MAX_SUBJECT_BYTES: usize = 256;

/// An end user as a trusted gateway vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUser {
    pub subject: String,
    pub roles: Vec<String>,
}

impl EndUser {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|role| role == ADMIN_ROLE)
    }
}

/// Who a request acts for, as far as ownership goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A service or operator calling as itself; the authorization policy has
    /// already admitted it to the method. Also every caller of a plaintext
    /// development server, which has no identities at all.
    Service,
    /// An end user, as vouched for by a trusted gateway.
    EndUser(EndUser),
    /// A trusted gateway that named no (valid) end user: trusted with nothing.
    Anonymous,
}

/// Why an end user may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AccessDenied(pub &'static str);

impl Principal {
    /// The principal the authorization layer attached to `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request.extensions().get::<Self>().cloned().unwrap_or(Self::Service)
    }

    /// Reads the gateway's metadata; only for requests from a trusted gateway.
    pub(crate) fn from_gateway_headers(headers: &HeaderMap) -> Self {
        let Some(subject) = headers
            .get(SUBJECT_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|subject| !subject.is_empty() && subject.len() <= MAX_SUBJECT_BYTES)
        else {
            return Self::Anonymous;
        };
        let roles = headers
            .get_all(ROLES_HEADER)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|role| !role.is_empty())
            .map(str::to_owned)
            .collect();
        Self::EndUser(EndUser {
            subject: subject.to_owned(),
            roles,
        })
    }

    /// Services and admins may act on anyone's records; an end user only on
    /// the records of `owner`, which must be its own subject.
    pub fn require_owner(&self, owner: &str) -> Result<(), AccessDenied> {
        match self {
            Self::Service => Ok(()),
            Self::EndUser(user) if user.is_admin() || user.subject == owner => Ok(()),
            Self::EndUser(_) => Err(AccessDenied("end users may act only on their own records")),
            Self::Anonymous => Err(AccessDenied("the gateway named no end user for this call")),
        }
    }

    /// Only services and admins; for calls not scoped to one user (listing
    /// every user, creating accounts).
    pub fn require_admin(&self) -> Result<(), AccessDenied> {
        match self {
            Self::Service => Ok(()),
            Self::EndUser(user) if user.is_admin() => Ok(()),
            Self::EndUser(_) => Err(AccessDenied("this call needs the admin role")),
            Self::Anonymous => Err(AccessDenied("the gateway named no end user for this call")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn reads_subject_and_roles() {
        let principal = Principal::from_gateway_headers(&headers(&[(SUBJECT_HEADER, "u1"), (ROLES_HEADER, "reader, admin")]));
        assert_eq!(
            principal,
            Principal::EndUser(EndUser {
                subject: "u1".into(),
                roles: vec!["reader".into(), "admin".into()],
            })
        );
    }

    #[test]
    fn a_gateway_call_without_subject_is_anonymous() {
        assert_eq!(
            Principal::from_gateway_headers(&headers(&[(ROLES_HEADER, "admin")])),
            Principal::Anonymous
        );
        assert_eq!(
            Principal::from_gateway_headers(&headers(&[(SUBJECT_HEADER, "")])),
            Principal::Anonymous
        );
    }

    #[test]
    fn ownership_rules() {
        let user = |roles: &[&str]| {
            Principal::EndUser(EndUser {
                subject: "u1".into(),
                roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            })
        };
        assert!(user(&[]).require_owner("u1").is_ok());
        assert!(user(&[]).require_owner("u2").is_err());
        assert!(user(&["admin"]).require_owner("u2").is_ok());
        assert!(user(&[]).require_admin().is_err());
        assert!(user(&["admin"]).require_admin().is_ok());
        assert!(Principal::Service.require_owner("u2").is_ok());
        assert!(Principal::Service.require_admin().is_ok());
        assert!(Principal::Anonymous.require_owner("u1").is_err());
        assert!(Principal::Anonymous.require_admin().is_err());
    }
}
