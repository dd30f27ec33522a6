//! Source files and byte spans into them.
//!
//! Every node the parser produces carries a [`Span`]; line and column numbers are computed
//! only when a diagnostic is rendered.

use std::ops::Range;

use codespan_reporting::files::SimpleFiles;

/// Identifies one file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) usize);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The file.
    pub file: FileId,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span covering `range` of `file`.
    pub fn new(file: FileId, range: Range<usize>) -> Span {
        Span {
            file,
            start: range.start,
            end: range.end,
        }
    }

    /// The byte range.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// Every source file read during one compilation, by [`FileId`].
#[derive(Default)]
pub struct SourceMap {
    files: SimpleFiles<String, String>,
    count: usize,
}

impl SourceMap {
    /// Adds a file under the name diagnostics show for it.
    pub fn add(&mut self, name: String, text: String) -> FileId {
        self.count += 1;
        FileId(self.files.add(name, text))
    }

    /// The text of a file.
    pub fn text(&self, file: FileId) -> &str {
        // Ids only come from `add`, so the lookup cannot fail.
        self.files
            .get(file.0)
            .map(|f| f.source().as_str())
            .unwrap_or_default()
    }

    /// The display name of a file.
    pub fn name(&self, file: FileId) -> &str {
        self.files
            .get(file.0)
            .map(|f| f.name().as_str())
            .unwrap_or_default()
    }

    /// The text a span covers.
    pub fn slice(&self, span: Span) -> &str {
        self.text(span.file).get(span.range()).unwrap_or_default()
    }

    /// 1-based line and column of a span's start (columns count characters).
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let text = self.text(span.file);
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, col)
    }

    pub(crate) fn files(&self) -> &SimpleFiles<String, String> {
        &self.files
    }
}
