//! Resolves and validates parsed files into the checked [IR](crate::ir).
//!
//! Runs in passes, each reporting every problem it finds: packages, then declarations (so
//! that any type can refer to any other), then enums (struct defaults name their values),
//! structs, services and finally struct cycles. A [`Schema`] comes out only when no pass
//! reported an error.

mod cycles;
mod enums;
mod names;
mod services;
mod structs;
mod values;

use std::collections::HashMap;

use crate::ast;
use crate::diag::Diagnostics;
use crate::error;
use crate::ident;
use crate::ir::{EnumId, Item, Package, PackageId, Schema, StructId, ValueType};
use crate::span::{FileId, SourceMap, Span};

/// A named type, as found by name lookup.
#[derive(Clone, Copy, Debug)]
enum Decl {
    Struct(StructId),
    Enum(EnumId),
}

/// Checks `files` (each after those it includes) and builds the schema.
///
/// Returns `None` when any error was reported to `diags`.
pub(crate) fn check(
    files: &[ast::File],
    sources: &SourceMap,
    diags: &mut Diagnostics,
) -> Option<Schema> {
    let mut checker = Checker {
        sources,
        diags,
        schema: Schema {
            packages: Vec::new(),
            structs: Vec::new(),
            enums: Vec::new(),
            services: Vec::new(),
        },
        packages: HashMap::new(),
        file_package: HashMap::new(),
        visible: HashMap::new(),
        types: HashMap::new(),
        generated_names: HashMap::new(),
    };
    checker.packages(files);
    let decls = checker.declare(files);
    for (file, item, decl) in &decls {
        if let (ast::Item::Enum(e), Decl::Enum(id)) = (&files[*file].items[*item], decl) {
            checker.enum_body(e, *id);
        }
    }
    checker.enum_value_scopes(files);
    for (file, item, decl) in &decls {
        if let (ast::Item::Struct(s), Decl::Struct(id)) = (&files[*file].items[*item], decl) {
            checker.struct_body(&files[*file], s, *id);
        }
    }
    checker.services(files);
    checker.cycles();
    if checker.diags.has_errors() {
        None
    } else {
        Some(checker.schema)
    }
}

struct Checker<'a> {
    sources: &'a SourceMap,
    diags: &'a mut Diagnostics,
    schema: Schema,
    packages: HashMap<String, PackageId>,
    file_package: HashMap<FileId, PackageId>,
    /// Packages whose types a file may name: its own and those of the files it includes.
    visible: HashMap<FileId, Vec<PackageId>>,
    /// Named types by full name.
    types: HashMap<String, Decl>,
    /// Rust names each package will define, for collision checks: name -> (IDL name, span).
    generated_names: HashMap<(PackageId, String), (String, Span)>,
}

impl Checker<'_> {
    /// Registers each file's package.
    fn packages(&mut self, files: &[ast::File]) {
        for file in files {
            names::check_package_name(&file.package, self.diags);
            let next = PackageId(self.schema.packages.len());
            let id = *self
                .packages
                .entry(file.package.value.clone())
                .or_insert(next);
            if id == next {
                self.schema.packages.push(Package {
                    name: file.package.value.clone(),
                    files: Vec::new(),
                    doc: Vec::new(),
                    items: Vec::new(),
                });
            }
            let package = &mut self.schema.packages[id.0];
            package.files.push(self.sources.name(file.id).to_owned());
            package.doc.extend(values::doc(&file.doc));
            self.file_package.insert(file.id, id);
        }
        for file in files {
            let mut visible = vec![self.file_package[&file.id]];
            for include in &file.includes {
                if let Some(pkg) = include.resolved.and_then(|f| self.file_package.get(&f))
                    && !visible.contains(pkg)
                {
                    visible.push(*pkg);
                }
            }
            self.visible.insert(file.id, visible);
        }
    }

    /// Creates an IR entry for every struct and enum so that bodies can refer to any of them.
    fn declare(&mut self, files: &[ast::File]) -> Vec<(usize, usize, Decl)> {
        let mut decls = Vec::new();
        for (fi, file) in files.iter().enumerate() {
            let package = self.file_package[&file.id];
            for (ii, item) in file.items.iter().enumerate() {
                match item {
                    ast::Item::Struct(s) => {
                        let id = StructId(self.schema.structs.len());
                        if self.declare_type(package, &s.name, Decl::Struct(id)) {
                            self.schema.structs.push(structs::declare(
                                package,
                                self.full_name(package, &s.name.value),
                                s,
                            ));
                            self.schema.packages[package.0].items.push(Item::Struct(id));
                            decls.push((fi, ii, Decl::Struct(id)));
                        }
                    }
                    ast::Item::Enum(e) => {
                        let id = EnumId(self.schema.enums.len());
                        if self.declare_type(package, &e.name, Decl::Enum(id)) {
                            self.schema.enums.push(enums::declare(
                                package,
                                self.full_name(package, &e.name.value),
                                e,
                            ));
                            self.schema.packages[package.0].items.push(Item::Enum(id));
                            decls.push((fi, ii, Decl::Enum(id)));
                        }
                    }
                    ast::Item::Service(s) => {
                        if names::check_type_name(&s.name, "service", self.diags) {
                            // The trait is spelled as Rust needs (`Self` -> `Self_`); the
                            // client and server append to the name as written.
                            let trait_name = ident::rust_name(&s.name.value);
                            self.claim_name(package, trait_name, &s.name);
                            for suffix in ["Client", "Server"] {
                                let rust = format!("{}{suffix}", s.name.value);
                                self.claim_name(package, rust, &s.name);
                            }
                        }
                    }
                }
            }
        }
        decls
    }

    fn full_name(&self, package: PackageId, name: &str) -> String {
        format!("{}.{name}", self.schema.packages[package.0].name)
    }

    fn declare_type(&mut self, package: PackageId, name: &ast::Text, decl: Decl) -> bool {
        let what = if matches!(decl, Decl::Struct(_)) {
            "struct"
        } else {
            "enum"
        };
        // A badly cased name is reported but still declared, so that its body is checked too
        // and references to it do not cascade into "unknown type" errors.
        names::check_type_name(name, what, self.diags);
        if !self.claim_name(package, ident::rust_name(&name.value), name) {
            return false;
        }
        self.types
            .insert(self.full_name(package, &name.value), decl);
        true
    }

    /// Records that `package` will define the Rust item `rust`, generated from `idl`.
    fn claim_name(&mut self, package: PackageId, rust: String, idl: &ast::Text) -> bool {
        match self.generated_names.get(&(package, rust.clone())) {
            Some((first_idl, first_span)) if *first_idl == idl.value => {
                self.diags.push(error::duplicate_type(idl, *first_span));
                false
            }
            Some((first_idl, first_span)) => {
                self.diags.push(error::rust_name_collision(
                    idl,
                    &rust,
                    first_idl,
                    *first_span,
                ));
                false
            }
            None => {
                self.generated_names
                    .insert((package, rust), (idl.value.clone(), idl.span));
                true
            }
        }
    }

    /// Resolves a type name as written in `file`: a scalar, a bare name of the file's package,
    /// or `package.Name` of a visible package.
    fn resolve(&mut self, file: FileId, name: &ast::Text) -> Option<ValueType> {
        if let Some(scalar) = crate::ir::Scalar::from_name(&name.value) {
            return Some(ValueType::Scalar(scalar));
        }
        let visible = self.visible.get(&file).cloned().unwrap_or_default();
        let own = visible[0];
        let full = match name.value.rsplit_once('.') {
            Some((pkg, _)) => {
                let pkg_id = self.packages.get(pkg).copied();
                if pkg_id.is_none_or(|p| !visible.contains(&p)) {
                    self.diags.push(error::package_not_included(name, pkg));
                    return None;
                }
                name.value.clone()
            }
            None => self.full_name(own, &name.value),
        };
        match self.types.get(&full) {
            Some(Decl::Struct(id)) => Some(ValueType::Struct(*id)),
            Some(Decl::Enum(id)) => Some(ValueType::Enum(*id)),
            None => {
                let candidates = self.type_candidates(&visible, own);
                self.diags.push(error::unknown_type(name, &candidates));
                None
            }
        }
    }

    /// Every type name a file could write, for "did you mean".
    fn type_candidates(&self, visible: &[PackageId], own: PackageId) -> Vec<String> {
        let mut names: Vec<String> = crate::ir::Scalar::ALL
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
        names.push("map".to_owned());
        for full in self.types.keys() {
            let (pkg, bare) = full.rsplit_once('.').unwrap_or(("", full));
            match self.packages.get(pkg) {
                Some(p) if *p == own => names.push(bare.to_owned()),
                Some(p) if visible.contains(p) => names.push(full.clone()),
                _ => {}
            }
        }
        names.sort();
        names
    }
}
