//! Experiments defined as files, the config-as-code way GrowthBook and dbt
//! users keep them: every `*.yml`, `*.yaml` and `*.json` directly in
//! `<data>/experiments/` is one definition (the schema of
//! [`crate::definition`]; the file's name does not matter, its `name`
//! does). Files whose name starts with `.` are ignored.
//!
//! Callers read the directory again for every listing and request, so
//! edits show without a restart. A file wins over a definition of the same
//! name stored through the API or `plinth experiment create` (which stays
//! stored, shadowed, and shows again if the file goes), and cannot be
//! changed or deleted through them: that is the file's business.
//!
//! A file that does not read, parse or validate is never skipped in
//! silence: it is a [`FileError`] naming the file and the line, and it
//! still claims its experiment's name (its `name` if that much can be
//! read, else the file's stem), so asking for that experiment answers the
//! error instead of another definition. Two files naming the same
//! experiment are both errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::definition::{DefinitionError, Experiment, ExperimentDefinition};

/// The directory, under the data directory, whose files are definitions.
pub const DIRECTORY: &str = "experiments";

const EXTENSIONS: [&str; 3] = ["yml", "yaml", "json"];

/// A definition file that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct FileError {
    pub path: PathBuf,
    /// From 1, when the problem is on one line.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// A definition read from a file.
#[derive(Debug, Clone)]
pub struct DefinitionFile {
    pub path: PathBuf,
    pub experiment: Experiment,
}

/// Every definition file of a data directory, as read just now.
#[derive(Debug, Clone, Default)]
pub struct DefinitionFiles {
    /// By experiment name: the file, or why the file(s) claiming that
    /// name cannot be used.
    by_name: BTreeMap<String, Result<DefinitionFile, Vec<FileError>>>,
}

/// Every broken definition file, for `plinth serve` to refuse to start.
#[derive(Debug, Clone, thiserror::Error)]
pub struct BrokenFiles(pub Vec<FileError>);

impl fmt::Display for BrokenFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            f,
            "{count} experiment definition file{} cannot be used:",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

impl DefinitionFiles {
    /// Reads `<data_dir>/experiments/`; no directory means no files. Only
    /// failing to list the directory is an error: a file that cannot be
    /// read is a [`FileError`] of the answer.
    pub fn load(data_dir: &Path) -> std::io::Result<DefinitionFiles> {
        let directory = data_dir.join(DIRECTORY);
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DefinitionFiles::default());
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot list {}: {e}", directory.display()),
                ));
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !name.starts_with('.') && EXTENSIONS.contains(&extension) && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut read: BTreeMap<String, Vec<Result<DefinitionFile, FileError>>> = BTreeMap::new();
        for path in paths {
            let (name, file) = read_file(path);
            read.entry(name).or_default().push(file);
        }
        let by_name = read
            .into_iter()
            .map(|(name, mut files)| {
                let entry = if files.len() == 1 {
                    files.pop().expect("one file").map_err(|e| vec![e])
                } else {
                    Err(duplicates(&name, files))
                };
                (name, entry)
            })
            .collect();
        Ok(DefinitionFiles { by_name })
    }

    /// The experiment `name` as its file defines it; `None` when no file
    /// claims the name, the file's errors when it is broken.
    pub fn get(&self, name: &str) -> Option<Result<&DefinitionFile, &[FileError]>> {
        self.by_name
            .get(name)
            .map(|entry| entry.as_ref().map_err(Vec::as_slice))
    }

    /// The file claiming `name` (the first, if several do).
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        match self.by_name.get(name)? {
            Ok(file) => Some(&file.path),
            Err(errors) => errors.first().map(|e| e.path.as_path()),
        }
    }

    /// Every name a file claims, by name, with its definition or errors.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Result<&DefinitionFile, &[FileError]>)> {
        self.by_name
            .iter()
            .map(|(name, entry)| (name.as_str(), entry.as_ref().map_err(Vec::as_slice)))
    }

    /// Every error of every broken file.
    pub fn errors(&self) -> Vec<FileError> {
        self.by_name
            .values()
            .filter_map(|entry| entry.as_ref().err())
            .flatten()
            .cloned()
            .collect()
    }

    /// Fails when any file is broken.
    pub fn check(&self) -> Result<(), BrokenFiles> {
        let errors = self.errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(BrokenFiles(errors))
        }
    }
}

/// The name a file claims, and its definition or why it cannot be used.
fn read_file(path: PathBuf) -> (String, Result<DefinitionFile, FileError>) {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            let error = FileError {
                path,
                line: None,
                message: format!("cannot read: {e}"),
            };
            return (stem, Err(error));
        }
    };
    match ExperimentDefinition::parse(&text) {
        Ok(experiment) => (
            experiment.definition.name.clone(),
            Ok(DefinitionFile { path, experiment }),
        ),
        Err(error) => {
            let name = claimed_name(&text).unwrap_or(stem);
            (name, Err(file_error(path, &text, &error)))
        }
    }
}

fn file_error(path: PathBuf, text: &str, error: &DefinitionError) -> FileError {
    FileError {
        line: error.line(text),
        message: format!("invalid experiment definition: {}", error.message),
        path,
    }
}

/// The `name` of a definition that does not validate, when it reads as
/// YAML that far.
fn claimed_name(text: &str) -> Option<String> {
    let value: serde_norway::Value = serde_norway::from_str(text).ok()?;
    let name = value.get("name")?.as_str()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Every file of several claiming `name`, as errors naming the others.
fn duplicates(name: &str, files: Vec<Result<DefinitionFile, FileError>>) -> Vec<FileError> {
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|file| match file {
            Ok(file) => file.path.clone(),
            Err(error) => error.path.clone(),
        })
        .collect();
    files
        .into_iter()
        .zip(&paths)
        .map(|(file, path)| {
            let others: Vec<String> = paths
                .iter()
                .filter(|p| *p != path)
                .map(|p| p.display().to_string())
                .collect();
            let message = format!(
                "experiment `{name}` is also defined by {}; each experiment needs exactly one file",
                others.join(", ")
            );
            match file {
                Ok(_) => {
                    let line = std::fs::read_to_string(path).ok().and_then(|text| {
                        text.lines()
                            .position(|line| crate::definition::names(line, name))
                            .map(|i| i + 1)
                    });
                    FileError {
                        path: path.clone(),
                        line,
                        message,
                    }
                }
                Err(mut error) => {
                    error.message = format!("{}; and {message}", error.message);
                    error
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFINITION: &str = "name: checkout-copy
flag: checkout-copy
variants: [control, test]
primary_metrics:
  - {name: bought, kind: conversion, event: purchase}
";

    fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
        let path = dir.join(DIRECTORY).join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn no_directory_is_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = DefinitionFiles::load(dir.path()).unwrap();
        assert_eq!(files.iter().count(), 0);
        assert!(files.check().is_ok());
    }

    #[test]
    fn yaml_and_json_files_are_read_and_others_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = write(dir.path(), "any-name.yaml", DEFINITION);
        let json = serde_json::to_string_pretty(
            &ExperimentDefinition::parse(&DEFINITION.replace("checkout-copy", "as-json"))
                .unwrap()
                .definition,
        )
        .unwrap();
        write(dir.path(), "as-json.json", &json);
        write(dir.path(), "notes.txt", "not a definition");
        write(dir.path(), ".draft.yml", "broken: [");
        let files = DefinitionFiles::load(dir.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["as-json", "checkout-copy"]);
        assert_eq!(files.path_of("checkout-copy"), Some(yaml.as_path()));
        let file = files.get("checkout-copy").unwrap().unwrap();
        assert_eq!(file.experiment.definition.variants, ["control", "test"]);
        assert!(files.get("nope").is_none());
        assert!(files.check().is_ok());
    }

    #[test]
    fn a_broken_file_names_its_line_and_keeps_its_experiment_name() {
        let dir = tempfile::tempdir().unwrap();
        // A type error: the parser's position.
        let typed = write(
            dir.path(),
            "typed.yml",
            &DEFINITION.replace("[control, test]", "control"),
        );
        // A validation error inside a metric: the metric's line.
        let metric = write(
            dir.path(),
            "metric.yml",
            &DEFINITION
                .replace("checkout-copy", "metric-error")
                .replace("kind: conversion", "kind: sum"),
        );
        // Not YAML at all: the file's stem is the name it claims.
        let syntax = write(dir.path(), "syntax.yml", "name: [unclosed\nflag: x\n");
        let files = DefinitionFiles::load(dir.path()).unwrap();

        let errors = files.get("checkout-copy").unwrap().unwrap_err();
        assert_eq!(errors[0].path, typed);
        assert_eq!(errors[0].line, Some(3), "{errors:?}");
        let errors = files.get("metric-error").unwrap().unwrap_err();
        assert_eq!((&errors[0].path, errors[0].line), (&metric, Some(5)));
        assert!(
            errors[0].message.contains("`sum` needs a `property`"),
            "{errors:?}"
        );
        let errors = files.get("syntax").unwrap().unwrap_err();
        assert_eq!(errors[0].path, syntax);
        assert!(errors[0].line.is_some(), "{errors:?}");

        let broken = files.check().unwrap_err();
        assert_eq!(broken.0.len(), 3);
        let text = broken.to_string();
        assert!(
            text.starts_with("3 experiment definition files cannot be used:"),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} line 3: ", typed.display())),
            "{text}"
        );
    }

    #[test]
    fn two_files_naming_one_experiment_are_both_errors() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), "a.yml", DEFINITION);
        let second = write(dir.path(), "b.yml", &format!("# a copy\n{DEFINITION}"));
        let files = DefinitionFiles::load(dir.path()).unwrap();
        let errors = files.get("checkout-copy").unwrap().unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!((&errors[0].path, errors[0].line), (&first, Some(1)));
        assert_eq!((&errors[1].path, errors[1].line), (&second, Some(2)));
        assert!(
            errors[0]
                .message
                .contains(&format!("also defined by {}", second.display())),
            "{errors:?}"
        );
    }
}
