//! Acknowledged changes: the wire-breaking changes a team has decided to ship anyway (a new
//! method, deployed to every server before any caller uses it), so that a release gate
//! stops only on the ones nobody decided on.
//!
//! The file lists one change per line as `<kind> <subject>`, the key `svrkit compat` prints
//! under each change (`method-added test.evolution.ProfileSvr.Rename`). `#` starts a
//! comment; blank lines are ignored.

use super::Change;

/// Acknowledgments read from a file.
#[derive(Debug, Default)]
pub struct Acknowledged {
    entries: Vec<(String, String, usize)>,
}

impl Acknowledged {
    /// Parses the file's text.
    ///
    /// # Errors
    /// A line that is not `<kind> <subject>`, as `line N: ...`.
    pub fn parse(text: &str) -> Result<Acknowledged, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(kind), Some(subject), None) => {
                    entries.push((kind.to_owned(), subject.to_owned(), i + 1));
                }
                _ => {
                    return Err(format!(
                        "line {}: expected `<kind> <subject>`, as printed under each change, found `{line}`",
                        i + 1
                    ));
                }
            }
        }
        Ok(Acknowledged { entries })
    }

    /// Marks the changes this file acknowledges, and returns its lines that matched no
    /// change (`line N: kind subject`), which are stale or misspelled.
    pub fn apply(&self, changes: &mut [Change]) -> Vec<String> {
        let mut unused = Vec::new();
        for (kind, subject, line) in &self.entries {
            let mut used = false;
            for c in changes
                .iter_mut()
                .filter(|c| c.kind == kind && &c.subject == subject)
            {
                c.acknowledged = true;
                used = true;
            }
            if !used {
                unused.push(format!("line {line}: {kind} {subject}"));
            }
        }
        unused
    }
}
