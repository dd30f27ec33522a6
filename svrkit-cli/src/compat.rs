//! `svrkit compat`: two versions of an IDL, or the working tree's IDL files against a git
//! revision, compared for a release gate.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use svrkit_codegen::compat::{self, Acknowledged, Options};
use svrkit_codegen::{Builder, Compiled};

use crate::{Failure, print};

/// What `compat` was asked.
pub(crate) struct Args {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) against: Option<String>,
    pub(crate) packages: Vec<(String, String)>,
    pub(crate) acknowledged: Option<PathBuf>,
    pub(crate) strict: bool,
}

pub(crate) fn run(b: &mut Builder, includes: &[PathBuf], args: Args) -> Result<ExitCode, Failure> {
    let mut opts = Options::default();
    for (old, new) in &args.packages {
        opts = opts.package(old, new);
    }
    let (old, new, rename): (Compiled, Compiled, Option<(String, String)>) = match &args.against {
        None => {
            let [old, new] = args.files.as_slice() else {
                return Err(Failure::Message(format!(
                    "compat takes two files, the old version and the new one (or --against <git-ref> and the files to compare); got {}",
                    args.files.len()
                )));
            };
            (b.check(&[old])?, b.check(&[new])?, None)
        }
        Some(rev) => {
            let tree = OldTree::export(rev)?;
            let new = b.check(&args.files)?;
            let mut old_files = Vec::new();
            let mut dirs = Vec::new();
            for f in &args.files {
                let old = tree.path_of(f)?;
                if let Some(dir) = old.parent()
                    && !dirs.iter().any(|d| d == dir)
                {
                    dirs.push(dir.to_owned());
                }
                if old.exists() {
                    old_files.push(old);
                } else {
                    note!(
                        "note: {} is new since {rev}; everything in it counts as added",
                        f.display()
                    );
                }
            }
            // A file of these directories that is gone (deleted, or renamed) is compared too:
            // what it declared was removed, or moved to another file.
            for dir in &dirs {
                for old in tree.gone_from(dir) {
                    note!(
                        "note: {} was removed since {rev}; what it declared counts as removed unless another file declares it",
                        tree.shown(&old)
                    );
                    old_files.push(old);
                }
            }
            let mut ob = Builder::new();
            ob.emit_rerun_if_changed(false);
            for dir in includes {
                ob.include_dir(tree.path_of(dir).unwrap_or_else(|_| dir.clone()));
            }
            let old = if old_files.is_empty() {
                None
            } else {
                Some(ob.check(&old_files).map_err(|e| {
                    Failure::Message(format!(
                        "the version at {rev} does not check, so there is nothing to compare with:\n{}",
                        e.to_string().replace(&tree.dir.display().to_string(), rev)
                    ))
                })?)
            };
            match old {
                Some(old) => (
                    old,
                    new,
                    Some((tree.dir.display().to_string(), format!("{rev}:"))),
                ),
                None => {
                    print(&format!(
                        "nothing to compare: every file is new since {rev}\n"
                    ))?;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    let mut changes = compat::compare_with(&old, &new, &opts);
    if let Some((dir, rev)) = rename {
        for c in &mut changes {
            if let Some(rest) = c.location.strip_prefix(&dir) {
                c.location = format!("{rev}{}", rest.trim_start_matches('/'));
            }
        }
    }
    if let Some(path) = &args.acknowledged {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Message(format!("{}: {e}", path.display())))?;
        let ack = Acknowledged::parse(&text)
            .map_err(|e| Failure::Message(format!("{}: {e}", path.display())))?;
        for stale in ack.apply(&mut changes) {
            note!("note: {}: {stale} matches no change", path.display());
        }
    }
    print(&compat::render(&changes))?;
    Ok(if compat::fails(&changes, args.strict) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The IDL files of a git revision, written out to a temporary directory (removed on drop)
/// so that the compiler reads them, and their includes, as it reads the working tree's.
struct OldTree {
    root: PathBuf,
    dir: PathBuf,
}

fn git(args: &[&str], cwd: &Path) -> Result<Vec<u8>, Failure> {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(|e| Failure::Message(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(Failure::Message(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

impl OldTree {
    fn export(rev: &str) -> Result<OldTree, Failure> {
        let cwd = std::env::current_dir()
            .map_err(|e| Failure::Message(format!("no current directory: {e}")))?;
        let root = PathBuf::from(
            String::from_utf8_lossy(&git(&["rev-parse", "--show-toplevel"], &cwd)?).trim(),
        );
        let commit = git(
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ],
            &root,
        )
        .map_err(|_| Failure::Message(format!("`{rev}` is not a commit of this repository")))?;
        let commit = String::from_utf8_lossy(&commit).trim().to_owned();
        let dir = std::env::temp_dir().join(format!(
            "svrkit-compat-{}-{}",
            &commit[..12.min(commit.len())],
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = OldTree { root, dir };
        let names = git(&["ls-tree", "-r", "-z", "--name-only", &commit], &tree.root)?;
        for name in names.split(|&b| b == 0).filter(|n| n.ends_with(b".xml")) {
            let name = String::from_utf8_lossy(name);
            let text = git(&["show", &format!("{commit}:{name}")], &tree.root)?;
            let path = tree.dir.join(&*name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Failure::Message(format!("{}: {e}", parent.display())))?;
            }
            std::fs::write(&path, text)
                .map_err(|e| Failure::Message(format!("{}: {e}", path.display())))?;
        }
        Ok(tree)
    }

    /// The IDL files of the revision in `dir` (a directory of the old tree) that the working
    /// tree no longer has.
    fn gone_from(&self, dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut gone: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .filter(|p| {
                p.strip_prefix(&self.dir)
                    .is_ok_and(|rel| !self.root.join(rel).exists())
            })
            .collect();
        gone.sort();
        gone
    }

    /// An old-tree path as the repository names it.
    fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .map_or_else(|_| path.display().to_string(), |p| p.display().to_string())
    }

    /// Where a working-tree path's old version is.
    fn path_of(&self, path: &Path) -> Result<PathBuf, Failure> {
        let abs = std::path::absolute(path)
            .map_err(|e| Failure::Message(format!("{}: {e}", path.display())))?;
        let abs = abs.canonicalize().unwrap_or(abs);
        let root = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        let rel = abs.strip_prefix(&root).map_err(|_| {
            Failure::Message(format!(
                "{} is not in the repository at {}",
                path.display(),
                root.display()
            ))
        })?;
        Ok(self.dir.join(rel))
    }
}

impl Drop for OldTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
