//! Finds dbt's top-level Jinja blocks (`macro`, `test`, `docs`, `snapshot`,
//! `materialization`) in a file, the way dbt's block lexer does before any
//! rendering: macro files contribute only their blocks, `.md` files only their
//! `docs` blocks, snapshot files only their `snapshot` blocks.

/// One top-level block found in a file.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    /// `macro`, `test`, `docs`, `snapshot` or `materialization`.
    pub kind: String,
    /// The block's name (for macros and tests, without the argument list).
    pub name: String,
    /// The argument names declared by a macro or test block, in order.
    pub arg_names: Vec<String>,
    /// The whole opening tag, e.g. `{%- macro cents(x) -%}`.
    pub open_tag: String,
    /// The text between the opening and the closing tag.
    pub body: String,
    /// The whole closing tag, e.g. `{% endmacro %}`.
    pub close_tag: String,
    /// 1-based line of the opening tag.
    pub line: usize,
}

const BLOCK_KINDS: &[&str] = &["macro", "test", "docs", "snapshot", "materialization"];

/// A `{% ... %}` tag located in the source.
struct Tag {
    start: usize,
    end: usize,
    /// The tag's content without `{%`, `%}` and whitespace-control markers.
    content: String,
}

/// Scans `source` for `{% ... %}` tags, skipping comments and `raw` sections.
fn tags(source: &str) -> Result<Vec<Tag>, (usize, String)> {
    let mut found = Vec::new();
    let mut pos = 0;
    let mut in_raw = false;
    while let Some(rel) = source[pos..].find('{') {
        let start = pos + rel;
        let rest = &source[start..];
        if rest.starts_with("{#") {
            let end = rest
                .find("#}")
                .ok_or_else(|| (start, "unclosed comment".to_string()))?;
            pos = start + end + 2;
        } else if rest.starts_with("{%") {
            let end = rest
                .find("%}")
                .ok_or_else(|| (start, "unclosed block tag".to_string()))?;
            let inner = &rest[2..end];
            let content = inner
                .trim_start_matches(['-', '+'])
                .trim_end_matches(['-', '+'])
                .trim()
                .to_string();
            pos = start + end + 2;
            if in_raw {
                if content == "endraw" {
                    in_raw = false;
                }
                continue;
            }
            if content == "raw" {
                in_raw = true;
                continue;
            }
            found.push(Tag {
                start,
                end: pos,
                content,
            });
        } else {
            pos = start + 1;
        }
    }
    Ok(found)
}

pub(crate) fn line_of(source: &str, byte: usize) -> usize {
    source[..byte].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Returns every top-level block of the kinds dbt extracts. Text outside
/// blocks is ignored, as dbt ignores it.
pub(crate) fn extract_blocks(source: &str) -> Result<Vec<Block>, (usize, String)> {
    let tags = tags(source).map_err(|(byte, msg)| (line_of(source, byte), msg))?;
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < tags.len() {
        let tag = &tags[i];
        let keyword = first_word(&tag.content);
        if !BLOCK_KINDS.contains(&keyword) {
            i += 1;
            continue;
        }
        let end_keyword = format!("end{keyword}");
        // Blocks of one kind may nest (a macro defined inside a macro is rare
        // but legal): find the matching end tag by depth.
        let mut depth = 0;
        let mut close = None;
        for (j, candidate) in tags.iter().enumerate().skip(i + 1) {
            let word = first_word(&candidate.content);
            if word == keyword {
                depth += 1;
            } else if word == end_keyword {
                if depth == 0 {
                    close = Some(j);
                    break;
                }
                depth -= 1;
            }
        }
        let line = line_of(source, tag.start);
        let Some(j) = close else {
            return Err((line, format!("`{{% {keyword} %}}` block is never closed")));
        };
        let close_tag = &tags[j];
        let header = tag.content[keyword.len()..].trim();
        let (name, arg_names) = parse_signature(header);
        if name.is_empty() {
            return Err((line, format!("`{keyword}` block without a name")));
        }
        blocks.push(Block {
            kind: keyword.to_string(),
            name,
            arg_names,
            open_tag: source[tag.start..tag.end].to_string(),
            body: source[tag.end..close_tag.start].to_string(),
            close_tag: source[close_tag.start..close_tag.end].to_string(),
            line,
        });
        i = j + 1;
    }
    Ok(blocks)
}

fn first_word(content: &str) -> &str {
    content
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
}

/// Splits `name(a, b=1, c='x,y')` into the name and the argument names.
fn parse_signature(header: &str) -> (String, Vec<String>) {
    let (name, rest) = match header.find('(') {
        Some(open) => (header[..open].trim(), &header[open + 1..]),
        None => (header.trim(), ""),
    };
    let mut args = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut current = String::new();
    for c in rest.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                current.push(c);
                continue;
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                current.push(c);
                continue;
            }
            None => {}
        }
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ')' => break,
            ',' if depth == 0 => {
                push_arg_name(&mut args, &current);
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    push_arg_name(&mut args, &current);
    (name.to_string(), args)
}

fn push_arg_name(args: &mut Vec<String>, text: &str) {
    let name = text.split('=').next().unwrap_or("").trim();
    if !name.is_empty() {
        args.push(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_blocks_with_signatures_and_lines() {
        let source = "{# {% macro hidden() %} #}\n{% macro cents(col, scale=2, sep=',') -%}\n{{ col }}\n{%- endmacro %}\n\n{% test is_positive(model, column_name) %}select 1{% endtest %}\n{% raw %}{% docs no %}{% endraw %}";
        let blocks = extract_blocks(source).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].kind, "macro");
        assert_eq!(blocks[0].name, "cents");
        assert_eq!(blocks[0].arg_names, ["col", "scale", "sep"]);
        assert_eq!(blocks[0].line, 2);
        assert_eq!(blocks[0].body, "\n{{ col }}\n");
        assert_eq!(blocks[1].kind, "test");
        assert_eq!(blocks[1].arg_names, ["model", "column_name"]);
        assert_eq!(blocks[1].line, 6);
    }

    #[test]
    fn unclosed_block_reports_its_line() {
        let err = extract_blocks("\n\n{% macro m() %}select").unwrap_err();
        assert_eq!(err.0, 3);
    }
}
