//! Collecting and rendering diagnostics.
//!
//! Every stage pushes into one [`Diagnostics`] and keeps going where it safely can, so a run
//! reports all of its errors at once; the pipeline stops between stages if any were reported.
//! Messages themselves live in [`crate::error`], one constructor per kind of mistake.

use codespan_reporting::diagnostic::{Diagnostic as Rendered, Label, Severity};
use codespan_reporting::term::{self, Config};

use crate::span::{SourceMap, Span};

/// One problem found in the IDL, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Stable code, like `E0203`, documented in `idl/README.md`.
    pub code: &'static str,
    /// One-line summary.
    pub message: String,
    /// Where the problem is, and what to say there.
    pub primary: (Span, String),
    /// Related places (the earlier definition of a duplicate, say).
    pub secondary: Vec<(Span, String)>,
    /// Extra lines (`help: did you mean ...`).
    pub notes: Vec<String>,
    /// Whether this is an error (stops compilation) or a note (compat reports).
    pub severity: Level,
}

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Stops compilation.
    Error,
    /// Informational.
    Note,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(code: &'static str, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            primary: (span, String::new()),
            secondary: Vec::new(),
            notes: Vec::new(),
            severity: Level::Error,
        }
    }

    /// Sets the text under the primary caret.
    pub fn label(mut self, text: impl Into<String>) -> Diagnostic {
        self.primary.1 = text.into();
        self
    }

    /// Adds a related place.
    pub fn also(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, text.into()));
        self
    }

    /// Adds a note line.
    pub fn note(mut self, text: impl Into<String>) -> Diagnostic {
        self.notes.push(text.into());
        self
    }

    /// Adds `help: did you mean `x`?` when a suggestion exists.
    pub fn suggest(self, suggestion: Option<&str>) -> Diagnostic {
        match suggestion {
            Some(s) => self.note(format!("help: did you mean `{s}`?")),
            None => self,
        }
    }

    fn to_rendered(&self) -> Rendered<usize> {
        let severity = match self.severity {
            Level::Error => Severity::Error,
            Level::Note => Severity::Note,
        };
        let (span, text) = &self.primary;
        let mut labels = vec![Label::primary(span.file.0, span.range()).with_message(text)];
        labels.extend(
            self.secondary
                .iter()
                .map(|(s, t)| Label::secondary(s.file.0, s.range()).with_message(t)),
        );
        Rendered::new(severity)
            .with_code(self.code)
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(self.notes.clone())
    }
}

/// The diagnostics of one run, in the order they were found.
#[derive(Debug, Default)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records a diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.list.push(d);
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Level::Error)
    }

    /// The number of errors.
    pub fn error_count(&self) -> usize {
        self.list
            .iter()
            .filter(|d| d.severity == Level::Error)
            .count()
    }

    /// All diagnostics.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.list.iter()
    }

    /// Consumes the collector.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.list
    }
}

/// Renders diagnostics as text: `error[E0203]: ...`, then `--> file:line:col`, the source
/// line and a caret under the offending span.
pub fn render(sources: &SourceMap, diagnostics: &[Diagnostic], color: bool) -> String {
    let config = Config::default();
    if color {
        let mut out = term::termcolor::Buffer::ansi();
        for d in diagnostics {
            // Spans come from the same SourceMap, so rendering cannot fail on a lookup.
            let _ = term::emit_to_write_style(&mut out, &config, sources.files(), &d.to_rendered());
        }
        String::from_utf8_lossy(out.as_slice()).into_owned()
    } else {
        let mut out = String::new();
        for d in diagnostics {
            let _ = term::emit_to_string(&mut out, &config, sources.files(), &d.to_rendered());
        }
        out
    }
}
