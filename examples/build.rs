//! The build-script way to use svrkit: compile the IDL into `OUT_DIR` on every build where it
//! changed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    svrkit_codegen::Builder::new()
        .include_dir("../idl")
        .compile(&["../idl/im/message.xml", "../idl/hello/hello.xml"])?;
    Ok(())
}
