//! Just enough of the protobuf encoding to write a request's top-level scalar fields
//! and read scalar fields (through nested messages) from a response, by the field
//! numbers a consumer's contract states. Going through the provider's generated
//! types instead would test the provider against itself.

/// A value as the player compares it: integers of every width widen to `i128`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar {
    Text(String),
    Integer(i128),
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) => write!(f, "{text:?}"),
            Self::Integer(integer) => write!(f, "{integer}"),
            Self::Bool(flag) => write!(f, "{flag}"),
        }
    }
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;
const FIXED32: u64 = 5;

/// Appends field `number` of scalar type `type_name` holding `value`.
pub(crate) fn encode_field(out: &mut Vec<u8>, number: i32, type_name: &str, value: &Scalar) -> Result<(), String> {
    let number = u64::try_from(number).map_err(|_| format!("field number {number} is negative"))?;
    match (type_name, value) {
        ("string", Scalar::Text(text)) => {
            put_varint(out, number << 3 | LENGTH_DELIMITED);
            put_varint(out, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
        ("bool", Scalar::Bool(flag)) => {
            put_varint(out, number << 3 | VARINT);
            put_varint(out, u64::from(*flag));
        }
        (integer_type, Scalar::Integer(integer)) => {
            let (min, max) = match integer_type {
                "int32" => (i128::from(i32::MIN), i128::from(i32::MAX)),
                "int64" => (i128::from(i64::MIN), i128::from(i64::MAX)),
                "uint32" => (0, i128::from(u32::MAX)),
                "uint64" => (0, i128::from(u64::MAX)),
                other => return Err(format!("cannot write {integer} as {other}")),
            };
            if !(min..=max).contains(integer) {
                return Err(format!("{integer} does not fit {integer_type}"));
            }
            put_varint(out, number << 3 | VARINT);
            // Negative int32 and int64 values go on the wire as their 64-bit two's complement.
            let encoded = if *integer < 0 { *integer as i64 as u64 } else { *integer as u64 };
            put_varint(out, encoded);
        }
        (type_name, value) => return Err(format!("cannot write {value:?} as {type_name}")),
    }
    Ok(())
}

/// What a response holds at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    Value(Scalar),
    /// The message field at this path (a parent of the one asked for) is not set.
    ParentUnset(String),
}

/// Reads the scalar at the end of `parents` (path and number of each message field on
/// the way) and `leaf` (number and type). An absent scalar reads as its default, as in proto3.
pub(crate) fn read_path(message: &[u8], parents: &[(&str, i32)], leaf_number: i32, leaf_type: &str) -> Result<Lookup, String> {
    let mut current = message.to_vec();
    for (path, number) in parents {
        let mut merged = Vec::new();
        let mut present = false;
        for (field, value) in fields(&current)? {
            if field != *number {
                continue;
            }
            let RawValue::Bytes(bytes) = value else {
                return Err(format!("field {path} = {number} is not a message on the wire ({value:?})"));
            };
            // Repeated occurrences of a message field merge, which on the wire is concatenation.
            merged.extend_from_slice(bytes);
            present = true;
        }
        if !present {
            return Ok(Lookup::ParentUnset((*path).to_owned()));
        }
        current = merged;
    }
    // The last occurrence of a scalar wins.
    let last = fields(&current)?
        .into_iter()
        .rev()
        .find(|(field, _)| *field == leaf_number)
        .map(|(_, value)| value);
    let value = match (leaf_type, last) {
        ("string", None) => Scalar::Text(String::new()),
        ("bool", None) => Scalar::Bool(false),
        (_, None) => Scalar::Integer(0),
        ("string", Some(RawValue::Bytes(bytes))) => {
            Scalar::Text(String::from_utf8(bytes.to_vec()).map_err(|_| format!("field {leaf_number} is not UTF-8 text"))?)
        }
        ("bool", Some(RawValue::Varint(varint))) => Scalar::Bool(varint != 0),
        // Narrower integers are the low bits of the varint, sign included for int32.
        ("int32", Some(RawValue::Varint(varint))) => Scalar::Integer(i128::from(varint as i32)),
        ("int64", Some(RawValue::Varint(varint))) => Scalar::Integer(i128::from(varint as i64)),
        ("uint32", Some(RawValue::Varint(varint))) => Scalar::Integer(i128::from(varint as u32)),
        ("uint64", Some(RawValue::Varint(varint))) => Scalar::Integer(i128::from(varint)),
        (leaf_type, Some(other)) => return Err(format!("field {leaf_number} holds {other:?}, which is not a {leaf_type}")),
    };
    Ok(Lookup::Value(value))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Every field of an encoded message, in wire order.
fn fields(mut bytes: &[u8]) -> Result<Vec<(i32, RawValue<'_>)>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = take_varint(&mut bytes)?;
        let number = i32::try_from(key >> 3).map_err(|_| format!("field number {} is out of range", key >> 3))?;
        let value = match key & 7 {
            VARINT => RawValue::Varint(take_varint(&mut bytes)?),
            FIXED64 => RawValue::Fixed64(u64::from_le_bytes(take_array(&mut bytes)?)),
            LENGTH_DELIMITED => {
                let length = usize::try_from(take_varint(&mut bytes)?).map_err(|_| "length out of range".to_owned())?;
                if length > bytes.len() {
                    return Err(format!("field {number} claims {length} bytes, {} are left", bytes.len()));
                }
                let (value, rest) = bytes.split_at(length);
                bytes = rest;
                RawValue::Bytes(value)
            }
            FIXED32 => RawValue::Fixed32(u32::from_le_bytes(take_array(&mut bytes)?)),
            wire_type => return Err(format!("field {number} has wire type {wire_type} (groups are not supported)")),
        };
        out.push((number, value));
    }
    Ok(out)
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("the message ends inside a varint")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint is longer than 10 bytes".into())
}

fn take_array<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], String> {
    let (head, rest) = bytes
        .split_first_chunk::<N>()
        .ok_or("the message ends inside a fixed-width value")?;
    *bytes = rest;
    Ok(*head)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost::Message as _;
    use suite_proto::suite::user::v1 as pb;

    use super::*;

    #[test]
    fn encoded_fields_decode_with_the_generated_types() {
        let mut request = Vec::new();
        encode_field(&mut request, 1, "string", &Scalar::Text("0190-abc".into())).unwrap();
        assert_eq!(pb::GetUserRequest::decode(request.as_slice()).unwrap().id, "0190-abc");

        let mut list = Vec::new();
        encode_field(&mut list, 1, "int32", &Scalar::Integer(-5)).unwrap();
        encode_field(&mut list, 2, "string", &Scalar::Text("token".into())).unwrap();
        let decoded = pb::ListUsersRequest::decode(list.as_slice()).unwrap();
        assert_eq!((decoded.page_size, decoded.page_token.as_str()), (-5, "token"));
    }

    #[test]
    fn paths_read_through_nested_messages_and_default_when_absent() {
        let response = pb::GetUserResponse {
            user: Some(pb::User {
                id: "u-1".into(),
                version: 3,
                ..pb::User::default()
            }),
        }
        .encode_to_vec();
        assert_eq!(
            read_path(&response, &[("user", 1)], 1, "string").unwrap(),
            Lookup::Value(Scalar::Text("u-1".into()))
        );
        assert_eq!(
            read_path(&response, &[("user", 1)], 6, "int64").unwrap(),
            Lookup::Value(Scalar::Integer(3))
        );
        assert_eq!(
            read_path(&response, &[("user", 1)], 2, "string").unwrap(),
            Lookup::Value(Scalar::Text(String::new()))
        );
        let empty = pb::GetUserResponse::default().encode_to_vec();
        assert_eq!(
            read_path(&empty, &[("user", 1)], 1, "string").unwrap(),
            Lookup::ParentUnset("user".into())
        );
    }

    #[test]
    fn a_field_of_another_wire_type_is_an_error_not_a_default() {
        let response = pb::GetUserResponse {
            user: Some(pb::User {
                version: 3,
                ..pb::User::default()
            }),
        }
        .encode_to_vec();
        assert!(
            read_path(&response, &[("user", 1)], 6, "string").is_err(),
            "version is a varint, not text"
        );
        assert!(read_path(&[0x0a, 0x05, 0x01], &[], 1, "string").is_err(), "truncated message");
    }

    #[test]
    fn integers_outside_their_type_are_refused() {
        let mut out = Vec::new();
        assert!(encode_field(&mut out, 1, "int32", &Scalar::Integer(i128::from(i32::MAX) + 1)).is_err());
        assert!(encode_field(&mut out, 1, "uint64", &Scalar::Integer(-1)).is_err());
        assert!(encode_field(&mut out, 1, "string", &Scalar::Bool(true)).is_err());
        assert!(out.is_empty());
    }
}
