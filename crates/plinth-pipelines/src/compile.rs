//! Compiling a loaded project: the DAG (topological order, levels for
//! parallel runs, parent and child maps), and every node's SQL rendered in
//! the compile phase, with ephemeral models inlined as CTEs the way dbt
//! injects them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::error::PipelineError;
use crate::project::{
    DocBlock, Exposure, MacroInfo, Node, NodeId, Project, ResourceType, SourceTable, Target,
    UnitTest,
};
use crate::render::{NodeScope, Phase, RelationTarget, Resolver, ephemeral_cte_name};

/// Run-time facts compilation depends on.
#[derive(Debug, Clone, Default)]
pub struct CompileContext {
    /// Relation names that already exist as tables in the store. A model's
    /// `is_incremental()` is true when it is materialized `incremental`, its
    /// relation is in this set, and no full refresh applies (dbt's rule).
    pub existing_relations: HashSet<String>,
    /// `--full-refresh`; a model's `full_refresh` config overrides it.
    pub full_refresh: bool,
    /// `run_started_at` as Jinja sees it (a string); empty means now, UTC.
    pub run_started_at: String,
    /// `invocation_id` as Jinja sees it.
    pub invocation_id: String,
    /// Leave ephemeral models out of the SQL that uses them: their `ref`s
    /// still render as their CTE names ([`crate::ephemeral_cte_name`]), but
    /// no CTE is injected, so a unit test can provide a relation of that
    /// name instead.
    pub ephemerals_as_relations: bool,
}

/// A node with its compiled SQL.
#[derive(Debug, Clone)]
pub struct CompiledNode {
    pub node: Node,
    /// The SQL to run: for models the `select` to materialise (ephemeral
    /// dependencies inlined as leading CTEs); for data tests the query that
    /// returns the failing rows; empty for seeds.
    pub compiled_sql: String,
    /// `pre_hook` / `post_hook` statements, rendered.
    pub pre_hooks: Vec<String>,
    pub post_hooks: Vec<String>,
    /// Whether `is_incremental()` was true for this compilation.
    pub is_incremental: bool,
}

impl CompiledNode {
    /// The table name in the store (`None` for tests).
    pub fn relation_name(&self) -> Option<String> {
        self.node.relation_name()
    }

    /// True for ephemeral models: they are never built, only inlined.
    pub fn is_ephemeral(&self) -> bool {
        self.node.config.materialized == "ephemeral"
    }

    /// For a data test, dbt's audit query: one row with `failures`,
    /// `should_warn` and `should_error`, from `fail_calc`, `warn_if`,
    /// `error_if` and `limit`. `None` for other nodes.
    pub fn audit_sql(&self) -> Option<String> {
        if self.node.resource_type != ResourceType::Test {
            return None;
        }
        let c = &self.node.config;
        let limit = c.limit.map(|n| format!("\nlimit {n}")).unwrap_or_default();
        Some(format!(
            "select\n  {calc} as failures,\n  {calc} {warn} as should_warn,\n  {calc} {error} as should_error\nfrom (\n{sql}{limit}\n) dbt_internal_test",
            calc = c.fail_calc,
            warn = c.warn_if,
            error = c.error_if,
            sql = self.compiled_sql.trim_end(),
        ))
    }
}

/// A compiled project: what the runner executes and the manifest describes.
#[derive(Debug, Clone)]
pub struct CompiledProject {
    pub project_name: String,
    pub target: Target,
    /// Enabled models, seeds, snapshots and tests.
    pub nodes: BTreeMap<NodeId, CompiledNode>,
    pub disabled: BTreeMap<NodeId, Node>,
    pub sources: BTreeMap<NodeId, SourceTable>,
    pub exposures: BTreeMap<NodeId, Exposure>,
    pub unit_tests: BTreeMap<NodeId, UnitTest>,
    pub macros: BTreeMap<String, MacroInfo>,
    pub docs: BTreeMap<String, DocBlock>,
    /// Every node in an order where parents come before children.
    pub order: Vec<NodeId>,
    /// `levels[i]` holds the nodes whose longest chain of node parents has
    /// length `i`: the nodes of one level may run in parallel once all
    /// earlier levels are done. Tests sit one level after their parents.
    pub levels: Vec<Vec<NodeId>>,
    /// Parents of every node, source, exposure and unit test (dbt's `parent_map`).
    pub parent_map: BTreeMap<NodeId, Vec<NodeId>>,
    /// Children of every node and source (dbt's `child_map`).
    pub child_map: BTreeMap<NodeId, Vec<NodeId>>,
    pub run_started_at: String,
    pub invocation_id: String,
}

/// Compiles every enabled node of `project` in dependency order.
///
/// Fails on a dependency cycle (naming the nodes and their files) and on
/// Jinja errors (naming the file and line).
pub fn compile(project: &Project, ctx: &CompileContext) -> Result<CompiledProject, PipelineError> {
    let (order, levels) = topological_order(project)?;
    let (parent_map, child_map) = graph_maps(project);
    let run_started_at = if ctx.run_started_at.is_empty() {
        crate::artifacts::dbt_datetime_now()
    } else {
        ctx.run_started_at.clone()
    };
    let resolver = Arc::new(compile_resolver(project));

    let mut compiled = BTreeMap::new();
    // Ephemeral models: their own rendered SQL and the ephemerals they use.
    let mut ephemeral_parts: HashMap<NodeId, (String, Vec<NodeId>)> = HashMap::new();
    for id in &order {
        let node = &project.nodes[id];
        if node.resource_type == ResourceType::Seed {
            compiled.insert(
                id.clone(),
                CompiledNode {
                    node: node.clone(),
                    compiled_sql: String::new(),
                    pre_hooks: Vec::new(),
                    post_hooks: Vec::new(),
                    is_incremental: false,
                },
            );
            continue;
        }
        let relation = node.relation_name();
        let is_incremental = node.config.materialized == "incremental"
            && relation
                .as_ref()
                .is_some_and(|r| ctx.existing_relations.contains(r))
            && !node.config.full_refresh.unwrap_or(ctx.full_refresh);
        let scope = Arc::new(NodeScope {
            phase: Phase::Compile,
            resolver: resolver.clone(),
            this: relation,
            model: json!({
                "name": node.name,
                "unique_id": node.unique_id,
                "resource_type": node.resource_type.as_str(),
                "original_file_path": node.original_file_path,
                "fqn": node.fqn,
                "alias": node.relation_name(),
                "config": node.config.raw,
            }),
            is_incremental,
            config_view: node.config.raw.clone(),
            where_clause: node.config.where_clause.clone(),
            run_started_at: run_started_at.clone(),
            invocation_id: ctx.invocation_id.clone(),
            capture: Mutex::new(Default::default()),
        });
        let render = |text: &str, line_offset: usize| {
            project
                .renderer
                .render(text, &node.original_file_path, line_offset, scope.clone())
        };
        let body = render(&node.raw_code, node.line_offset)?;
        let direct_ephemerals = std::mem::take(
            &mut scope
                .capture
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ephemerals,
        );
        let mut pre_hooks = Vec::new();
        for hook in &node.config.pre_hook {
            pre_hooks.push(render(hook, 0)?);
        }
        let mut post_hooks = Vec::new();
        for hook in &node.config.post_hook {
            post_hooks.push(render(hook, 0)?);
        }
        let compiled_sql = if ctx.ephemerals_as_relations {
            body.clone()
        } else {
            inject_ephemerals(&body, &direct_ephemerals, &ephemeral_parts, project)
        };
        if node.config.materialized == "ephemeral" {
            ephemeral_parts.insert(id.clone(), (body, direct_ephemerals));
        }
        compiled.insert(
            id.clone(),
            CompiledNode {
                node: node.clone(),
                compiled_sql,
                pre_hooks,
                post_hooks,
                is_incremental,
            },
        );
    }

    Ok(CompiledProject {
        project_name: project.name.clone(),
        target: project.target.clone(),
        nodes: compiled,
        disabled: project.disabled.clone(),
        sources: project.sources.clone(),
        exposures: project.exposures.clone(),
        unit_tests: project.unit_tests.clone(),
        macros: project.macros.clone(),
        docs: project.docs.clone(),
        order,
        levels,
        parent_map,
        child_map,
        run_started_at,
        invocation_id: ctx.invocation_id.clone(),
    })
}

fn compile_resolver(project: &Project) -> Resolver {
    let mut resolver = Resolver {
        project_name: project.name.clone(),
        schema: project.target.schema.clone(),
        database: project.target.database.clone(),
        ..Resolver::default()
    };
    for node in project.nodes.values() {
        if let Some(relation) = node.relation_name() {
            resolver.refs.insert(
                node.name.clone(),
                RelationTarget {
                    id: node.unique_id.clone(),
                    relation,
                    ephemeral: node.config.materialized == "ephemeral",
                },
            );
        }
    }
    for node in project.disabled.values() {
        if node.resource_type != ResourceType::Test {
            resolver
                .disabled
                .insert(node.name.clone(), node.resource_type.as_str().to_string());
        }
    }
    for source in project.sources.values() {
        resolver.sources.insert(
            (source.source_name.clone(), source.name.clone()),
            RelationTarget {
                id: source.unique_id.clone(),
                relation: source.identifier.clone(),
                ephemeral: false,
            },
        );
    }
    resolver
}

/// Prepends the CTEs of every ephemeral model `sql` uses (directly or through
/// other ephemerals, dependencies first). If `sql` already starts with
/// `with`, the CTEs join that clause, as dbt's injection does.
fn inject_ephemerals(
    sql: &str,
    direct: &[NodeId],
    parts: &HashMap<NodeId, (String, Vec<NodeId>)>,
    project: &Project,
) -> String {
    if direct.is_empty() {
        return sql.to_string();
    }
    fn visit(
        id: &NodeId,
        parts: &HashMap<NodeId, (String, Vec<NodeId>)>,
        seen: &mut HashSet<NodeId>,
        ordered: &mut Vec<NodeId>,
    ) {
        if !seen.insert(id.clone()) {
            return;
        }
        if let Some((_, deps)) = parts.get(id) {
            for dep in deps {
                visit(dep, parts, seen, ordered);
            }
        }
        ordered.push(id.clone());
    }
    let mut seen = HashSet::new();
    let mut ordered = Vec::new();
    for id in direct {
        visit(id, parts, &mut seen, &mut ordered);
    }
    let ctes: Vec<String> = ordered
        .iter()
        .filter_map(|id| {
            let (body, _) = parts.get(id)?;
            let name = &project.nodes.get(id)?.name;
            Some(format!(
                "{} as (\n{}\n)",
                ephemeral_cte_name(name),
                body.trim()
            ))
        })
        .collect();
    let ctes = ctes.join(",\n");
    let start = leading_trivia_len(sql);
    let rest = &sql[start..];
    let starts_with_with = rest.len() > 4
        && rest[..4].eq_ignore_ascii_case("with")
        && rest[4..].starts_with(|c: char| c.is_whitespace());
    if starts_with_with {
        let after = rest[4..].trim_start();
        let (recursive, after) = match after.get(..9) {
            Some(word) if word.eq_ignore_ascii_case("recursive") => {
                ("recursive ", after[9..].trim_start())
            }
            _ => ("", after),
        };
        format!("{}with {recursive}{ctes},\n{after}", &sql[..start])
    } else {
        format!("{}with {ctes}\n{rest}", &sql[..start])
    }
}

/// Length of leading whitespace and SQL comments.
fn leading_trivia_len(sql: &str) -> usize {
    let mut pos = 0;
    loop {
        let rest = &sql[pos..];
        let trimmed = rest.trim_start();
        pos += rest.len() - trimmed.len();
        if trimmed.starts_with("--") {
            pos += trimmed.find('\n').map(|i| i + 1).unwrap_or(trimmed.len());
        } else if trimmed.starts_with("/*") {
            pos += trimmed.find("*/").map(|i| i + 2).unwrap_or(trimmed.len());
        } else {
            return pos;
        }
    }
}

/// Parents among nodes only (sources are always available).
fn node_parents<'a>(project: &'a Project, node: &'a Node) -> impl Iterator<Item = &'a NodeId> {
    node.depends_on().filter(|d| project.nodes.contains_key(*d))
}

fn topological_order(project: &Project) -> Result<(Vec<NodeId>, Vec<Vec<NodeId>>), PipelineError> {
    let mut pending_parents: HashMap<&NodeId, usize> = HashMap::new();
    let mut children: HashMap<&NodeId, Vec<&NodeId>> = HashMap::new();
    for (id, node) in &project.nodes {
        let parents: BTreeSet<&NodeId> = node_parents(project, node).collect();
        pending_parents.insert(id, parents.len());
        for parent in parents {
            children.entry(parent).or_default().push(id);
        }
    }
    let mut level_of: HashMap<&NodeId, usize> = HashMap::new();
    let mut ready: BTreeSet<&NodeId> = pending_parents
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut order = Vec::with_capacity(project.nodes.len());
    while let Some(id) = ready.pop_first() {
        let level = node_parents(project, &project.nodes[id])
            .map(|p| level_of[p] + 1)
            .max()
            .unwrap_or(0);
        level_of.insert(id, level);
        order.push(id.clone());
        for child in children.get(id).into_iter().flatten() {
            let count = pending_parents.get_mut(child).expect("every node counted");
            *count -= 1;
            if *count == 0 {
                ready.insert(child);
            }
        }
    }
    if order.len() < project.nodes.len() {
        return Err(find_cycle(project, &level_of));
    }
    let depth = level_of.values().copied().max().map_or(0, |m| m + 1);
    let mut levels = vec![Vec::new(); depth];
    for id in &order {
        levels[level_of[id]].push(id.clone());
    }
    Ok((order, levels))
}

/// Among the nodes left unordered, follows parents until one repeats.
fn find_cycle(project: &Project, ordered: &HashMap<&NodeId, usize>) -> PipelineError {
    let start = project
        .nodes
        .keys()
        .find(|id| !ordered.contains_key(id))
        .expect("a node is unordered");
    let mut path: Vec<&NodeId> = vec![start];
    loop {
        let current = project
            .nodes
            .get(*path.last().expect("non-empty"))
            .expect("node");
        let next = node_parents(project, current)
            .find(|p| !ordered.contains_key(p))
            .expect("an unordered node has an unordered parent");
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<&NodeId> = path[pos..].to_vec();
            // Parents were followed: reverse to read in dependency direction.
            cycle.reverse();
            cycle.push(cycle[0]);
            return PipelineError::Cycle {
                cycle: cycle
                    .into_iter()
                    .map(|id| (id.clone(), project.nodes[id].original_file_path.clone()))
                    .collect(),
            };
        }
        path.push(next);
    }
}

type GraphMap = BTreeMap<NodeId, Vec<NodeId>>;

fn graph_maps(project: &Project) -> (GraphMap, GraphMap) {
    let mut parent_map: GraphMap = BTreeMap::new();
    let mut child_map: GraphMap = BTreeMap::new();
    for id in project.nodes.keys().chain(project.sources.keys()) {
        parent_map.entry(id.clone()).or_default();
        child_map.entry(id.clone()).or_default();
    }
    let mut link = |child: &NodeId, parent: &NodeId| {
        let parents = parent_map.entry(child.clone()).or_default();
        if !parents.contains(parent) {
            parents.push(parent.clone());
            child_map
                .entry(parent.clone())
                .or_default()
                .push(child.clone());
        }
    };
    for (id, node) in &project.nodes {
        for parent in node.depends_on() {
            link(id, parent);
        }
    }
    for (id, exposure) in &project.exposures {
        for parent in &exposure.depends_on {
            link(id, parent);
        }
    }
    for (id, unit_test) in &project.unit_tests {
        link(id, &unit_test.model);
    }
    for children in child_map.values_mut() {
        children.sort();
    }
    (parent_map, child_map)
}
