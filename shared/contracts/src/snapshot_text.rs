//! The text form of a [`WireSnapshot`]: one line per service, method, message, field,
//! enum, value and reservation, in canonical order, so a change to the API is a
//! small, readable diff. The baseline is this text, read back by [`WireSnapshot::parse`].
//!
//! ```text
//! file suite/user/v1/user.proto
//!   package suite.user.v1
//!
//! service suite.user.v1.UserService
//!   rpc GetUser (suite.user.v1.GetUserRequest) returns (suite.user.v1.GetUserResponse)
//!
//! message suite.user.v1.UpdateUserRequest
//!   field 1 id singular string
//!   field 3 email optional string
//!   reserved 7 to 9
//!   reserved name nickname
//!
//! enum suite.order.v1.OrderStatus
//!   value 0 ORDER_STATUS_UNSPECIFIED
//! ```

use std::fmt::Write as _;

use crate::snapshot::{
    Cardinality, Enum, EnumValue, Field, FieldType, Message, Method, NumberRange, ProtoFile, Reserved, Service, WireSnapshot,
};

const HEADER: &str = "\
# Wire baseline of the suite's protobuf API: every suite.* proto file, in canonical order
# (blocks by name, fields and enum values by number). A field line reads
# `field <number> <name> <cardinality> <type>`.
# Checked by the suite-contracts tests; rewrite it with `just contracts-update`, never by hand.
";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct SnapshotParseError {
    pub line: usize,
    pub problem: String,
}

impl WireSnapshot {
    /// The canonical text. Equal snapshots render to equal text.
    pub fn render(&self) -> String {
        let mut out = String::from(HEADER);
        for file in &self.files {
            let _ = write!(out, "\nfile {}\n  package {}\n", file.path, file.package);
            for service in &file.services {
                let _ = writeln!(out, "\nservice {}", service.full_name);
                for method in &service.methods {
                    let _ = writeln!(
                        out,
                        "  rpc {} ({}) returns ({})",
                        method.name,
                        method.request_signature(),
                        method.response_signature()
                    );
                }
            }
            for enumeration in &file.enums {
                let _ = writeln!(out, "\nenum {}", enumeration.full_name);
                for value in &enumeration.values {
                    let _ = writeln!(out, "  value {} {}", value.number, value.name);
                }
                render_reserved(&mut out, &enumeration.reserved);
            }
            for message in &file.messages {
                let _ = writeln!(out, "\nmessage {}", message.full_name);
                for field in &message.fields {
                    let _ = writeln!(
                        out,
                        "  field {} {} {} {}",
                        field.number, field.name, field.cardinality, field.field_type
                    );
                }
                render_reserved(&mut out, &message.reserved);
            }
        }
        out
    }

    /// Reads text written by [`WireSnapshot::render`]. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, SnapshotParseError> {
        let mut parser = Parser::default();
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            parser
                .line(line, trimmed)
                .map_err(|problem| SnapshotParseError { line: index + 1, problem })?;
        }
        Ok(Self { files: parser.files })
    }
}

fn render_reserved(out: &mut String, reserved: &Reserved) {
    for range in &reserved.ranges {
        if range.start == range.end {
            let _ = writeln!(out, "  reserved {}", range.start);
        } else {
            let _ = writeln!(out, "  reserved {} to {}", range.start, range.end);
        }
    }
    for name in &reserved.names {
        let _ = writeln!(out, "  reserved name {name}");
    }
}

/// Which block indented lines currently belong to (always the last one pushed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    File,
    Service,
    Message,
    Enum,
}

#[derive(Debug)]
struct Parser {
    files: Vec<ProtoFile>,
    block: Block,
}

impl Default for Parser {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            block: Block::None,
        }
    }
}

impl Parser {
    fn line(&mut self, line: &str, trimmed: &str) -> Result<(), String> {
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let indented = line.starts_with(' ');
        if !indented {
            return self.block_start(&words);
        }
        let file = self.files.last_mut().ok_or("an indented line before any block")?;
        match (self.block, words.as_slice()) {
            (Block::File, ["package", package]) => {
                file.package = (*package).to_owned();
                Ok(())
            }
            (Block::Service, ["rpc", ..]) => {
                let method = parse_rpc(trimmed)?;
                last(&mut file.services)?.methods.push(method);
                Ok(())
            }
            (Block::Message, ["field", number, name, cardinality, field_type]) => {
                let field = Field {
                    number: parse_number(number)?,
                    name: (*name).to_owned(),
                    cardinality: Cardinality::parse(cardinality)?,
                    field_type: FieldType::parse(field_type)?,
                };
                last(&mut file.messages)?.fields.push(field);
                Ok(())
            }
            (Block::Enum, ["value", number, name]) => {
                let value = EnumValue {
                    number: parse_number(number)?,
                    name: (*name).to_owned(),
                };
                last(&mut file.enums)?.values.push(value);
                Ok(())
            }
            (Block::Message | Block::Enum, ["reserved", rest @ ..]) => {
                let reserved = if self.block == Block::Message {
                    &mut last(&mut file.messages)?.reserved
                } else {
                    &mut last(&mut file.enums)?.reserved
                };
                match rest {
                    ["name", name] => reserved.names.push((*name).to_owned()),
                    [number] => {
                        let number = parse_number(number)?;
                        reserved.ranges.push(NumberRange {
                            start: number,
                            end: number,
                        });
                    }
                    [start, "to", end] => reserved.ranges.push(NumberRange {
                        start: parse_number(start)?,
                        end: parse_number(end)?,
                    }),
                    _ => {
                        return Err(format!(
                            "{trimmed:?} must read `reserved N`, `reserved N to M` or `reserved name NAME`"
                        ));
                    }
                }
                Ok(())
            }
            _ => Err(format!("{trimmed:?} does not belong in this block")),
        }
    }

    fn block_start(&mut self, words: &[&str]) -> Result<(), String> {
        let (block, name) = match words {
            ["file", path] => {
                self.files.push(ProtoFile {
                    path: (*path).to_owned(),
                    package: String::new(),
                    services: Vec::new(),
                    messages: Vec::new(),
                    enums: Vec::new(),
                });
                self.block = Block::File;
                return Ok(());
            }
            ["service", name] => (Block::Service, *name),
            ["message", name] => (Block::Message, *name),
            ["enum", name] => (Block::Enum, *name),
            _ => {
                return Err(format!(
                    "{:?} is not `file`, `service`, `message` or `enum` with a name",
                    words.join(" ")
                ));
            }
        };
        let file = self.files.last_mut().ok_or("a block before any `file` line")?;
        let full_name = name.to_owned();
        match block {
            Block::Service => file.services.push(Service {
                full_name,
                methods: Vec::new(),
            }),
            Block::Message => file.messages.push(Message {
                full_name,
                fields: Vec::new(),
                reserved: Reserved::default(),
            }),
            _ => file.enums.push(Enum {
                full_name,
                values: Vec::new(),
                reserved: Reserved::default(),
            }),
        }
        self.block = block;
        Ok(())
    }
}

/// `rpc Name (stream a.In) returns (a.Out)`.
fn parse_rpc(line: &str) -> Result<Method, String> {
    let spaced = line.replace(['(', ')'], " ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let shape_error = || format!("{line:?} must read `rpc Name ([stream] Request) returns ([stream] Response)`");
    let (name, rest) = match words.as_slice() {
        ["rpc", name, rest @ ..] => (*name, rest),
        _ => return Err(shape_error()),
    };
    let returns = rest.iter().position(|word| *word == "returns").ok_or_else(shape_error)?;
    let side = |words: &[&str]| match words {
        ["stream", type_name] => Ok((true, (*type_name).to_owned())),
        [type_name] => Ok((false, (*type_name).to_owned())),
        _ => Err(shape_error()),
    };
    let (client_streaming, input_type) = side(&rest[..returns])?;
    let (server_streaming, output_type) = side(&rest[returns + 1..])?;
    Ok(Method {
        name: name.to_owned(),
        input_type,
        output_type,
        client_streaming,
        server_streaming,
    })
}

fn parse_number(text: &str) -> Result<i32, String> {
    text.parse().map_err(|_| format!("{text:?} is not a number"))
}

fn last<T>(items: &mut [T]) -> Result<&mut T, String> {
    items.last_mut().ok_or_else(|| "no block to add this line to".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_current_api_reads_back_equal_to_itself() {
        let api = crate::current_api().unwrap().suite_api();
        assert!(
            api.service("suite.user.v1.UserService").is_some(),
            "the suite's API is in the snapshot"
        );
        assert!(
            api.message("google.protobuf.Timestamp").is_none(),
            "imports are not part of the baseline"
        );
        let text = api.render();
        assert_eq!(WireSnapshot::parse(&text).unwrap(), api);
    }

    #[test]
    fn the_current_api_renders_fields_methods_and_enums_as_documented() {
        let text = crate::current_api().unwrap().suite_api().render();
        for expected in [
            "file suite/user/v1/user.proto\n  package suite.user.v1\n",
            "  rpc GetUser (suite.user.v1.GetUserRequest) returns (suite.user.v1.GetUserResponse)\n",
            "message suite.user.v1.UpdateUserRequest\n  field 1 id singular string\n  field 2 version singular int64\n  field 3 email optional string\n",
            "  field 4 create_time singular google.protobuf.Timestamp\n",
            "  field 1 users repeated suite.user.v1.User\n",
            "enum suite.order.v1.OrderStatus\n  value 0 ORDER_STATUS_UNSPECIFIED\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let cases = [
            ("file a.proto\n  package a\nmessage a.M\n  field one x singular string\n", 4),
            ("message a.M\n", 1),
            ("file a.proto\nservice a.S\n  rpc Get a.In a.Out\n", 3),
            ("file a.proto\nmessage a.M\n  field 1 x sometimes string\n", 3),
            ("file a.proto\nenum a.E\n  field 1 x singular string\n", 3),
            ("file a.proto\nmessage a.M\n  field 1 x singular map<a.B,string>\n", 3),
        ];
        for (text, line) in cases {
            let error = WireSnapshot::parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
        }
    }

    #[test]
    fn streaming_maps_oneofs_and_reservations_read_back() {
        let text = "\
file a/v1/a.proto
  package a.v1

service a.v1.Chat
  rpc Talk (stream a.v1.Line) returns (stream a.v1.Line)

enum a.v1.Mood
  value 0 MOOD_UNSPECIFIED
  reserved 3 to 5
  reserved name MOOD_GRUMPY

message a.v1.Line
  field 1 labels repeated map<string,a.v1.Mood>
  field 2 text oneof:body string
  reserved 9
  reserved name old
";
        let snapshot = WireSnapshot::parse(text).unwrap();
        let talk = snapshot.service("a.v1.Chat").unwrap().method("Talk").unwrap();
        assert!(talk.client_streaming && talk.server_streaming);
        let line = snapshot.message("a.v1.Line").unwrap();
        assert_eq!(
            line.field_numbered(1).unwrap().field_type,
            FieldType::Map {
                key: "string".into(),
                value: Box::new(FieldType::Named("a.v1.Mood".into()))
            }
        );
        assert_eq!(line.field_named("text").unwrap().cardinality, Cardinality::Oneof("body".into()));
        assert_eq!(
            snapshot.enumeration("a.v1.Mood").unwrap().reserved.ranges,
            [NumberRange { start: 3, end: 5 }]
        );
        assert_eq!(WireSnapshot::parse(&snapshot.render()).unwrap(), snapshot);
    }
}
