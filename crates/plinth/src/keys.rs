//! `plinth keys`: create API keys.

use anyhow::Result;
use clap::Args;
use plinth_catalog::{Catalog, KeyKind, Role};

use crate::cli::DataArg;

#[derive(Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["role", "capture"])))]
pub struct CreateArgs {
    #[command(flatten)]
    data: DataArg,
    /// A personal secret key with this role.
    #[arg(long, value_parser = ["admin", "analyst", "viewer"])]
    role: Option<String>,
    /// A project write key, which can only send events.
    #[arg(long)]
    capture: bool,
}

pub fn create(args: CreateArgs) -> Result<()> {
    let catalog = Catalog::open(&args.data.dir)?;
    let kind = match args.role {
        Some(role) => KeyKind::Secret(role.parse::<Role>()?),
        None => KeyKind::Capture,
    };
    println!("{}", catalog.create_key(kind)?);
    Ok(())
}
