//! Reads the requested IDL files and, transitively, everything they include.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::ast;
use crate::diag::Diagnostics;
use crate::error;
use crate::parse;
use crate::span::{FileId, SourceMap};

/// The parsed files of one compilation.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Parsed files, each after the files it includes.
    pub(crate) files: Vec<ast::File>,
    /// Every file read, for `cargo:rerun-if-changed`.
    pub(crate) read: Vec<PathBuf>,
    /// Whether every file parsed and every include was found: only then can the checker run
    /// after errors (missing attributes, unknown elements) without reporting their
    /// consequences as errors of their own.
    pub(crate) complete: bool,
}

/// Where a file is in the loader's walk.
enum State {
    /// Being loaded: an include that reaches it again is a cycle.
    InProgress(FileId),
    /// Loaded (or failed to parse, in which case it has no entry in `files`).
    Done(FileId),
}

struct Loader<'a> {
    include_dirs: &'a [PathBuf],
    sources: &'a mut SourceMap,
    diags: &'a mut Diagnostics,
    seen: HashMap<PathBuf, State>,
    /// The include chain being walked, for cycle messages.
    chain: Vec<String>,
    out: Loaded,
}

/// Loads `roots` and their includes. A root that cannot be read is an I/O error (not an IDL
/// error: there is no IDL to point at); everything else is reported to `diags`.
///
/// # Errors
/// When a root file cannot be read.
pub(crate) fn load(
    base_dir: Option<&Path>,
    roots: &[PathBuf],
    include_dirs: &[PathBuf],
    sources: &mut SourceMap,
    diags: &mut Diagnostics,
) -> Result<Loaded, (PathBuf, io::Error)> {
    let mut loader = Loader {
        include_dirs,
        sources,
        diags,
        seen: HashMap::new(),
        chain: Vec::new(),
        out: Loaded {
            complete: true,
            ..Loaded::default()
        },
    };
    for root in roots {
        // Relative roots resolve against `base_dir` but keep their short name in messages.
        let actual = match base_dir {
            Some(base) if root.is_relative() => base.join(root),
            _ => root.clone(),
        };
        let canonical = actual.canonicalize().map_err(|e| (root.clone(), e))?;
        let text = std::fs::read_to_string(&actual).map_err(|e| (root.clone(), e))?;
        loader.load_file(root.display().to_string(), canonical, text);
    }
    Ok(loader.out)
}

impl Loader<'_> {
    fn load_file(&mut self, name: String, canonical: PathBuf, text: String) -> Option<FileId> {
        if let Some(State::Done(id) | State::InProgress(id)) = self.seen.get(&canonical) {
            return Some(*id);
        }
        self.out.read.push(canonical.clone());
        let id = self.sources.add(name.clone(), text);
        self.seen.insert(canonical.clone(), State::InProgress(id));
        self.chain.push(name.clone());
        let parsed = parse::parse_file(id, self.sources.text(id), self.diags);
        if parsed
            .as_ref()
            .is_none_or(|file: &ast::File| file.include_dropped)
        {
            self.out.complete = false;
        }
        if let Some(mut file) = parsed {
            let dir = canonical
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let shown_dir = Path::new(&name)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            for include in &mut file.includes {
                include.resolved = self.load_include(include, &dir, &shown_dir);
                if include.resolved.is_none() {
                    self.out.complete = false;
                }
            }
            self.out.files.push(file);
        }
        self.chain.pop();
        self.seen.insert(canonical, State::Done(id));
        Some(id)
    }

    fn load_include(
        &mut self,
        include: &ast::Include,
        dir: &Path,
        shown_dir: &Path,
    ) -> Option<FileId> {
        let wanted = Path::new(&include.file.value);
        // Relative to the including file first, then each include dir in order.
        let mut candidates = vec![(dir.join(wanted), shown_dir.join(wanted))];
        candidates.extend(
            self.include_dirs
                .iter()
                .map(|d| (d.join(wanted), d.join(wanted))),
        );
        let Some((path, shown)) = candidates.iter().find(|(p, _)| p.is_file()) else {
            let looked: Vec<String> = candidates
                .iter()
                .map(|(_, s)| s.display().to_string())
                .collect();
            self.diags
                .push(error::include_missing(&include.file, &looked));
            return None;
        };
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if let Some(State::InProgress(_)) = self.seen.get(&canonical) {
            let mut chain = self.chain.clone();
            chain.push(shown.display().to_string());
            self.diags.push(error::include_cycle(&include.file, &chain));
            return None;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => self.load_file(shown.display().to_string(), canonical, text),
            Err(e) => {
                self.diags
                    .push(error::include_unreadable(&include.file, &e));
                None
            }
        }
    }
}
