//! `svrkit compat`'s verdicts against what happens on the wire.
//!
//! Each case is one kind of schema change, as a pair of IDL versions and one value meant the
//! same in both (an edge of the old version's range, where a change loses data if it
//! does). For each direction the value is written by one version and read by the other:
//! by svrkit's codec, and by protobuf C++ (protoc's `--decode` and `--encode` on the
//! `.proto` export, unknown fields dropped as an application would not see them). The
//! outcome is `equal`, `lost` (the value is not there), `misread` (another value is) or
//! `rejected` (decoding fails, or for a method, the call fails with UNIMPLEMENTED).
//!
//! The rule checked: a change is wire-breaking exactly when some outcome is not `equal`,
//! except the few whose harm is to versions not in the pair (a removed id left free for
//! reuse), which say why. The whole table is committed as `tests/compat_matrix.md`;
//! `SVRKIT_BLESS=1` rewrites it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value as Json;
use svrkit_cli::dynamic::DynamicCodec;
use svrkit_codegen::compat::{self, Severity};
use svrkit_codegen::{Builder, Compiled};

use svrkit_tests::external;

/// One change: its name, the two versions' items, a value of v1's range in each version's
/// JSON (`s2` empty, or out of v2's range, when v2 cannot hold it), and why it is
/// wire-breaking when no value is lost between the two.
struct Case {
    change: &'static str,
    v1: String,
    v2: String,
    s1: &'static str,
    s2: &'static str,
    hazard: Option<&'static str>,
}

const SERVICE: &str =
    r#"<service name="S" id="100"><method name="Call" id="1" request="M" response="M"/></service>"#;
const ENUM: &str = r#"<enum name="E"><value name="ZERO" id="0"/><value name="A" id="1"/><value name="B" id="2"/></enum>"#;
const INNER: &str = r#"<struct name="Inner"><field id="1" name="x" type="int32"/><field id="2" name="y" type="string"/></struct>"#;

/// A version whose struct `M` has these fields, with the common enum, struct and service.
fn m(fields: &str) -> String {
    format!(r#"{ENUM}{INNER}<struct name="M">{fields}</struct>{SERVICE}"#)
}

/// A one-field `M` with this field's attributes.
fn f(attrs: &str) -> String {
    m(&format!(r#"<field id="1" name="v" {attrs}/>"#))
}

fn case(change: &'static str, v1: String, v2: String, s1: &'static str, s2: &'static str) -> Case {
    Case {
        change,
        v1,
        v2,
        s1,
        s2,
        hazard: None,
    }
}

fn cases() -> Vec<Case> {
    let svc = |methods: &str| {
        format!(
            r#"{ENUM}{INNER}<struct name="M"><field id="1" name="v" type="int32"/></struct><service name="S" id="100">{methods}</service>"#
        )
    };
    let call = r#"<method name="Call" id="1" request="M" response="M"/>"#;
    let enum_m = |values: &str| {
        format!(
            r#"<enum name="E">{values}</enum>{INNER}<struct name="M"><field id="1" name="v" type="E"/></struct>{SERVICE}"#
        )
    };
    vec![
        // Fields.
        case(
            "field added",
            f(r#"type="int32""#),
            m(r#"<field id="1" name="v" type="int32"/><field id="2" name="w" type="string"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "field removed, id reserved",
            m(r#"<field id="1" name="v" type="int32"/><field id="2" name="w" type="string"/>"#),
            m(r#"<field id="1" name="v" type="int32"/><reserved ids="2"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        Case {
            hazard: Some("the free id may be reused for another value"),
            ..case(
                "field removed, id not reserved",
                m(r#"<field id="1" name="v" type="int32"/><field id="2" name="w" type="string"/>"#),
                f(r#"type="int32""#),
                r#"{"v":7}"#,
                r#"{"v":7}"#,
            )
        },
        Case {
            hazard: Some("data written before the id was reserved is misread"),
            ..case(
                "reserved id reused",
                m(r#"<field id="1" name="v" type="int32"/><reserved ids="2"/>"#),
                m(r#"<field id="1" name="v" type="int32"/><field id="2" name="w" type="string"/>"#),
                r#"{"v":7}"#,
                r#"{"v":7}"#,
            )
        },
        case(
            "field moved to a new id, old id reserved",
            f(r#"type="int32""#),
            m(r#"<field id="2" name="v" type="int32"/><reserved ids="1"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "field renamed",
            f(r#"type="int32""#),
            m(r#"<field id="1" name="value" type="int32"/>"#),
            r#"{"v":7}"#,
            r#"{"value":7}"#,
        ),
        case(
            "int32 -> int64",
            f(r#"type="int32""#),
            f(r#"type="int64""#),
            r#"{"v":-2147483648}"#,
            r#"{"v":"-2147483648"}"#,
        ),
        case(
            "int64 -> int32",
            f(r#"type="int64""#),
            f(r#"type="int32""#),
            r#"{"v":"5000000000"}"#,
            r#"{"v":"5000000000"}"#,
        ),
        case(
            "uint32 -> uint64",
            f(r#"type="uint32""#),
            f(r#"type="uint64""#),
            r#"{"v":4294967295}"#,
            r#"{"v":"4294967295"}"#,
        ),
        case(
            "uint32 -> int64",
            f(r#"type="uint32""#),
            f(r#"type="int64""#),
            r#"{"v":4294967295}"#,
            r#"{"v":"4294967295"}"#,
        ),
        case(
            "int32 -> uint32",
            f(r#"type="int32""#),
            f(r#"type="uint32""#),
            r#"{"v":-5}"#,
            r#"{"v":-5}"#,
        ),
        case(
            "int32 -> uint64",
            f(r#"type="int32""#),
            f(r#"type="uint64""#),
            r#"{"v":-5}"#,
            r#"{"v":"-5"}"#,
        ),
        case(
            "uint64 -> int64",
            f(r#"type="uint64""#),
            f(r#"type="int64""#),
            r#"{"v":"18446744073709551615"}"#,
            r#"{"v":"18446744073709551615"}"#,
        ),
        case(
            "bool -> int32",
            f(r#"type="bool""#),
            f(r#"type="int32""#),
            r#"{"v":true}"#,
            r#"{"v":1}"#,
        ),
        case(
            "int32 -> bool",
            f(r#"type="int32""#),
            f(r#"type="bool""#),
            r#"{"v":2}"#,
            "",
        ),
        case(
            "int32 -> sint32",
            f(r#"type="int32""#),
            f(r#"type="sint32""#),
            r#"{"v":-5}"#,
            r#"{"v":-5}"#,
        ),
        case(
            "sint32 -> sint64",
            f(r#"type="sint32""#),
            f(r#"type="sint64""#),
            r#"{"v":-5}"#,
            r#"{"v":"-5"}"#,
        ),
        case(
            "fixed32 -> sfixed32",
            f(r#"type="fixed32""#),
            f(r#"type="sfixed32""#),
            r#"{"v":4294967295}"#,
            r#"{"v":4294967295}"#,
        ),
        case(
            "fixed32 -> fixed64",
            f(r#"type="fixed32""#),
            f(r#"type="fixed64""#),
            r#"{"v":7}"#,
            r#"{"v":"7"}"#,
        ),
        case(
            "float -> double",
            f(r#"type="float""#),
            f(r#"type="double""#),
            r#"{"v":1.5}"#,
            r#"{"v":1.5}"#,
        ),
        case(
            "int32 -> enum",
            f(r#"type="int32""#),
            f(r#"type="E""#),
            r#"{"v":1}"#,
            r#"{"v":"A"}"#,
        ),
        case(
            "enum -> int32",
            f(r#"type="E""#),
            f(r#"type="int32""#),
            r#"{"v":"B"}"#,
            r#"{"v":2}"#,
        ),
        case(
            "enum -> uint32",
            f(r#"type="E""#),
            f(r#"type="uint32""#),
            r#"{"v":-3}"#,
            r#"{"v":-3}"#,
        ),
        case(
            "string -> bytes",
            f(r#"type="string""#),
            f(r#"type="bytes""#),
            r#"{"v":"h\u00e9"}"#,
            r#"{"v":"aMOp"}"#,
        ),
        case(
            "bytes -> string",
            f(r#"type="bytes""#),
            f(r#"type="string""#),
            r#"{"v":"/w=="}"#,
            "",
        ),
        case(
            "singular -> optional",
            f(r#"type="int32""#),
            f(r#"type="int32" label="optional""#),
            r#"{"v":5}"#,
            r#"{"v":5}"#,
        ),
        case(
            "optional -> singular",
            f(r#"type="int32" label="optional""#),
            f(r#"type="int32""#),
            r#"{"v":0}"#,
            r#"{"v":0}"#,
        ),
        case(
            "singular with a default -> optional",
            f(r#"type="int32" default="10""#),
            f(r#"type="int32" label="optional""#),
            r#"{"v":10}"#,
            r#"{"v":10}"#,
        ),
        case(
            "default changed",
            f(r#"type="int32" default="10""#),
            f(r#"type="int32" default="20""#),
            r#"{"v":10}"#,
            r#"{"v":10}"#,
        ),
        case(
            "singular int32 -> repeated",
            f(r#"type="int32""#),
            f(r#"type="int32" label="repeated""#),
            r#"{"v":5}"#,
            r#"{"v":[5]}"#,
        ),
        case(
            "singular string -> repeated",
            f(r#"type="string""#),
            f(r#"type="string" label="repeated""#),
            r#"{"v":"x"}"#,
            r#"{"v":["x"]}"#,
        ),
        case(
            "singular struct -> repeated",
            f(r#"type="Inner""#),
            f(r#"type="Inner" label="repeated""#),
            r#"{"v":{"x":1}}"#,
            r#"{"v":[{"x":1}]}"#,
        ),
        case(
            "repeated -> singular",
            f(r#"type="string" label="repeated""#),
            f(r#"type="string""#),
            r#"{"v":["x","y"]}"#,
            "",
        ),
        case(
            "map key int32 -> int64",
            f(r#"type="map" key="int32" value="string""#),
            f(r#"type="map" key="int64" value="string""#),
            r#"{"v":{"-5":"x"}}"#,
            r#"{"v":{"-5":"x"}}"#,
        ),
        case(
            "map value int64 -> int32",
            f(r#"type="map" key="string" value="int64""#),
            f(r#"type="map" key="string" value="int32""#),
            r#"{"v":{"k":"5000000000"}}"#,
            r#"{"v":{"k":"5000000000"}}"#,
        ),
        case(
            "struct type renamed",
            f(r#"type="Inner""#),
            format!(
                r#"{ENUM}<struct name="Point"><field id="1" name="x" type="int32"/><field id="2" name="y" type="string"/></struct><struct name="M"><field id="1" name="v" type="Point"/></struct>{SERVICE}"#
            ),
            r#"{"v":{"x":1,"y":"a"}}"#,
            r#"{"v":{"x":1,"y":"a"}}"#,
        ),
        case(
            "struct type replaced by one of another shape",
            f(r#"type="Inner""#),
            format!(
                r#"{ENUM}{INNER}<struct name="Other"><field id="1" name="x" type="string"/></struct><struct name="M"><field id="1" name="v" type="Other"/></struct>{SERVICE}"#
            ),
            r#"{"v":{"x":1}}"#,
            "",
        ),
        case(
            "struct -> bytes",
            f(r#"type="Inner""#),
            f(r#"type="bytes""#),
            r#"{"v":{"x":1}}"#,
            r#"{"v":"CAE="}"#,
        ),
        case(
            "bytes -> struct",
            f(r#"type="bytes""#),
            f(r#"type="Inner""#),
            r#"{"v":"/w=="}"#,
            "",
        ),
        case("singular -> optional, value 0 (unset in both)", f(r#"type="int32""#), f(r#"type="int32" label="optional""#), r#"{"v":0}"#, r#"{}"#),
        case("field moved, old id taken by another field", f(r#"type="int32""#), m(r#"<field id="1" name="w" type="int32"/><field id="2" name="v" type="int32"/>"#), r#"{"v":7}"#, r#"{"v":7}"#),
        case("field moved into a removed field's id", m(r#"<field id="1" name="v" type="int32"/><field id="2" name="w" type="int32"/>"#), m(r#"<field id="2" name="v" type="int32"/><reserved ids="1"/>"#), r#"{"v":7,"w":500}"#, r#"{"v":7}"#),
        case("two fields swap names", m(r#"<field id="1" name="v" type="int32"/><field id="2" name="w" type="int32"/>"#), m(r#"<field id="1" name="w" type="int32"/><field id="2" name="v" type="int32"/>"#), r#"{"v":1,"w":2}"#, r#"{"v":1,"w":2}"#),
        Case {
            hazard: Some("a later version may reuse the id, and misread data written before the reservation"),
            ..case("reservation removed", m(r#"<field id="1" name="v" type="int32"/><reserved ids="2"/>"#), f(r#"type="int32""#), r#"{"v":7}"#, r#"{"v":7}"#)
        },
        case("sfixed64 -> int64", f(r#"type="sfixed64""#), f(r#"type="int64""#), r#"{"v":"-5"}"#, r#"{"v":"-5"}"#),
        case("sfixed64 -> fixed64", f(r#"type="sfixed64""#), f(r#"type="fixed64""#), r#"{"v":"-5"}"#, r#"{"v":"-5"}"#),
        case("map -> repeated entry struct", f(r#"type="map" key="string" value="int32""#),
            m(r#"<field id="1" name="v" type="Ent" label="repeated"/></struct><struct name="Ent"><field id="1" name="key" type="string"/><field id="2" name="value" type="int32"/>"#),
            r#"{"v":{"k":5}}"#, r#"{"v":[{"key":"k","value":5}]}"#),
        case("map -> repeated entry struct of another value type", f(r#"type="map" key="string" value="int32""#),
            m(r#"<field id="1" name="v" type="Ent" label="repeated"/></struct><struct name="Ent"><field id="1" name="key" type="string"/><field id="2" name="value" type="sint32"/>"#),
            r#"{"v":{"k":-5}}"#, r#"{"v":[{"key":"k","value":-5}]}"#),
        case("map -> repeated string", f(r#"type="map" key="string" value="int32""#), f(r#"type="string" label="repeated""#), r#"{"v":{"k":5}}"#, ""),
        case("repeated int32 -> repeated int64", f(r#"type="int32" label="repeated""#), f(r#"type="int64" label="repeated""#), r#"{"v":[-1,2147483647]}"#, r#"{"v":["-1","2147483647"]}"#),
        case("repeated struct -> singular struct", f(r#"type="Inner" label="repeated""#), f(r#"type="Inner""#), r#"{"v":[{"x":1},{"y":"a"}]}"#, ""),
        case("enum with a default -> int32 with the same default", f(r#"type="E" default="A""#), f(r#"type="int32" default="1""#), r#"{"v":"A"}"#, r#"{"v":1}"#),
        case("bool -> enum", f(r#"type="bool""#), f(r#"type="E""#), r#"{"v":true}"#, r#"{"v":"A"}"#),
        case("structs renamed through a cycle, a field type changed inside",
            r#"<struct name="Node"><field id="1" name="weight" type="int32"/><field id="2" name="edge" type="Edge" label="optional"/></struct><struct name="Edge"><field id="1" name="to" type="Node" label="optional"/></struct><struct name="M"><field id="1" name="v" type="Edge"/></struct><service name="S" id="100"><method name="Call" id="1" request="M" response="M"/></service>"#.to_owned(),
            r#"<struct name="Vertex"><field id="1" name="weight" type="sint32"/><field id="2" name="edge" type="Link" label="optional"/></struct><struct name="Link"><field id="1" name="to" type="Vertex" label="optional"/></struct><struct name="M"><field id="1" name="v" type="Link"/></struct><service name="S" id="100"><method name="Call" id="1" request="M" response="M"/></service>"#.to_owned(),
            r#"{"v":{"to":{"weight":-5}}}"#, r#"{"v":{"to":{"weight":-5}}}"#),
        case("struct replaced by an enum of the same name", f(r#"type="Inner""#),
            format!(r#"<enum name="Inner"><value name="ZERO" id="0"/></enum><struct name="M"><field id="1" name="v" type="Inner"/></struct>{SERVICE}"#),
            r#"{"v":{"x":1}}"#, ""),
        // Enum values.
        case(
            "enum value added",
            enum_m(r#"<value name="ZERO" id="0"/><value name="A" id="1"/>"#),
            enum_m(
                r#"<value name="ZERO" id="0"/><value name="A" id="1"/><value name="B" id="2"/>"#,
            ),
            r#"{"v":"A"}"#,
            r#"{"v":"A"}"#,
        ),
        case(
            "enum value renamed",
            enum_m(r#"<value name="ZERO" id="0"/><value name="A" id="1"/>"#),
            enum_m(r#"<value name="ZERO" id="0"/><value name="ALPHA" id="1"/>"#),
            r#"{"v":"A"}"#,
            r#"{"v":"ALPHA"}"#,
        ),
        case(
            "enum value renumbered, old number reserved",
            enum_m(r#"<value name="ZERO" id="0"/><value name="A" id="1"/>"#),
            enum_m(r#"<value name="ZERO" id="0"/><value name="A" id="2"/><reserved ids="1"/>"#),
            r#"{"v":"A"}"#,
            r#"{"v":"A"}"#,
        ),
        case(
            "enum value removed, number reserved",
            enum_m(
                r#"<value name="ZERO" id="0"/><value name="A" id="1"/><value name="B" id="2"/>"#,
            ),
            enum_m(r#"<value name="ZERO" id="0"/><value name="A" id="1"/><reserved ids="2"/>"#),
            r#"{"v":"B"}"#,
            r#"{"v":2}"#,
        ),
        case("enum values swap numbers", enum_m(r#"<value name="ZERO" id="0"/><value name="A" id="1"/><value name="B" id="2"/>"#), enum_m(r#"<value name="ZERO" id="0"/><value name="A" id="2"/><value name="B" id="1"/>"#), r#"{"v":"A"}"#, r#"{"v":"A"}"#),
        // Methods.
        case(
            "method added",
            svc(call),
            svc(&format!(
                r#"{call}<method name="Put" id="2" request="M" response="M"/>"#
            )),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "oneway method added",
            svc(call),
            svc(&format!(
                r#"{call}<method name="Post" id="2" request="M" oneway="true"/>"#
            )),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "method removed",
            svc(&format!(
                r#"{call}<method name="Put" id="2" request="M" response="M"/>"#
            )),
            svc(call),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "method renamed, same id",
            svc(call),
            svc(r#"<method name="Invoke" id="1" request="M" response="M"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "method id changed",
            svc(call),
            svc(r#"<method name="Call" id="2" request="M" response="M"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "unary -> oneway",
            svc(call),
            svc(r#"<method name="Call" id="1" request="M" oneway="true"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case("method ids swapped", svc(&format!(r#"{call}<method name="Put" id="2" request="M" response="M"/>"#)), svc(r#"<method name="Call" id="2" request="M" response="M"/><method name="Put" id="1" request="M" response="M"/>"#), r#"{"v":7}"#, r#"{"v":7}"#),
        case("service renamed, same id", svc(call), format!(r#"{ENUM}{INNER}<struct name="M"><field id="1" name="v" type="int32"/></struct><service name="T" id="100">{call}</service>"#), r#"{"v":7}"#, r#"{"v":7}"#),
        case(
            "deadline changed",
            svc(call),
            svc(r#"<method name="Call" id="1" request="M" response="M" timeout_ms="900"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "priority changed",
            svc(call),
            svc(r#"<method name="Call" id="1" request="M" response="M" priority="critical"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
        case(
            "retry changed",
            svc(call),
            svc(r#"<method name="Call" id="1" request="M" response="M" retry="idempotent"/>"#),
            r#"{"v":7}"#,
            r#"{"v":7}"#,
        ),
    ]
}

/// What a value or a call became in one direction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Equal,
    Lost,
    Misread,
    Rejected,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Equal => "equal",
            Outcome::Lost => "lost",
            Outcome::Misread => "misread",
            Outcome::Rejected => "rejected",
        }
    }
}

/// A version of a case, compiled and written out.
struct Version {
    compiled: Compiled,
    dir: PathBuf,
}

fn version(dir: &Path, name: &str, items: &str) -> Version {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let idl = dir.join("matrix.xml");
    std::fs::write(
        &idl,
        format!(r#"<svrkit package="matrix">{items}</svrkit>"#),
    )
    .unwrap();
    let mut b = Builder::new();
    b.emit_rerun_if_changed(false);
    let compiled = b
        .check(&[&idl])
        .unwrap_or_else(|e| panic!("{name}: {e}\n{items}"));
    for file in compiled.proto_files() {
        std::fs::write(dir.join(&file.name), &file.content).unwrap();
    }
    Version { compiled, dir }
}

fn codec(v: &Version) -> (DynamicCodec<'_>, svrkit_codegen::ir::StructId) {
    let c = DynamicCodec::new(v.compiled.schema());
    let id = c.struct_named("matrix.M").unwrap();
    (c, id)
}

/// Compares what a reader decoded with what it should have: the same value as the reader
/// writes it.
fn judge(got: &Json, want: &Json) -> Outcome {
    if got == want {
        return Outcome::Equal;
    }
    let (Json::Object(got), Json::Object(want)) = (got, want) else {
        return Outcome::Misread;
    };
    if got
        .keys()
        .any(|k| want.get(k) != got.get(k) && want.contains_key(k))
        || got.keys().any(|k| !want.contains_key(k))
    {
        Outcome::Misread
    } else {
        Outcome::Lost
    }
}

/// What one direction compares: the bytes the writer sends, and what the reader should
/// read from them (`None` when the reader's version cannot hold the value at all).
///
/// v1 sends its value `s1`. v2 sends its own `s2` when it can hold the value, and otherwise
/// what it read from v1 (as a relay would), so that v2 -> v1 says whether the value comes
/// back unchanged.
fn direction(
    w: &Version,
    r: &Version,
    sw: Option<&Json>,
    sr: Option<&Json>,
    relayed: &dyn Fn() -> Option<Vec<u8>>,
) -> (Vec<u8>, Option<Json>) {
    let (wc, wid) = codec(w);
    let (rc, rid) = codec(r);
    let bytes = match sw.and_then(|v| wc.encode(wid, v).ok()) {
        Some(b) => b,
        None => relayed().unwrap_or_default(),
    };
    let want = sr
        .and_then(|v| rc.encode(rid, v).ok())
        .map(|b| rc.decode(rid, &b).unwrap());
    (bytes, want)
}

fn judge_decoded(got: Option<Json>, want: Option<&Json>) -> Outcome {
    match (got, want) {
        (None, _) => Outcome::Rejected,
        (Some(got), Some(want)) => judge(&got, want),
        (Some(got), None) if got.as_object().is_some_and(|o| o.is_empty()) => Outcome::Lost,
        (Some(_), None) => Outcome::Misread,
    }
}

/// The bytes of `bytes` as `r` reads them with svrkit's codec.
fn svrkit_reads(r: &Version, bytes: &[u8]) -> Option<Json> {
    let (rc, rid) = codec(r);
    rc.decode(rid, bytes).ok()
}

/// The same through protobuf C++: protoc decodes the bytes with the reader's `.proto` and
/// encodes its reading again; svrkit then reads that back, to compare with the same want.
fn protoc_reads(protoc: &Path, r: &Version, bytes: &[u8]) -> Option<Json> {
    let text = protoc_run(protoc, &r.dir, "--decode", bytes)?;
    let known = drop_unknown(&String::from_utf8(text).unwrap());
    let again = protoc_run(protoc, &r.dir, "--encode", known.as_bytes())
        .unwrap_or_else(|| panic!("protoc cannot encode its own reading:\n{known}"));
    svrkit_reads(r, &again)
}

fn protoc_run(protoc: &Path, dir: &Path, mode: &str, input: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new(protoc)
        .arg(format!("-I{}", dir.display()))
        .arg(format!("{mode}=matrix.M"))
        .arg("matrix.proto")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    out.status.success().then_some(out.stdout)
}

/// protoc's text format without the fields it did not know (`3: 5`, `3 { ... }`), which
/// its own encoder would refuse and an application would not see.
fn drop_unknown(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = 0usize;
    for line in text.lines() {
        let t = line.trim_start();
        if skipping > 0 {
            skipping += t.ends_with('{') as usize;
            skipping -= (t == "}") as usize;
            continue;
        }
        let unknown = t
            .split([':', ' '])
            .next()
            .is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
        if unknown {
            skipping += t.ends_with('{') as usize;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// For a change of services: a call each version makes to a server of the other, as the
/// server's method table decides it: by id, reaching the method of the caller's name
/// (`equal`), another one (`misread`: the server has that name at another id), or none or
/// one of another kind (`rejected`; `tests/rpc_mixed_versions.rs` runs that for real).
fn calls(caller: &Version, server: &Version) -> Option<Outcome> {
    let (c, s) = (caller.compiled.schema(), server.compiled.schema());
    let mut worst = None;
    for cs in &c.services {
        for cm in &cs.methods {
            let methods = || {
                s.services
                    .iter()
                    .filter(|ss| ss.id == cs.id)
                    .flat_map(|ss| &ss.methods)
            };
            let hosted = methods().find(|sm| sm.id == cm.id);
            let named = methods().find(|sm| sm.name == cm.name);
            let outcome = match (hosted, named) {
                // The id reaches another method than the one of that name.
                (Some(sm), Some(nm)) if sm.id != nm.id => Outcome::Misread,
                (Some(sm), _) if sm.response.is_some() == cm.response.is_some() => Outcome::Equal,
                _ => Outcome::Rejected,
            };
            if outcome != Outcome::Equal {
                worst = Some(outcome);
            }
        }
    }
    worst
}

struct Row {
    change: &'static str,
    verdict: String,
    svrkit: [Outcome; 2],
    protoc: Option<[Outcome; 2]>,
    hazard: Option<&'static str>,
}

fn run(protoc: Option<&Path>) -> Vec<Row> {
    let root = std::env::temp_dir().join(format!("svrkit-compat-matrix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut rows = Vec::new();
    for (i, c) in cases().into_iter().enumerate() {
        let dir = root.join(i.to_string());
        let (v1, v2) = (version(&dir, "v1", &c.v1), version(&dir, "v2", &c.v2));
        let s1: Json = serde_json::from_str(c.s1).unwrap();
        let s2: Option<Json> = (!c.s2.is_empty()).then(|| serde_json::from_str(c.s2).unwrap());
        let changes = compat::compare(&v1.compiled, &v2.compiled);
        let worst = changes
            .iter()
            .map(|c| c.severity)
            .min()
            .unwrap_or(Severity::Compatible);
        let verdict = if changes.is_empty() {
            "none".to_owned()
        } else {
            worst.to_string()
        };
        let methods = [calls(&v2, &v1), calls(&v1, &v2)];
        let (fwd_bytes, fwd_want) = direction(&v1, &v2, Some(&s1), s2.as_ref(), &|| None);
        let reads = |read: &dyn Fn(&Version, &[u8]) -> Option<Json>| -> [Outcome; 2] {
            let fwd = read(&v2, &fwd_bytes);
            let relayed = || {
                let (c2, id2) = codec(&v2);
                fwd.as_ref().and_then(|j| c2.encode(id2, j).ok())
            };
            let (back_bytes, back_want) = direction(&v2, &v1, s2.as_ref(), Some(&s1), &relayed);
            [
                methods[0].unwrap_or_else(|| judge_decoded(fwd.clone(), fwd_want.as_ref())),
                methods[1]
                    .unwrap_or_else(|| judge_decoded(read(&v1, &back_bytes), back_want.as_ref())),
            ]
        };
        rows.push(Row {
            change: c.change,
            verdict,
            svrkit: reads(&svrkit_reads),
            protoc: protoc.map(|p| reads(&|r, b| protoc_reads(p, r, b))),
            hazard: c.hazard,
        });
    }
    let _ = std::fs::remove_dir_all(&root);
    rows
}

fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "<!-- Written by `SVRKIT_BLESS=1 cargo test -p svrkit-tests --test compat_matrix`; checked by the same test. -->\n\
         # `svrkit compat` against the wire\n\n\
         Each row is one change from v1 to v2 (the cases are in `tests/compat_matrix.rs`). The verdict is\n\
         `svrkit compat`'s worst; the outcomes are what a value of v1's range became when written by one\n\
         version and read by the other, by svrkit's codec and by protobuf C++ (protoc). For a method, the\n\
         outcome is the call's: `rejected` is UNIMPLEMENTED at the caller, `misread` a call that\n         reaches another method.\n\n\
         | change | verdict | svrkit v1 -> v2 | svrkit v2 -> v1 | protobuf C++ v1 -> v2 | protobuf C++ v2 -> v1 | wire-breaking although equal, because |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let p = r.protoc.map_or(["-", "-"], |p| [p[0].word(), p[1].word()]);
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.change,
            r.verdict,
            r.svrkit[0].word(),
            r.svrkit[1].word(),
            p[0],
            p[1],
            r.hazard.unwrap_or("")
        )
        .unwrap();
    }
    out
}

#[test]
fn compat_verdicts_match_what_happens_on_the_wire() {
    let protoc = std::env::var_os("PROTOC")
        .map(PathBuf::from)
        .or_else(|| external::program("protoc"));
    let protoc = external::PROTOC.or_skip(protoc);
    let rows = run(protoc.as_deref());

    let mut wrong = Vec::new();
    for r in &rows {
        let outcomes = r.svrkit.iter().chain(r.protoc.iter().flatten());
        let all_equal = outcomes.clone().all(|&o| o == Outcome::Equal);
        let wire = r.verdict == "wire-breaking";
        if !all_equal && !wire {
            wrong.push(format!(
                "{}: data is lost or misread, yet compat says {}",
                r.change, r.verdict
            ));
        }
        if all_equal && wire && r.hazard.is_none() {
            wrong.push(format!(
                "{}: compat says wire-breaking, yet every value crosses",
                r.change
            ));
        }
        if r.hazard.is_some() && !wire {
            wrong.push(format!(
                "{}: a hazard compat does not call wire-breaking",
                r.change
            ));
        }
        if let Some(p) = r.protoc
            && p != r.svrkit
        {
            wrong.push(format!(
                "{}: svrkit reads {:?}, protobuf C++ {:?}",
                r.change, r.svrkit, p
            ));
        }
    }

    let table = render(&rows);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat_matrix.md");
    if std::env::var_os("SVRKIT_BLESS").is_some() {
        std::fs::write(&path, &table).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    // Without protoc, its columns are `-` here: compare the rest.
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                if protoc.is_none() && cells.len() == 7 {
                    [&cells[..4], &cells[6..]].concat().join(" | ")
                } else {
                    l.to_owned()
                }
            })
            .collect()
    };
    assert!(wrong.is_empty(), "{}\n\n{table}", wrong.join("\n"));
    assert_eq!(
        strip(&table),
        strip(&committed),
        "the table differs from tests/compat_matrix.md (SVRKIT_BLESS=1 rewrites it):\n{table}"
    );
}
