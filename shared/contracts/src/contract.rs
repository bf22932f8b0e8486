//! Consumer contracts: what one service relies on from another, in a TOML file the
//! consumer owns (`services/<consumer>/contracts/<provider>.toml`) and the provider
//! verifies in its tests.
//!
//! ```toml
//! consumer = "order-service"
//! provider = "user-service"
//! service = "suite.user.v1.UserService"
//!
//! [[methods]]
//! name = "GetUser"
//! request_fields = [{ path = "id", number = 1, type = "string" }]
//! response_fields = [
//!     { path = "user", number = 1, type = "suite.user.v1.User" },
//!     { path = "user.id", number = 1, type = "string" },
//! ]
//!
//! [[interactions]]
//! description = "GetUser for an existing user answers OK with that user"
//! method = "GetUser"
//! given = "a user exists"          # a provider state; it supplies ${user_id}
//! request = { id = "${user_id}" }
//! status = "OK"
//! response = { "user.id" = "${user_id}" }
//! ```
//!
//! Fields are named by path from the request or response message (`user.id`), with
//! the number and type the consumer was built with; `cardinality` defaults to
//! `singular` (`optional`, `repeated`, `oneof:<name>` otherwise). Every parent of a
//! listed path is listed too, so the contract alone says how to find a field on the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::Code;

use crate::compat::RpcSide;
use crate::snapshot::{Cardinality, FieldType, WireSnapshot};

/// Field types the interaction player can write into a request and read from a response.
pub(crate) const PLAYABLE_TYPES: &[&str] = &["string", "bool", "int32", "int64", "uint32", "uint64"];

/// gRPC status codes by their canonical names, indexed by code number.
const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub(crate) fn status_name(code: Code) -> &'static str {
    usize::try_from(i32::from(code))
        .ok()
        .and_then(|index| STATUS_NAMES.get(index))
        .copied()
        .unwrap_or("UNKNOWN")
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read contract {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("contract {source_name} is not valid TOML of the expected shape: {error}")]
    Syntax { source_name: String, error: toml::de::Error },
    #[error("contract {source_name}: {problem}")]
    Invalid { source_name: String, problem: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    /// Where the contract was read from, for messages.
    pub source_name: String,
    pub consumer: String,
    pub provider: String,
    /// Full name of the provider's service, `suite.user.v1.UserService`.
    pub service: String,
    pub methods: Vec<MethodUse>,
    pub interactions: Vec<Interaction>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodUse {
    pub name: String,
    /// Fields the consumer sets.
    pub request_fields: Vec<FieldUse>,
    /// Fields the consumer reads.
    pub response_fields: Vec<FieldUse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldUse {
    /// Field names from the method's request or response message, joined by dots.
    pub path: String,
    pub number: i32,
    pub field_type: FieldType,
    pub cardinality: Cardinality,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    pub description: String,
    pub method: String,
    /// Provider state to set up first; it supplies the `${name}` variables.
    pub given: Option<String>,
    /// Top-level request fields by name.
    pub request: Vec<(String, Value)>,
    pub status: Code,
    /// Response field paths and the values they must hold (only with status OK).
    pub response: Vec<(String, Value)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Integer(i64),
    Bool(bool),
    /// `"${name}"`: a value the provider state supplied.
    Variable(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractFile {
    consumer: String,
    provider: String,
    service: String,
    methods: Vec<MethodFile>,
    #[serde(default)]
    interactions: Vec<InteractionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodFile {
    name: String,
    #[serde(default)]
    request_fields: Vec<FieldFile>,
    #[serde(default)]
    response_fields: Vec<FieldFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    path: String,
    number: i32,
    #[serde(rename = "type")]
    field_type: String,
    #[serde(default)]
    cardinality: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InteractionFile {
    description: String,
    method: String,
    #[serde(default)]
    given: Option<String>,
    #[serde(default)]
    request: BTreeMap<String, toml::Value>,
    status: String,
    #[serde(default)]
    response: BTreeMap<String, toml::Value>,
}

impl Contract {
    pub fn load(path: &Path) -> Result<Self, ContractError> {
        let text = std::fs::read_to_string(path).map_err(|error| ContractError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates a contract; `source_name` only labels messages.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, ContractError> {
        let file: ContractFile = toml::from_str(text).map_err(|error| ContractError::Syntax {
            source_name: source_name.to_owned(),
            error,
        })?;
        build(file, source_name).map_err(|problem| ContractError::Invalid {
            source_name: source_name.to_owned(),
            problem,
        })
    }

    pub fn method(&self, name: &str) -> Option<&MethodUse> {
        self.methods.iter().find(|method| method.name == name)
    }

    /// Whether the provider's descriptors still hold every method and field this contract
    /// names, with the same number, type and cardinality. Empty when they do.
    pub fn check_structure(&self, provider: &WireSnapshot) -> Vec<ContractViolation> {
        let mut violations = Vec::new();
        let Some(service) = provider.service(&self.service) else {
            violations.push(ContractViolation::ServiceMissing {
                service: self.service.clone(),
            });
            return violations;
        };
        for method_use in &self.methods {
            let method_name = format!("{}/{}", self.service, method_use.name);
            let Some(method) = service.method(&method_use.name) else {
                violations.push(ContractViolation::MethodMissing { method: method_name });
                continue;
            };
            if method.client_streaming || method.server_streaming {
                violations.push(ContractViolation::MethodStreams {
                    method: method_name.clone(),
                });
            }
            let sides = [
                (RpcSide::Request, &method.input_type, &method_use.request_fields),
                (RpcSide::Response, &method.output_type, &method_use.response_fields),
            ];
            for (side, root, fields) in sides {
                for field_use in fields {
                    check_field(provider, &method_name, side, root, field_use, &mut violations);
                }
            }
        }
        violations
    }
}

fn check_field(
    provider: &WireSnapshot,
    method: &str,
    side: RpcSide,
    root: &str,
    field_use: &FieldUse,
    violations: &mut Vec<ContractViolation>,
) {
    let segments: Vec<&str> = field_use.path.split('.').collect();
    let Some((name, parents)) = segments.split_last() else { return };
    let mut message_name = root.to_owned();
    for parent in parents {
        let parent_type = provider
            .message(&message_name)
            .and_then(|message| message.field_named(parent))
            .map(|field| field.field_type.clone());
        match parent_type {
            Some(FieldType::Named(type_name)) => message_name = type_name,
            // The parent's own entry reports it missing or of another type.
            _ => return,
        }
    }
    let Some(message) = provider.message(&message_name) else {
        let unknown = ContractViolation::MessageUnknown {
            method: method.to_owned(),
            message: message_name,
        };
        if !violations.contains(&unknown) {
            violations.push(unknown);
        }
        return;
    };
    let at = |violation: Mismatch| ContractViolation::Field {
        method: method.to_owned(),
        side,
        path: field_use.path.clone(),
        mismatch: violation,
    };
    let Some(field) = message.field_named(name) else {
        violations.push(at(Mismatch::Missing {
            number: field_use.number,
            field_type: field_use.field_type.clone(),
            now_at_number: message.field_numbered(field_use.number).map(|other| other.name.clone()),
        }));
        return;
    };
    if field.number != field_use.number {
        violations.push(at(Mismatch::Number {
            contract: field_use.number,
            provider: field.number,
        }));
    }
    if field.field_type != field_use.field_type {
        violations.push(at(Mismatch::Type {
            contract: field_use.field_type.clone(),
            provider: field.field_type.clone(),
        }));
    }
    if field.cardinality != field_use.cardinality {
        violations.push(at(Mismatch::Cardinality {
            contract: field_use.cardinality.clone(),
            provider: field.cardinality.clone(),
        }));
    }
}

/// A way the provider no longer matches what a consumer relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractViolation {
    ServiceMissing {
        service: String,
    },
    MethodMissing {
        method: String,
    },
    /// The contract describes a unary call; the provider's method streams.
    MethodStreams {
        method: String,
    },
    /// A message the contract's paths go through is not in the provider's descriptors.
    MessageUnknown {
        method: String,
        message: String,
    },
    Field {
        method: String,
        side: RpcSide,
        path: String,
        mismatch: Mismatch,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// No field of that name; `now_at_number` names whatever holds the number now.
    Missing {
        number: i32,
        field_type: FieldType,
        now_at_number: Option<String>,
    },
    Number {
        contract: i32,
        provider: i32,
    },
    Type {
        contract: FieldType,
        provider: FieldType,
    },
    Cardinality {
        contract: Cardinality,
        provider: Cardinality,
    },
}

impl fmt::Display for ContractViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceMissing { service } => write!(f, "service {service} is not in the provider's descriptors"),
            Self::MethodMissing { method } => write!(f, "method {method} is not in the provider's descriptors"),
            Self::MethodStreams { method } => write!(f, "method {method} streams; the contract relies on a unary call"),
            Self::MessageUnknown { method, message } => {
                write!(f, "method {method}: message {message} is not in the provider's descriptors")
            }
            Self::Field {
                method,
                side,
                path,
                mismatch,
            } => {
                let side = match side {
                    RpcSide::Request => "request",
                    RpcSide::Response => "response",
                };
                write!(f, "method {method}, {side} field {path}: ")?;
                match mismatch {
                    Mismatch::Missing {
                        number,
                        field_type,
                        now_at_number,
                    } => {
                        write!(f, "missing (the consumer uses number {number}, {field_type})")?;
                        if let Some(other) = now_at_number {
                            write!(f, "; number {number} is now field {other}")?;
                        }
                        Ok(())
                    }
                    Mismatch::Number { contract, provider } => {
                        write!(f, "the consumer uses number {contract}, the provider has {provider}")
                    }
                    Mismatch::Type { contract, provider } => write!(f, "the consumer uses {contract}, the provider has {provider}"),
                    Mismatch::Cardinality { contract, provider } => {
                        write!(f, "the consumer relies on {contract}, the provider has {provider}")
                    }
                }
            }
        }
    }
}

/// Every consumer's contract with `provider`: `services/*/contracts/<provider>.toml` in the
/// workspace, in path order.
pub fn consumer_contracts_of(provider: &str) -> Result<Vec<Contract>, ContractError> {
    let services = crate::workspace_root().join("services");
    let read_error = |path: &Path, error| ContractError::Read {
        path: path.display().to_string(),
        error,
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(&services).map_err(|error| read_error(&services, error))? {
        let candidate = entry
            .map_err(|error| read_error(&services, error))?
            .path()
            .join("contracts")
            .join(format!("{provider}.toml"));
        if candidate.is_file() {
            paths.push(candidate);
        }
    }
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let contract = Contract::load(path)?;
            if contract.provider != provider {
                return Err(ContractError::Invalid {
                    source_name: path.display().to_string(),
                    problem: format!(
                        "provider is {:?}, but contracts/{provider}.toml is where a contract with {provider} lives",
                        contract.provider
                    ),
                });
            }
            Ok(contract)
        })
        .collect()
}

fn build(file: ContractFile, source_name: &str) -> Result<Contract, String> {
    for (key, value) in [
        ("consumer", &file.consumer),
        ("provider", &file.provider),
        ("service", &file.service),
    ] {
        if value.trim().is_empty() {
            return Err(format!("`{key}` is empty"));
        }
    }
    if file.methods.is_empty() {
        return Err("names no method: list every method the consumer calls under [[methods]]".into());
    }
    let mut methods: Vec<MethodUse> = Vec::new();
    for method in file.methods {
        if methods.iter().any(|seen| seen.name == method.name) {
            return Err(format!("method {} is listed twice", method.name));
        }
        let request_fields = field_uses(&method.name, "request_fields", method.request_fields)?;
        let response_fields = field_uses(&method.name, "response_fields", method.response_fields)?;
        methods.push(MethodUse {
            name: method.name,
            request_fields,
            response_fields,
        });
    }
    let interactions = file
        .interactions
        .into_iter()
        .map(|interaction| {
            let description = interaction.description.clone();
            build_interaction(interaction, &methods).map_err(|problem| format!("interaction {description:?}: {problem}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Contract {
        source_name: source_name.to_owned(),
        consumer: file.consumer,
        provider: file.provider,
        service: file.service,
        methods,
        interactions,
    })
}

fn field_uses(method: &str, list: &str, fields: Vec<FieldFile>) -> Result<Vec<FieldUse>, String> {
    let problem = |path: &str, detail: String| format!("method {method}, {list} {path:?}: {detail}");
    let mut uses: Vec<FieldUse> = Vec::new();
    for field in fields {
        let well_formed = field.path.split('.').all(|segment| {
            segment
                .chars()
                .next()
                .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !well_formed {
            return Err(problem(&field.path, "a path is field names joined by dots".into()));
        }
        if field.number < 1 {
            return Err(problem(&field.path, format!("field number {} is not positive", field.number)));
        }
        if uses.iter().any(|seen| seen.path == field.path) {
            return Err(problem(&field.path, "listed twice".into()));
        }
        uses.push(FieldUse {
            field_type: FieldType::parse(&field.field_type).map_err(|detail| problem(&field.path, detail))?,
            cardinality: Cardinality::parse(field.cardinality.as_deref().unwrap_or("singular"))
                .map_err(|detail| problem(&field.path, detail))?,
            number: field.number,
            path: field.path,
        });
    }
    for field in &uses {
        if let Some((parent, _)) = field.path.rsplit_once('.') {
            let parent_is_message = uses
                .iter()
                .any(|candidate| candidate.path == parent && matches!(candidate.field_type, FieldType::Named(_)));
            if !parent_is_message {
                return Err(problem(
                    &field.path,
                    format!("list its parent {parent:?} too, with its number and message type"),
                ));
            }
        }
    }
    Ok(uses)
}

fn build_interaction(interaction: InteractionFile, methods: &[MethodUse]) -> Result<Interaction, String> {
    let method = methods
        .iter()
        .find(|method| method.name == interaction.method)
        .ok_or_else(|| format!("method {} is not listed under [[methods]]", interaction.method))?;
    let status = STATUS_NAMES
        .iter()
        .position(|name| *name == interaction.status)
        .and_then(|index| i32::try_from(index).ok())
        .map(Code::from)
        .ok_or_else(|| format!("status {:?} is not a gRPC code name such as OK or NOT_FOUND", interaction.status))?;
    if status != Code::Ok && !interaction.response.is_empty() {
        return Err("response values can only be expected with status OK".into());
    }
    let mut variables = BTreeSet::new();
    let request = interaction
        .request
        .into_iter()
        .map(|(path, value)| {
            if path.contains('.') {
                return Err(format!("request field {path:?}: only top-level request fields can be set"));
            }
            let field = playable_field(&method.request_fields, &path, "request")?;
            let value = value_for(field, &path, value, &mut variables)?;
            Ok((path, value))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let response = interaction
        .response
        .into_iter()
        .map(|(path, value)| {
            let field = playable_field(&method.response_fields, &path, "response")?;
            let mut parent = path.as_str();
            while let Some((prefix, _)) = parent.rsplit_once('.') {
                if method
                    .response_fields
                    .iter()
                    .any(|candidate| candidate.path == prefix && candidate.cardinality == Cardinality::Repeated)
                {
                    return Err(format!(
                        "response field {path:?}: cannot be read through the repeated field {prefix:?}"
                    ));
                }
                parent = prefix;
            }
            let value = value_for(field, &path, value, &mut variables)?;
            Ok((path, value))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if interaction.given.is_none() && !variables.is_empty() {
        return Err(format!(
            "uses {} but sets up no provider state (`given`) to supply it",
            variables.iter().map(|name| format!("${{{name}}}")).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Interaction {
        description: interaction.description,
        method: interaction.method,
        given: interaction.given,
        request,
        status,
        response,
    })
}

fn playable_field<'a>(fields: &'a [FieldUse], path: &str, side: &str) -> Result<&'a FieldUse, String> {
    let field = fields
        .iter()
        .find(|field| field.path == path)
        .ok_or_else(|| format!("{side} field {path:?} is not listed in the method's {side}_fields"))?;
    let playable = matches!(&field.field_type, FieldType::Scalar(name) if PLAYABLE_TYPES.contains(&name.as_str()))
        && matches!(
            field.cardinality,
            Cardinality::Singular | Cardinality::Optional | Cardinality::Oneof(_)
        );
    if !playable {
        return Err(format!(
            "{side} field {path:?} is {} {}; interactions can use single {} fields",
            field.cardinality,
            field.field_type,
            PLAYABLE_TYPES.join(", ")
        ));
    }
    Ok(field)
}

fn value_for(field: &FieldUse, path: &str, value: toml::Value, variables: &mut BTreeSet<String>) -> Result<Value, String> {
    let value = match value {
        toml::Value::String(text) => match text.strip_prefix("${").and_then(|rest| rest.strip_suffix('}')) {
            Some(name) if !name.is_empty() && !name.contains(['$', '{', '}']) => {
                variables.insert(name.to_owned());
                return Ok(Value::Variable(name.to_owned()));
            }
            // A half-written placeholder would otherwise be sent as literal text.
            _ if text.contains("${") => return Err(format!("field {path:?}: {text:?} must be exactly \"${{name}}\" or plain text")),
            _ => Value::Text(text),
        },
        toml::Value::Integer(number) => Value::Integer(number),
        toml::Value::Boolean(flag) => Value::Bool(flag),
        other => return Err(format!("field {path:?}: {other} is not a string, integer or boolean")),
    };
    let FieldType::Scalar(type_name) = &field.field_type else {
        return Err(format!("field {path:?} is not a scalar"));
    };
    let fits = match (&value, type_name.as_str()) {
        (Value::Text(_), "string") | (Value::Bool(_), "bool") => true,
        (Value::Integer(_), integer_type) => integer_type != "string" && integer_type != "bool",
        _ => false,
    };
    if !fits {
        return Err(format!("field {path:?} is {type_name}, so it cannot hold {value:?}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const VALID: &str = r#"
consumer = "order-service"
provider = "user-service"
service = "suite.user.v1.UserService"

[[methods]]
name = "GetUser"
request_fields = [{ path = "id", number = 1, type = "string" }]
response_fields = [
    { path = "user", number = 1, type = "suite.user.v1.User" },
    { path = "user.id", number = 1, type = "string" },
]

[[interactions]]
description = "existing user"
method = "GetUser"
given = "a user exists"
request = { id = "${user_id}" }
status = "OK"
response = { "user.id" = "${user_id}" }
"#;

    fn invalid(text: &str) -> String {
        match Contract::from_toml(text, "test.toml") {
            Err(ContractError::Invalid { problem, .. }) => problem,
            other => panic!("expected an invalid contract, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_contract_reads_into_typed_uses_and_interactions() {
        let contract = Contract::from_toml(VALID, "test.toml").unwrap();
        let get_user = contract.method("GetUser").unwrap();
        assert_eq!(get_user.response_fields[1].field_type, FieldType::Scalar("string".into()));
        assert_eq!(get_user.response_fields[1].cardinality, Cardinality::Singular);
        let interaction = &contract.interactions[0];
        assert_eq!(interaction.status, Code::Ok);
        assert_eq!(interaction.request, [("id".to_owned(), Value::Variable("user_id".into()))]);
    }

    #[test]
    fn contracts_that_cannot_be_checked_or_played_are_refused() {
        let cases = [
            (
                VALID.replace("{ path = \"user\", number = 1, type = \"suite.user.v1.User\" },", ""),
                "list its parent",
            ),
            (VALID.replace("given = \"a user exists\"\n", ""), "no provider state"),
            (
                VALID.replace("status = \"OK\"", "status = \"NOT_FOUND\""),
                "only be expected with status OK",
            ),
            (VALID.replace("status = \"OK\"", "status = \"MISSING\""), "not a gRPC code name"),
            (
                VALID.replace("request = { id = \"${user_id}\" }", "request = { name = \"x\" }"),
                "not listed",
            ),
            (
                VALID.replace("request = { id = \"${user_id}\" }", "request = { id = 7 }"),
                "cannot hold",
            ),
            (
                VALID.replace("request = { id = \"${user_id}\" }", "request = { id = \"user-${user_id}\" }"),
                "exactly",
            ),
            (
                VALID.replace("method = \"GetUser\"", "method = \"DeleteUser\""),
                "not listed under [[methods]]",
            ),
            (VALID.replace("type = \"string\" }]", "type = \"str ing\" }]"), "neither a scalar"),
        ];
        for (text, expected) in cases {
            let problem = invalid(&text);
            assert!(problem.contains(expected), "expected {expected:?} in {problem:?}");
        }
    }

    #[test]
    fn unknown_keys_are_syntax_errors() {
        let text = VALID.replace("[[methods]]\n", "[[methods]]\nrequired = true\n");
        assert!(matches!(Contract::from_toml(&text, "test.toml"), Err(ContractError::Syntax { .. })));
    }

    #[test]
    fn status_names_round_trip_through_codes() {
        for (number, name) in STATUS_NAMES.iter().enumerate() {
            assert_eq!(status_name(Code::from(i32::try_from(number).unwrap())), *name);
        }
    }
}
