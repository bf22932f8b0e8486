//! Plays a contract's interactions against a running provider, with a real tonic
//! client. Requests are written and responses read with the consumer's field numbers
//! and types, so the run shows what the consumer's own code would see.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::uri::PathAndQuery;
use suite_grpc::codec::EncodedBytes;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::contract::{Contract, Interaction, Value, status_name};
use crate::snapshot::FieldType;
use crate::wire_values::{Lookup, Scalar, encode_field, read_path};

/// Values a provider state supplies to an interaction, used as `${name}`.
pub type Variables = BTreeMap<String, String>;

/// Bounds each call, so a provider that hangs fails the run instead of stalling it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteractionFailure {
    pub interaction: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayReport {
    pub contract: String,
    pub played: usize,
    pub failures: Vec<InteractionFailure>,
}

impl PlayReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for PlayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return write!(f, "{}: all {} interactions hold", self.contract, self.played);
        }
        writeln!(
            f,
            "{}: {} of {} interactions fail:",
            self.contract,
            self.failures.len(),
            self.played
        )?;
        for failure in &self.failures {
            writeln!(f, "  - {}: {}", failure.interaction, failure.problem)?;
        }
        Ok(())
    }
}

/// Plays every interaction of `contract` in order over `channel`. Before an interaction
/// with `given = "<state>"`, `provider_states` is asked to put the provider in that state
/// (it answers with the variables the state defines, or fails for a state it does not know).
pub async fn play_interactions<States>(contract: &Contract, channel: Channel, mut provider_states: States) -> PlayReport
where
    States: AsyncFnMut(&str) -> anyhow::Result<Variables>,
{
    let mut failures = Vec::new();
    for interaction in &contract.interactions {
        if let Err(problem) = play(contract, interaction, channel.clone(), &mut provider_states).await {
            failures.push(InteractionFailure {
                interaction: interaction.description.clone(),
                problem,
            });
        }
    }
    PlayReport {
        contract: format!(
            "{}'s contract with {} ({})",
            contract.consumer, contract.provider, contract.source_name
        ),
        played: contract.interactions.len(),
        failures,
    }
}

async fn play<States>(contract: &Contract, interaction: &Interaction, channel: Channel, provider_states: &mut States) -> Result<(), String>
where
    States: AsyncFnMut(&str) -> anyhow::Result<Variables>,
{
    let variables = match &interaction.given {
        Some(state) => provider_states(state)
            .await
            .map_err(|error| format!("provider state {state:?} could not be set up: {error:#}"))?,
        None => Variables::new(),
    };
    // Contract::from_toml checked that the method and every field named here are listed.
    let method = contract
        .method(&interaction.method)
        .ok_or_else(|| format!("method {} is not in the contract", interaction.method))?;

    let mut request = Vec::new();
    for (name, value) in &interaction.request {
        let field = method
            .request_fields
            .iter()
            .find(|field| &field.path == name)
            .ok_or_else(|| format!("request field {name} is not in the contract"))?;
        let type_name = scalar_type(&field.field_type)?;
        let scalar = resolve(value, type_name, &variables)?;
        encode_field(&mut request, field.number, type_name, &scalar).map_err(|problem| format!("request field {name}: {problem}"))?;
    }

    let path = format!("/{}/{}", contract.service, interaction.method);
    let (code, response) = match call(channel, &path, request).await {
        Ok(response) => (Code::Ok, Ok(response)),
        Err(status) => (status.code(), Err(status)),
    };
    if code != interaction.status {
        let detail = match &response {
            Ok(_) => String::new(),
            Err(status) => format!(" ({:?})", status.message()),
        };
        return Err(format!(
            "{path} answered {}{detail}, the consumer relies on {}",
            status_name(code),
            status_name(interaction.status)
        ));
    }
    let Ok(response) = response else { return Ok(()) };

    for (path, expected) in &interaction.response {
        let field = method
            .response_fields
            .iter()
            .find(|field| &field.path == path)
            .ok_or_else(|| format!("response field {path} is not in the contract"))?;
        let type_name = scalar_type(&field.field_type)?;
        let expected = resolve(expected, type_name, &variables)?;
        let parents = parent_numbers(path, &method.response_fields)?;
        match read_path(&response, &parents, field.number, type_name).map_err(|problem| format!("response field {path}: {problem}"))? {
            Lookup::Value(actual) if actual == expected => {}
            Lookup::Value(actual) => return Err(format!("response field {path} is {actual}, the consumer relies on {expected}")),
            Lookup::ParentUnset(parent) => {
                return Err(format!("response field {parent} is not set, so {path} cannot be {expected}"));
            }
        }
    }
    Ok(())
}

/// Path and number of every message field on the way to `path` (`user` for `user.id`).
fn parent_numbers<'a>(path: &'a str, fields: &[crate::FieldUse]) -> Result<Vec<(&'a str, i32)>, String> {
    path.match_indices('.')
        .map(|(end, _)| {
            let parent = &path[..end];
            fields
                .iter()
                .find(|field| field.path == parent)
                .map(|field| (parent, field.number))
                .ok_or_else(|| format!("response field {parent} is not in the contract"))
        })
        .collect()
}

fn scalar_type(field_type: &FieldType) -> Result<&str, String> {
    match field_type {
        FieldType::Scalar(name) => Ok(name),
        other => Err(format!("{other} is not a scalar type")),
    }
}

fn resolve(value: &Value, type_name: &str, variables: &Variables) -> Result<Scalar, String> {
    let text_for_type = |text: &str| -> Result<Scalar, String> {
        match type_name {
            "string" => Ok(Scalar::Text(text.to_owned())),
            "bool" => text.parse().map(Scalar::Bool).map_err(|_| format!("{text:?} is not a bool")),
            _ => text.parse().map(Scalar::Integer).map_err(|_| format!("{text:?} is not an integer")),
        }
    };
    match value {
        Value::Text(text) => Ok(Scalar::Text(text.clone())),
        Value::Integer(integer) => Ok(Scalar::Integer(i128::from(*integer))),
        Value::Bool(flag) => Ok(Scalar::Bool(*flag)),
        Value::Variable(name) => {
            let text = variables
                .get(name)
                .ok_or_else(|| format!("the provider state did not supply ${{{name}}}"))?;
            text_for_type(text)
        }
    }
}

/// One unary call with the request already encoded, returning the encoded response.
async fn call(channel: Channel, path: &str, request: Vec<u8>) -> Result<Vec<u8>, Status> {
    let path = PathAndQuery::try_from(path).map_err(|error| Status::internal(format!("method path {path:?}: {error}")))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|error| Status::unavailable(format!("provider not reachable: {error}")))?;
    let mut request = tonic::Request::new(request);
    request.set_timeout(CALL_TIMEOUT);
    Ok(client.unary(request, path, EncodedBytes).await?.into_inner())
}
