//! `svrkit call`: one request built from JSON, its response printed as JSON.

use std::process::ExitCode;
use std::time::Duration;

use svrkit_runtime::codec::Encoded;
use svrkit_runtime::{CallOptions, Channel};

use crate::Failure;
use crate::target::{Target, channel_options};

pub(crate) fn run(
    target: &Target,
    addr: &str,
    json: Option<&str>,
    timeout: Option<Duration>,
) -> Result<ExitCode, Failure> {
    let body = target.request_bytes(json)?;
    let timeout = target.timeout(timeout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Message(format!("cannot start the async runtime: {e}")))?;
    let method = target.descriptor;
    let result = runtime.block_on(async {
        let channel = Channel::lazy([addr], channel_options("svrkit-call", 1));
        let request = Encoded(body.into());
        let options = CallOptions::timeout(timeout);
        if method.oneway {
            channel
                .call_oneway(method, &request, &options)
                .await
                .map(|()| None)
        } else {
            channel
                .call::<Encoded, Encoded>(method, &request, &options)
                .await
                .map(Some)
        }
    });
    match (result, target.response) {
        (Ok(Some(response)), Some(id)) => {
            let json = target.codec().decode(id, &response.0).map_err(|e| {
                Failure::Message(format!("bad response from {}: {e}", method.full_name))
            })?;
            let text = serde_json::to_string_pretty(&json).expect("JSON values print");
            crate::print(&format!("{text}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        (Ok(_), _) => {
            note!("sent (oneway: {} has no response)", method.full_name);
            Ok(ExitCode::SUCCESS)
        }
        (Err(status), _) => Err(Failure::Message(format!(
            "{} {}",
            method.full_name,
            status_line(&status)
        ))),
    }
}

/// `failed with UNIMPLEMENTED: ...`, with the code's number where it has no name.
pub(crate) fn status_line(status: &svrkit_runtime::Status) -> String {
    let code = status.code();
    let name = code
        .name()
        .map_or_else(|| format!("code {}", code.0), str::to_ascii_uppercase);
    // The message is the server's: shown with its control characters escaped, so that it
    // stays one line and cannot drive the terminal.
    let mut message = String::with_capacity(status.message().len());
    for c in status.message().chars() {
        // Control characters, and the invisible ones that reorder or hide text.
        let hidden = matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || hidden {
            message.extend(c.escape_default());
        } else {
            message.push(c);
        }
    }
    format!("failed with {name}: {message}")
}
