//! A light index from field path (`spec.servers[0].port`, the same form serde_yaml_ng uses
//! in its errors) to the line it is written on, built by reading the indentation of
//! block-style YAML. Flow-style collections are not descended into; lookups then fall back
//! to the nearest indexed parent.

use crate::meta::Source;
use crate::split::split_documents;
use std::collections::HashMap;

/// Field path → 1-based absolute line, for one document.
#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    lines: HashMap<String, u32>,
    /// Line of the document's first key.
    pub first_key: Option<u32>,
}

struct Frame {
    indent: usize,
    path: String,
    is_item: bool,
}

impl LineIndex {
    /// Indexes `text`, whose first line is line `first_line` of its file.
    pub fn build(text: &str, first_line: u32) -> Self {
        let mut index = LineIndex::default();
        let mut frames: Vec<Frame> = Vec::new();
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut skip_deeper_than: Option<usize> = None;
        for (n, line) in text.lines().enumerate() {
            let abs = first_line.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            let trimmed = line.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut col = line.len() - trimmed.len();
            if col == 0 && (trimmed.starts_with("---") || trimmed.starts_with("...")) {
                continue;
            }
            if let Some(limit) = skip_deeper_than {
                if col > limit {
                    continue;
                }
                skip_deeper_than = None;
            }
            let mut rest = trimmed;
            while rest == "-" || rest.starts_with("- ") {
                while frames
                    .last()
                    .is_some_and(|f| f.indent > col || (f.indent == col && f.is_item))
                {
                    frames.pop();
                }
                let parent = frames.last().map(|f| f.path.as_str()).unwrap_or("");
                let counter = counters.entry(parent.to_string()).or_insert(0);
                let path = format!("{parent}[{counter}]");
                *counter += 1;
                index.lines.entry(path.clone()).or_insert(abs);
                frames.push(Frame {
                    indent: col,
                    path,
                    is_item: true,
                });
                let after = rest.get(1..).unwrap_or("");
                let item = after.trim_start_matches(' ');
                col += 1 + after.len() - item.len();
                rest = item;
            }
            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            while frames.last().is_some_and(|f| f.indent >= col) {
                frames.pop();
            }
            let path = match frames.last() {
                Some(parent) => format!("{}.{key}", parent.path),
                None => key.to_string(),
            };
            index.lines.insert(path.clone(), abs);
            index.first_key.get_or_insert(abs);
            counters.remove(&path);
            frames.push(Frame {
                indent: col,
                path,
                is_item: false,
            });
            if has_inline_value(value) {
                skip_deeper_than = Some(col);
            }
        }
        index
    }

    /// The line of `field`, or of its nearest indexed parent.
    pub fn line_of(&self, field: &str) -> Option<u32> {
        let mut path = field;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = path.get(..cut)?;
        }
    }
}

/// The 1-based line of `field` (a path such as `spec.portLevelMtls.8000` or
/// `spec.servers[0].tls.credentialName`, the form [`crate::ConfigError::field`] uses) in the
/// document that starts at `source`, or of its nearest indexed parent. It reads
/// `source.file` again, so it is only right while the file is unchanged since loading.
///
/// Returns `None` when the file cannot be read or has no document whose first key is on
/// `source.line` (e.g. a snapshot built from a string that is not the file's text).
pub fn field_line(source: &Source, field: &str) -> Option<u32> {
    let text = std::fs::read_to_string(&source.file).ok()?;
    split_documents(&text).into_iter().find_map(|(chunk, first_line)| {
        let index = LineIndex::build(chunk, first_line);
        if index.first_key == Some(source.line) {
            index.line_of(field)
        } else {
            None
        }
    })
}

/// Splits `key: value` (key plain or quoted); `None` when the line is not a mapping entry.
fn split_key(rest: &str) -> Option<(&str, &str)> {
    let first = rest.chars().next()?;
    if matches!(
        first,
        '{' | '[' | '&' | '*' | '!' | '|' | '>' | '?' | '%' | '@' | '`'
    ) {
        return None;
    }
    if first == '"' || first == '\'' {
        let body = rest.get(1..)?;
        let end = body.find(first)?;
        let key = body.get(..end)?;
        let after = body.get(end + 1..)?.trim_start_matches(' ');
        let value = after.strip_prefix(':')?;
        return (value.is_empty() || value.starts_with(' ')).then_some((key, value));
    }
    let bytes = rest.as_bytes();
    let pos = (0..bytes.len()).find(|&i| {
        bytes.get(i) == Some(&b':') && matches!(bytes.get(i + 1), None | Some(b' ') | Some(b'\t'))
    })?;
    let key = rest.get(..pos)?.trim_end();
    if key.contains(" #") {
        return None;
    }
    Some((key, rest.get(pos + 1..).unwrap_or("")))
}

/// True when a mapping value is written on the key's line (a scalar, flow collection or
/// block scalar), so deeper-indented lines that follow are its continuation, not keys.
fn has_inline_value(value: &str) -> bool {
    let value = value.trim();
    if value.is_empty() || value.starts_with('#') {
        return false;
    }
    let first_word = value.split_whitespace().next().unwrap_or("");
    let rest_is_comment = value
        .get(first_word.len()..)
        .map(|r| r.trim_start().is_empty() || r.trim_start().starts_with('#'))
        .unwrap_or(true);
    !((first_word.starts_with('&') || first_word.starts_with('!')) && rest_is_comment)
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn indexes_keys_and_items() {
        let text = "apiVersion: v1\nkind: Service\nspec:\n  ports:\n  - name: a\n    port: 80\n  - port: 70000\n    config: |\n      x: 1\n  selector:\n    app: x\n";
        let ix = LineIndex::build(text, 10);
        assert_eq!(ix.first_key, Some(10));
        assert_eq!(ix.line_of("spec.ports[0].port"), Some(15));
        assert_eq!(ix.line_of("spec.ports[1].port"), Some(16));
        assert_eq!(ix.line_of("spec.ports[1].config.x"), Some(17));
        assert_eq!(ix.line_of("spec.selector.app"), Some(20));
        assert_eq!(ix.line_of("spec.nothing.here"), Some(12));
    }
}
