//! Load + compile time of a generated 1,000-model project (3,000 `ref`s,
//! 2,000 generic tests). Run with `cargo bench --bench parse_compile`
//! (optimised build); prints the best of five runs. `PLINTH_BENCH_MODELS`
//! changes the size; `PLINTH_BENCH_DIR` writes the project there (and keeps
//! it) instead of a temporary directory, e.g. to time `dbt parse` on it.

#[path = "../tests/support/generate.rs"]
mod generate;

use std::time::{Duration, Instant};

use plinth_pipelines::{CompileContext, LoadOptions, Project, compile};

fn main() {
    let models = std::env::var("PLINTH_BENCH_MODELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("PLINTH_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    generate::generate_project(&dir, models).expect("generate project");
    let mut best: Option<(Duration, Duration)> = None;
    let mut nodes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let project = Project::load(&dir, &LoadOptions::default()).expect("load");
        let loaded = started.elapsed();
        let compiled = compile(&project, &CompileContext::default()).expect("compile");
        let total = started.elapsed();
        nodes = compiled.nodes.len();
        if best.is_none_or(|(l, c)| total < l + c) {
            best = Some((loaded, total - loaded));
        }
    }
    let best = best.expect("five runs");
    println!(
        "{models} models ({nodes} nodes): load {:.1} ms + compile {:.1} ms = {:.1} ms (best of 5)",
        best.0.as_secs_f64() * 1e3,
        best.1.as_secs_f64() * 1e3,
        (best.0 + best.1).as_secs_f64() * 1e3
    );
}
