//! Acknowledged changes: the wire-breaking changes a team has decided to ship anyway (a new
//! method, deployed to every server before any caller uses it), so that a release gate
//! stops only on the ones nobody decided on.
//!
//! The file lists one change per line by the key `svrkit compat` prints under it:
//! `<kind> <subject>`, and for a change from one thing to another what it was and became
//! (`method-added test.evolution.ProfileSvr.Rename`, `field-moved shop.Item.note 2->3`), so
//! that a line acknowledges that change and not the next one to the same item. `#` starts a
//! comment; blank lines are ignored.

use super::Change;

/// Acknowledgments read from a file.
#[derive(Debug, Default)]
pub struct Acknowledged {
    /// Each key, with its line number.
    entries: Vec<(String, usize)>,
}

impl Acknowledged {
    /// Parses the file's text.
    ///
    /// # Errors
    /// A line that is not a key (`<kind> <subject>[ <detail>]`), as `line N: ...`.
    pub fn parse(text: &str) -> Result<Acknowledged, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if !(2..=3).contains(&words.len()) {
                return Err(format!(
                    "line {}: expected a key as printed under each change (`<kind> <subject>`, and what it changed from and to if that is part of it), found `{line}`",
                    i + 1
                ));
            }
            entries.push((words.join(" "), i + 1));
        }
        Ok(Acknowledged { entries })
    }

    /// Marks the changes this file acknowledges, and returns its lines that matched no
    /// change (`line N: key`), which are stale or misspelled.
    pub fn apply(&self, changes: &mut [Change]) -> Vec<String> {
        let mut unused = Vec::new();
        for (key, line) in &self.entries {
            let mut used = false;
            for c in changes.iter_mut().filter(|c| &c.key() == key) {
                c.acknowledged = true;
                used = true;
            }
            if !used {
                unused.push(format!("line {line}: {key}"));
            }
        }
        unused
    }
}
