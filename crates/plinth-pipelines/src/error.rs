//! The one error type of the crate. Every variant that comes from a project
//! file names the file (relative to the project root) and, where known, the line.

use std::fmt;
use std::path::PathBuf;

/// Why loading, compiling or selecting failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A YAML file is malformed or has the wrong shape, or a project file is
    /// otherwise invalid (duplicate names, missing required settings...).
    #[error("{}: {message}", Location { file, line: *line })]
    Invalid {
        file: String,
        line: Option<usize>,
        message: String,
    },
    /// Jinja failed to parse or render.
    #[error("{}: Jinja error: {message}", Location { file, line: *line })]
    Jinja {
        file: String,
        line: Option<usize>,
        message: String,
    },
    /// A `ref`, `source` or `doc` names something that does not exist (or is disabled).
    #[error("{}: {message}", Location { file, line: *line })]
    MissingReference {
        file: String,
        line: Option<usize>,
        message: String,
    },
    /// The dependency graph has a cycle; `cycle` lists the nodes with their files,
    /// the first repeated at the end.
    #[error("dependency cycle: {}", cycle.iter().map(|(id, file)| format!("{id} ({file})")).collect::<Vec<_>>().join(" -> "))]
    Cycle { cycle: Vec<(String, String)> },
    /// A `--select` / `--exclude` expression is malformed.
    #[error("invalid selector {selector:?}: {message}")]
    Selection { selector: String, message: String },
}

impl PipelineError {
    /// The project file the error is about, when it is about one.
    pub fn file(&self) -> Option<&str> {
        match self {
            PipelineError::Invalid { file, .. }
            | PipelineError::Jinja { file, .. }
            | PipelineError::MissingReference { file, .. } => Some(file),
            PipelineError::Cycle { cycle } => cycle.first().map(|(_, file)| file.as_str()),
            _ => None,
        }
    }

    /// The 1-based line in [`file`](Self::file), when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            PipelineError::Invalid { line, .. }
            | PipelineError::Jinja { line, .. }
            | PipelineError::MissingReference { line, .. } => *line,
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PipelineError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        PipelineError::Invalid {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

struct Location<'a> {
    file: &'a str,
    line: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(self.file),
        }
    }
}
