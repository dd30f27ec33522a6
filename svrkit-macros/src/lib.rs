//! `idl!`: compiles an svrkit XML IDL file and expands the generated code in place.
//!
//! ```ignore
//! svrkit_macros::idl!("idl/im/message.xml");
//!
//! let msg = im::message::Message { seq: 1, ..Default::default() };
//! ```
//!
//! The path is relative to the crate root (`CARGO_MANIFEST_DIR`) or, if no file is there, to
//! the directory of the source file that calls the macro. Every package the file defines or
//! includes becomes a module at the path its name spells (`im::message`, `im::common`).
//! Optional include directories follow: `idl!("a.xml", include = "idl", include = "vendor")`.
//!
//! IDL errors become one `compile_error!` carrying the rendered report (file:line:column,
//! the source line and a caret), so they read as they do from the `svrkit` CLI.
//!
//! The macro is a thin front over `svrkit-codegen`, the same library build scripts and the
//! CLI use; prefer a build script for large schemas (the macro recompiles the IDL on every
//! build of the calling crate).

use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

struct Input {
    path: LitStr,
    include_dirs: Vec<LitStr>,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Input> {
        let path: LitStr = input.parse()?;
        let mut include_dirs = Vec::new();
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: syn::Ident = input.parse()?;
            if key != "include" {
                return Err(syn::Error::new(key.span(), "expected `include = \"dir\"`"));
            }
            input.parse::<Token![=]>()?;
            include_dirs.push(input.parse()?);
        }
        Ok(Input { path, include_dirs })
    }
}

/// Compiles an IDL file and expands to the generated modules. See the crate docs.
#[proc_macro]
pub fn idl(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = syn::parse_macro_input!(input as Input);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Where relative paths resolve: the crate root if the file is there, else the directory of
/// the calling source file.
fn base_dir(relative: &Path) -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    if manifest.join(relative).is_file() {
        return manifest;
    }
    proc_macro::Span::call_site()
        .local_file()
        .and_then(|f| f.parent().map(Path::to_path_buf))
        .filter(|dir| dir.join(relative).is_file())
        .unwrap_or(manifest)
}

fn expand(input: &Input) -> syn::Result<TokenStream> {
    let relative = PathBuf::from(input.path.value());
    let base = base_dir(&relative);
    let mut builder = svrkit_codegen::Builder::new();
    builder.emit_rerun_if_changed(false).base_dir(&base);
    for dir in &input.include_dirs {
        builder.include_dir(base.join(dir.value()));
    }
    let compiled = builder.check(&[&relative]).map_err(|e| {
        let message = match &e {
            svrkit_codegen::Error::Idl(report) => {
                format!("errors in the IDL:\n\n{}", report.render(false))
            }
            other => other.to_string(),
        };
        syn::Error::new(input.path.span(), message)
    })?;
    let modules = compiled.rust_modules();
    // Proc macros cannot declare file dependencies; `include_bytes!` makes cargo rebuild the
    // caller when an IDL file (or one it includes) changes.
    let tracked = compiled.files_read().iter().map(|p| {
        let p = p.display().to_string();
        quote!(
            const _: &[u8] = include_bytes!(#p);
        )
    });
    Ok(quote! {
        #(#tracked)*
        #modules
    })
}
