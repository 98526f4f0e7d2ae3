//! Reading a NAB directory: `data/**/*.csv` (timestamp,value) and the
//! anomaly windows, either `labels/combined_windows.json` or, when only
//! `labels/combined_labels.json` exists, windows computed from the labels as
//! NAB's `LabelCombiner.applyWindows` and `checkWindows` do.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use super::scoring::{WindowRows, probation_length};

/// NAB's window length: this share of a file's rows, split among its labels.
pub const WINDOW_FRACTION: f64 = 0.10;

/// Everything that can go wrong reading a NAB directory.
#[derive(Debug)]
pub enum NabError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    NoDataFiles(PathBuf),
    NoLabels(PathBuf),
    MissingLabels(String),
    UnknownTimestamp {
        file: String,
        timestamp: String,
    },
}

impl fmt::Display for NabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NabError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            NabError::Json { path, source } => write!(f, "{}: {source}", path.display()),
            NabError::Parse {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
            NabError::NoDataFiles(dir) => write!(f, "no CSV files under {}", dir.display()),
            NabError::NoLabels(dir) => write!(
                f,
                "neither labels/combined_windows.json nor labels/combined_labels.json in {}",
                dir.display()
            ),
            NabError::MissingLabels(file) => write!(f, "the labels do not mention {file}"),
            NabError::UnknownTimestamp { file, timestamp } => {
                write!(f, "label timestamp {timestamp} is not a row of {file}")
            }
        }
    }
}

impl std::error::Error for NabError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NabError::Io { source, .. } => Some(source),
            NabError::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One benchmark file with its truth.
#[derive(Debug, Clone, PartialEq)]
pub struct NabFile {
    /// Path relative to `data/`, with `/` separators (NAB's key).
    pub name: String,
    pub timestamps: Vec<NaiveDateTime>,
    pub values: Vec<f64>,
    pub windows: Vec<WindowRows>,
}

/// The files of a NAB directory, sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct NabCorpus {
    pub files: Vec<NabFile>,
}

/// Parses NAB's timestamps: `2014-04-01 00:00:00`, optionally with fractions.
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()
}

impl NabCorpus {
    /// Reads `nab_dir/data/**/*.csv` and the windows under `nab_dir/labels`.
    pub fn load(nab_dir: &Path) -> Result<Self, NabError> {
        let data_dir = nab_dir.join("data");
        let mut paths = Vec::new();
        collect_csv_files(&data_dir, &mut paths)?;
        paths.sort();
        if paths.is_empty() {
            return Err(NabError::NoDataFiles(data_dir));
        }
        let windows_path = nab_dir.join("labels").join("combined_windows.json");
        let labels_path = nab_dir.join("labels").join("combined_labels.json");
        let truth = if windows_path.exists() {
            Truth::Windows(read_json(&windows_path)?)
        } else if labels_path.exists() {
            Truth::Labels(read_json(&labels_path)?)
        } else {
            return Err(NabError::NoLabels(nab_dir.to_path_buf()));
        };

        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let name = relative_name(&data_dir, &path);
            let (timestamps, values) = read_series(&path)?;
            let windows = match &truth {
                Truth::Windows(all) => {
                    let limits = all
                        .get(&name)
                        .ok_or_else(|| NabError::MissingLabels(name.clone()))?;
                    limits
                        .iter()
                        .map(|[first, last]| {
                            Ok(WindowRows {
                                first: row_of(&name, &timestamps, first)?,
                                last: row_of(&name, &timestamps, last)?,
                            })
                        })
                        .collect::<Result<Vec<_>, NabError>>()?
                }
                Truth::Labels(all) => {
                    let labels = all
                        .get(&name)
                        .ok_or_else(|| NabError::MissingLabels(name.clone()))?;
                    let label_rows = labels
                        .iter()
                        .map(|label| row_of(&name, &timestamps, label))
                        .collect::<Result<Vec<_>, NabError>>()?;
                    windows_from_label_rows(&label_rows, timestamps.len())
                }
            };
            files.push(NabFile {
                name,
                timestamps,
                values,
                windows,
            });
        }
        Ok(NabCorpus { files })
    }

    /// Number of anomaly windows over all files (NAB's count of possible TPs).
    pub fn window_count(&self) -> usize {
        self.files.iter().map(|f| f.windows.len()).sum()
    }

    /// Number of rows over all files.
    pub fn row_count(&self) -> usize {
        self.files.iter().map(|f| f.timestamps.len()).sum()
    }
}

enum Truth {
    Windows(BTreeMap<String, Vec<[String; 2]>>),
    Labels(BTreeMap<String, Vec<String>>),
}

/// Windows around labelled rows as NAB's labeler builds them: each window is
/// `floor(0.1 n / labels)` rows long, centred on its label and clipped to the
/// file; a first window that starts inside the probationary period is
/// dropped; overlapping windows are merged (in NAB's single pass).
pub fn windows_from_label_rows(label_rows: &[usize], rows: usize) -> Vec<WindowRows> {
    if label_rows.is_empty() || rows == 0 {
        return Vec::new();
    }
    let mut sorted = label_rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let length = (WINDOW_FRACTION * rows as f64 / sorted.len() as f64) as usize;
    // NAB's windows were produced with Python 2 integer division.
    let half = length / 2;
    let mut windows: Vec<WindowRows> = sorted
        .iter()
        .map(|&row| WindowRows {
            first: row.saturating_sub(half),
            last: (row + half).min(rows - 1),
        })
        .collect();
    if windows[0].first < probation_length(rows) {
        windows.remove(0);
    }
    let mut i = 0;
    while i + 1 < windows.len() {
        if windows[i + 1].first <= windows[i].last {
            windows[i].last = windows[i + 1].last;
            windows.remove(i + 1);
        }
        i += 1;
    }
    windows
}

fn row_of(file: &str, timestamps: &[NaiveDateTime], text: &str) -> Result<usize, NabError> {
    let unknown = || NabError::UnknownTimestamp {
        file: file.to_string(),
        timestamp: text.to_string(),
    };
    let wanted = parse_timestamp(text).ok_or_else(unknown)?;
    timestamps
        .iter()
        .position(|t| *t == wanted)
        .ok_or_else(unknown)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, NabError> {
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| NabError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn collect_csv_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), NabError> {
    let io_error = |source| NabError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        if path.is_dir() {
            collect_csv_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "csv") {
            out.push(path);
        }
    }
    Ok(())
}

fn relative_name(data_dir: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(data_dir).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads a `timestamp,value` CSV with a header row.
pub fn read_series(path: &Path) -> Result<(Vec<NaiveDateTime>, Vec<f64>), NabError> {
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut timestamps = Vec::new();
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let parse_error = |message: String| NabError::Parse {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let (time, value) = line
            .split_once(',')
            .ok_or_else(|| parse_error("expected timestamp,value".to_string()))?;
        let time =
            parse_timestamp(time).ok_or_else(|| parse_error(format!("bad timestamp {time:?}")))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| parse_error(format!("bad value {value:?}")))?;
        timestamps.push(time);
        values.push(value);
    }
    Ok((timestamps, values))
}
