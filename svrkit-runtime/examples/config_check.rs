//! Checks a service configuration file and prints what it means, or the first mistake.
//!
//! `cargo run -p svrkit-runtime --example config_check -- svrkit.toml`

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: config_check <file.toml>");
        return std::process::ExitCode::from(2);
    };
    match svrkit_runtime::Config::from_file(&path) {
        Ok(config) => {
            println!("{config:#?}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
