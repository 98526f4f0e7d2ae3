//! Loading a dbt project from disk: `dbt_project.yml`, SQL files, seeds,
//! snapshots, macros, docs blocks and YAML property files, into a [`Project`]
//! whose nodes carry their dependencies and resolved configuration.
//!
//! Loading renders every SQL file once in the parse phase (see
//! [`crate::render`]) to learn its `ref`s, `source`s and `config()` calls,
//! exactly as dbt's parser does; refs inside `{% if execute %}` or
//! `{% if is_incremental() %}` are therefore invisible to the DAG, as in dbt
//! (declare them with a `-- depends_on: {{ ref('x') }}` comment).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::blocks::{Block, extract_blocks};
use crate::config::{NodeConfig, folder_config, merge_into};
use crate::error::PipelineError;
use crate::render::{MacroSource, NodeScope, Phase, RelationTarget, Renderer, Resolver};

/// A node's unique id, dbt-style: `model.<project>.<name>`,
/// `seed.<project>.<name>`, `snapshot.<project>.<name>`,
/// `test.<project>.<name>.<hash>`, `source.<project>.<source>.<table>`,
/// `exposure.<project>.<name>`, `unit_test.<project>.<model>.<name>`.
pub type NodeId = String;

/// The name of the built-in source holding the event store's tables.
pub const BUILTIN_SOURCE: &str = "plinth";
/// The event store's tables, available as `source('plinth', ...)` without declaring them.
pub const BUILTIN_SOURCE_TABLES: &[&str] = &["events", "persons", "quarantine"];

const BUILTIN_TESTS_FILE: &str = "<plinth>/generic_tests.sql";
const BUILTIN_TESTS: &str = include_str!("generic_tests.sql");

/// Keys of a generic test definition that are configuration, not arguments.
const TEST_CONFIG_KEYS: &[&str] = &[
    "severity",
    "warn_if",
    "error_if",
    "where",
    "limit",
    "store_failures",
    "store_failures_as",
    "fail_calc",
    "tags",
    "enabled",
    "meta",
    "alias",
    "schema",
    "database",
];

/// What kind of resource a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Model,
    Seed,
    Snapshot,
    Test,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Model => "model",
            ResourceType::Seed => "seed",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Test => "test",
        }
    }
}

/// dbt's `target`: what Jinja sees as `target.name`, `target.schema`, ...
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub schema: String,
    pub database: String,
    /// `target.type`; `plinth` by default.
    #[serde(rename = "type")]
    pub adapter_type: String,
    pub threads: u32,
    pub profile_name: String,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            name: "dev".to_string(),
            schema: "main".to_string(),
            database: "plinth".to_string(),
            adapter_type: "plinth".to_string(),
            threads: 1,
            profile_name: "plinth".to_string(),
        }
    }
}

/// Inputs to [`Project::load`] besides the directory.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--vars`: override `vars:` of `dbt_project.yml` (see [`parse_cli_vars`]).
    pub vars: Map<String, Value>,
    pub target: Target,
}

/// The file beside `dbt_project.yml` that holds Plinth's own settings for a
/// project (dbt refuses unknown keys in `dbt_project.yml`).
pub const PLINTH_SETTINGS_FILE: &str = "plinth.yml";

/// How often `plinth serve` builds the project in `dir`: `build_every` in
/// its `plinth.yml` (`15m`, `1h`, ...), if the file and the key exist.
pub fn build_schedule(dir: &Path) -> Result<Option<String>, PipelineError> {
    let path = dir.join(PLINTH_SETTINGS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PipelineError::io(path, e)),
    };
    let settings = parse_yaml(&text, PLINTH_SETTINGS_FILE)?;
    Ok(match settings.get("build_every") {
        None | Some(Value::Null) => None,
        Some(Value::String(every)) => Some(every.clone()),
        Some(other) => {
            return Err(PipelineError::invalid(
                PLINTH_SETTINGS_FILE,
                line_containing(&text, &["build_every"]),
                format!("build_every must be an interval such as 1h, not {other}"),
            ));
        }
    })
}

/// Parses a `--vars` argument (YAML or JSON mapping, as dbt accepts).
pub fn parse_cli_vars(text: &str) -> Result<Map<String, Value>, PipelineError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match parse_yaml(text, "--vars")? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(PipelineError::invalid(
            "--vars",
            None,
            format!("--vars must be a mapping, not {other}"),
        )),
    }
}

/// A column as documented in a property file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    pub description: String,
    pub data_type: Option<String>,
    pub meta: Map<String, Value>,
    pub tags: Vec<String>,
}

/// What a generic test node was generated from.
#[derive(Debug, Clone, Serialize)]
pub struct TestMetadata {
    /// The generic test's name (`unique`, `accepted_values`, a custom one).
    pub name: String,
    pub namespace: Option<String>,
    /// The arguments as dbt's manifest shows them; `model` is a Jinja string.
    pub kwargs: Map<String, Value>,
    pub column_name: Option<String>,
    /// The model, seed, snapshot or source the test is attached to.
    pub attached_node: Option<NodeId>,
}

/// A model, seed, snapshot or data test.
#[derive(Debug, Clone)]
pub struct Node {
    pub unique_id: NodeId,
    pub resource_type: ResourceType,
    pub name: String,
    /// Path relative to the project root, with `/`.
    pub original_file_path: String,
    /// The property file that documented or configured it, if any.
    pub patch_path: Option<String>,
    /// `[project, folder..., name]`.
    pub fqn: Vec<String>,
    /// The Jinja SQL (for snapshots, the body of the snapshot block; for
    /// generic tests, the generated macro call; empty for seeds).
    pub raw_code: String,
    /// `raw_code` starts at line `line_offset + 1` of `original_file_path`.
    pub line_offset: usize,
    pub config: NodeConfig,
    pub description: String,
    pub columns: BTreeMap<String, ColumnInfo>,
    /// Models, seeds and snapshots this node `ref`s, in order of first use.
    pub refs: Vec<NodeId>,
    /// Source tables this node reads, in order of first use.
    pub sources: Vec<NodeId>,
    pub test_metadata: Option<TestMetadata>,
}

impl Node {
    /// The table name in Plinth's store (alias or name); `None` for tests.
    pub fn relation_name(&self) -> Option<String> {
        match self.resource_type {
            ResourceType::Test => None,
            _ => Some(
                self.config
                    .alias
                    .clone()
                    .unwrap_or_else(|| self.name.clone()),
            ),
        }
    }

    /// Everything this node depends on: refs then sources.
    pub fn depends_on(&self) -> impl Iterator<Item = &NodeId> {
        self.refs.iter().chain(self.sources.iter())
    }
}

/// How old a source table's newest row may be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreshnessThreshold {
    pub count: u64,
    /// `minute`, `hour` or `day`.
    pub period: String,
}

/// Source freshness settings (table level overrides source level).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Freshness {
    pub warn_after: Option<FreshnessThreshold>,
    pub error_after: Option<FreshnessThreshold>,
    pub filter: Option<String>,
}

/// One table of a declared (or the built-in) source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceTable {
    pub unique_id: NodeId,
    pub source_name: String,
    /// The table's name as used in `source('s', name)`.
    pub name: String,
    /// The relation name in Plinth's store (`identifier`, else `name`).
    pub identifier: String,
    pub schema: Option<String>,
    pub database: Option<String>,
    pub description: String,
    pub source_description: String,
    pub loader: String,
    pub loaded_at_field: Option<String>,
    pub freshness: Option<Freshness>,
    pub columns: BTreeMap<String, ColumnInfo>,
    pub tags: Vec<String>,
    pub meta: Map<String, Value>,
    pub original_file_path: String,
    pub fqn: Vec<String>,
    /// True for the event store's own tables.
    pub builtin: bool,
}

/// A downstream use of the project (dashboard, notebook, ...).
#[derive(Debug, Clone, Serialize)]
pub struct Exposure {
    pub unique_id: NodeId,
    pub name: String,
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub exposure_type: String,
    pub owner: Value,
    pub description: String,
    pub maturity: Option<String>,
    pub url: Option<String>,
    pub tags: Vec<String>,
    pub meta: Map<String, Value>,
    pub depends_on: Vec<NodeId>,
    pub original_file_path: String,
}

/// One `given` input of a unit test.
#[derive(Debug, Clone, Serialize)]
pub struct UnitTestInput {
    /// `ref('x')` or `source('s', 't')`, as written.
    pub input: String,
    /// `dict` (default), `csv` or `sql`.
    pub format: String,
    /// A list of row mappings (dict) or a string (csv, sql), as written.
    pub rows: Option<Value>,
    pub fixture: Option<String>,
}

/// The expected output of a unit test.
#[derive(Debug, Clone, Serialize)]
pub struct UnitTestExpect {
    pub format: String,
    pub rows: Option<Value>,
    pub fixture: Option<String>,
}

/// A dbt unit test (`unit_tests:` in a property file), parsed but not run here.
#[derive(Debug, Clone, Serialize)]
pub struct UnitTest {
    pub unique_id: NodeId,
    pub name: String,
    /// The model under test (its unique id).
    pub model: NodeId,
    pub description: String,
    pub given: Vec<UnitTestInput>,
    pub expect: UnitTestExpect,
    /// `overrides:` (macros, vars, env_vars) as written.
    pub overrides: Option<Value>,
    pub config: Map<String, Value>,
    pub original_file_path: String,
}

/// A project macro or generic test block.
#[derive(Debug, Clone, Serialize)]
pub struct MacroInfo {
    /// The Jinja name (`test_<name>` for a `{% test <name> %}` block).
    pub name: String,
    pub original_file_path: String,
    pub line: usize,
    pub arguments: Vec<String>,
    pub is_generic_test: bool,
}

/// A `{% docs name %}` block.
#[derive(Debug, Clone, Serialize)]
pub struct DocBlock {
    pub name: String,
    pub original_file_path: String,
    pub contents: String,
}

/// A parsed dbt project. Built by [`Project::load`]; compiled by [`crate::compile`].
pub struct Project {
    pub name: String,
    pub root: PathBuf,
    pub target: Target,
    /// Project vars with `--vars` applied.
    pub vars: Map<String, Value>,
    /// `target-path` (default `target`), relative to `root`.
    pub target_path: String,
    /// Enabled models, seeds, snapshots and tests.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Nodes switched off with `enabled: false` (and tests of disabled nodes).
    pub disabled: BTreeMap<NodeId, Node>,
    pub sources: BTreeMap<NodeId, SourceTable>,
    pub macros: BTreeMap<String, MacroInfo>,
    pub docs: BTreeMap<String, DocBlock>,
    pub exposures: BTreeMap<NodeId, Exposure>,
    pub unit_tests: BTreeMap<NodeId, UnitTest>,
    /// Things dbt would warn about (property entries for unknown models, ...).
    pub warnings: Vec<String>,
    pub(crate) renderer: Renderer,
}

impl fmt::Debug for Project {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Project")
            .field("name", &self.name)
            .field("root", &self.root)
            .field("nodes", &self.nodes.len())
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Files and YAML

fn read_text(root: &Path, rel: &str) -> Result<String, PipelineError> {
    let path = root.join(rel);
    std::fs::read_to_string(&path).map_err(|e| PipelineError::io(path, e))
}

fn parse_yaml(text: &str, file: &str) -> Result<Value, PipelineError> {
    serde_norway::from_str::<Value>(text).map_err(|e| {
        PipelineError::invalid(
            file,
            e.location().map(|l| l.line()),
            format!("invalid YAML: {e}"),
        )
    })
}

/// Files under `root/dir` with one of `extensions`, as sorted `/`-paths
/// relative to `root`. A missing directory has no files.
fn files_under(root: &Path, dir: &str, extensions: &[&str]) -> Result<Vec<String>, PipelineError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.trim_end_matches('/').to_string()];
    while let Some(rel) = pending.pop() {
        let path = root.join(&rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(PipelineError::io(path, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| PipelineError::io(&path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let file_type = entry
                .file_type()
                .map_err(|e| PipelineError::io(entry.path(), e))?;
            if file_type.is_dir() {
                pending.push(child);
            } else if extensions.iter().any(|ext| name.ends_with(ext)) {
                found.push(child);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn file_stem(rel: &str) -> String {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.split_once('.')
        .map(|(stem, _)| stem)
        .unwrap_or(name)
        .to_string()
}

/// Folders between the resource directory and the file: `models/a/b/x.sql` -> `[a, b]`.
fn folders_between(resource_dir: &str, rel: &str) -> Vec<String> {
    let inner = rel
        .strip_prefix(resource_dir.trim_end_matches('/'))
        .unwrap_or(rel)
        .trim_start_matches('/');
    let mut parts: Vec<String> = inner.split('/').map(str::to_string).collect();
    parts.pop();
    parts
}

fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn list_field(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn object(value: Option<&Value>) -> Map<String, Value> {
    match value {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    }
}

/// The first line of `text` containing every needle, for pointing at a
/// definition in a file that has no finer position.
fn line_containing(text: &str, needles: &[&str]) -> Option<usize> {
    text.lines()
        .position(|line| needles.iter().all(|n| line.contains(n)))
        .map(|i| i + 1)
}

fn fnv_hash(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x100000001b3);
        }
    }
    format!("{hash:016x}")
}

// ---------------------------------------------------------------------------
// Property files

/// What a property file says about one model, seed or snapshot.
struct Patch {
    file: String,
    description: String,
    config: Map<String, Value>,
    columns: BTreeMap<String, ColumnInfo>,
    /// (column, test definition) pairs; column `None` for model-level tests.
    tests: Vec<(Option<String>, Value)>,
    /// Folders of the property file under its resource directory.
    folders: Vec<String>,
}

/// Everything read from the project's property files.
struct PropertyDefinitions {
    /// Descriptions, config, columns and tests of models, seeds and snapshots.
    patches: HashMap<(ResourceType, String), Patch>,
    /// (file, folders of the file, source entry).
    sources: Vec<(String, Vec<String>, Map<String, Value>)>,
    /// (file, exposure entry).
    exposures: Vec<(String, Map<String, Value>)>,
    /// (file, unit test entry).
    unit_tests: Vec<(String, Map<String, Value>)>,
}

/// A generic test definition waiting to become a node.
struct PendingTest {
    file: String,
    attached: NodeId,
    /// Jinja expression for the tested relation: `ref('x')` / `source('s','t')`.
    relation_expr: String,
    /// Name used in the generated test name (`orders`, `shop_orders` for sources).
    target_name: String,
    is_source: bool,
    column: Option<String>,
    definition: Value,
    /// Folders of the property file under its resource directory (for the fqn).
    folders: Vec<String>,
}

struct ProjectPaths {
    models: Vec<String>,
    seeds: Vec<String>,
    tests: Vec<String>,
    macros: Vec<String>,
    snapshots: Vec<String>,
    docs: Vec<String>,
}

impl ProjectPaths {
    fn read(file: &Map<String, Value>) -> ProjectPaths {
        let paths = |key: &str, legacy: Option<&str>, default: &str| {
            let found = strings(file.get(key).or_else(|| legacy.and_then(|l| file.get(l))));
            if found.is_empty() {
                vec![default.to_string()]
            } else {
                found
            }
        };
        let models = paths("model-paths", Some("source-paths"), "models");
        let seeds = paths("seed-paths", Some("data-paths"), "seeds");
        let tests = paths("test-paths", None, "tests");
        let macros = paths("macro-paths", None, "macros");
        let snapshots = paths("snapshot-paths", None, "snapshots");
        let mut docs = strings(file.get("docs-paths"));
        if docs.is_empty() {
            docs = [&models, &seeds, &tests, &macros, &snapshots]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
        }
        ProjectPaths {
            models,
            seeds,
            tests,
            macros,
            snapshots,
            docs,
        }
    }

    fn property_dirs(&self) -> Vec<(String, &'static str)> {
        let mut dirs = Vec::new();
        for (list, kind) in [
            (&self.models, "models"),
            (&self.seeds, "seeds"),
            (&self.snapshots, "snapshots"),
            (&self.tests, "tests"),
            (&self.macros, "macros"),
        ] {
            for dir in list {
                if !dirs.iter().any(|(d, _)| d == dir) {
                    dirs.push((dir.clone(), kind));
                }
            }
        }
        dirs
    }
}

// ---------------------------------------------------------------------------
// Loading

/// A SQL resource found on disk, before rendering.
struct Discovered {
    resource_type: ResourceType,
    name: String,
    file: String,
    raw_code: String,
    line_offset: usize,
    fqn: Vec<String>,
}

impl Project {
    /// Loads and parses the project in `dir`.
    ///
    /// Errors name the file (relative to `dir`) and, for Jinja and YAML
    /// problems and unresolved refs, the line.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Project, PipelineError> {
        Loader::new(dir, options)?.load()
    }
}

struct Loader<'a> {
    root: PathBuf,
    options: &'a LoadOptions,
    project_file: Map<String, Value>,
    name: String,
    paths: ProjectPaths,
    warnings: Vec<String>,
}

impl<'a> Loader<'a> {
    fn new(dir: &Path, options: &'a LoadOptions) -> Result<Loader<'a>, PipelineError> {
        let text = read_text(dir, "dbt_project.yml")?;
        let project_file = match parse_yaml(&text, "dbt_project.yml")? {
            Value::Object(map) => map,
            _ => {
                return Err(PipelineError::invalid(
                    "dbt_project.yml",
                    None,
                    "must be a mapping",
                ));
            }
        };
        let name = str_field(&project_file, "name")
            .ok_or_else(|| PipelineError::invalid("dbt_project.yml", None, "`name` is required"))?;
        let paths = ProjectPaths::read(&project_file);
        Ok(Loader {
            root: dir.to_path_buf(),
            options,
            project_file,
            name,
            paths,
            warnings: Vec::new(),
        })
    }

    /// Project vars: global keys, plus the keys under this project's name
    /// (dbt's package-scoped vars), then `--vars` on top.
    fn vars(&self) -> Map<String, Value> {
        let mut vars = Map::new();
        let declared = object(self.project_file.get("vars"));
        for (key, value) in &declared {
            if key != &self.name {
                vars.insert(key.clone(), value.clone());
            }
        }
        if let Some(Value::Object(scoped)) = declared.get(&self.name) {
            vars.extend(scoped.clone());
        }
        vars.extend(self.options.vars.clone());
        vars
    }

    fn section(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().find_map(|k| self.project_file.get(*k))
    }

    fn load(mut self) -> Result<Project, PipelineError> {
        let (macro_sources, macros) = self.load_macros()?;
        let docs = self.load_docs()?;
        let vars = self.vars();
        let doc_texts: BTreeMap<String, String> = docs
            .iter()
            .map(|(k, d)| (k.clone(), d.contents.clone()))
            .collect();
        let renderer = Renderer::new(
            &macro_sources,
            Arc::new(vars.clone()),
            Arc::new(doc_texts),
            &self.options.target,
        )?;

        let discovered = self.discover()?;
        let PropertyDefinitions {
            patches,
            sources: source_defs,
            exposures: exposure_defs,
            unit_tests: unit_test_defs,
        } = self.load_property_files()?;
        let sources = self.build_sources(&source_defs, &renderer)?;

        let mut parse_resolver = Resolver {
            project_name: self.name.clone(),
            schema: self.options.target.schema.clone(),
            database: self.options.target.database.clone(),
            ..Resolver::default()
        };
        for d in &discovered {
            if d.resource_type != ResourceType::Test {
                parse_resolver.refs.insert(
                    d.name.clone(),
                    RelationTarget {
                        id: node_id(d.resource_type, &self.name, &d.name),
                        relation: d.name.clone(),
                        ephemeral: false,
                    },
                );
            }
        }
        for source in sources.values() {
            parse_resolver.sources.insert(
                (source.source_name.clone(), source.name.clone()),
                RelationTarget {
                    id: source.unique_id.clone(),
                    relation: source.identifier.clone(),
                    ephemeral: false,
                },
            );
        }
        let parse_resolver = Arc::new(parse_resolver);

        let mut nodes = BTreeMap::new();
        let mut patches = patches;
        let mut pending = Vec::new();
        for d in discovered {
            let patch = match d.resource_type {
                ResourceType::Test => None,
                _ => patches.remove(&(d.resource_type, d.name.clone())),
            };
            let tests = patch.as_ref().map(|p| p.tests.clone()).unwrap_or_default();
            let folders = patch
                .as_ref()
                .map(|p| p.folders.clone())
                .unwrap_or_default();
            let patch_file = patch.as_ref().map(|p| p.file.clone());
            let node = self.build_node(d, patch, &renderer, &parse_resolver)?;
            for (column, definition) in tests {
                pending.push(PendingTest {
                    file: patch_file.clone().unwrap_or_default(),
                    attached: node.unique_id.clone(),
                    relation_expr: format!(
                        "ref({})",
                        jinja_literal(&Value::String(node.name.clone()))
                    ),
                    target_name: node.name.clone(),
                    is_source: false,
                    column,
                    definition,
                    folders: folders.clone(),
                });
            }
            nodes.insert(node.unique_id.clone(), node);
        }
        for ((resource_type, name), patch) in patches {
            self.warnings.push(format!(
                "{}: {} '{name}' is documented but has no file",
                patch.file,
                resource_type.as_str()
            ));
        }

        // Generic tests: from node patches (kept on the side) and sources.
        pending.extend(self.pending_from_sources(&source_defs, &sources));
        for test in pending {
            let node = self.build_generic_test(test, &macros, &renderer, &parse_resolver)?;
            nodes.insert(node.unique_id.clone(), node);
        }

        // Enabled or not: tests of disabled nodes are disabled too.
        let (mut enabled, mut disabled): (BTreeMap<_, _>, BTreeMap<_, _>) =
            nodes.into_iter().partition(|(_, n)| n.config.enabled);
        let orphaned: Vec<NodeId> = enabled
            .values()
            .filter(|n| {
                n.test_metadata
                    .as_ref()
                    .and_then(|m| m.attached_node.as_ref())
                    .is_some_and(|a| disabled.contains_key(a))
            })
            .map(|n| n.unique_id.clone())
            .collect();
        for id in orphaned {
            if let Some(node) = enabled.remove(&id) {
                disabled.insert(id, node);
            }
        }
        for node in enabled.values() {
            for dep in &node.refs {
                if let Some(target) = disabled.get(dep) {
                    let code = read_text(&self.root, &node.original_file_path).unwrap_or_default();
                    return Err(PipelineError::MissingReference {
                        file: node.original_file_path.clone(),
                        line: line_containing(&code, &["ref(", &target.name]),
                        message: format!(
                            "{} '{}' depends on {} '{}', which is disabled",
                            node.resource_type.as_str(),
                            node.name,
                            target.resource_type.as_str(),
                            target.name
                        ),
                    });
                }
            }
        }

        let exposures = self.build_exposures(exposure_defs, &renderer, &parse_resolver)?;
        let unit_tests = self.build_unit_tests(unit_test_defs, &enabled)?;

        Ok(Project {
            name: self.name.clone(),
            root: self.root.clone(),
            target: self.options.target.clone(),
            vars,
            target_path: str_field(&self.project_file, "target-path")
                .unwrap_or_else(|| "target".to_string()),
            nodes: enabled,
            disabled,
            sources,
            macros,
            docs,
            exposures,
            unit_tests,
            warnings: self.warnings,
            renderer,
        })
    }

    fn load_macros(
        &mut self,
    ) -> Result<(Vec<MacroSource>, BTreeMap<String, MacroInfo>), PipelineError> {
        let mut files = Vec::new();
        for dir in &self.paths.macros {
            files.extend(files_under(&self.root, dir, &[".sql"])?);
        }
        for dir in &self.paths.tests {
            files.extend(files_under(
                &self.root,
                &format!("{dir}/generic"),
                &[".sql"],
            )?);
        }
        let mut project_macros: Vec<(MacroSource, MacroInfo)> = Vec::new();
        for file in files {
            let text = read_text(&self.root, &file)?;
            for block in blocks_of(&text, &file)? {
                match block.kind.as_str() {
                    "macro" | "test" => {
                        let (source, info) = macro_from_block(&block, &file);
                        if let Some((earlier, _)) =
                            project_macros.iter().find(|(m, _)| m.name == source.name)
                        {
                            return Err(PipelineError::invalid(
                                &file,
                                Some(block.line),
                                format!(
                                    "macro '{}' is defined twice (also in {}:{})",
                                    source.name, earlier.file, earlier.line
                                ),
                            ));
                        }
                        project_macros.push((source, info));
                    }
                    "materialization" => self.warnings.push(format!(
                        "{file}:{}: custom materializations are not supported; '{}' is ignored",
                        block.line, block.name
                    )),
                    _ => {}
                }
            }
        }
        let mut sources = Vec::new();
        let mut infos = BTreeMap::new();
        let builtin_blocks = extract_blocks(BUILTIN_TESTS).map_err(|(line, message)| {
            PipelineError::invalid(BUILTIN_TESTS_FILE, Some(line), message)
        })?;
        for block in &builtin_blocks {
            let (source, info) = macro_from_block(block, BUILTIN_TESTS_FILE);
            if !project_macros.iter().any(|(m, _)| m.name == source.name) {
                infos.insert(info.name.clone(), info);
                sources.push(source);
            }
        }
        for (source, info) in project_macros {
            infos.insert(info.name.clone(), info);
            sources.push(source);
        }
        Ok((sources, infos))
    }

    fn load_docs(&self) -> Result<BTreeMap<String, DocBlock>, PipelineError> {
        let mut docs: BTreeMap<String, DocBlock> = BTreeMap::new();
        let mut seen_dirs = Vec::new();
        for dir in &self.paths.docs {
            if seen_dirs.contains(dir) {
                continue;
            }
            seen_dirs.push(dir.clone());
            for file in files_under(&self.root, dir, &[".md"])? {
                let text = read_text(&self.root, &file)?;
                for block in blocks_of(&text, &file)? {
                    if block.kind != "docs" {
                        continue;
                    }
                    if let Some(earlier) = docs.get(&block.name) {
                        return Err(PipelineError::invalid(
                            &file,
                            Some(block.line),
                            format!(
                                "docs block '{}' is defined twice (also in {})",
                                block.name, earlier.original_file_path
                            ),
                        ));
                    }
                    docs.insert(
                        block.name.clone(),
                        DocBlock {
                            name: block.name.clone(),
                            original_file_path: file.clone(),
                            contents: block.body.trim().to_string(),
                        },
                    );
                }
            }
        }
        Ok(docs)
    }

    /// Finds models, seeds, snapshots and singular tests.
    fn discover(&self) -> Result<Vec<Discovered>, PipelineError> {
        let mut found = Vec::new();
        for dir in &self.paths.models {
            for file in files_under(&self.root, dir, &[".sql"])? {
                let name = file_stem(&file);
                let mut fqn = vec![self.name.clone()];
                fqn.extend(folders_between(dir, &file));
                fqn.push(name.clone());
                found.push(Discovered {
                    resource_type: ResourceType::Model,
                    raw_code: read_text(&self.root, &file)?,
                    name,
                    file,
                    line_offset: 0,
                    fqn,
                });
            }
        }
        for dir in &self.paths.seeds {
            for file in files_under(&self.root, dir, &[".csv"])? {
                let name = file_stem(&file);
                let mut fqn = vec![self.name.clone()];
                fqn.extend(folders_between(dir, &file));
                fqn.push(name.clone());
                found.push(Discovered {
                    resource_type: ResourceType::Seed,
                    raw_code: String::new(),
                    name,
                    file,
                    line_offset: 0,
                    fqn,
                });
            }
        }
        for dir in &self.paths.snapshots {
            for file in files_under(&self.root, dir, &[".sql"])? {
                let text = read_text(&self.root, &file)?;
                for block in blocks_of(&text, &file)? {
                    if block.kind != "snapshot" {
                        continue;
                    }
                    // dbt's snapshot fqn has the file name and then the block name.
                    let mut fqn = vec![self.name.clone()];
                    fqn.extend(folders_between(dir, &file));
                    fqn.push(file_stem(&file));
                    fqn.push(block.name.clone());
                    found.push(Discovered {
                        resource_type: ResourceType::Snapshot,
                        name: block.name.clone(),
                        file: file.clone(),
                        raw_code: block.body.clone(),
                        // The body starts on the line of the opening tag.
                        line_offset: block.line - 1,
                        fqn,
                    });
                }
            }
        }
        for dir in &self.paths.tests {
            let generic = format!("{}/generic/", dir.trim_end_matches('/'));
            for file in files_under(&self.root, dir, &[".sql"])? {
                if file.starts_with(&generic) {
                    continue;
                }
                let name = file_stem(&file);
                let mut fqn = vec![self.name.clone()];
                fqn.extend(folders_between(dir, &file));
                fqn.push(name.clone());
                found.push(Discovered {
                    resource_type: ResourceType::Test,
                    raw_code: read_text(&self.root, &file)?,
                    name,
                    file,
                    line_offset: 0,
                    fqn,
                });
            }
        }
        // Models, seeds and snapshots share one namespace for `ref`.
        let mut by_name: HashMap<(bool, &str), &Discovered> = HashMap::new();
        for d in &found {
            let key = (d.resource_type == ResourceType::Test, d.name.as_str());
            if let Some(earlier) = by_name.insert(key, d) {
                return Err(PipelineError::invalid(
                    &d.file,
                    None,
                    format!(
                        "two resources are named '{}': {} and {}",
                        d.name, earlier.file, d.file
                    ),
                ));
            }
        }
        Ok(found)
    }

    fn load_property_files(&mut self) -> Result<PropertyDefinitions, PipelineError> {
        let mut patches: HashMap<(ResourceType, String), Patch> = HashMap::new();
        let mut sources = Vec::new();
        let mut exposures = Vec::new();
        let mut unit_tests = Vec::new();
        for (dir, _) in self.paths.property_dirs() {
            for file in files_under(&self.root, &dir, &[".yml", ".yaml"])? {
                let text = read_text(&self.root, &file)?;
                let doc = match parse_yaml(&text, &file)? {
                    Value::Object(map) => map,
                    Value::Null => continue,
                    _ => {
                        return Err(PipelineError::invalid(
                            &file,
                            Some(1),
                            "a property file must be a mapping",
                        ));
                    }
                };
                let folders = folders_between(&dir, &file);
                for (key, resource_type) in [
                    ("models", ResourceType::Model),
                    ("seeds", ResourceType::Seed),
                    ("snapshots", ResourceType::Snapshot),
                ] {
                    for entry in list_field(doc.get(key)) {
                        let Value::Object(entry) = entry else {
                            return Err(PipelineError::invalid(
                                &file,
                                None,
                                format!("each entry of `{key}` must be a mapping"),
                            ));
                        };
                        let name = str_field(&entry, "name").ok_or_else(|| {
                            PipelineError::invalid(
                                &file,
                                None,
                                format!("an entry of `{key}` has no `name`"),
                            )
                        })?;
                        let patch = parse_patch(&entry, &file, &folders)?;
                        if let Some(earlier) = patches.insert((resource_type, name.clone()), patch)
                        {
                            return Err(PipelineError::invalid(
                                &file,
                                line_containing(&text, &["name:", &name]),
                                format!(
                                    "{} '{name}' is described twice (also in {})",
                                    resource_type.as_str(),
                                    earlier.file
                                ),
                            ));
                        }
                    }
                }
                for entry in list_field(doc.get("sources")) {
                    let Value::Object(entry) = entry else {
                        return Err(PipelineError::invalid(
                            &file,
                            None,
                            "each source must be a mapping",
                        ));
                    };
                    sources.push((file.clone(), folders.clone(), entry));
                }
                for entry in list_field(doc.get("exposures")) {
                    if let Value::Object(entry) = entry {
                        exposures.push((file.clone(), entry));
                    }
                }
                for entry in list_field(doc.get("unit_tests")) {
                    if let Value::Object(entry) = entry {
                        unit_tests.push((file.clone(), entry));
                    }
                }
            }
        }
        Ok(PropertyDefinitions {
            patches,
            sources,
            exposures,
            unit_tests,
        })
    }
}

impl Loader<'_> {
    fn section_for(&self, resource_type: ResourceType) -> Option<&Value> {
        match resource_type {
            ResourceType::Model => self.section(&["models"]),
            ResourceType::Seed => self.section(&["seeds"]),
            ResourceType::Snapshot => self.section(&["snapshots"]),
            ResourceType::Test => self.section(&["data_tests", "tests"]),
        }
    }

    fn build_node(
        &self,
        d: Discovered,
        patch: Option<Patch>,
        renderer: &Renderer,
        resolver: &Arc<Resolver>,
    ) -> Result<Node, PipelineError> {
        let unique_id = node_id(d.resource_type, &self.name, &d.name);
        let mut layers = folder_config(self.section_for(d.resource_type), &d.fqn);
        if let Some(patch) = &patch {
            merge_into(&mut layers, &patch.config);
        }
        let default_materialized = match d.resource_type {
            ResourceType::Model => "view",
            ResourceType::Seed => "seed",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Test => "test",
        };
        let mut refs = Vec::new();
        let mut sources = Vec::new();
        if d.resource_type != ResourceType::Seed {
            let scope = Arc::new(NodeScope {
                phase: Phase::Parse,
                resolver: resolver.clone(),
                this: Some(d.name.clone()),
                model: json!({
                    "name": d.name,
                    "unique_id": unique_id,
                    "resource_type": d.resource_type.as_str(),
                    "original_file_path": d.file,
                    "fqn": d.fqn,
                }),
                is_incremental: false,
                config_view: layers.clone(),
                where_clause: None,
                run_started_at: crate::artifacts::dbt_datetime_now(),
                invocation_id: String::new(),
                capture: Mutex::new(Default::default()),
            });
            renderer.render(&d.raw_code, &d.file, d.line_offset, scope.clone())?;
            let capture =
                std::mem::take(&mut *scope.capture.lock().unwrap_or_else(|e| e.into_inner()));
            merge_into(&mut layers, &capture.config);
            refs = capture.refs;
            sources = capture.sources;
        }
        let config = NodeConfig::resolve(layers, default_materialized, &d.file)?;
        if d.resource_type == ResourceType::Snapshot && config.enabled {
            for required in ["unique_key", "strategy"] {
                if !config.raw.contains_key(required) {
                    return Err(PipelineError::invalid(
                        &d.file,
                        Some(d.line_offset + 1),
                        format!("snapshot '{}' needs the config `{required}`", d.name),
                    ));
                }
            }
        }
        let (description, columns, patch_path) = match patch {
            Some(patch) => (
                renderer.render_text(&patch.description, &patch.file)?,
                render_columns(patch.columns, renderer, &patch.file)?,
                Some(patch.file),
            ),
            None => (String::new(), BTreeMap::new(), None),
        };
        Ok(Node {
            unique_id,
            resource_type: d.resource_type,
            name: d.name,
            original_file_path: d.file,
            patch_path,
            fqn: d.fqn,
            raw_code: d.raw_code,
            line_offset: d.line_offset,
            config,
            description,
            columns,
            refs,
            sources,
            test_metadata: None,
        })
    }

    fn build_sources(
        &mut self,
        defs: &[(String, Vec<String>, Map<String, Value>)],
        renderer: &Renderer,
    ) -> Result<BTreeMap<NodeId, SourceTable>, PipelineError> {
        let mut tables = BTreeMap::new();
        for (file, _, def) in defs {
            let source_name = str_field(def, "name")
                .ok_or_else(|| PipelineError::invalid(file, None, "a source has no `name`"))?;
            let source_config = object(def.get("config"));
            if source_config.get("enabled") == Some(&Value::Bool(false)) {
                continue;
            }
            let source_freshness = def
                .get("freshness")
                .or_else(|| source_config.get("freshness"));
            let source_loaded_at = str_field(def, "loaded_at_field")
                .or_else(|| str_field(&source_config, "loaded_at_field"));
            let source_description =
                renderer.render_text(&str_field(def, "description").unwrap_or_default(), file)?;
            for table in list_field(def.get("tables")) {
                let Value::Object(table) = table else {
                    return Err(PipelineError::invalid(
                        file,
                        None,
                        format!("tables of source '{source_name}' must be mappings"),
                    ));
                };
                let name = str_field(&table, "name").ok_or_else(|| {
                    PipelineError::invalid(
                        file,
                        None,
                        format!("a table of source '{source_name}' has no `name`"),
                    )
                })?;
                let table_config = object(table.get("config"));
                if table_config.get("enabled") == Some(&Value::Bool(false)) {
                    continue;
                }
                // A table's own `freshness` (even `null`) replaces the source's.
                let freshness_value = if table.contains_key("freshness") {
                    table.get("freshness")
                } else if table_config.contains_key("freshness") {
                    table_config.get("freshness")
                } else {
                    source_freshness
                };
                let freshness = parse_freshness(freshness_value, file)?;
                let unique_id = format!("source.{}.{source_name}.{name}", self.name);
                let mut tags = strings(def.get("tags"));
                tags.extend(strings(table.get("tags")));
                let mut meta = object(def.get("meta"));
                meta.extend(object(table.get("meta")));
                let columns = parse_columns(table.get("columns"), file)?;
                tables.insert(
                    unique_id.clone(),
                    SourceTable {
                        unique_id,
                        source_name: source_name.clone(),
                        identifier: str_field(&table, "identifier").unwrap_or_else(|| name.clone()),
                        schema: str_field(def, "schema"),
                        database: str_field(def, "database"),
                        description: renderer.render_text(
                            &str_field(&table, "description").unwrap_or_default(),
                            file,
                        )?,
                        source_description: source_description.clone(),
                        loader: str_field(def, "loader").unwrap_or_default(),
                        loaded_at_field: str_field(&table, "loaded_at_field")
                            .or_else(|| str_field(&table_config, "loaded_at_field"))
                            .or_else(|| source_loaded_at.clone()),
                        freshness,
                        columns: render_columns(columns, renderer, file)?,
                        tags,
                        meta,
                        original_file_path: file.clone(),
                        fqn: vec![self.name.clone(), source_name.clone(), name.clone()],
                        name,
                        builtin: false,
                    },
                );
            }
        }
        for table in BUILTIN_SOURCE_TABLES {
            let unique_id = format!("source.{}.{BUILTIN_SOURCE}.{table}", self.name);
            tables
                .entry(unique_id.clone())
                .or_insert_with(|| SourceTable {
                    unique_id,
                    source_name: BUILTIN_SOURCE.to_string(),
                    name: table.to_string(),
                    identifier: table.to_string(),
                    schema: None,
                    database: None,
                    description: format!("Plinth event store table `{table}`."),
                    source_description: "Plinth's event store.".to_string(),
                    loader: "plinth".to_string(),
                    loaded_at_field: None,
                    freshness: None,
                    columns: BTreeMap::new(),
                    tags: Vec::new(),
                    meta: Map::new(),
                    original_file_path: String::new(),
                    fqn: vec![
                        self.name.clone(),
                        BUILTIN_SOURCE.to_string(),
                        table.to_string(),
                    ],
                    builtin: true,
                });
        }
        Ok(tables)
    }

    fn pending_from_sources(
        &self,
        defs: &[(String, Vec<String>, Map<String, Value>)],
        sources: &BTreeMap<NodeId, SourceTable>,
    ) -> Vec<PendingTest> {
        let mut pending = Vec::new();
        for (file, folders, def) in defs {
            let Some(source_name) = str_field(def, "name") else {
                continue;
            };
            for table in list_field(def.get("tables")) {
                let Value::Object(table) = table else {
                    continue;
                };
                let Some(name) = str_field(&table, "name") else {
                    continue;
                };
                let unique_id = format!("source.{}.{source_name}.{name}", self.name);
                if !sources.contains_key(&unique_id) {
                    continue;
                }
                let relation_expr = format!(
                    "source({}, {})",
                    jinja_literal(&Value::String(source_name.clone())),
                    jinja_literal(&Value::String(name.clone()))
                );
                let mut push = |column: Option<String>, definition: Value| {
                    pending.push(PendingTest {
                        file: file.clone(),
                        attached: unique_id.clone(),
                        relation_expr: relation_expr.clone(),
                        target_name: format!("{source_name}_{name}"),
                        is_source: true,
                        column,
                        definition,
                        folders: folders.clone(),
                    })
                };
                for definition in tests_of(&table) {
                    push(None, definition);
                }
                for column in list_field(table.get("columns")) {
                    let Value::Object(column) = column else {
                        continue;
                    };
                    let column_name = str_field(&column, "name");
                    for definition in tests_of(&column) {
                        push(column_name.clone(), definition);
                    }
                }
            }
        }
        pending
    }

    fn build_generic_test(
        &mut self,
        test: PendingTest,
        macros: &BTreeMap<String, MacroInfo>,
        renderer: &Renderer,
        resolver: &Arc<Resolver>,
    ) -> Result<Node, PipelineError> {
        let file = test.file.clone();
        let def = parse_test_definition(&test.definition, &file)?;
        let macro_name = format!("test_{}", def.test_name);
        let Some(macro_info) = macros.get(&macro_name) else {
            let text = read_text(&self.root, &file).unwrap_or_default();
            return Err(PipelineError::invalid(
                &file,
                line_containing(&text, &[&def.test_name]),
                format!(
                    "generic test '{}' not found: no `{{% test {} %}}` block in the project",
                    def.full_name(),
                    def.test_name
                ),
            ));
        };
        let mut args = def.args.clone();
        let column_name = str_field(&args, "column_name").or(test.column.clone());
        args.remove("column_name");
        args.remove("model");
        // Arguments the test does not declare would fail the call; dbt
        // passes them in `kwargs`, which minijinja macros do not have.
        let undeclared: Vec<String> = args
            .keys()
            .filter(|k| !macro_info.arguments.contains(k))
            .cloned()
            .collect();
        for key in undeclared {
            args.remove(&key);
            self.warnings.push(format!(
                "{file}: test '{}' does not declare the argument '{key}'; it is ignored",
                def.test_name
            ));
        }

        // dbt's name: test, tested relation, then the argument values
        // (column_name included) in key order; a custom `name:` wins.
        let prefix = if test.is_source { "source_" } else { "" };
        let mut name_args = args.clone();
        if let Some(column) = &column_name {
            name_args.insert("column_name".into(), Value::String(column.clone()));
        }
        let mut full_name = format!("{prefix}{}_{}", def.test_name, test.target_name);
        if !name_args.is_empty() {
            full_name.push('_');
            full_name.push_str(
                &name_args
                    .values()
                    .map(flatten_for_name)
                    .collect::<Vec<_>>()
                    .join("__"),
            );
        }
        let full_name = sanitize_name(&full_name);
        let args_json = Value::Object(args.clone()).to_string();
        let hash = fnv_hash(&[
            &file,
            &test.attached,
            column_name.as_deref().unwrap_or(""),
            &def.full_name(),
            &args_json,
        ]);
        let name = def.custom_name.clone().unwrap_or(full_name);
        let unique_id = format!("test.{}.{name}.{}", self.name, &hash[..10]);

        let mut call_args = vec![format!("model=get_where_subquery({})", test.relation_expr)];
        if let Some(column) = &column_name
            && macro_info.arguments.iter().any(|a| a == "column_name")
        {
            call_args.push(format!(
                "column_name={}",
                jinja_literal(&Value::String(column.clone()))
            ));
        }
        for (key, value) in &args {
            call_args.push(format!("{key}={}", jinja_argument(value)));
        }
        let raw_code = format!("{{{{ {macro_name}({}) }}}}", call_args.join(", "));

        let mut fqn = vec![self.name.clone()];
        fqn.extend(test.folders.clone());
        fqn.push(name.clone());
        let mut layers = folder_config(self.section_for(ResourceType::Test), &fqn);
        merge_into(&mut layers, &def.config);
        let config = NodeConfig::resolve(layers.clone(), "test", &file)?;

        let scope = Arc::new(NodeScope {
            phase: Phase::Parse,
            resolver: resolver.clone(),
            this: None,
            model: json!({"name": name, "unique_id": unique_id, "resource_type": "test"}),
            is_incremental: false,
            config_view: layers,
            where_clause: config.where_clause.clone(),
            run_started_at: String::new(),
            invocation_id: String::new(),
            capture: Mutex::new(Default::default()),
        });
        renderer
            .render(&raw_code, &file, 0, scope.clone())
            .map_err(|e| match e {
                // The generated call has no lines of its own: point at the test's
                // definition in the property file instead.
                PipelineError::MissingReference { message, .. } => {
                    let text = read_text(&self.root, &file).unwrap_or_default();
                    PipelineError::MissingReference {
                        line: line_containing(&text, &[&def.test_name]),
                        file: file.clone(),
                        message,
                    }
                }
                other => other,
            })?;
        let capture = std::mem::take(&mut *scope.capture.lock().unwrap_or_else(|e| e.into_inner()));

        let mut kwargs = args.clone();
        kwargs.insert(
            "model".into(),
            Value::String(format!(
                "{{{{ get_where_subquery({}) }}}}",
                test.relation_expr
            )),
        );
        if let Some(column) = &column_name {
            kwargs.insert("column_name".into(), Value::String(column.clone()));
        }
        Ok(Node {
            unique_id,
            resource_type: ResourceType::Test,
            name,
            original_file_path: file.clone(),
            patch_path: None,
            fqn,
            raw_code,
            line_offset: 0,
            config,
            description: def.description,
            columns: BTreeMap::new(),
            refs: capture.refs,
            sources: capture.sources,
            test_metadata: Some(TestMetadata {
                name: def.test_name.clone(),
                namespace: def.namespace.clone(),
                kwargs,
                column_name,
                attached_node: Some(test.attached),
            }),
        })
    }

    fn build_exposures(
        &self,
        defs: Vec<(String, Map<String, Value>)>,
        renderer: &Renderer,
        resolver: &Arc<Resolver>,
    ) -> Result<BTreeMap<NodeId, Exposure>, PipelineError> {
        let mut exposures = BTreeMap::new();
        for (file, def) in defs {
            let name = str_field(&def, "name")
                .ok_or_else(|| PipelineError::invalid(&file, None, "an exposure has no `name`"))?;
            let unique_id = format!("exposure.{}.{name}", self.name);
            let expressions: Vec<String> = strings(def.get("depends_on"));
            let template: String = expressions
                .iter()
                .map(|e| format!("{{{{ {} }}}}\n", strip_braces(e)))
                .collect();
            let scope = Arc::new(NodeScope {
                phase: Phase::Parse,
                resolver: resolver.clone(),
                this: None,
                model: json!({"name": name, "unique_id": unique_id, "resource_type": "exposure"}),
                is_incremental: false,
                config_view: Map::new(),
                where_clause: None,
                run_started_at: String::new(),
                invocation_id: String::new(),
                capture: Mutex::new(Default::default()),
            });
            renderer
                .render(&template, &file, 0, scope.clone())
                .map_err(|e| match e {
                    PipelineError::MissingReference { message, .. } => {
                        let text = read_text(&self.root, &file).unwrap_or_default();
                        PipelineError::MissingReference {
                            line: line_containing(&text, &["name:", &name]),
                            file: file.clone(),
                            message: format!("exposure '{name}': {message}"),
                        }
                    }
                    other => other,
                })?;
            let capture =
                std::mem::take(&mut *scope.capture.lock().unwrap_or_else(|e| e.into_inner()));
            let depends_on = capture.refs.into_iter().chain(capture.sources).collect();
            exposures.insert(
                unique_id.clone(),
                Exposure {
                    unique_id,
                    label: str_field(&def, "label"),
                    exposure_type: str_field(&def, "type").unwrap_or_default(),
                    owner: def.get("owner").cloned().unwrap_or(Value::Null),
                    description: renderer
                        .render_text(&str_field(&def, "description").unwrap_or_default(), &file)?,
                    maturity: str_field(&def, "maturity"),
                    url: str_field(&def, "url"),
                    tags: strings(def.get("tags")),
                    meta: object(def.get("meta")),
                    depends_on,
                    original_file_path: file,
                    name,
                },
            );
        }
        Ok(exposures)
    }

    fn build_unit_tests(
        &self,
        defs: Vec<(String, Map<String, Value>)>,
        nodes: &BTreeMap<NodeId, Node>,
    ) -> Result<BTreeMap<NodeId, UnitTest>, PipelineError> {
        let mut tests = BTreeMap::new();
        for (file, def) in defs {
            let text = read_text(&self.root, &file).unwrap_or_default();
            let name = str_field(&def, "name")
                .ok_or_else(|| PipelineError::invalid(&file, None, "a unit test has no `name`"))?;
            let line = line_containing(&text, &["name:", &name]);
            let model_name = str_field(&def, "model").ok_or_else(|| {
                PipelineError::invalid(&file, line, format!("unit test '{name}' has no `model`"))
            })?;
            let model = node_id(ResourceType::Model, &self.name, &model_name);
            if !nodes.contains_key(&model) {
                return Err(PipelineError::MissingReference {
                    file: file.clone(),
                    line,
                    message: format!(
                        "unit test '{name}' tests model '{model_name}', which was not found"
                    ),
                });
            }
            let mut given = Vec::new();
            for input in list_field(def.get("given")) {
                let Value::Object(input) = input else {
                    return Err(PipelineError::invalid(
                        &file,
                        line,
                        format!("unit test '{name}': each `given` must be a mapping"),
                    ));
                };
                given.push(UnitTestInput {
                    input: str_field(&input, "input").ok_or_else(|| {
                        PipelineError::invalid(
                            &file,
                            line,
                            format!("unit test '{name}': a `given` has no `input`"),
                        )
                    })?,
                    format: str_field(&input, "format").unwrap_or_else(|| "dict".to_string()),
                    rows: input.get("rows").cloned(),
                    fixture: str_field(&input, "fixture"),
                });
            }
            let expect = object(def.get("expect"));
            if expect.is_empty() {
                return Err(PipelineError::invalid(
                    &file,
                    line,
                    format!("unit test '{name}' has no `expect`"),
                ));
            }
            let unique_id = format!("unit_test.{}.{model_name}.{name}", self.name);
            tests.insert(
                unique_id.clone(),
                UnitTest {
                    unique_id,
                    model,
                    description: str_field(&def, "description").unwrap_or_default(),
                    given,
                    expect: UnitTestExpect {
                        format: str_field(&expect, "format").unwrap_or_else(|| "dict".to_string()),
                        rows: expect.get("rows").cloned(),
                        fixture: str_field(&expect, "fixture"),
                    },
                    overrides: def.get("overrides").cloned(),
                    config: object(def.get("config")),
                    original_file_path: file,
                    name,
                },
            );
        }
        Ok(tests)
    }
}

pub(crate) fn node_id(resource_type: ResourceType, project: &str, name: &str) -> NodeId {
    format!("{}.{project}.{name}", resource_type.as_str())
}

fn blocks_of(text: &str, file: &str) -> Result<Vec<Block>, PipelineError> {
    extract_blocks(text).map_err(|(line, message)| PipelineError::Jinja {
        file: file.to_string(),
        line: Some(line),
        message,
    })
}

/// Turns a `macro` or `test` block into joinable source; a test block
/// `{% test x(...) %}...{% endtest %}` becomes `{% macro test_x(...) %}...{% endmacro %}`
/// on the same lines.
fn macro_from_block(block: &Block, file: &str) -> (MacroSource, MacroInfo) {
    let is_test = block.kind == "test";
    let (name, text) = if is_test {
        let keyword_at = block.open_tag.find("test").unwrap_or(2);
        let open = format!(
            "{}macro test_{}",
            &block.open_tag[..keyword_at],
            block.open_tag[keyword_at + 4..].trim_start()
        );
        let close = block.close_tag.replacen("endtest", "endmacro", 1);
        (
            format!("test_{}", block.name),
            format!("{open}{}{close}", block.body),
        )
    } else {
        (
            block.name.clone(),
            format!("{}{}{}", block.open_tag, block.body, block.close_tag),
        )
    };
    (
        MacroSource {
            name: name.clone(),
            file: file.to_string(),
            line: block.line,
            text,
        },
        MacroInfo {
            name,
            original_file_path: file.to_string(),
            line: block.line,
            arguments: block.arg_names.clone(),
            is_generic_test: is_test,
        },
    )
}

fn tests_of(entry: &Map<String, Value>) -> Vec<Value> {
    let mut tests = list_field(entry.get("data_tests"));
    tests.extend(list_field(entry.get("tests")));
    tests
}

fn parse_columns(
    value: Option<&Value>,
    file: &str,
) -> Result<BTreeMap<String, ColumnInfo>, PipelineError> {
    let mut columns = BTreeMap::new();
    for column in list_field(value) {
        let Value::Object(column) = column else {
            return Err(PipelineError::invalid(
                file,
                None,
                "each column must be a mapping",
            ));
        };
        let name = str_field(&column, "name")
            .ok_or_else(|| PipelineError::invalid(file, None, "a column has no `name`"))?;
        let config = object(column.get("config"));
        let mut tags = strings(column.get("tags"));
        tags.extend(strings(config.get("tags")));
        let mut meta = object(column.get("meta"));
        meta.extend(object(config.get("meta")));
        columns.insert(
            name.clone(),
            ColumnInfo {
                name,
                description: str_field(&column, "description").unwrap_or_default(),
                data_type: str_field(&column, "data_type"),
                meta,
                tags,
            },
        );
    }
    Ok(columns)
}

fn render_columns(
    mut columns: BTreeMap<String, ColumnInfo>,
    renderer: &Renderer,
    file: &str,
) -> Result<BTreeMap<String, ColumnInfo>, PipelineError> {
    for column in columns.values_mut() {
        column.description = renderer.render_text(&column.description, file)?;
    }
    Ok(columns)
}

fn parse_patch(
    entry: &Map<String, Value>,
    file: &str,
    folders: &[String],
) -> Result<Patch, PipelineError> {
    let mut config = object(entry.get("config"));
    // Older property files put some config keys beside `config:`.
    for key in ["tags", "meta", "docs"] {
        if let Some(value) = entry.get(key) {
            let mut layer = Map::new();
            layer.insert(key.to_string(), value.clone());
            merge_into(&mut config, &layer);
        }
    }
    let mut tests: Vec<(Option<String>, Value)> =
        tests_of(entry).into_iter().map(|t| (None, t)).collect();
    for column in list_field(entry.get("columns")) {
        if let Value::Object(column) = &column {
            let name = str_field(column, "name");
            tests.extend(tests_of(column).into_iter().map(|t| (name.clone(), t)));
        }
    }
    Ok(Patch {
        file: file.to_string(),
        description: str_field(entry, "description").unwrap_or_default(),
        config,
        columns: parse_columns(entry.get("columns"), file)?,
        tests,
        folders: folders.to_vec(),
    })
}

fn parse_freshness(value: Option<&Value>, file: &str) -> Result<Option<Freshness>, PipelineError> {
    let Some(Value::Object(map)) = value else {
        return Ok(None);
    };
    let threshold = |key: &str| -> Result<Option<FreshnessThreshold>, PipelineError> {
        let Some(Value::Object(t)) = map.get(key) else {
            return Ok(None);
        };
        let count = t.get("count").and_then(Value::as_u64).ok_or_else(|| {
            PipelineError::invalid(
                file,
                None,
                format!("freshness `{key}` needs a whole-number `count`"),
            )
        })?;
        let period = str_field(t, "period").unwrap_or_default();
        if !["minute", "hour", "day"].contains(&period.as_str()) {
            return Err(PipelineError::invalid(
                file,
                None,
                format!("freshness `{key}` period must be minute, hour or day, not '{period}'"),
            ));
        }
        Ok(Some(FreshnessThreshold { count, period }))
    };
    Ok(Some(Freshness {
        warn_after: threshold("warn_after")?,
        error_after: threshold("error_after")?,
        filter: str_field(map, "filter"),
    }))
}

/// A generic test definition from a property file, split into parts.
struct TestDefinition {
    test_name: String,
    namespace: Option<String>,
    args: Map<String, Value>,
    config: Map<String, Value>,
    custom_name: Option<String>,
    description: String,
}

impl TestDefinition {
    fn full_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}.{}", self.test_name),
            None => self.test_name.clone(),
        }
    }
}

/// Accepts `- unique`, `- accepted_values: {values: [...], severity: warn}`,
/// and dbt 1.10's `- accepted_values: {arguments: {values: [...]}, config: {...}}`.
fn parse_test_definition(def: &Value, file: &str) -> Result<TestDefinition, PipelineError> {
    let (full_name, body) = match def {
        Value::String(name) => (name.clone(), Map::new()),
        Value::Object(map) if map.len() == 1 => {
            let (name, body) = map.iter().next().expect("one entry");
            let body = match body {
                Value::Object(b) => b.clone(),
                Value::Null => Map::new(),
                other => {
                    return Err(PipelineError::invalid(
                        file,
                        None,
                        format!("test '{name}' must have a mapping of arguments, not {other}"),
                    ));
                }
            };
            (name.clone(), body)
        }
        other => {
            return Err(PipelineError::invalid(
                file,
                None,
                format!("a test must be a name or a mapping with one test name, not {other}"),
            ));
        }
    };
    let (namespace, test_name) = match full_name.rsplit_once('.') {
        Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
        None => (None, full_name.clone()),
    };
    if let Some(ns) = &namespace
        && ns != "dbt"
    {
        return Err(PipelineError::invalid(
            file,
            None,
            format!("test '{full_name}' comes from package '{ns}'; packages are not supported"),
        ));
    }
    let mut args = Map::new();
    let mut config = object(body.get("config"));
    let mut custom_name = None;
    let mut description = String::new();
    for (key, value) in &body {
        match key.as_str() {
            "config" => {}
            "arguments" => args.extend(object(Some(value))),
            "name" => custom_name = value.as_str().map(str::to_string),
            "description" => description = value.as_str().unwrap_or_default().to_string(),
            k if TEST_CONFIG_KEYS.contains(&k) => {
                let mut layer = Map::new();
                layer.insert(k.to_string(), value.clone());
                merge_into(&mut config, &layer);
            }
            _ => {
                args.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(TestDefinition {
        test_name,
        namespace,
        args,
        config,
        custom_name,
        description,
    })
}

fn strip_braces(expr: &str) -> &str {
    let trimmed = expr.trim();
    trimmed
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .map(str::trim)
        .unwrap_or(trimmed)
}

/// A test argument as Jinja: `ref(...)`/`source(...)` strings (optionally in
/// `{{ }}`) stay expressions, everything else becomes a literal.
fn jinja_argument(value: &Value) -> String {
    if let Value::String(s) = value {
        let expr = strip_braces(s);
        if (expr.starts_with("ref(") || expr.starts_with("source(")) && expr.ends_with(')') {
            return expr.to_string();
        }
    }
    jinja_literal(value)
}

/// A JSON value written as a Jinja literal.
pub(crate) fn jinja_literal(value: &Value) -> String {
    match value {
        Value::Null => "none".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(jinja_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    jinja_literal(&Value::String(k.clone())),
                    jinja_literal(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// An argument value as dbt spells it in a test name (Python's `str`).
fn flatten_for_name(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Null => "None".to_string(),
        Value::Array(items) => items
            .iter()
            .map(flatten_for_name)
            .collect::<Vec<_>>()
            .join("__"),
        Value::Object(map) => map
            .values()
            .map(flatten_for_name)
            .collect::<Vec<_>>()
            .join("__"),
        other => other.to_string(),
    }
}

/// dbt's test-name sanitising: every run of characters other than letters,
/// digits and `_` becomes one `_`.
fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}
