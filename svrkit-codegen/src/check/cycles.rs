//! Structs that contain themselves.
//!
//! A struct reached again through singular fields only would be infinitely large: that is an
//! error. Reached through at least one optional field, it is fine once that field is boxed;
//! lists and maps already live on the heap.

use super::Checker;
use crate::error;
use crate::ir::{FieldType, StructId, ValueType};

impl Checker<'_> {
    pub(super) fn cycles(&mut self) {
        let n = self.schema.structs.len();
        // Edges through singular fields, and through singular or optional ones.
        let edges = |optional_too: bool| -> Vec<Vec<(StructId, usize)>> {
            self.schema
                .structs
                .iter()
                .map(|s| {
                    s.fields
                        .iter()
                        .enumerate()
                        .filter_map(|(i, f)| match f.ty {
                            FieldType::Singular(ValueType::Struct(t)) => Some((t, i)),
                            FieldType::Optional(ValueType::Struct(t)) if optional_too => {
                                Some((t, i))
                            }
                            _ => None,
                        })
                        .collect()
                })
                .collect()
        };
        let singular = edges(false);
        let inline = edges(true);

        for start in 0..n {
            if let Some(path) = find_path(&singular, StructId(start), StructId(start)) {
                // Report each cycle once, at its lowest-numbered struct.
                if path.iter().all(|(s, _)| s.0 >= start) {
                    let (s, field) = path[0];
                    let f = &self.schema.structs[s.0].fields[field];
                    let names: Vec<&str> = path
                        .iter()
                        .map(|(s, _)| self.schema.structs[s.0].name.as_str())
                        .collect();
                    self.diags
                        .push(error::infinite_struct(f.span, &f.name, &names));
                }
            }
        }

        for s in 0..n {
            for (t, field) in inline[s].clone() {
                if matches!(
                    self.schema.structs[s].fields[field].ty,
                    FieldType::Optional(_)
                ) && (t.0 == s || find_path(&inline, t, StructId(s)).is_some())
                {
                    self.schema.structs[s].fields[field].boxed = true;
                }
            }
        }
    }
}

/// A path of `(struct, field index)` edges from `from` to `to` (non-empty), by depth-first
/// search.
fn find_path(
    edges: &[Vec<(StructId, usize)>],
    from: StructId,
    to: StructId,
) -> Option<Vec<(StructId, usize)>> {
    let mut visited = vec![false; edges.len()];
    let mut path = Vec::new();
    fn dfs(
        edges: &[Vec<(StructId, usize)>],
        at: StructId,
        to: StructId,
        visited: &mut [bool],
        path: &mut Vec<(StructId, usize)>,
    ) -> bool {
        for &(next, field) in &edges[at.0] {
            path.push((at, field));
            if next == to {
                return true;
            }
            if !visited[next.0] {
                visited[next.0] = true;
                if dfs(edges, next, to, visited, path) {
                    return true;
                }
            }
            path.pop();
        }
        false
    }
    dfs(edges, from, to, &mut visited, &mut path).then_some(path)
}
