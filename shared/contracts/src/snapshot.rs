//! The wire-relevant surface of protobuf files: what a peer built from an older
//! version of the API depends on. Comments, options and source order are left
//! out, so reformatting or reordering a proto file changes nothing here.

use std::collections::HashMap;
use std::fmt;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

/// Every scalar type name as written in a proto file.
pub(crate) const SCALAR_TYPES: &[&str] = &[
    "double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool", "string", "bytes", "uint32", "sfixed32", "sfixed64",
    "sint32", "sint64",
];

/// Files, and in them every block, in canonical order: sorted by name, fields and
/// enum values by number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WireSnapshot {
    pub files: Vec<ProtoFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoFile {
    /// Path as imported, `suite/user/v1/user.proto`.
    pub path: String,
    pub package: String,
    pub services: Vec<Service>,
    /// Top-level and nested messages, by full name; map entries are folded into their fields.
    pub messages: Vec<Message>,
    /// Top-level and nested enums, by full name.
    pub enums: Vec<Enum>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `suite.user.v1.UserService`.
    pub full_name: String,
    pub methods: Vec<Method>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    pub name: String,
    /// Full name of the request message, without the leading dot.
    pub input_type: String,
    pub output_type: String,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub full_name: String,
    pub fields: Vec<Field>,
    pub reserved: Reserved,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub number: i32,
    pub name: String,
    pub cardinality: Cardinality,
    pub field_type: FieldType,
}

/// How many values a field holds and whether its presence is tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cardinality {
    /// proto3 without `optional`: no presence, the default value is not sent.
    Singular,
    /// Explicit presence: proto3 `optional`, or a proto2 optional field.
    Optional,
    Repeated,
    /// proto2 `required`.
    Required,
    /// Member of the named (real, not synthetic) oneof.
    Oneof(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A scalar keyword: `string`, `int64`, `bytes`, ...
    Scalar(String),
    /// A message or enum, by full name without the leading dot.
    Named(String),
    /// A proto2 group (its own wire type), by full name of its message.
    Group(String),
    /// `map<key, value>`; the value is a scalar or a named type.
    Map { key: String, value: Box<FieldType> },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reserved {
    pub ranges: Vec<NumberRange>,
    pub names: Vec<String>,
}

/// Inclusive at both ends, for messages and enums alike (descriptors store a
/// message's end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NumberRange {
    pub start: i32,
    pub end: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enum {
    pub full_name: String,
    pub values: Vec<EnumValue>,
    pub reserved: Reserved,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumValue {
    pub number: i32,
    pub name: String,
}

impl WireSnapshot {
    /// Every file of an encoded `google.protobuf.FileDescriptorSet`.
    pub fn from_encoded(encoded: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(Self::from_descriptor_set(&FileDescriptorSet::decode(encoded)?))
    }

    /// Every file of the set, imports included.
    pub fn from_descriptor_set(set: &FileDescriptorSet) -> Self {
        let mut files: Vec<ProtoFile> = set.file.iter().map(ProtoFile::from_descriptor).collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Self { files }
    }

    /// Only the suite's own API files (package `suite` or `suite.*`): what the baseline records.
    /// Imports such as `google/protobuf/timestamp.proto` are referenced by name only.
    pub fn suite_api(mut self) -> Self {
        self.files
            .retain(|file| file.package == "suite" || file.package.starts_with("suite."));
        self
    }

    pub fn service(&self, full_name: &str) -> Option<&Service> {
        self.files
            .iter()
            .flat_map(|file| &file.services)
            .find(|service| service.full_name == full_name)
    }

    pub fn message(&self, full_name: &str) -> Option<&Message> {
        self.files
            .iter()
            .flat_map(|file| &file.messages)
            .find(|message| message.full_name == full_name)
    }

    pub fn enumeration(&self, full_name: &str) -> Option<&Enum> {
        self.files
            .iter()
            .flat_map(|file| &file.enums)
            .find(|enumeration| enumeration.full_name == full_name)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.files.iter().flat_map(|file| &file.services)
    }

    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.files.iter().flat_map(|file| &file.messages)
    }

    pub fn enums(&self) -> impl Iterator<Item = &Enum> {
        self.files.iter().flat_map(|file| &file.enums)
    }
}

impl Service {
    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|method| method.name == name)
    }
}

impl Message {
    pub fn field_numbered(&self, number: i32) -> Option<&Field> {
        self.fields.iter().find(|field| field.number == number)
    }

    pub fn field_named(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }
}

impl Method {
    /// `stream suite.x.Request` or `suite.x.Request`: what a peer must send.
    pub fn request_signature(&self) -> String {
        signature(self.client_streaming, &self.input_type)
    }

    pub fn response_signature(&self) -> String {
        signature(self.server_streaming, &self.output_type)
    }
}

fn signature(streaming: bool, type_name: &str) -> String {
    if streaming {
        format!("stream {type_name}")
    } else {
        type_name.to_owned()
    }
}

impl FieldType {
    /// Whether this type carries a value of the message or enum `full_name`.
    pub fn refers_to(&self, full_name: &str) -> bool {
        match self {
            Self::Scalar(_) => false,
            Self::Named(name) | Self::Group(name) => name == full_name,
            Self::Map { value, .. } => value.refers_to(full_name),
        }
    }

    /// Reads the text form ([`fmt::Display`]): `string`, `suite.user.v1.User`,
    /// `group:pkg.Name`, `map<string,suite.x.Y>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(inner) = text.strip_prefix("map<").and_then(|rest| rest.strip_suffix('>')) {
            let (key, value) = inner
                .split_once(',')
                .ok_or_else(|| format!("map type {text:?} must read map<key,value>"))?;
            if !SCALAR_TYPES.contains(&key) {
                return Err(format!("map key {key:?} of {text:?} is not a scalar type"));
            }
            let value = Self::parse(value)?;
            if matches!(value, Self::Map { .. } | Self::Group(_)) {
                return Err(format!("map value of {text:?} must be a scalar, message or enum"));
            }
            return Ok(Self::Map {
                key: key.to_owned(),
                value: Box::new(value),
            });
        }
        if SCALAR_TYPES.contains(&text) {
            return Ok(Self::Scalar(text.to_owned()));
        }
        let (is_group, name) = match text.strip_prefix("group:") {
            Some(name) => (true, name),
            None => (false, text),
        };
        let well_formed = !name.is_empty()
            && name.split('.').all(|part| {
                part.chars().next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !well_formed {
            return Err(format!(
                "type {text:?} is neither a scalar ({}) nor a full type name such as suite.user.v1.User",
                SCALAR_TYPES.join(", ")
            ));
        }
        Ok(if is_group {
            Self::Group(name.to_owned())
        } else {
            Self::Named(name.to_owned())
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scalar(name) | Self::Named(name) => f.write_str(name),
            Self::Group(name) => write!(f, "group:{name}"),
            Self::Map { key, value } => write!(f, "map<{key},{value}>"),
        }
    }
}

impl Cardinality {
    /// Reads the text form: `singular`, `optional`, `repeated`, `required`, `oneof:<name>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "singular" => Ok(Self::Singular),
            "optional" => Ok(Self::Optional),
            "repeated" => Ok(Self::Repeated),
            "required" => Ok(Self::Required),
            _ => match text.strip_prefix("oneof:") {
                Some(name) if !name.is_empty() => Ok(Self::Oneof(name.to_owned())),
                _ => Err(format!(
                    "cardinality {text:?} must be singular, optional, repeated, required or oneof:<name>"
                )),
            },
        }
    }
}

impl fmt::Display for Cardinality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Singular => f.write_str("singular"),
            Self::Optional => f.write_str("optional"),
            Self::Repeated => f.write_str("repeated"),
            Self::Required => f.write_str("required"),
            Self::Oneof(name) => write!(f, "oneof:{name}"),
        }
    }
}

impl ProtoFile {
    fn from_descriptor(file: &FileDescriptorProto) -> Self {
        let package = file.package().to_owned();
        // proto3 fields without `optional` have no presence; proto2 optional fields do, and
        // so do fields of editions files by default.
        let implicit_presence = file.syntax() == "proto3";
        let mut collected = Collected::default();
        for message in &file.message_type {
            collect_message(message, &package, implicit_presence, &mut collected);
        }
        for enumeration in &file.enum_type {
            collected.enums.push(enum_from(enumeration, &qualify(&package, enumeration.name())));
        }
        let mut services: Vec<Service> = file
            .service
            .iter()
            .map(|service| {
                let mut methods: Vec<Method> = service
                    .method
                    .iter()
                    .map(|method| Method {
                        name: method.name().to_owned(),
                        input_type: strip_dot(method.input_type()),
                        output_type: strip_dot(method.output_type()),
                        client_streaming: method.client_streaming(),
                        server_streaming: method.server_streaming(),
                    })
                    .collect();
                methods.sort_by(|a, b| a.name.cmp(&b.name));
                Service {
                    full_name: qualify(&package, service.name()),
                    methods,
                }
            })
            .collect();
        services.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        collected.messages.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        collected.enums.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        Self {
            path: file.name().to_owned(),
            package,
            services,
            messages: collected.messages,
            enums: collected.enums,
        }
    }
}

#[derive(Default)]
struct Collected {
    messages: Vec<Message>,
    enums: Vec<Enum>,
}

fn collect_message(message: &DescriptorProto, scope: &str, implicit_presence: bool, collected: &mut Collected) {
    let full_name = qualify(scope, message.name());
    // Map fields point at a synthetic nested `XEntry` message; they are shown as
    // `map<key,value>` and the entry itself is not listed.
    let map_entries: HashMap<String, FieldType> = message
        .nested_type
        .iter()
        .filter(|nested| nested.options.as_ref().is_some_and(|options| options.map_entry()))
        .filter_map(|entry| {
            let key = entry.field.iter().find(|field| field.number() == 1)?;
            let value = entry.field.iter().find(|field| field.number() == 2)?;
            let FieldType::Scalar(key) = field_type(key) else { return None };
            let map = FieldType::Map {
                key,
                value: Box::new(field_type(value)),
            };
            Some((qualify(&full_name, entry.name()), map))
        })
        .collect();

    let mut fields: Vec<Field> = message
        .field
        .iter()
        .map(|field| {
            let cardinality = match field.label() {
                Label::Repeated => Cardinality::Repeated,
                Label::Required => Cardinality::Required,
                Label::Optional if field.proto3_optional() => Cardinality::Optional,
                Label::Optional => match field
                    .oneof_index
                    .and_then(|index| message.oneof_decl.get(usize::try_from(index).ok()?))
                {
                    Some(oneof) => Cardinality::Oneof(oneof.name().to_owned()),
                    None if implicit_presence => Cardinality::Singular,
                    None => Cardinality::Optional,
                },
            };
            let field_type = match map_entries.get(&strip_dot(field.type_name())) {
                Some(map) if field.label() == Label::Repeated => map.clone(),
                _ => field_type(field),
            };
            Field {
                number: field.number(),
                name: field.name().to_owned(),
                cardinality,
                field_type,
            }
        })
        .collect();
    fields.sort_by_key(|field| field.number);

    let mut reserved = Reserved {
        ranges: message
            .reserved_range
            .iter()
            .map(|range| NumberRange {
                start: range.start(),
                end: range.end() - 1,
            })
            .collect(),
        names: message.reserved_name.clone(),
    };
    reserved.sort();
    collected.messages.push(Message {
        full_name: full_name.clone(),
        fields,
        reserved,
    });

    for nested in &message.nested_type {
        if !map_entries.contains_key(&qualify(&full_name, nested.name())) {
            collect_message(nested, &full_name, implicit_presence, collected);
        }
    }
    for enumeration in &message.enum_type {
        collected
            .enums
            .push(enum_from(enumeration, &qualify(&full_name, enumeration.name())));
    }
}

fn enum_from(enumeration: &EnumDescriptorProto, full_name: &str) -> Enum {
    let mut values: Vec<EnumValue> = enumeration
        .value
        .iter()
        .map(|value| EnumValue {
            number: value.number(),
            name: value.name().to_owned(),
        })
        .collect();
    values.sort_by(|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
    let mut reserved = Reserved {
        ranges: enumeration
            .reserved_range
            .iter()
            .map(|range| NumberRange {
                start: range.start(),
                end: range.end(),
            })
            .collect(),
        names: enumeration.reserved_name.clone(),
    };
    reserved.sort();
    Enum {
        full_name: full_name.to_owned(),
        values,
        reserved,
    }
}

impl Reserved {
    fn sort(&mut self) {
        self.ranges.sort();
        self.names.sort();
    }
}

fn field_type(field: &prost_types::FieldDescriptorProto) -> FieldType {
    let scalar = |name: &str| FieldType::Scalar(name.to_owned());
    match field.r#type() {
        Type::Double => scalar("double"),
        Type::Float => scalar("float"),
        Type::Int64 => scalar("int64"),
        Type::Uint64 => scalar("uint64"),
        Type::Int32 => scalar("int32"),
        Type::Fixed64 => scalar("fixed64"),
        Type::Fixed32 => scalar("fixed32"),
        Type::Bool => scalar("bool"),
        Type::String => scalar("string"),
        Type::Bytes => scalar("bytes"),
        Type::Uint32 => scalar("uint32"),
        Type::Sfixed32 => scalar("sfixed32"),
        Type::Sfixed64 => scalar("sfixed64"),
        Type::Sint32 => scalar("sint32"),
        Type::Sint64 => scalar("sint64"),
        Type::Group => FieldType::Group(strip_dot(field.type_name())),
        Type::Message | Type::Enum => FieldType::Named(strip_dot(field.type_name())),
    }
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn strip_dot(type_name: &str) -> String {
    type_name.strip_prefix('.').unwrap_or(type_name).to_owned()
}
