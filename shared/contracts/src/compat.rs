//! Which differences between two snapshots break peers built from the older one.
//!
//! Fields are matched by number, because numbers are what travels on the wire, and
//! also by name, because a field that keeps its name but moves to another number is
//! read into the wrong slot by every older peer. Renaming a field or an enum value in
//! place keeps the binary encoding intact and is not reported here; the baseline
//! check still shows it as a difference to commit.

use std::fmt;

use crate::snapshot::{FieldType, Message, WireSnapshot};

/// Which half of a method's signature changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcSide {
    Request,
    Response,
}

/// One change that breaks a peer built from the baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireBreak {
    ServiceRemoved {
        service: String,
    },
    MethodRemoved {
        service: String,
        method: String,
    },
    /// The message type or streaming of one side changed (`stream a.B` against `a.B`).
    MethodSignatureChanged {
        service: String,
        method: String,
        side: RpcSide,
        was: String,
        now: String,
    },
    FieldRemoved {
        message: String,
        name: String,
        number: i32,
    },
    FieldRenumbered {
        message: String,
        name: String,
        was: i32,
        now: i32,
    },
    FieldTypeChanged {
        message: String,
        name: String,
        number: i32,
        was: FieldType,
        now: FieldType,
    },
    FieldCardinalityChanged {
        message: String,
        name: String,
        number: i32,
        was: String,
        now: String,
    },
    EnumValueRemoved {
        enumeration: String,
        name: String,
        number: i32,
    },
    EnumValueRenumbered {
        enumeration: String,
        name: String,
        was: i32,
        now: i32,
    },
    /// A message or enum is gone while fields or methods that carried it remain.
    TypeRemoved {
        type_name: String,
        referenced_by: Vec<String>,
    },
}

impl fmt::Display for WireBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceRemoved { service } => write!(f, "service {service} was removed or renamed (every call to it gets UNIMPLEMENTED)"),
            Self::MethodRemoved { service, method } => {
                write!(
                    f,
                    "method {service}/{method} was removed or renamed (calls to it get UNIMPLEMENTED)"
                )
            }
            Self::MethodSignatureChanged {
                service,
                method,
                side,
                was,
                now,
            } => {
                let side = match side {
                    RpcSide::Request => "request",
                    RpcSide::Response => "response",
                };
                write!(f, "method {service}/{method}: {side} changed from `{was}` to `{now}`")
            }
            Self::FieldRemoved { message, name, number } => write!(f, "field {message}.{name} = {number} was removed"),
            Self::FieldRenumbered { message, name, was, now } => {
                write!(f, "field {message}.{name} was renumbered from {was} to {now}")
            }
            Self::FieldTypeChanged {
                message,
                name,
                number,
                was,
                now,
            } => write!(f, "field {message}.{name} = {number} changed type from {was} to {now}"),
            Self::FieldCardinalityChanged {
                message,
                name,
                number,
                was,
                now,
            } => write!(f, "field {message}.{name} = {number} changed cardinality from {was} to {now}"),
            Self::EnumValueRemoved { enumeration, name, number } => {
                write!(f, "enum value {enumeration}.{name} = {number} was removed")
            }
            Self::EnumValueRenumbered {
                enumeration,
                name,
                was,
                now,
            } => {
                write!(f, "enum value {enumeration}.{name} was renumbered from {was} to {now}")
            }
            Self::TypeRemoved { type_name, referenced_by } => write!(
                f,
                "type {type_name} was removed but is still carried by {}",
                referenced_by.join(", ")
            ),
        }
    }
}

/// Every change from `baseline` to `current` that breaks a peer built from `baseline`,
/// services first, then messages, then enums, each by name. Additions are not breaks.
pub fn breaking_changes(baseline: &WireSnapshot, current: &WireSnapshot) -> Vec<WireBreak> {
    let mut breaks = Vec::new();
    for service in baseline.services() {
        let Some(current_service) = current.service(&service.full_name) else {
            breaks.push(WireBreak::ServiceRemoved {
                service: service.full_name.clone(),
            });
            continue;
        };
        for method in &service.methods {
            let Some(current_method) = current_service.method(&method.name) else {
                breaks.push(WireBreak::MethodRemoved {
                    service: service.full_name.clone(),
                    method: method.name.clone(),
                });
                continue;
            };
            let sides = [
                (RpcSide::Request, method.request_signature(), current_method.request_signature()),
                (RpcSide::Response, method.response_signature(), current_method.response_signature()),
            ];
            for (side, was, now) in sides {
                if was != now {
                    breaks.push(WireBreak::MethodSignatureChanged {
                        service: service.full_name.clone(),
                        method: method.name.clone(),
                        side,
                        was,
                        now,
                    });
                }
            }
        }
    }

    for message in baseline.messages() {
        match current.message(&message.full_name) {
            Some(current_message) => field_breaks(message, current_message, &mut breaks),
            None => removed_type(&message.full_name, baseline, current, &mut breaks),
        }
    }

    for enumeration in baseline.enums() {
        let Some(current_enum) = current.enumeration(&enumeration.full_name) else {
            removed_type(&enumeration.full_name, baseline, current, &mut breaks);
            continue;
        };
        for value in &enumeration.values {
            if current_enum.values.iter().any(|candidate| candidate.number == value.number) {
                continue;
            }
            match current_enum.values.iter().find(|candidate| candidate.name == value.name) {
                Some(moved) => breaks.push(WireBreak::EnumValueRenumbered {
                    enumeration: enumeration.full_name.clone(),
                    name: value.name.clone(),
                    was: value.number,
                    now: moved.number,
                }),
                None => breaks.push(WireBreak::EnumValueRemoved {
                    enumeration: enumeration.full_name.clone(),
                    name: value.name.clone(),
                    number: value.number,
                }),
            }
        }
    }
    breaks
}

fn field_breaks(baseline: &Message, current: &Message, breaks: &mut Vec<WireBreak>) {
    for field in &baseline.fields {
        let message = baseline.full_name.clone();
        // Same name, another number: older peers write and read the old slot.
        if let Some(moved) = current.field_named(&field.name).filter(|moved| moved.number != field.number) {
            breaks.push(WireBreak::FieldRenumbered {
                message: message.clone(),
                name: field.name.clone(),
                was: field.number,
                now: moved.number,
            });
        }
        let Some(same_slot) = current.field_numbered(field.number) else {
            if current.field_named(&field.name).is_none() {
                breaks.push(WireBreak::FieldRemoved {
                    message,
                    name: field.name.clone(),
                    number: field.number,
                });
            }
            continue;
        };
        if same_slot.field_type != field.field_type {
            breaks.push(WireBreak::FieldTypeChanged {
                message: message.clone(),
                name: field.name.clone(),
                number: field.number,
                was: field.field_type.clone(),
                now: same_slot.field_type.clone(),
            });
        }
        if same_slot.cardinality != field.cardinality {
            breaks.push(WireBreak::FieldCardinalityChanged {
                message,
                name: field.name.clone(),
                number: field.number,
                was: field.cardinality.to_string(),
                now: same_slot.cardinality.to_string(),
            });
        }
    }
}

/// A removed message or enum breaks peers only if something that carried it in the
/// baseline is still there: a field whose number survives, or a method that survives.
/// A type nothing carried any more (its field or method went too, and was reported)
/// is not a break of its own.
fn removed_type(type_name: &str, baseline: &WireSnapshot, current: &WireSnapshot, breaks: &mut Vec<WireBreak>) {
    let mut referenced_by = Vec::new();
    for message in baseline.messages() {
        let Some(current_message) = current.message(&message.full_name) else {
            continue;
        };
        for field in &message.fields {
            if field.field_type.refers_to(type_name) && current_message.field_numbered(field.number).is_some() {
                referenced_by.push(format!("field {}.{}", message.full_name, field.name));
            }
        }
    }
    for service in baseline.services() {
        let Some(current_service) = current.service(&service.full_name) else {
            continue;
        };
        for method in &service.methods {
            if current_service.method(&method.name).is_none() {
                continue;
            }
            if method.input_type == type_name {
                referenced_by.push(format!("the request of {}/{}", service.full_name, method.name));
            }
            if method.output_type == type_name {
                referenced_by.push(format!("the response of {}/{}", service.full_name, method.name));
            }
        }
    }
    if !referenced_by.is_empty() {
        breaks.push(WireBreak::TypeRemoved {
            type_name: type_name.to_owned(),
            referenced_by,
        });
    }
}
