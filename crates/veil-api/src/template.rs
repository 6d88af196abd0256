//! Fills the Go templates Istio's integration tests use (`istio-cases/*.yaml.tmpl`). It
//! implements exactly the subset those files need, and rejects anything else:
//! - `{{ .A.B }}`: the parameter `A.B`;
//! - `{{ (.To.PortForName `http`).WorkloadPort }}`: the parameter `To.PortForName(http).WorkloadPort`;
//! - `{{ .X | default "v" }}`: `v` when `X` is absent or empty (sprig `default`);
//! - `{{ if .X }}`, `{{ if eq .X "v" }}`, `{{ if ne .X "v" }}` … `{{ end }}`;
//! - `{{-` and `-}}` trim the whitespace (newlines included) before/after the action.

use crate::error::TemplateError;
use std::collections::BTreeMap;

/// Fills `text` with `params` (keys as described in the module docs, without the leading dot).
///
/// Errors: an unclosed action, a parameter used without a value (and without `default`),
/// unbalanced `if`/`end`, or any other Go template construct.
pub fn fill_template(
    text: &str,
    params: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut active: Vec<bool> = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    loop {
        let (literal, action) = match rest.find("{{") {
            Some(i) => (
                rest.get(..i).unwrap_or(""),
                Some(rest.get(i + 2..).unwrap_or("")),
            ),
            None => (rest, None),
        };
        let literal = if trim_next {
            literal.trim_start()
        } else {
            literal
        };
        if active.iter().all(|a| *a) {
            out.push_str(literal);
        }
        let Some(after_open) = action else { break };
        let line = line_at(text, text.len() - after_open.len());
        let close = after_open
            .find("}}")
            .ok_or(TemplateError::Unclosed { line })?;
        let raw = after_open.get(..close).unwrap_or("");
        rest = after_open.get(close + 2..).unwrap_or("");
        let mut body = raw;
        if let Some(b) = raw
            .strip_prefix('-')
            .filter(|b| b.starts_with(char::is_whitespace))
        {
            body = b;
            if active.iter().all(|a| *a) {
                out.truncate(out.trim_end().len());
            }
        }
        trim_next = false;
        if let Some(b) = body
            .strip_suffix('-')
            .filter(|b| b.ends_with(char::is_whitespace))
        {
            body = b;
            trim_next = true;
        }
        let body = body.trim();
        let unsupported = || TemplateError::Unsupported {
            line,
            action: body.to_string(),
        };
        if body == "end" {
            active.pop().ok_or(TemplateError::Unbalanced { line })?;
        } else if let Some(cond) = body.strip_prefix("if ") {
            let value = condition(cond, params, line).ok_or_else(unsupported)??;
            active.push(value);
        } else if active.iter().all(|a| *a) {
            out.push_str(&pipeline(body, params, line).ok_or_else(unsupported)??);
        } else {
            pipeline(body, params, line).ok_or_else(unsupported)?.ok();
        }
    }
    if !active.is_empty() {
        return Err(TemplateError::Unbalanced {
            line: line_at(text, text.len()),
        });
    }
    Ok(out)
}

fn line_at(text: &str, offset: usize) -> u32 {
    let newlines = text.get(..offset).unwrap_or("").matches('\n').count();
    u32::try_from(newlines)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

/// `None` when the syntax is not supported; `Some(Err)` when a parameter is missing.
type Eval<T> = Option<Result<T, TemplateError>>;

fn condition(cond: &str, params: &BTreeMap<String, String>, line: u32) -> Eval<bool> {
    let words = tokens(cond)?;
    match words.as_slice() {
        [one] => Some(operand(one, params, line)?.map(|v| !v.is_empty())),
        [op @ ("eq" | "ne"), a, b] => {
            let (a, b) = (operand(a, params, line)?, operand(b, params, line)?);
            Some(a.and_then(|a| b.map(|b| (a == b) == (*op == "eq"))))
        }
        _ => None,
    }
}

fn pipeline(body: &str, params: &BTreeMap<String, String>, line: u32) -> Eval<String> {
    let words = tokens(body)?;
    match words.as_slice() {
        [one] => operand(one, params, line),
        [value, "|", "default", fallback] => {
            let fallback = literal(fallback)?;
            let key = param_key(value)?;
            Some(Ok(params
                .get(&key)
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or(fallback)))
        }
        _ => None,
    }
}

fn operand(word: &str, params: &BTreeMap<String, String>, line: u32) -> Eval<String> {
    if let Some(lit) = literal(word) {
        return Some(Ok(lit));
    }
    let key = param_key(word)?;
    Some(
        params
            .get(&key)
            .cloned()
            .ok_or(TemplateError::MissingParam { line, name: key }),
    )
}

fn literal(word: &str) -> Option<String> {
    let quoted = word.strip_prefix('"').and_then(|w| w.strip_suffix('"'));
    if let Some(q) = quoted {
        return (!q.contains('\\')).then(|| q.to_string());
    }
    word.strip_prefix('`')
        .and_then(|w| w.strip_suffix('`'))
        .map(str::to_string)
}

/// `.A.B` → `A.B`; `(.A.M `x`).F` → `A.M(x).F`.
fn param_key(word: &str) -> Option<String> {
    let is_path = |p: &str| {
        !p.is_empty()
            && p.split('.')
                .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    if let Some(path) = word.strip_prefix('.') {
        return is_path(path).then(|| path.to_string());
    }
    let inner_end = word.rfind(')')?;
    let inner = word.strip_prefix('(')?.get(..inner_end.checked_sub(1)?)?;
    let field = word.get(inner_end + 1..)?;
    let words = tokens(inner)?;
    let (method, args) = words.split_first()?;
    let method = method.strip_prefix('.').filter(|m| is_path(m))?;
    let args: Option<Vec<String>> = args.iter().map(|a| literal(a)).collect();
    let suffix = match field.strip_prefix('.') {
        Some(f) if is_path(f) => format!(".{f}"),
        None if field.is_empty() => String::new(),
        _ => return None,
    };
    Some(format!("{method}({}){suffix}", args?.join(",")))
}

/// Splits on whitespace outside quotes, backticks and parentheses; `|` is its own word.
fn tokens(text: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut start, mut depth, mut quote): (Option<usize>, u32, Option<char>) = (None, 0, None);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '`') => {
                quote = Some(c);
                start.get_or_insert(i);
            }
            (None, '(') => {
                depth += 1;
                start.get_or_insert(i);
            }
            (None, ')') => depth = depth.checked_sub(1)?,
            (None, c) if c.is_whitespace() && depth == 0 => {
                if let Some(s) = start.take() {
                    out.push(text.get(s..i)?);
                }
            }
            (None, '|') if depth == 0 => {
                if let Some(s) = start.take() {
                    out.push(text.get(s..i)?);
                }
                out.push("|");
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if quote.is_some() || depth != 0 {
        return None;
    }
    if let Some(s) = start {
        out.push(text.get(s..)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fills_fields_methods_defaults_and_ifs() {
        let p = params(&[
            ("A", "x"),
            ("To.PortForName(http).WorkloadPort", "8080"),
            ("M", ""),
        ]);
        let t = "a: {{ .A }}\np: {{ (.To.PortForName `http`).WorkloadPort }}\ng: {{.G | default \"ig\"}}\nz:\n{{- if ne .M \"\" }}\n  m: {{ .M }}\n{{- end }}\n";
        assert_eq!(
            fill_template(t, &p),
            Ok("a: x\np: 8080\ng: ig\nz:\n".to_string())
        );
        let p2 = params(&[
            ("A", "x"),
            ("To.PortForName(http).WorkloadPort", "1"),
            ("M", "ON"),
        ]);
        let filled = fill_template(t, &p2).unwrap_or_default();
        assert!(filled.ends_with("z:\n  m: ON\n"), "{filled}");
    }

    #[test]
    fn rejects_unsupported_and_missing() {
        let p = params(&[]);
        assert_eq!(
            fill_template("x\n{{ range .L }}", &p),
            Err(TemplateError::Unsupported {
                line: 2,
                action: "range .L".to_string()
            })
        );
        assert_eq!(
            fill_template("{{ .Nope }}", &p),
            Err(TemplateError::MissingParam {
                line: 1,
                name: "Nope".to_string()
            })
        );
        assert_eq!(
            fill_template("{{ if .A }}", &params(&[("A", "1")])),
            Err(TemplateError::Unbalanced { line: 1 })
        );
    }
}
