//! Node selection with dbt's syntax, as a function over the compiled DAG.
//!
//! Each argument may hold several space-separated selectors (their union);
//! a selector may be a comma-separated intersection of atoms. An atom is
//! `[@][N+|+]<method:value>[+|+N]`: `+x` adds all ancestors, `2+x` ancestors
//! up to two hops, `x+` all descendants, `x+1` children, `@x` descendants
//! and all of their ancestors. Methods: none (node name, fqn path such as
//! `staging` or `staging.stg_orders`, or a file path), `tag:`, `path:`,
//! `file:`, `fqn:`, `source:` (`s` or `s.t`), `resource_type:`,
//! `test_name:`, `test_type:` (`generic`/`singular`), `exposure:`,
//! `config.<key>:`. Values may use `*` and `?` wildcards.
//!
//! Tests are selected indirectly the way dbt's default (`eager`) mode does:
//! a test is selected when any of its parents is, and excluded when any of
//! its parents is excluded. The result holds executable nodes only (models,
//! seeds, snapshots, tests), never sources or exposures.

use std::collections::{BTreeSet, VecDeque};

use crate::compile::CompiledProject;
use crate::error::PipelineError;
use crate::project::{NodeId, ResourceType};

/// Selects nodes: all enabled nodes when `select` is empty, minus `exclude`.
pub fn select(
    project: &CompiledProject,
    select: &[String],
    exclude: &[String],
) -> Result<BTreeSet<NodeId>, PipelineError> {
    let selectors: Vec<&str> = select.iter().flat_map(|s| s.split_whitespace()).collect();
    let mut selected = if selectors.is_empty() {
        project.nodes.keys().cloned().collect()
    } else {
        let mut union = BTreeSet::new();
        for selector in selectors {
            union.extend(evaluate_selector(project, selector)?);
        }
        add_tests_of(project, &mut union);
        union
    };
    let mut excluded = BTreeSet::new();
    for selector in exclude.iter().flat_map(|s| s.split_whitespace()) {
        excluded.extend(evaluate_selector(project, selector)?);
    }
    add_tests_of(project, &mut excluded);
    selected.retain(|id| !excluded.contains(id) && project.nodes.contains_key(id));
    Ok(selected)
}

/// Adds every test with at least one parent in `set`.
fn add_tests_of(project: &CompiledProject, set: &mut BTreeSet<NodeId>) {
    let tests: Vec<NodeId> = project
        .nodes
        .values()
        .filter(|n| n.node.resource_type == ResourceType::Test)
        .filter(|n| n.node.depends_on().any(|p| set.contains(p)))
        .map(|n| n.node.unique_id.clone())
        .collect();
    set.extend(tests);
}

/// A comma-separated intersection of atoms.
fn evaluate_selector(
    project: &CompiledProject,
    selector: &str,
) -> Result<BTreeSet<NodeId>, PipelineError> {
    let mut result: Option<BTreeSet<NodeId>> = None;
    for atom in selector.split(',') {
        let matched = evaluate_atom(project, atom, selector)?;
        result = Some(match result {
            None => matched,
            Some(acc) => acc.intersection(&matched).cloned().collect(),
        });
    }
    Ok(result.unwrap_or_default())
}

fn evaluate_atom(
    project: &CompiledProject,
    atom: &str,
    selector: &str,
) -> Result<BTreeSet<NodeId>, PipelineError> {
    let error = |message: &str| PipelineError::Selection {
        selector: selector.to_string(),
        message: message.to_string(),
    };
    let mut body = atom;
    let at = body.starts_with('@');
    if at {
        body = &body[1..];
    }
    // Ancestors: `+x` or `N+x`.
    let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let mut parents: Option<Option<usize>> = None;
    if body[digits..].starts_with('+') {
        parents = Some(if digits == 0 {
            None
        } else {
            Some(body[..digits].parse().map_err(|_| error("bad depth"))?)
        });
        body = &body[digits + 1..];
    }
    // Descendants: `x+` or `x+N`.
    let mut children: Option<Option<usize>> = None;
    let trailing_digits = body.len() - body.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let before_digits = &body[..body.len() - trailing_digits];
    if let Some(stripped) = before_digits.strip_suffix('+') {
        children = Some(if trailing_digits == 0 {
            None
        } else {
            Some(
                body[body.len() - trailing_digits..]
                    .parse()
                    .map_err(|_| error("bad depth"))?,
            )
        });
        body = stripped;
    }
    if at && (parents.is_some() || children.is_some()) {
        return Err(error("`@` cannot be combined with `+`"));
    }
    if body.is_empty() {
        return Err(error("empty selector"));
    }
    let base = match_method(project, body).map_err(|m| error(&m))?;
    let mut result = base.clone();
    if at {
        let descendants = walk(project, &base, None, false);
        result.extend(walk(project, &descendants, None, true));
        result.extend(descendants);
    }
    if let Some(depth) = parents {
        result.extend(walk(project, &base, depth, true));
    }
    if let Some(depth) = children {
        result.extend(walk(project, &base, depth, false));
    }
    Ok(result)
}

/// Breadth-first walk to ancestors (`up`) or descendants, up to `depth` hops.
fn walk(
    project: &CompiledProject,
    start: &BTreeSet<NodeId>,
    depth: Option<usize>,
    up: bool,
) -> BTreeSet<NodeId> {
    let map = if up {
        &project.parent_map
    } else {
        &project.child_map
    };
    let mut found = BTreeSet::new();
    let mut queue: VecDeque<(NodeId, usize)> = start.iter().map(|id| (id.clone(), 0)).collect();
    while let Some((id, hops)) = queue.pop_front() {
        if depth.is_some_and(|d| hops >= d) {
            continue;
        }
        for next in map.get(&id).into_iter().flatten() {
            if found.insert(next.clone()) {
                queue.push_back((next.clone(), hops + 1));
            }
        }
    }
    found
}

/// Matches `*` (any run) and `?` (one character).
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// dbt's fqn matching: the value's dot-separated parts match the start of
/// the fqn (with or without the project name), or the value is the node's name.
fn fqn_matches(value: &str, fqn: &[String], name: &str) -> bool {
    if glob(value, name) {
        return true;
    }
    let parts: Vec<&str> = value.split('.').collect();
    let prefix_matches =
        |fqn: &[String]| parts.len() <= fqn.len() && parts.iter().zip(fqn).all(|(p, f)| glob(p, f));
    prefix_matches(fqn) || (fqn.len() > 1 && prefix_matches(&fqn[1..]))
}

fn path_matches(value: &str, path: &str) -> bool {
    let value = value.trim_end_matches('/');
    glob(value, path) || path.starts_with(&format!("{value}/"))
}

fn match_method(project: &CompiledProject, atom: &str) -> Result<BTreeSet<NodeId>, String> {
    let (method, value) = match atom.split_once(':') {
        Some((method, value)) => (Some(method), value),
        None => (None, atom),
    };
    let mut found = BTreeSet::new();
    match method {
        Some("source") => {
            let (source, table) = match value.split_once('.') {
                Some((s, t)) => (s, Some(t)),
                None => (value, None),
            };
            for s in project.sources.values() {
                if glob(source, &s.source_name) && table.is_none_or(|t| glob(t, &s.name)) {
                    found.insert(s.unique_id.clone());
                }
            }
        }
        Some("exposure") => {
            for e in project.exposures.values() {
                if glob(value, &e.name) {
                    found.insert(e.unique_id.clone());
                }
            }
        }
        method => {
            for compiled in project.nodes.values() {
                let node = &compiled.node;
                let matched = match method {
                    None if value.contains('/')
                        || value.ends_with(".sql")
                        || value.ends_with(".csv") =>
                    {
                        path_matches(value, &node.original_file_path)
                    }
                    None | Some("fqn") => fqn_matches(value, &node.fqn, &node.name),
                    Some("tag") => node.config.tags.iter().any(|t| glob(value, t)),
                    Some("path") => path_matches(value, &node.original_file_path),
                    Some("file") => {
                        let file = node.original_file_path.rsplit('/').next().unwrap_or("");
                        glob(value, file) || glob(value, file.split('.').next().unwrap_or(""))
                    }
                    Some("resource_type") => glob(value, node.resource_type.as_str()),
                    Some("test_name") => node
                        .test_metadata
                        .as_ref()
                        .is_some_and(|m| glob(value, &m.name)),
                    Some("test_type") => {
                        node.resource_type == ResourceType::Test
                            && match value {
                                "generic" => node.test_metadata.is_some(),
                                "singular" => node.test_metadata.is_none(),
                                _ => false,
                            }
                    }
                    Some(m) if m.starts_with("config.") => {
                        let key = crate::config::normalize_key(&m["config.".len()..]);
                        match node.config.raw.get(&key) {
                            Some(serde_json::Value::String(s)) => glob(value, s),
                            Some(serde_json::Value::Array(items)) => items
                                .iter()
                                .any(|i| i.as_str().is_some_and(|s| glob(value, s))),
                            Some(other) => glob(value, &other.to_string()),
                            None => false,
                        }
                    }
                    Some(m) => return Err(format!("unknown selection method `{m}`")),
                };
                if matched {
                    found.insert(node.unique_id.clone());
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_wildcards() {
        assert!(glob("stg_*", "stg_orders"));
        assert!(glob("*orders", "stg_orders"));
        assert!(glob("s?g_orders", "stg_orders"));
        assert!(!glob("stg_*", "orders"));
        assert!(glob("orders", "orders"));
        assert!(!glob("orders", "orders2"));
    }
}
