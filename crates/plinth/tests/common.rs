//! Helpers shared by the end-to-end tests: run the real `plinth` binary and
//! a real server on a loopback port.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub fn plinth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plinth"))
}

/// Runs `plinth args...` and fails the test, with its stderr, if it fails.
pub fn run_ok(args: &[&str]) -> String {
    let output = plinth().args(args).output().expect("run plinth");
    assert!(
        output.status.success(),
        "plinth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

pub fn run(args: &[&str]) -> Output {
    plinth().args(args).output().expect("run plinth")
}

/// The value printed after `label` on a line of `text`.
pub fn printed(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no line starting {label:?} in:\n{text}"))
        .trim()
        .to_string()
}

/// `SELECT count(*) ...` through `plinth sql`.
pub fn count(data: &Path, sql: &str) -> u64 {
    let out = run_ok(&[
        "sql",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "csv",
        sql,
    ]);
    out.lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no row in {out:?}"))
        .trim()
        .parse()
        .expect("a count")
}

/// A `plinth serve` child process, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        let mut child = plinth()
            .args([
                "serve",
                "--data",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start plinth serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server banner");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in banner {line:?}"))
            .to_string();
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python that has the test clients (`.ci/run` installs them).
pub fn python() -> String {
    std::env::var("PLINTH_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs a DuckDB query in Python and returns its single value as text.
pub fn duckdb_scalar(sql: &str) -> String {
    let script = format!(
        "import duckdb\ncon = duckdb.connect()\ncon.execute('SET threads = 2')\nprint(con.execute({sql:?}).fetchone()[0])"
    );
    let output = Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "DuckDB failed (run the tests through .ci/run, which installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
