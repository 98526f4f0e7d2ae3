//! `plinth stats`: one statistics request as JSON on stdin, the result as
//! JSON on stdout; the same engine the experiment pages use.

use std::io::Read;

use anyhow::{Context, Result};

pub fn run() -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the request from stdin")?;
    let request: serde_json::Value =
        serde_json::from_str(&input).context("the request on stdin is not JSON")?;
    let response = plinth_stats::run_request(&request)?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}
