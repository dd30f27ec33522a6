svrkit_macros::idl!("bad_type.xml");

fn main() {}
