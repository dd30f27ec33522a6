svrkit_macros::idl!("chat.xml", includes = "idl");

fn main() {}
