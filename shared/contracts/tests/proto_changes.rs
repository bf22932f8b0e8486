//! The checks bite: copies of `proto/` with one deliberate change each, compiled
//! with protox, must show that change as a wire break, and as a consumer contract
//! violation where the order service relies on what changed. The real protos are
//! never touched.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use suite_contracts::{
    BaselineVerdict, Cardinality, Contract, ContractViolation, FieldType, RpcSide, WireBreak, WireSnapshot, breaking_changes,
    compare_with_baseline, current_api, workspace_root,
};

const USER_PROTO: &str = "suite/user/v1/user.proto";
const ORDER_PROTO: &str = "suite/order/v1/order.proto";
const GET_USER: &str = "suite.user.v1.UserService/GetUser";

/// A scratch copy of the workspace's `proto/` folder.
struct ProtoCopy {
    dir: tempfile::TempDir,
}

impl ProtoCopy {
    fn new() -> Self {
        let copy = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        copy_tree(&workspace_root().join("proto"), copy.dir.path());
        copy
    }

    /// Replaces `from` with `to` in `file`; `from` must occur exactly once, so an edit
    /// that no longer matches the protos fails here instead of testing nothing.
    fn edit(self, file: &str, from: &str, to: &str) -> Self {
        let path = self.dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once in {file}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
        self
    }

    fn add_file(self, file: &str, text: &str) -> Self {
        let path = self.dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    /// Every file of the copy (imports included), compiled as suite-proto's build does.
    fn compile(&self) -> WireSnapshot {
        let mut files = Vec::new();
        proto_files(self.dir.path(), self.dir.path(), &mut files);
        let set = protox::compile(&files, [self.dir.path()]).unwrap_or_else(|error| panic!("the edited protos do not compile: {error:?}"));
        WireSnapshot::from_descriptor_set(&set)
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else if path.extension().is_some_and(|extension| extension == "proto") {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn proto_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            proto_files(root, &path, out);
        } else if path.extension().is_some_and(|extension| extension == "proto") {
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out.sort();
}

fn original() -> WireSnapshot {
    ProtoCopy::new().compile().suite_api()
}

fn breaks_after(copy: &ProtoCopy) -> Vec<WireBreak> {
    breaking_changes(&original(), &copy.compile().suite_api())
}

fn order_contract() -> Contract {
    Contract::load(&workspace_root().join("services/order/contracts/user-service.toml")).unwrap()
}

fn field_violation(side: RpcSide, path: &str) -> impl Fn(&ContractViolation) -> bool {
    move |violation| {
        matches!(violation, ContractViolation::Field { method, side: at, path: at_path, .. }
            if method == GET_USER && *at == side && at_path == path)
    }
}

#[test]
fn an_unchanged_copy_compiles_to_the_built_api_and_satisfies_the_order_contract() {
    let copy = ProtoCopy::new().compile();
    assert_eq!(copy.clone().suite_api(), current_api().unwrap().suite_api());
    assert_eq!(breaking_changes(&original(), &copy.clone().suite_api()), []);
    assert_eq!(order_contract().check_structure(&copy), []);
}

#[test]
fn removing_the_id_the_order_service_sends_breaks_the_wire_and_its_contract() {
    let copy = ProtoCopy::new().edit(
        USER_PROTO,
        "message GetUserRequest {\n  string id = 1;\n}",
        "message GetUserRequest {\n}",
    );
    let breaks = breaks_after(&copy);
    assert_eq!(
        breaks,
        [WireBreak::FieldRemoved {
            message: "suite.user.v1.GetUserRequest".into(),
            name: "id".into(),
            number: 1,
        }]
    );

    let violations = order_contract().check_structure(&copy.compile());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(field_violation(RpcSide::Request, "id")(&violations[0]), "{violations:?}");
    assert!(violations[0].to_string().contains("request field id: missing"), "{}", violations[0]);

    let verdict = compare_with_baseline(&original().render(), &copy.compile().suite_api()).unwrap();
    assert!(matches!(verdict, BaselineVerdict::Breaking { .. }), "{verdict}");
    let message = verdict.to_string();
    for expected in [
        "field suite.user.v1.GetUserRequest.id = 1 was removed",
        "just contracts-update",
        "-   field 1 id singular string",
    ] {
        assert!(message.contains(expected), "{expected:?} missing from:\n{message}");
    }
}

#[test]
fn renumbering_a_field_breaks_the_wire_and_the_contract_that_names_its_number() {
    let copy = ProtoCopy::new().edit(
        USER_PROTO,
        "message GetUserRequest {\n  string id = 1;",
        "message GetUserRequest {\n  string id = 2;",
    );
    assert_eq!(
        breaks_after(&copy),
        [WireBreak::FieldRenumbered {
            message: "suite.user.v1.GetUserRequest".into(),
            name: "id".into(),
            was: 1,
            now: 2,
        }]
    );
    let violations = order_contract().check_structure(&copy.compile());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].to_string().contains("the consumer uses number 1, the provider has 2"),
        "{}",
        violations[0]
    );
}

#[test]
fn swapping_two_numbers_is_caught_by_name_although_every_number_keeps_its_type() {
    let copy = ProtoCopy::new().edit(
        USER_PROTO,
        "  string email = 1;\n  string display_name = 2;",
        "  string email = 2;\n  string display_name = 1;",
    );
    let renumbered: Vec<(String, i32, i32)> = breaks_after(&copy)
        .into_iter()
        .map(|wire_break| match wire_break {
            WireBreak::FieldRenumbered { name, was, now, .. } => (name, was, now),
            other => panic!("only renumbering expected, got {other}"),
        })
        .collect();
    assert_eq!(renumbered, [("email".to_owned(), 1, 2), ("display_name".to_owned(), 2, 1)]);
}

#[test]
fn changing_field_types_breaks_the_wire_and_only_the_contract_fields_relied_on() {
    let copy = ProtoCopy::new()
        .edit(
            USER_PROTO,
            "  // UUID assigned by the server (version 7, so ids sort by creation time).\n  string id = 1;",
            "  bytes id = 1;",
        )
        .edit(USER_PROTO, "  int64 version = 6;", "  string version = 6;");
    let changed: Vec<(String, FieldType, FieldType)> = breaks_after(&copy)
        .into_iter()
        .map(|wire_break| match wire_break {
            WireBreak::FieldTypeChanged {
                message, name, was, now, ..
            } => (format!("{message}.{name}"), was, now),
            other => panic!("only type changes expected, got {other}"),
        })
        .collect();
    let scalar = |name: &str| FieldType::Scalar(name.into());
    assert_eq!(
        changed,
        [
            ("suite.user.v1.User.id".to_owned(), scalar("string"), scalar("bytes")),
            ("suite.user.v1.User.version".to_owned(), scalar("int64"), scalar("string")),
        ]
    );
    // The order service reads user.id but not version.
    let violations = order_contract().check_structure(&copy.compile());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(field_violation(RpcSide::Response, "user.id")(&violations[0]), "{violations:?}");
}

#[test]
fn changing_cardinality_is_a_break() {
    let copy = ProtoCopy::new().edit(USER_PROTO, "  optional string email = 3;", "  repeated string email = 3;");
    assert_eq!(
        breaks_after(&copy),
        [WireBreak::FieldCardinalityChanged {
            message: "suite.user.v1.UpdateUserRequest".into(),
            name: "email".into(),
            number: 3,
            was: Cardinality::Optional.to_string(),
            now: Cardinality::Repeated.to_string(),
        }]
    );
}

#[test]
fn removing_the_method_the_order_service_calls_breaks_the_wire_and_its_contract() {
    let copy = ProtoCopy::new().edit(USER_PROTO, "  rpc GetUser(GetUserRequest) returns (GetUserResponse);\n", "");
    assert_eq!(
        breaks_after(&copy),
        [WireBreak::MethodRemoved {
            service: "suite.user.v1.UserService".into(),
            method: "GetUser".into(),
        }]
    );
    assert_eq!(
        order_contract().check_structure(&copy.compile()),
        [ContractViolation::MethodMissing { method: GET_USER.into() }]
    );
}

#[test]
fn changing_a_method_signature_or_streaming_is_a_break() {
    let copy = ProtoCopy::new()
        .edit(USER_PROTO, "returns (GetUserResponse);", "returns (stream GetUserResponse);")
        .edit(USER_PROTO, "rpc DeleteUser(DeleteUserRequest)", "rpc DeleteUser(GetUserRequest)");
    let signature = |method: &str, side, was: &str, now: &str| WireBreak::MethodSignatureChanged {
        service: "suite.user.v1.UserService".into(),
        method: method.into(),
        side,
        was: was.into(),
        now: now.into(),
    };
    assert_eq!(
        breaks_after(&copy),
        [
            signature(
                "DeleteUser",
                RpcSide::Request,
                "suite.user.v1.DeleteUserRequest",
                "suite.user.v1.GetUserRequest"
            ),
            signature(
                "GetUser",
                RpcSide::Response,
                "suite.user.v1.GetUserResponse",
                "stream suite.user.v1.GetUserResponse"
            ),
        ]
    );
    assert_eq!(
        order_contract().check_structure(&copy.compile()),
        [ContractViolation::MethodStreams { method: GET_USER.into() }]
    );
}

#[test]
fn renaming_a_service_removes_it() {
    let copy = ProtoCopy::new().edit(ORDER_PROTO, "service OrderService {", "service OrdersService {");
    assert_eq!(
        breaks_after(&copy),
        [WireBreak::ServiceRemoved {
            service: "suite.order.v1.OrderService".into(),
        }]
    );
}

#[test]
fn removing_an_enum_value_is_a_break() {
    let copy = ProtoCopy::new().edit(ORDER_PROTO, "  ORDER_STATUS_SHIPPED = 3;\n", "");
    assert_eq!(
        breaks_after(&copy),
        [WireBreak::EnumValueRemoved {
            enumeration: "suite.order.v1.OrderStatus".into(),
            name: "ORDER_STATUS_SHIPPED".into(),
            number: 3,
        }]
    );
}

#[test]
fn removing_a_message_that_fields_still_carry_is_a_break() {
    let copy = ProtoCopy::new()
        .edit(ORDER_PROTO, "message Money {", "message Amount {")
        .edit(ORDER_PROTO, "  Money unit_price = 3;", "  Amount unit_price = 3;")
        .edit(ORDER_PROTO, "  Money line_total = 4;", "  Amount line_total = 4;")
        .edit(ORDER_PROTO, "  Money total = 4;", "  Amount total = 4;");
    let breaks = breaks_after(&copy);
    assert!(
        breaks.contains(&WireBreak::TypeRemoved {
            type_name: "suite.order.v1.Money".into(),
            referenced_by: vec![
                "field suite.order.v1.LineItem.unit_price".into(),
                "field suite.order.v1.LineItem.line_total".into(),
                "field suite.order.v1.Order.total".into(),
            ],
        }),
        "{breaks:#?}"
    );
    let type_changes = breaks
        .iter()
        .filter(|wire_break| matches!(wire_break, WireBreak::FieldTypeChanged { .. }))
        .count();
    assert_eq!((breaks.len(), type_changes), (4, 3), "{breaks:#?}");
}

#[test]
fn removing_a_message_nothing_carries_is_no_break() {
    let with_scratch = ProtoCopy::new()
        .edit(
            USER_PROTO,
            "message GetUserRequest {",
            "message Scratch {\n  string note = 1;\n}\n\nmessage GetUserRequest {",
        )
        .compile()
        .suite_api();
    assert!(with_scratch.message("suite.user.v1.Scratch").is_some());
    assert_eq!(breaking_changes(&with_scratch, &original()), []);
}

#[test]
fn additions_break_nothing_but_leave_the_baseline_out_of_date() {
    let copy = ProtoCopy::new()
        .edit(USER_PROTO, "  int64 version = 6;\n", "  int64 version = 6;\n  string nickname = 7;\n")
        .edit(
            USER_PROTO,
            "  rpc ListUsers(ListUsersRequest) returns (ListUsersResponse);\n",
            "  rpc ListUsers(ListUsersRequest) returns (ListUsersResponse);\n  rpc CountUsers(ListUsersRequest) returns (ListUsersResponse);\n",
        );
    assert_eq!(breaks_after(&copy), []);
    let verdict = compare_with_baseline(&original().render(), &copy.compile().suite_api()).unwrap();
    let BaselineVerdict::OutOfDate { changes } = &verdict else {
        panic!("expected an out-of-date baseline, got: {verdict}");
    };
    assert_eq!(
        changes,
        "  service suite.user.v1.UserService\n\
         +   rpc CountUsers (suite.user.v1.ListUsersRequest) returns (suite.user.v1.ListUsersResponse)\n\
         \x20 message suite.user.v1.User\n\
         +   field 7 nickname singular string\n"
    );
    let message = verdict.to_string();
    assert!(
        message.contains("out of date") && message.contains("just contracts-update"),
        "{message}"
    );
}

#[test]
fn maps_oneofs_nesting_streams_reservations_and_proto2_are_all_recorded() {
    let copy = ProtoCopy::new()
        .add_file(
            "suite/shapes/v1/shapes.proto",
            r#"syntax = "proto3";
package suite.shapes.v1;

service Shapes {
  rpc Watch(stream Shape) returns (stream Shape);
}

message Shape {
  message Point {
    sint64 x = 1;
    sint64 y = 2;
  }
  enum Kind {
    KIND_UNSPECIFIED = 0;
    KIND_POLYGON = 1;
    reserved 2, 5 to 7;
    reserved "KIND_CIRCLE";
  }
  map<string, Point> anchors = 1;
  oneof outline {
    Point center = 2;
    string svg = 3;
  }
  optional Kind kind = 4;
  repeated Point points = 5;
  reserved 6, 9 to 11;
  reserved "radius";
}
"#,
        )
        .add_file(
            "suite/shapes/v1/legacy.proto",
            r#"syntax = "proto2";
package suite.shapes.v1;

message Legacy {
  required int32 id = 1;
  optional string note = 2;
  optional group Result = 3 {
    optional string url = 4;
  }
}
"#,
        );
    let snapshot = copy.compile().suite_api();
    let text = snapshot.render();
    for expected in [
        "service suite.shapes.v1.Shapes\n  rpc Watch (stream suite.shapes.v1.Shape) returns (stream suite.shapes.v1.Shape)\n",
        "enum suite.shapes.v1.Shape.Kind\n  value 0 KIND_UNSPECIFIED\n  value 1 KIND_POLYGON\n  reserved 2\n  reserved 5 to 7\n  reserved name KIND_CIRCLE\n",
        "message suite.shapes.v1.Shape\n  field 1 anchors repeated map<string,suite.shapes.v1.Shape.Point>\n  \
         field 2 center oneof:outline suite.shapes.v1.Shape.Point\n  field 3 svg oneof:outline string\n  \
         field 4 kind optional suite.shapes.v1.Shape.Kind\n  field 5 points repeated suite.shapes.v1.Shape.Point\n  \
         reserved 6\n  reserved 9 to 11\n  reserved name radius\n",
        "message suite.shapes.v1.Shape.Point\n  field 1 x singular sint64\n  field 2 y singular sint64\n",
        "message suite.shapes.v1.Legacy\n  field 1 id required int32\n  field 2 note optional string\n  \
         field 3 result optional group:suite.shapes.v1.Legacy.Result\n",
        "message suite.shapes.v1.Legacy.Result\n  field 4 url optional string\n",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    assert!(!text.contains("AnchorsEntry"), "map entries are folded into their fields");
    assert!(!text.contains("_kind"), "proto3 optional's synthetic oneof is not a oneof");
    assert_eq!(WireSnapshot::parse(&text).unwrap(), snapshot);
}
