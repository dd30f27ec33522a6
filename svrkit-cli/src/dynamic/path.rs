//! Where in a JSON document a value sits, for errors (`items[2].user.name`, `ext["k"]`).

use super::JsonError;

#[derive(Default)]
pub(super) struct Path {
    text: String,
    /// Where each segment starts in `text`, to pop it.
    starts: Vec<usize>,
    structs: usize,
}

impl Path {
    pub(super) fn push_field(&mut self, name: &str) {
        self.starts.push(self.text.len());
        if !self.text.is_empty() {
            self.text.push('.');
        }
        self.text.push_str(name);
        self.structs += 1;
    }

    pub(super) fn push_index(&mut self, i: usize) {
        self.starts.push(self.text.len());
        self.text.push_str(&format!("[{i}]"));
    }

    pub(super) fn push_key(&mut self, key: &str) {
        self.starts.push(self.text.len());
        self.text.push_str(&format!("[{key:?}]"));
    }

    pub(super) fn pop(&mut self) {
        if let Some(start) = self.starts.pop() {
            if self.text[start..]
                .trim_start_matches('.')
                .starts_with(|c: char| c != '[')
            {
                self.structs -= 1;
            }
            self.text.truncate(start);
        }
    }

    /// Fields entered so far: how deep the structs nest.
    pub(super) fn depth(&self) -> usize {
        self.structs
    }

    pub(super) fn error(&self, message: impl Into<String>) -> JsonError {
        JsonError {
            path: self.text.clone(),
            message: message.into(),
        }
    }
}
