//! The Jinja side: one `minijinja` environment per project holding dbt's
//! context (`var`, `env_var`, `target`, `doc`, `log`, `exceptions`, `tojson`,
//! `fromjson`) and every macro, and a per-node scope that adds `ref`,
//! `source`, `config`, `this`, `model`, `is_incremental`, `execute`,
//! `run_started_at` and `get_where_subquery`.
//!
//! dbt macros are global: any model may call any project macro without an
//! import. All macro blocks (dbt's built-in generic tests first, then the
//! project's, `{% test x %}` rewritten to `{% macro test_x %}`) are joined into
//! one template, and every rendered file gets a one-line
//! `{% from "__macros__" import ... %}` prefix on its first line, so that line
//! numbers in errors stay those of the file. Errors raised inside the joined
//! template are mapped back to the macro's own file and line.
//!
//! A node renders twice: in the parse phase `ref`/`source`/`config` are
//! recorded (dependencies and `config()` calls, as dbt's parser does, with
//! `execute` false and `is_incremental()` false), in the compile phase they
//! render relation names with the resolved configuration.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Object, Rest, Value, from_args};
use minijinja::{Environment, Error, ErrorKind, State};
use serde_json::Map;

use crate::error::PipelineError;
use crate::project::{NodeId, Target};

const MACROS_TEMPLATE: &str = "__macros__";
/// dbt's cross-database macros, imported as `dbt` everywhere.
const DBT_MACROS_TEMPLATE: &str = "<plinth>/dbt_macros.sql";
const DBT_MACROS: &str = include_str!("dbt_macros.sql");
/// Prepended to every rendered text, on its first line so that line numbers
/// stay those of the file.
const IMPORT_DBT: &str = "{% import \"<plinth>/dbt_macros.sql\" as dbt %}";

/// Which of the two renders of a node this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Parse,
    Compile,
}

/// A macro (or generic test) block ready to join into the macros template.
#[derive(Debug, Clone)]
pub(crate) struct MacroSource {
    /// The Jinja name (`test_unique` for `{% test unique %}`).
    pub name: String,
    pub file: String,
    pub line: usize,
    /// The whole block, tags rewritten where needed, same line count as the original.
    pub text: String,
}

/// Where a block starts in the joined macros template, for mapping errors back.
struct MacroSpan {
    joined_line: usize,
    file: String,
    file_line: usize,
}

/// What a `ref` or `source` resolves to in the current phase.
#[derive(Debug, Clone)]
pub(crate) struct RelationTarget {
    pub id: NodeId,
    pub relation: String,
    pub ephemeral: bool,
}

/// The names `ref` and `source` can resolve, shared by all nodes of a phase.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    pub project_name: String,
    pub schema: String,
    pub database: String,
    /// Resource name (model, seed, snapshot) to target.
    pub refs: HashMap<String, RelationTarget>,
    /// Names that exist but are disabled: a `ref` to them is an error.
    pub disabled: HashMap<String, String>,
    /// (source name, table name) to target.
    pub sources: HashMap<(String, String), RelationTarget>,
}

/// What a render recorded.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub refs: Vec<NodeId>,
    pub sources: Vec<NodeId>,
    pub config: Map<String, serde_json::Value>,
    /// Ephemeral models referenced directly, in order of first use.
    pub ephemerals: Vec<NodeId>,
}

/// Everything a single node's render needs.
pub(crate) struct NodeScope {
    pub phase: Phase,
    pub resolver: Arc<Resolver>,
    /// The node's own relation name (`this`), if it has one.
    pub this: Option<String>,
    /// The `model` variable (a subset of the node as dbt exposes it).
    pub model: serde_json::Value,
    pub is_incremental: bool,
    /// What `config.get` reads: the resolved config when compiling, the
    /// project and property-file layers when parsing.
    pub config_view: Map<String, serde_json::Value>,
    /// A test's `where` config, applied by `get_where_subquery`.
    pub where_clause: Option<String>,
    pub run_started_at: String,
    pub invocation_id: String,
    pub capture: Mutex<Capture>,
}

impl NodeScope {
    /// Whether the node is disabled by the config seen so far in this render.
    fn disabled_so_far(&self) -> bool {
        let off = |v: Option<&serde_json::Value>| v == Some(&serde_json::Value::Bool(false));
        off(self.capture().config.get("enabled")) || off(self.config_view.get("enabled"))
    }

    fn capture(&self) -> std::sync::MutexGuard<'_, Capture> {
        // A panic while holding the lock would be a bug in this module; the
        // data is still usable, so recover it.
        self.capture.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A relation as Jinja sees it: renders as the plain table name.
#[derive(Debug)]
struct Relation {
    identifier: String,
    schema: String,
    database: String,
    rendered: String,
}

impl Object for Relation {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "identifier" | "name" | "table" => Some(Value::from(self.identifier.clone())),
            "schema" => Some(Value::from(self.schema.clone())),
            "database" => Some(Value::from(self.database.clone())),
            _ => None,
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

fn relation_value(resolver: &Resolver, identifier: &str, rendered: String) -> Value {
    Value::from_object(Relation {
        identifier: identifier.to_string(),
        schema: resolver.schema.clone(),
        database: resolver.database.clone(),
        rendered,
    })
}

/// `config` in a node: callable (`config(materialized='table')`) and with
/// `get` / `require` methods.
#[derive(Debug)]
struct ConfigObject {
    scope: Arc<NodeScope>,
}

impl fmt::Debug for NodeScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeScope")
            .field("this", &self.this)
            .finish()
    }
}

fn to_json(value: &Value) -> Result<serde_json::Value, Error> {
    serde_json::to_value(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("value cannot be used in config: {e}"),
        )
    })
}

impl Object for ConfigObject {
    fn call(self: &Arc<Self>, _state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (positional, kwargs): (&[Value], Kwargs) = from_args(args)?;
        let mut given = Map::new();
        for value in positional {
            match to_json(value)? {
                serde_json::Value::Object(map) => given.extend(map),
                other => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("config() takes keyword arguments or a mapping, not {other}"),
                    ));
                }
            }
        }
        for key in kwargs.args() {
            let value: Value = kwargs.get(key)?;
            given.insert(key.to_string(), to_json(&value)?);
        }
        if self.scope.phase == Phase::Parse {
            crate::config::merge_into(&mut self.scope.capture().config, &given);
        }
        Ok(Value::from(""))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let (key, default): (&str, Option<Value>) = from_args(args)?;
        let key = crate::config::normalize_key(key);
        let found = if self.scope.phase == Phase::Parse {
            let capture = self.scope.capture();
            capture
                .config
                .get(&key)
                .or_else(|| self.scope.config_view.get(&key))
                .cloned()
        } else {
            self.scope.config_view.get(&key).cloned()
        };
        match (method, found) {
            ("get", Some(v)) | ("require", Some(v)) => Ok(Value::from(minijinja::value::Serde(v))),
            ("get", None) => Ok(default.unwrap_or(Value::from(()))),
            ("require", None) => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("required config `{key}` is not set"),
            )),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `exceptions.raise_compiler_error(msg)` and `exceptions.warn(msg)`.
#[derive(Debug)]
struct Exceptions;

impl Object for Exceptions {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let (message,): (String,) = from_args(args)?;
        match method {
            "raise_compiler_error" => Err(Error::new(ErrorKind::InvalidOperation, message)),
            "warn" => Ok(Value::from("")),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// Marks an error as an unresolved `ref`/`source` so that it becomes
/// [`PipelineError::MissingReference`].
#[derive(Debug)]
struct UnresolvedReference;

impl fmt::Display for UnresolvedReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unresolved reference")
    }
}

impl std::error::Error for UnresolvedReference {}

fn unresolved(detail: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, detail).with_source(UnresolvedReference)
}

/// The project-wide Jinja environment.
pub(crate) struct Renderer {
    env: Environment<'static>,
    header: String,
    spans: Vec<MacroSpan>,
}

impl Renderer {
    pub(crate) fn new(
        macros: &[MacroSource],
        vars: Arc<Map<String, serde_json::Value>>,
        docs: Arc<BTreeMap<String, String>>,
        target: &Target,
    ) -> Result<Renderer, PipelineError> {
        let mut env = Environment::new();
        // SQL is never escaped; minijinja would JSON-escape in files named
        // `.yml`, which is where generic tests come from.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let mut joined = String::new();
        let mut spans = Vec::new();
        let mut joined_line = 1;
        for m in macros {
            spans.push(MacroSpan {
                joined_line,
                file: m.file.clone(),
                file_line: m.line,
            });
            joined.push_str(&m.text);
            joined.push('\n');
            joined_line += m.text.matches('\n').count() + 1;
        }
        let header = if macros.is_empty() {
            IMPORT_DBT.to_string()
        } else {
            let names: Vec<&str> = macros.iter().map(|m| m.name.as_str()).collect();
            format!(
                "{IMPORT_DBT}{{% from \"{MACROS_TEMPLATE}\" import {} %}}",
                names.join(", ")
            )
        };
        let mut renderer = Renderer {
            env: Environment::new(),
            header,
            spans,
        };
        env.add_template(DBT_MACROS_TEMPLATE, DBT_MACROS)
            .map_err(|e| renderer.error(e, DBT_MACROS_TEMPLATE, 0))?;
        env.add_template_owned(MACROS_TEMPLATE, format!("{IMPORT_DBT}{joined}"))
            .map_err(|e| renderer.error(e, MACROS_TEMPLATE, 0))?;

        env.add_function(
            "var",
            move |name: String, default: Option<Value>| -> Result<Value, Error> {
                match (vars.get(&name), default) {
                    (Some(v), _) => Ok(Value::from(minijinja::value::Serde(v.clone()))),
                    (None, Some(default)) => Ok(default),
                    (None, None) => Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("required var '{name}' not found in config (dbt_project.yml vars or --vars)"),
                    )),
                }
            },
        );
        env.add_function(
            "env_var",
            |name: String, default: Option<String>| -> Result<String, Error> {
                match (std::env::var(&name), default) {
                    (Ok(v), _) => Ok(v),
                    (Err(_), Some(d)) => Ok(d),
                    (Err(_), None) => Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("env var required but not provided: '{name}'"),
                    )),
                }
            },
        );
        env.add_function("doc", move |args: Rest<String>| -> Result<String, Error> {
            let name = args.last().ok_or_else(|| {
                Error::new(ErrorKind::MissingArgument, "doc() needs a docs block name")
            })?;
            docs.get(name).cloned().ok_or_else(|| {
                unresolved(format!(
                    "doc('{name}'): no {{% docs {name} %}} block was found"
                ))
            })
        });
        env.add_function(
            "log",
            |_msg: Value, _kwargs: Kwargs| -> Result<String, Error> { Ok(String::new()) },
        );
        env.add_function("tojson", |value: Value| -> Result<String, Error> {
            serde_json::to_string(&value)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
        });
        env.add_function("fromjson", |text: String| -> Result<Value, Error> {
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            Ok(Value::from(minijinja::value::Serde(parsed)))
        });
        env.add_global("exceptions", Value::from_object(Exceptions));
        env.add_global("target", Value::from(minijinja::value::Serde(target)));
        renderer.env = env;
        Ok(renderer)
    }

    /// Renders `source` (a node's raw code, whose first line is line
    /// `line_offset + 1` of `file`) in the given node scope.
    pub(crate) fn render(
        &self,
        source: &str,
        file: &str,
        line_offset: usize,
        scope: Arc<NodeScope>,
    ) -> Result<String, PipelineError> {
        let mut env = self.env.clone();
        add_node_functions(&mut env, scope);
        let text = format!("{}{}", self.header, source);
        let template = env
            .template_from_named_str(file, &text)
            .map_err(|e| self.error(e, file, line_offset))?;
        template
            .render(())
            .map_err(|e| self.error(e, file, line_offset))
    }

    /// Renders a description (which may use `doc()` and `var()`), outside any node.
    pub(crate) fn render_text(&self, text: &str, file: &str) -> Result<String, PipelineError> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        self.env
            .render_str(text, ())
            .map_err(|e| self.error(e, file, 0))
    }

    /// Converts a minijinja error into one naming the project file and line.
    fn error(&self, err: Error, file: &str, line_offset: usize) -> PipelineError {
        let mut message = match err.detail() {
            Some(detail) => format!("{}: {detail}", err.kind()),
            None => err.kind().to_string(),
        };
        let mut missing = false;
        let mut source = std::error::Error::source(&err);
        while let Some(inner) = source {
            if inner.is::<UnresolvedReference>() {
                missing = true;
            } else {
                message.push_str(&format!(": {inner}"));
            }
            source = inner.source();
        }
        let (file, line) = match (err.name(), err.line()) {
            (Some(MACROS_TEMPLATE), Some(line)) => {
                match self.spans.iter().rev().find(|s| s.joined_line <= line) {
                    Some(span) => (
                        span.file.clone(),
                        Some(span.file_line + line - span.joined_line),
                    ),
                    None => (file.to_string(), None),
                }
            }
            (_, line) => (file.to_string(), line.map(|l| l + line_offset)),
        };
        if missing {
            PipelineError::MissingReference {
                file,
                line,
                message,
            }
        } else {
            PipelineError::Jinja {
                file,
                line,
                message,
            }
        }
    }
}

fn add_node_functions(env: &mut Environment<'static>, scope: Arc<NodeScope>) {
    let resolver = scope.resolver.clone();
    let this = scope
        .this
        .as_ref()
        .map(|name| relation_value(&resolver, name, name.clone()))
        .unwrap_or(Value::from(()));
    env.add_global("this", this);
    env.add_global("model", Value::from(minijinja::value::Serde(&scope.model)));
    env.add_global("execute", Value::from(scope.phase == Phase::Compile));
    env.add_global("run_started_at", Value::from(scope.run_started_at.clone()));
    env.add_global("invocation_id", Value::from(scope.invocation_id.clone()));
    env.add_global(
        "config",
        Value::from_object(ConfigObject {
            scope: scope.clone(),
        }),
    );
    let incremental = scope.is_incremental;
    env.add_function("is_incremental", move || incremental);

    let ref_scope = scope.clone();
    env.add_function(
        "ref",
        move |args: Rest<String>, kwargs: Kwargs| -> Result<Value, Error> {
            // Model versions (`v=`/`version=`) are accepted and ignored:
            // Plinth has one relation per model.
            let _: Option<Value> = kwargs.get("v")?;
            let _: Option<Value> = kwargs.get("version")?;
            let resolver = &ref_scope.resolver;
            let name = match args.as_slice() {
                [name] => name,
                [package, name] if *package == resolver.project_name => name,
                [package, name] => {
                    return Err(unresolved(format!(
                        "ref('{package}', '{name}'): package '{package}' was not found (only this project, '{}', is loaded)",
                        resolver.project_name
                    )));
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "ref() takes a name, or a package and a name",
                    ));
                }
            };
            if let Some(kind) = resolver.disabled.get(name.as_str()) {
                return Err(unresolved(format!(
                    "ref('{name}'): {kind} '{name}' is disabled"
                )));
            }
            let Some(target) = resolver.refs.get(name.as_str()) else {
                // A node switched off by its own `config(enabled=false)` may
                // ref things that no longer exist, as in dbt.
                if ref_scope.phase == Phase::Parse && ref_scope.disabled_so_far() {
                    return Ok(relation_value(resolver, name, name.clone()));
                }
                return Err(unresolved(format!(
                    "ref('{name}'): no model, seed or snapshot named '{name}' was found"
                )));
            };
            let mut capture = ref_scope.capture();
            if !capture.refs.contains(&target.id) {
                capture.refs.push(target.id.clone());
            }
            if target.ephemeral && ref_scope.phase == Phase::Compile {
                if !capture.ephemerals.contains(&target.id) {
                    capture.ephemerals.push(target.id.clone());
                }
                return Ok(relation_value(resolver, name, ephemeral_cte_name(name)));
            }
            Ok(relation_value(resolver, &target.relation, target.relation.clone()))
        },
    );

    let source_scope = scope.clone();
    env.add_function(
        "source",
        move |source_name: String, table_name: String| -> Result<Value, Error> {
            let resolver = &source_scope.resolver;
            let target = resolver
                .sources
                .get(&(source_name.clone(), table_name.clone()))
                .ok_or_else(|| {
                    unresolved(format!(
                        "source('{source_name}', '{table_name}'): no such source table was found"
                    ))
                })?;
            let mut capture = source_scope.capture();
            if !capture.sources.contains(&target.id) {
                capture.sources.push(target.id.clone());
            }
            Ok(relation_value(
                resolver,
                &target.relation,
                target.relation.clone(),
            ))
        },
    );

    let where_clause = scope.where_clause.clone();
    env.add_function("get_where_subquery", move |relation: Value| -> Value {
        match &where_clause {
            Some(condition) => Value::from(format!(
                "(select * from {relation} where {condition}) dbt_subquery"
            )),
            None => relation,
        }
    });
}

/// The CTE name an ephemeral model is inlined under (dbt's spelling).
/// The name an ephemeral model's `ref` renders as: its CTE's name.
pub fn ephemeral_cte_name(model_name: &str) -> String {
    format!("__dbt__cte__{model_name}")
}
