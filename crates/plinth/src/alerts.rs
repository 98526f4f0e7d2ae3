//! `plinth alert`: store alert definitions in the catalog, list and delete
//! them; `plinth serve` evaluates them.

use anyhow::{Context, Result, bail};
use plinth_alerts::{AlertDefinition, CATALOG_KIND};
use plinth_catalog::Catalog;

use crate::cli::AlertCommand;

pub fn run(command: AlertCommand) -> Result<()> {
    match command {
        AlertCommand::Create { data, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let alert = AlertDefinition::parse(&text)?;
            Catalog::open(&data.dir)?.put_definition(
                CATALOG_KIND,
                &alert.name,
                &alert.to_json(),
            )?;
            println!("saved alert {}", alert.name);
            Ok(())
        }
        AlertCommand::List { data } => {
            let catalog = Catalog::open(&data.dir)?;
            for (name, body) in catalog.definitions(CATALOG_KIND)? {
                let alert = AlertDefinition::parse(&body)?;
                println!(
                    "{name}\tevent {:?}\t{:?} per {:?}\t{} flagged\t{}",
                    alert.event,
                    alert.measure,
                    alert.interval,
                    catalog.alert_points(&name)?.len(),
                    alert.webhook.url
                );
            }
            Ok(())
        }
        AlertCommand::Delete { data, name } => {
            let catalog = Catalog::open(&data.dir)?;
            if !catalog.delete_definition(CATALOG_KIND, &name)? {
                bail!("no alert named {name:?} in {}", data.dir.display());
            }
            println!(
                "deleted alert {name}; kept its history: {} flagged points, {} delivery attempts",
                catalog.alert_points(&name)?.len(),
                catalog.deliveries(&name)?.len()
            );
            Ok(())
        }
    }
}
