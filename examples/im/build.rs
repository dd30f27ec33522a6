//! Compiles the messaging backend's IDL (`idl/im/*.xml`) into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    svrkit_codegen::Builder::new()
        .include_dir("../../idl")
        .compile(&[
            "../../idl/im/account.xml",
            "../../idl/im/seq.xml",
            "../../idl/im/msg.xml",
            "../../idl/im/spam.xml",
            "../../idl/im/group.xml",
            "../../idl/im/gateway.xml",
        ])?;
    Ok(())
}
