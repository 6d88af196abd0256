//! Splitting a YAML stream into documents with their starting lines, and turning the
//! document-relative positions of parser messages into file lines.

/// Splits a YAML stream at `---` lines (and after `...` lines); yields each document's text
/// and the 1-based line it starts on. A document marker at column 0 cannot occur inside a
/// scalar, so this is exact for valid YAML.
pub(crate) fn split_documents(text: &str) -> Vec<(&str, u32)> {
    let is_marker = |line: &str, m: &str| {
        line.strip_prefix(m)
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\r', '\n']))
    };
    let mut out = Vec::new();
    let (mut start, mut start_line, mut offset) = (0usize, 1u32, 0usize);
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let line_no = u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1);
        if is_marker(line, "---") && offset > start {
            out.push((text.get(start..offset).unwrap_or(""), start_line));
            (start, start_line) = (offset, line_no);
        }
        offset += line.len();
        if is_marker(line, "...") {
            out.push((text.get(start..offset).unwrap_or(""), start_line));
            (start, start_line) = (offset, line_no.saturating_add(1));
        }
    }
    if offset > start {
        out.push((text.get(start..).unwrap_or(""), start_line));
    }
    out
}

/// Rewrites the document-relative `at line N` positions libyaml puts in its messages (e.g.
/// "while parsing a flow sequence at line 5 column 9") into file lines.
pub(crate) fn absolute_positions(text: &str, first_line: u32) -> String {
    const MARK: &str = " at line ";
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(MARK) {
        let after = rest.get(i + MARK.len()..).unwrap_or("");
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push_str(rest.get(..i + MARK.len()).unwrap_or(""));
        match after.get(..digits).and_then(|d| d.parse::<u32>().ok()) {
            Some(rel) => {
                out.push_str(&first_line.saturating_add(rel.saturating_sub(1)).to_string())
            }
            None => out.push_str(after.get(..digits).unwrap_or("")),
        }
        rest = after.get(digits..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::split_documents;

    #[test]
    fn splits_at_markers_with_start_lines() {
        let text = "a: 1\n---\nb: 2\n--- # c\nc: 3\n...\nd: 4\n";
        let docs: Vec<(&str, u32)> = split_documents(text);
        let lines: Vec<u32> = docs.iter().map(|d| d.1).collect();
        assert_eq!(lines, vec![1, 2, 4, 7]);
        assert_eq!(docs.get(1).map(|d| d.0), Some("---\nb: 2\n"));
    }
}
