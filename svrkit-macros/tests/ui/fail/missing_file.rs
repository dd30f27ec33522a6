svrkit_macros::idl!("no_such_file.xml");

fn main() {}
