//! Per-method authorization of callers by their certificate identity.
//!
//! Default deny: a method no rule mentions is closed to everyone. Health is the
//! one exception; any authenticated peer of the trust domain may ask it, since
//! clients check a backend's health before sending it traffic.
//!
//! The policy is a TOML file (`AUTHZ_POLICY`):
//!
//! ```toml
//! [[allow]]
//! callers = ["spiffe://suite.local/ns/prod/sa/order-service"]
//! methods = ["suite.user.v1.UserService/GetUser"]
//!
//! [[allow]]
//! callers = ["spiffe://suite.local/ns/prod/sa/edge-gateway"]
//! methods = ["suite.user.v1.UserService/*"]   # every method of a service
//!
//! [[allow]]
//! callers = ["spiffe://suite.local/ns/prod/sa/operator"]
//! methods = ["*"]                              # everything, reflection included
//! ```
//!
//! Every method and service a rule names must exist on this server, so a typo
//! stops the start-up instead of silently denying.
//!
//! The edge gateway calls on behalf of end users and says who they are in
//! metadata (see [`crate::end_user`]). That metadata is believed only from the
//! callers listed as gateways; from anyone else it is ignored:
//!
//! ```toml
//! end_user_gateways = ["spiffe://suite.local/ns/prod/sa/edge-gateway"]
//! ```

use std::collections::{HashMap, HashSet};
use std::path::Path;

use suite_tls::SpiffeId;

/// Service whose methods every authenticated peer may call.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read authorization policy {0}: {1}")]
    Read(String, std::io::Error),
    #[error("authorization policy is not valid TOML of the expected shape: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("authorization policy rule {rule}: {detail}")]
    Rule { rule: usize, detail: String },
    #[error("authorization policy end_user_gateways entry {gateway:?}: {detail}")]
    Gateway { gateway: String, detail: String },
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    end_user_gateways: Vec<String>,
    #[serde(default)]
    allow: Vec<RuleFile>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    callers: Vec<String>,
    methods: Vec<String>,
}

/// Which methods a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MethodSelector {
    Every,
    /// Fully qualified service name, `package.Service`.
    Service(String),
    /// Request path, `/package.Service/Method`.
    Method(String),
}

impl MethodSelector {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_start_matches('/');
        if text == "*" {
            return Ok(Self::Every);
        }
        match text.split_once('/') {
            Some((service, "*")) if !service.is_empty() => Ok(Self::Service(service.to_owned())),
            Some((service, method)) if !service.is_empty() && !method.is_empty() && !method.contains('/') => {
                Ok(Self::Method(format!("/{service}/{method}")))
            }
            _ => Err(format!(
                "method {text:?} must be \"package.Service/Method\", \"package.Service/*\" or \"*\""
            )),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Every => true,
            Self::Service(service) => service_of(path) == Some(service.as_str()),
            Self::Method(method) => method == path,
        }
    }
}

fn service_of(path: &str) -> Option<&str> {
    crate::methods::split_method_path(path).map(|(service, _)| service)
}

#[derive(Debug, Clone)]
struct Rule {
    callers: Vec<SpiffeId>,
    methods: Vec<MethodSelector>,
}

/// A parsed policy, not yet checked against the methods a server serves.
#[derive(Debug, Clone, Default)]
pub struct AuthorizationPolicy {
    rules: Vec<Rule>,
    end_user_gateways: HashSet<SpiffeId>,
}

impl AuthorizationPolicy {
    /// The policy that allows nothing but health.
    pub fn deny_all() -> Self {
        Self::default()
    }

    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Read(path.display().to_string(), error))?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text)?;
        let rules = file
            .allow
            .into_iter()
            .enumerate()
            .map(|(index, rule)| {
                let rule_error = |detail: String| PolicyError::Rule { rule: index + 1, detail };
                if rule.callers.is_empty() || rule.methods.is_empty() {
                    return Err(rule_error("needs at least one caller and one method".into()));
                }
                let callers = rule
                    .callers
                    .iter()
                    .map(|caller| caller.parse::<SpiffeId>().map_err(|error| rule_error(error.to_string())))
                    .collect::<Result<_, _>>()?;
                let methods = rule
                    .methods
                    .iter()
                    .map(|method| MethodSelector::parse(method).map_err(rule_error))
                    .collect::<Result<_, _>>()?;
                Ok(Rule { callers, methods })
            })
            .collect::<Result<_, _>>()?;
        let end_user_gateways = file
            .end_user_gateways
            .iter()
            .map(|gateway| {
                gateway.parse::<SpiffeId>().map_err(|error| PolicyError::Gateway {
                    gateway: gateway.clone(),
                    detail: error.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules, end_user_gateways })
    }

    /// Also believe the end-user metadata `gateway` sends.
    pub fn trust_end_users_from(mut self, gateway: SpiffeId) -> Self {
        self.end_user_gateways.insert(gateway);
        self
    }

    /// A policy allowing `callers` every method matching `methods` (selectors as in the file).
    pub fn allow<'a>(
        mut self,
        callers: impl IntoIterator<Item = SpiffeId>,
        methods: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PolicyError> {
        let rule = self.rules.len() + 1;
        let methods = methods
            .into_iter()
            .map(|method| MethodSelector::parse(method).map_err(|detail| PolicyError::Rule { rule, detail }))
            .collect::<Result<_, _>>()?;
        self.rules.push(Rule {
            callers: callers.into_iter().collect(),
            methods,
        });
        Ok(self)
    }

    /// Resolves the rules against the paths this server serves; a rule naming
    /// a method or service that does not exist here is an error.
    pub fn compile(&self, known_paths: &[String]) -> Result<CompiledPolicy, PolicyError> {
        for (index, rule) in self.rules.iter().enumerate() {
            for selector in &rule.methods {
                if !known_paths.iter().any(|path| selector.matches(path)) {
                    let named = match selector {
                        MethodSelector::Every => "*".to_owned(),
                        MethodSelector::Service(service) => format!("{service}/*"),
                        MethodSelector::Method(method) => method.clone(),
                    };
                    return Err(PolicyError::Rule {
                        rule: index + 1,
                        detail: format!("{named} is not served here (known: {})", known_paths.join(", ")),
                    });
                }
            }
        }
        let allowed = known_paths
            .iter()
            .map(|path| {
                let callers: HashSet<SpiffeId> = self
                    .rules
                    .iter()
                    .filter(|rule| rule.methods.iter().any(|selector| selector.matches(path)))
                    .flat_map(|rule| rule.callers.iter().cloned())
                    .collect();
                (path.clone(), callers)
            })
            .collect();
        Ok(CompiledPolicy {
            allowed,
            end_user_gateways: self.end_user_gateways.clone(),
        })
    }
}

/// The decision table: for each served path, who may call it.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    allowed: HashMap<String, HashSet<SpiffeId>>,
    end_user_gateways: HashSet<SpiffeId>,
}

impl CompiledPolicy {
    /// Whether `caller` may call `path`. Unknown paths are denied to everyone.
    pub fn permits(&self, path: &str, caller: &SpiffeId) -> bool {
        if service_of(path) == Some(HEALTH_SERVICE) {
            return true;
        }
        self.allowed.get(path).is_some_and(|callers| callers.contains(caller))
    }

    /// Whether `caller` may say which end user a request is for.
    pub fn vouches_for_end_users(&self, caller: &SpiffeId) -> bool {
        self.end_user_gateways.contains(caller)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(name: &str) -> SpiffeId {
        SpiffeId::new("suite.local", "test", name).unwrap()
    }

    fn paths() -> Vec<String> {
        [
            "/suite.user.v1.UserService/GetUser",
            "/suite.user.v1.UserService/DeleteUser",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn method_service_and_wildcard_rules() {
        let policy = AuthorizationPolicy::from_toml(
            r#"
            [[allow]]
            callers = ["spiffe://suite.local/ns/test/sa/order"]
            methods = ["suite.user.v1.UserService/GetUser"]
            [[allow]]
            callers = ["spiffe://suite.local/ns/test/sa/gateway"]
            methods = ["/suite.user.v1.UserService/*"]
            [[allow]]
            callers = ["spiffe://suite.local/ns/test/sa/operator"]
            methods = ["*"]
            "#,
        )
        .unwrap()
        .compile(&paths())
        .unwrap();
        let get = "/suite.user.v1.UserService/GetUser";
        let delete = "/suite.user.v1.UserService/DeleteUser";
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert!(policy.permits(get, &id("order")));
        assert!(!policy.permits(delete, &id("order")));
        assert!(!policy.permits(reflection, &id("order")));
        assert!(policy.permits(delete, &id("gateway")));
        assert!(!policy.permits(reflection, &id("gateway")));
        assert!(policy.permits(reflection, &id("operator")));
        assert!(!policy.permits(get, &id("stranger")));
        assert!(policy.permits("/grpc.health.v1.Health/Check", &id("stranger")));
        assert!(!policy.permits("/suite.user.v1.UserService/Unknown", &id("operator")));
    }

    #[test]
    fn empty_policy_denies_all_but_health() {
        let policy = AuthorizationPolicy::deny_all().compile(&paths()).unwrap();
        assert!(!policy.permits("/suite.user.v1.UserService/GetUser", &id("operator")));
        assert!(policy.permits("/grpc.health.v1.Health/Check", &id("operator")));
    }

    #[test]
    fn rejects_unknown_methods_and_bad_identities() {
        let unknown = AuthorizationPolicy::from_toml(
            r#"
            [[allow]]
            callers = ["spiffe://suite.local/ns/test/sa/order"]
            methods = ["suite.user.v1.UserService/GetUsers"]
            "#,
        )
        .unwrap()
        .compile(&paths());
        assert!(matches!(unknown, Err(PolicyError::Rule { rule: 1, .. })), "{unknown:?}");

        let bad_caller = AuthorizationPolicy::from_toml(
            r#"
            [[allow]]
            callers = ["order-service"]
            methods = ["*"]
            "#,
        );
        assert!(matches!(bad_caller, Err(PolicyError::Rule { rule: 1, .. })), "{bad_caller:?}");

        let typo = AuthorizationPolicy::from_toml("[[alow]]\ncallers = []\nmethods = []\n");
        assert!(matches!(typo, Err(PolicyError::Syntax(_))), "{typo:?}");

        for selector in ["", "UserService", "a/b/c", "/GetUser"] {
            assert!(MethodSelector::parse(selector).is_err(), "{selector:?}");
        }
    }
}
