//! Writes a large IDL for timing the compiler: 1,000 structs of ten fields each (every kind
//! of type, cross references between structs), 20 enums and 200 services of five methods.
//!
//! ```sh
//! cargo run --release -p svrkit-codegen --example large_idl -- target/large.xml
//! time target/release/svrkit generate target/large.xml --out target/large
//! ```

use std::fmt::Write as _;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "large.xml".to_owned());
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svrkit package=\"large.schema\">\n",
    );
    for e in 0..20 {
        let _ = writeln!(xml, "  <enum name=\"Kind{e}\">");
        for v in 0..8 {
            let _ = writeln!(xml, "    <value name=\"K{e}_V{v}\" id=\"{v}\"/>");
        }
        xml.push_str("  </enum>\n");
    }
    for s in 0..1000 {
        let _ = writeln!(
            xml,
            "  <struct name=\"Struct{s}\">\n    <doc>Struct number {s}.</doc>"
        );
        let _ = writeln!(xml, "    <field id=\"1\" name=\"id\" type=\"uint64\"/>");
        let _ = writeln!(xml, "    <field id=\"2\" name=\"name\" type=\"string\"/>");
        let _ = writeln!(xml, "    <field id=\"3\" name=\"payload\" type=\"bytes\"/>");
        let _ = writeln!(
            xml,
            "    <field id=\"4\" name=\"kind\" type=\"Kind{}\" default=\"K{}_V1\"/>",
            s % 20,
            s % 20
        );
        let _ = writeln!(
            xml,
            "    <field id=\"5\" name=\"score\" type=\"double\" label=\"optional\"/>"
        );
        let _ = writeln!(
            xml,
            "    <field id=\"6\" name=\"tags\" type=\"string\" label=\"repeated\"/>"
        );
        let _ = writeln!(
            xml,
            "    <field id=\"7\" name=\"counts\" type=\"sint64\" label=\"repeated\"/>"
        );
        let _ = writeln!(
            xml,
            "    <field id=\"8\" name=\"attrs\" type=\"map\" key=\"string\" value=\"int32\"/>"
        );
        if s > 0 {
            let _ = writeln!(
                xml,
                "    <field id=\"9\" name=\"prev\" type=\"Struct{}\" label=\"optional\"/>",
                s - 1
            );
            let _ = writeln!(
                xml,
                "    <field id=\"10\" name=\"children\" type=\"Struct{}\" label=\"repeated\"/>",
                s / 2
            );
        }
        xml.push_str("  </struct>\n");
    }
    for v in 0..200 {
        let _ = writeln!(xml, "  <service name=\"Service{v}\" id=\"{}\">", v + 1);
        for m in 0..5 {
            let req = (v * 5 + m) % 1000;
            let _ = writeln!(
                xml,
                "    <method name=\"Method{m}\" id=\"{}\" request=\"Struct{req}\" response=\"Struct{}\" timeout_ms=\"300\" retry=\"idempotent\"/>",
                m + 1,
                (req + 1) % 1000
            );
        }
        xml.push_str("  </service>\n");
    }
    xml.push_str("</svrkit>\n");
    std::fs::write(&path, xml)?;
    eprintln!("wrote {path}");
    Ok(())
}
