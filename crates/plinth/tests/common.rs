//! Helpers shared by the end-to-end tests: run the real `plinth` binary and
//! a real server on a loopback port.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// This package's folder, read when the test runs: a test binary that
/// cargo reuses from a clone elsewhere keeps that clone's compile-time path.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}

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

/// A new admin secret key and a project write key for `data`.
pub fn admin_and_capture_keys(data: &str) -> (String, String) {
    let create = |kind: &[&str]| {
        let mut args = vec!["keys", "create", "--data", data];
        args.extend_from_slice(kind);
        run_ok(&args).trim().to_string()
    };
    (create(&["--role", "admin"]), create(&["--capture"]))
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

/// Rows of `sql` through a server's query API, which sees rows still in its
/// memory buffer (`plinth sql` beside a server reads only Parquet).
pub fn query(url: &str, admin: &str, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let response = reqwest::blocking::Client::new()
        .post(format!("{url}/api/v1/query"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .expect("query request");
    let status = response.status();
    let body: serde_json::Value = response.json().expect("a JSON answer");
    assert_eq!(status, 200, "{sql}: {body}");
    serde_json::from_value(body["rows"].clone()).unwrap_or_else(|_| panic!("{body}"))
}

/// `GET url+path` with a secret key; fails the test unless it answers 2xx.
pub fn get_json(url: &str, key: &str, path: &str) -> serde_json::Value {
    let response = reqwest::blocking::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(key)
        .send()
        .expect("GET request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().expect("a JSON answer")
}

/// Runs `plinth args...` with `input` on its standard input.
pub fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = plinth()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plinth");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("plinth output")
}

/// A `plinth serve` child process, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// A server with more `plinth serve` arguments (e.g. `--project DIR`).
    pub fn start_with(data: &Path, extra: &[&str]) -> Server {
        let mut child = plinth()
            .args([
                "serve",
                "--data",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
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

/// The default demo product, ending 2026-06-30, generated into `data`
/// without serving it. Its checkout outage is on 2026-06-10.
pub fn demo_until_june_30(data: &str) {
    run_ok(&[
        "demo",
        "--data",
        data,
        "--end-date",
        "2026-06-30",
        "--no-serve",
    ]);
}

/// Rows of a DuckDB query (threads = 2) as JSON arrays.
pub fn duckdb_rows(sql: &str) -> Vec<Vec<serde_json::Value>> {
    let script = format!(
        "import duckdb, json\ncon = duckdb.connect()\ncon.execute('SET threads = 2')\nprint(json.dumps([list(r) for r in con.execute({sql:?}).fetchall()]))"
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
    serde_json::from_slice(&output.stdout).expect("DuckDB rows as JSON")
}

/// The single value of a DuckDB query, as text.
pub fn duckdb_scalar(sql: &str) -> String {
    match &duckdb_rows(sql)[0][0] {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A small pseudo-random sequence; the seed is printed so a failure can be
/// replayed with PLINTH_CRASH_SEED.
pub struct Moments(u64);

impl Moments {
    pub fn from_env_or_clock() -> Moments {
        let seed = std::env::var("PLINTH_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("crash moments seed: PLINTH_CRASH_SEED={seed}");
        Moments(seed | 1)
    }

    pub fn next_ms(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}
