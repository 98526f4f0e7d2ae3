//! The `shop` fixture (a real dbt project) through load, compile, select and
//! the manifest.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use plinth_pipelines::{
    CompileContext, CompiledProject, LoadOptions, PipelineError, Project, ResourceType, Severity,
    TestStatus, compile, parse_cli_vars, select, write_manifest,
};
use serde_json::json;

/// This package's folder, read when the test runs: a test binary that
/// cargo reuses from a clone elsewhere keeps that clone's compile-time path.
fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}

fn fixture() -> PathBuf {
    manifest_dir().join("tests/fixtures/shop")
}

fn load() -> Project {
    Project::load(&fixture(), &LoadOptions::default()).expect("fixture loads")
}

fn compiled() -> CompiledProject {
    compile(&load(), &CompileContext::default()).expect("fixture compiles")
}

fn model<'a>(c: &'a CompiledProject, name: &str) -> &'a plinth_pipelines::CompiledNode {
    c.nodes
        .values()
        .find(|n| n.node.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn test_named<'a>(c: &'a CompiledProject, prefix: &str) -> &'a plinth_pipelines::CompiledNode {
    let found: Vec<_> = c
        .nodes
        .values()
        .filter(|n| n.node.resource_type == ResourceType::Test && n.node.name.starts_with(prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "tests starting with {prefix}: {:?}",
        found.iter().map(|n| &n.node.name).collect::<Vec<_>>()
    );
    found[0]
}

fn names(c: &CompiledProject, ids: &BTreeSet<String>) -> BTreeSet<String> {
    ids.iter().map(|id| c.nodes[id].node.name.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn config_precedence_sql_over_property_file_over_project_folders() {
    let c = compiled();
    // orders: project says table (marts), property file says table, config() says incremental.
    let orders = &model(&c, "orders").node.config;
    assert_eq!(orders.materialized, "incremental");
    assert_eq!(orders.unique_key, vec!["order_id".to_string()]);
    assert_eq!(
        orders.incremental_strategy.as_deref(),
        Some("delete+insert")
    );
    // Set for the model by name in the dbt_project.yml folder tree.
    assert_eq!(orders.on_schema_change, "fail");
    assert_eq!(orders.tags, vec!["marts".to_string(), "core".to_string()]);

    // customers: project folder says table, property file says view + alias.
    let customers = &model(&c, "customers").node;
    assert_eq!(customers.config.materialized, "view");
    assert_eq!(customers.relation_name().as_deref(), Some("dim_customers"));
    assert_eq!(customers.config.raw["docs"], json!({"show": true}));

    // Only the project's folder config.
    let stg_customers = &model(&c, "stg_customers").node.config;
    assert_eq!(stg_customers.materialized, "view");
    assert_eq!(stg_customers.tags, vec!["staging".to_string()]);
    // Tags accumulate across layers: folder + config().
    assert_eq!(
        model(&c, "stg_events").node.config.tags,
        vec!["staging".to_string(), "events".to_string()]
    );
    assert_eq!(
        model(&c, "stg_orders").node.config.materialized,
        "ephemeral"
    );

    let raw_orders = &model(&c, "raw_orders").node;
    assert_eq!(raw_orders.resource_type, ResourceType::Seed);
    assert_eq!(raw_orders.config.materialized, "seed");
    assert_eq!(raw_orders.config.tags, vec!["raw".to_string()]);
    assert_eq!(raw_orders.config.column_types["amount"], "integer");

    let snapshot = &model(&c, "orders_snapshot").node;
    assert_eq!(snapshot.resource_type, ResourceType::Snapshot);
    assert_eq!(snapshot.config.strategy.as_deref(), Some("check"));
    assert_eq!(snapshot.config.check_cols, Some(json!(["status"])));
    assert_eq!(snapshot.config.unique_key, vec!["id".to_string()]);
}

#[test]
fn disabled_models_are_set_aside_even_with_dangling_refs() {
    let p = load();
    assert!(p.disabled.contains_key("model.shop.old_orders"));
    assert!(!p.nodes.contains_key("model.shop.old_orders"));
}

#[test]
fn refs_sources_and_this_render_as_plain_relation_names() {
    let c = compiled();
    let stg_customers = &model(&c, "stg_customers").compiled_sql;
    assert!(
        stg_customers.contains("from raw_customers"),
        "{stg_customers}"
    );
    let events = &model(&c, "stg_events").compiled_sql;
    assert!(events.contains("from events"), "{events}");
    assert!(events.contains("'dev' as built_for"), "{events}");
    assert!(events.contains("'eu' as region"), "{events}");
    // A source table with `identifier`, and a model with an alias.
    let people = model(&c, "active_people");
    assert!(
        people.compiled_sql.contains("from persons as persons"),
        "{}",
        people.compiled_sql
    );
    assert_eq!(people.relation_name().as_deref(), Some("people_active"));
    // `-- depends_on:` refs count as dependencies.
    let customers = model(&c, "customers");
    assert!(
        customers
            .node
            .refs
            .contains(&"model.shop.stg_events".to_string())
    );
    assert!(
        customers
            .compiled_sql
            .contains("left join orders as orders")
    );
    assert!(
        customers
            .compiled_sql
            .contains("from stg_customers as customers")
    );
}

#[test]
fn ephemeral_models_are_inlined_as_ctes_merged_into_an_existing_with() {
    let c = compiled();
    let sql = &model(&c, "orders").compiled_sql;
    let orders_cte = sql
        .find("__dbt__cte__stg_orders as (")
        .expect("stg_orders inlined");
    let payments_cte = sql
        .find("__dbt__cte__stg_payments as (")
        .expect("stg_payments inlined");
    let own_cte = sql
        .find("orders as (\n    select * from __dbt__cte__stg_orders")
        .expect("own CTE kept");
    assert!(
        sql.trim_start().starts_with("with __dbt__cte__stg_orders"),
        "{sql}"
    );
    assert!(orders_cte < payments_cte && payments_cte < own_cte);
    assert_eq!(
        sql.matches("with ").count(),
        2,
        "one merged with, one nested in stg_payments: {sql}"
    );
    // A test on an ephemeral model reads the inlined CTE.
    let unique = test_named(&c, "unique_stg_orders_order_id");
    assert!(
        unique.compiled_sql.contains("from __dbt__cte__stg_orders"),
        "{}",
        unique.compiled_sql
    );
    assert!(model(&c, "stg_orders").is_ephemeral());
}

#[test]
fn macros_vars_loops_and_filters_render() {
    let c = compiled();
    let sql = &model(&c, "orders").compiled_sql;
    assert!(sql.contains(
        "sum(case when payment_method = 'coupon' then round(amount / 100.0, 2) else 0 end) as coupon_amount,"
    ), "{sql}");
    for method in ["credit_card", "coupon", "bank_transfer", "gift_card"] {
        assert!(
            sql.contains(&format!("order_payments.{method}_amount,")),
            "{sql}"
        );
    }
    let payments = &model(&c, "stg_payments").compiled_sql;
    assert!(payments.contains("where amount >= 0"), "{payments}");
    assert!(
        !payments.contains("noise"),
        "comments are dropped: {payments}"
    );
}

#[test]
fn cli_vars_override_project_vars() {
    let options = LoadOptions {
        vars: parse_cli_vars("{min_payment_cents: 500}").unwrap(),
        ..LoadOptions::default()
    };
    let p = Project::load(&fixture(), &options).unwrap();
    let c = compile(&p, &CompileContext::default()).unwrap();
    assert!(
        model(&c, "stg_payments")
            .compiled_sql
            .contains("where amount >= 500")
    );
}

#[test]
fn is_incremental_depends_on_existing_relation_and_full_refresh() {
    let p = load();
    let filter = "where orders.order_date > (select max(order_date) from orders)";
    let fresh = compile(&p, &CompileContext::default()).unwrap();
    assert!(!model(&fresh, "orders").is_incremental);
    assert!(!model(&fresh, "orders").compiled_sql.contains(filter));

    let mut ctx = CompileContext {
        existing_relations: HashSet::from(["orders".to_string()]),
        ..CompileContext::default()
    };
    let incremental = compile(&p, &ctx).unwrap();
    assert!(model(&incremental, "orders").is_incremental);
    assert!(model(&incremental, "orders").compiled_sql.contains(filter));

    ctx.full_refresh = true;
    let refreshed = compile(&p, &ctx).unwrap();
    assert!(!model(&refreshed, "orders").compiled_sql.contains(filter));
}

#[test]
fn sources_include_builtin_tables_and_freshness() {
    let p = load();
    let events = &p.sources["source.shop.plinth.events"];
    assert_eq!(events.loaded_at_field.as_deref(), Some("timestamp"));
    let freshness = events.freshness.as_ref().unwrap();
    assert_eq!(
        freshness
            .warn_after
            .as_ref()
            .map(|t| (t.count, t.period.as_str())),
        Some((12, "hour"))
    );
    assert_eq!(
        freshness
            .error_after
            .as_ref()
            .map(|t| (t.count, t.period.as_str())),
        Some((1, "day"))
    );
    assert!(!events.builtin, "declared in the project");
    let people = &p.sources["source.shop.plinth.people"];
    assert_eq!(people.identifier, "persons");
    assert_eq!(
        people.freshness, None,
        "`freshness: null` on the table switches it off"
    );
    for table in ["persons", "quarantine"] {
        assert!(p.sources[&format!("source.shop.plinth.{table}")].builtin);
    }
}

#[test]
fn generic_tests_compile_to_failing_row_queries() {
    let c = compiled();
    let tests: Vec<_> = c
        .nodes
        .values()
        .filter(|n| n.node.resource_type == ResourceType::Test)
        .collect();
    // 2 source + 3 stg_customers + 2 stg_orders + 2 stg_payments + 2 customers + 4 orders + 1 singular
    assert_eq!(
        tests.len(),
        16,
        "{:?}",
        tests.iter().map(|t| &t.node.name).collect::<Vec<_>>()
    );

    let unique = test_named(&c, "unique_customers_customer_id");
    assert_eq!(
        unique.compiled_sql.trim(),
        "select\n    customer_id as unique_field,\n    count(*) as n_records\nfrom dim_customers\nwhere customer_id is not null\ngroup by customer_id\nhaving count(*) > 1"
    );
    let meta = unique.node.test_metadata.as_ref().unwrap();
    assert_eq!(meta.attached_node.as_deref(), Some("model.shop.customers"));
    assert_eq!(
        meta.kwargs["model"],
        "{{ get_where_subquery(ref('customers')) }}"
    );

    let relationships = test_named(
        &c,
        "relationships_orders_customer_id__customer_id__ref_customers_",
    );
    assert!(relationships.compiled_sql.contains("from orders\n"));
    assert!(
        relationships
            .compiled_sql
            .contains("select customer_id as to_field\n    from dim_customers")
    );
    assert_eq!(
        relationships
            .node
            .refs
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        set(&["model.shop.orders", "model.shop.customers"])
    );

    // accepted_values: config severity warn; quoted values.
    let accepted = test_named(
        &c,
        "accepted_values_stg_orders_status__placed__shipped__completed__return_pending__returned",
    );
    assert_eq!(accepted.node.config.severity, Severity::Warn);
    assert!(
        accepted
            .compiled_sql
            .contains("not in ('placed', 'shipped', 'completed', 'return_pending', 'returned')")
    );
    // `arguments:` form (dbt 1.10+).
    let accepted_payments = test_named(
        &c,
        "accepted_values_stg_payments_payment_method__credit_card__coupon__bank_transfer__gift_card",
    );
    assert!(
        accepted_payments
            .compiled_sql
            .contains("not in ('credit_card', 'coupon', 'bank_transfer', 'gift_card')")
    );

    // Custom generic test from tests/generic with an argument and `where`.
    let positive = test_named(&c, "is_positive_stg_payments_True__amount");
    assert!(positive.compiled_sql.contains(
        "from (select * from __dbt__cte__stg_payments where payment_method != 'coupon') dbt_subquery\nwhere amount < 0"
    ), "{}", positive.compiled_sql);
    // Custom generic test from macros/.
    let not_empty = test_named(&c, "not_empty_string_stg_customers_first_name");
    assert!(
        not_empty
            .compiled_sql
            .contains("where trim(first_name) = ''")
    );

    // Source tests.
    let source_unique = test_named(&c, "source_unique_plinth_events_uuid");
    assert!(source_unique.compiled_sql.contains("from events\n"));
    assert_eq!(
        source_unique.node.sources,
        vec!["source.shop.plinth.events".to_string()]
    );
}

#[test]
fn test_config_where_limit_thresholds_and_audit_query() {
    let c = compiled();
    let amount = test_named(&c, "not_null_orders_amount");
    let cfg = &amount.node.config;
    assert_eq!(cfg.where_clause.as_deref(), Some("status != 'returned'"));
    assert_eq!(cfg.limit, Some(10));
    assert_eq!(cfg.store_failures, Some(true));
    assert_eq!(
        cfg.severity,
        Severity::Error,
        "from dbt_project.yml data_tests"
    );
    assert!(
        amount
            .compiled_sql
            .contains("from (select * from orders where status != 'returned') dbt_subquery")
    );
    // With store_failures, not_null keeps whole rows (as dbt does).
    assert!(
        amount
            .compiled_sql
            .trim_start()
            .starts_with("select *\nfrom"),
        "{}",
        amount.compiled_sql
    );
    let order_id = test_named(&c, "not_null_orders_order_id");
    assert!(
        order_id
            .compiled_sql
            .trim_start()
            .starts_with("select order_id\nfrom orders"),
        "{}",
        order_id.compiled_sql
    );
    assert_eq!(cfg.test_status(1), TestStatus::Pass);
    assert_eq!(cfg.test_status(2), TestStatus::Warn);
    assert_eq!(cfg.test_status(101), TestStatus::Fail);
    let audit = amount.audit_sql().unwrap();
    assert!(audit.contains("count(*) >1 as should_warn"), "{audit}");
    assert!(audit.contains("count(*) >100 as should_error"), "{audit}");
    assert!(audit.contains("limit 10\n) dbt_internal_test"), "{audit}");
    assert!(model(&c, "orders").audit_sql().is_none());

    let singular = model(&c, "assert_order_amounts_positive");
    assert_eq!(singular.node.resource_type, ResourceType::Test);
    assert_eq!(
        singular.node.config.severity,
        Severity::Warn,
        "config() beats dbt_project.yml"
    );
    assert_eq!(singular.node.config.tags, vec!["finance".to_string()]);
    assert!(
        singular
            .compiled_sql
            .contains("from orders\nwhere amount < 0")
    );
}

#[test]
fn dag_order_levels_and_maps() {
    let c = compiled();
    let position = |name: &str| {
        c.order
            .iter()
            .position(|id| c.nodes[id].node.name == name)
            .unwrap()
    };
    assert!(position("raw_orders") < position("stg_orders"));
    assert!(position("stg_orders") < position("orders"));
    assert!(position("orders") < position("customers"));
    assert!(position("orders") < position("assert_order_amounts_positive"));
    let level_of = |name: &str| {
        c.levels
            .iter()
            .position(|l| l.iter().any(|id| c.nodes[id].node.name == name))
            .unwrap()
    };
    assert_eq!(level_of("raw_orders"), 0);
    assert_eq!(level_of("stg_events"), 0, "sources are not levels");
    assert_eq!(level_of("stg_orders"), 1);
    assert_eq!(level_of("orders"), 2);
    assert_eq!(level_of("customers"), 3);
    assert_eq!(c.levels.iter().map(Vec::len).sum::<usize>(), c.nodes.len());
    assert_eq!(
        c.parent_map["model.shop.orders"]
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        set(&["model.shop.stg_orders", "model.shop.stg_payments"])
    );
    assert!(
        c.child_map["model.shop.orders"].contains(&"exposure.shop.weekly_dashboard".to_string())
    );
    assert!(
        c.child_map["source.shop.plinth.events"].contains(&"model.shop.stg_events".to_string())
    );
    assert_eq!(
        c.parent_map["unit_test.shop.orders.orders_sum_payments"],
        vec!["model.shop.orders".to_string()]
    );
}

#[test]
fn selection_syntax() {
    let c = compiled();
    let sel = |s: &[&str], e: &[&str]| {
        let s: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        let e: Vec<String> = e.iter().map(|x| x.to_string()).collect();
        select(&c, &s, &e).unwrap()
    };
    let models_only = |ids: BTreeSet<String>| -> BTreeSet<String> {
        ids.into_iter()
            .filter(|id| !id.starts_with("test."))
            .map(|id| c.nodes[&id].node.name.clone())
            .collect()
    };
    assert_eq!(sel(&[], &[]).len(), c.nodes.len());
    assert_eq!(
        models_only(sel(&["+orders"], &[])),
        set(&[
            "raw_orders",
            "raw_payments",
            "stg_orders",
            "stg_payments",
            "orders"
        ])
    );
    assert_eq!(
        models_only(sel(&["orders+"], &[])),
        set(&["orders", "customers"])
    );
    assert_eq!(
        models_only(sel(&["1+customers"], &[])),
        set(&["customers", "stg_customers", "orders", "stg_events"])
    );
    assert_eq!(
        models_only(sel(&["2+customers"], &[])),
        set(&[
            "customers",
            "stg_customers",
            "orders",
            "stg_events",
            "raw_customers",
            "stg_orders",
            "stg_payments"
        ])
    );
    assert_eq!(
        models_only(sel(&["raw_orders+1"], &[])),
        set(&["raw_orders", "stg_orders", "orders_snapshot"])
    );
    assert_eq!(
        models_only(sel(&["tag:staging"], &[])),
        set(&["stg_customers", "stg_orders", "stg_payments", "stg_events"])
    );
    assert_eq!(
        models_only(sel(&["path:models/marts"], &[])),
        set(&["orders", "customers", "active_people"])
    );
    assert_eq!(
        models_only(sel(&["source:plinth+"], &[])),
        set(&["stg_events", "active_people", "customers"])
    );
    assert_eq!(
        models_only(sel(&["source:plinth.people+"], &[])),
        set(&["active_people"])
    );
    assert_eq!(
        models_only(sel(&["staging"], &[])),
        set(&["stg_customers", "stg_orders", "stg_payments", "stg_events"])
    );
    assert_eq!(
        models_only(sel(&["tag:core,config.materialized:view"], &[])),
        set(&["customers"])
    );
    assert_eq!(
        models_only(sel(
            &["tag:staging tag:core"],
            &["stg_orders", "stg_payments"]
        )),
        set(&["stg_customers", "stg_events", "orders", "customers"])
    );
    assert_eq!(
        models_only(sel(&["@stg_events"], &[])),
        set(&[
            "stg_events",
            "active_people",
            "customers",
            "stg_customers",
            "orders",
            "stg_orders",
            "stg_payments",
            "raw_customers",
            "raw_orders",
            "raw_payments"
        ])
    );
    assert_eq!(
        models_only(sel(&["stg_*"], &[])),
        set(&["stg_customers", "stg_orders", "stg_payments", "stg_events"])
    );

    // Tests follow their parents (eager): selected with any parent, excluded with any parent.
    let picked = sel(&["customers"], &[]);
    assert_eq!(
        names(&c, &picked),
        set(&[
            "customers",
            "unique_customers_customer_id",
            "not_null_customers_customer_id",
            "relationships_orders_customer_id__customer_id__ref_customers_"
        ])
    );
    let without = sel(&["orders+"], &["customers"]);
    assert!(
        !names(&c, &without)
            .iter()
            .any(|n| n.starts_with("relationships"))
    );
    assert_eq!(
        names(&c, &sel(&["test_type:singular"], &[])),
        set(&["assert_order_amounts_positive"])
    );
    assert_eq!(sel(&["resource_type:seed"], &[]).len(), 3);

    let err = select(&c, &["bogus:x".to_string()], &[]).unwrap_err();
    assert!(matches!(err, PipelineError::Selection { .. }), "{err}");
}

#[test]
fn docs_exposures_and_unit_tests_are_parsed() {
    let p = load();
    let customers = &p.nodes["model.shop.customers"];
    assert_eq!(
        customers.description,
        "One row per customer, with their order count and lifetime value."
    );
    assert_eq!(customers.columns["customer_id"].description, "Primary key.");
    assert!(
        p.nodes["model.shop.stg_orders"].columns["status"]
            .description
            .starts_with("One of `placed`")
    );
    assert_eq!(
        customers.patch_path.as_deref(),
        Some("models/marts/_marts.yml")
    );

    let exposure = &p.exposures["exposure.shop.weekly_dashboard"];
    assert_eq!(exposure.exposure_type, "dashboard");
    assert_eq!(
        exposure.depends_on,
        vec![
            "model.shop.orders",
            "model.shop.customers",
            "source.shop.plinth.events"
        ]
    );
    assert_eq!(exposure.owner["email"], "data@example.com");

    let unit = &p.unit_tests["unit_test.shop.orders.orders_sum_payments"];
    assert_eq!(unit.model, "model.shop.orders");
    assert_eq!(unit.given.len(), 2);
    assert_eq!(unit.given[0].input, "ref('stg_orders')");
    assert_eq!(unit.given[0].format, "sql");
    assert!(
        unit.given[1]
            .rows
            .as_ref()
            .unwrap()
            .as_str()
            .unwrap()
            .contains("union all")
    );
    assert_eq!(
        unit.overrides.as_ref().unwrap()["macros"]["is_incremental"],
        false
    );
    assert_eq!(unit.expect.rows.as_ref().unwrap()[0]["amount"], 15);
    assert!(p.macros.contains_key("test_is_positive"));
    assert!(p.macros.contains_key("cents_to_dollars"));
}

#[test]
fn manifest_has_dbt_shape() {
    let c = compiled();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(&c, dir.path()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["metadata"]["project_name"], "shop");
    let orders = &manifest["nodes"]["model.shop.orders"];
    assert_eq!(orders["resource_type"], "model");
    assert_eq!(orders["config"]["materialized"], "incremental");
    assert_eq!(
        orders["compiled_code"].as_str().unwrap(),
        model(&c, "orders").compiled_sql
    );
    assert_eq!(
        orders["depends_on"]["nodes"],
        json!(["model.shop.stg_orders", "model.shop.stg_payments"])
    );
    assert_eq!(orders["original_file_path"], "models/marts/orders.sql");
    assert_eq!(
        manifest["sources"]["source.shop.plinth.people"]["identifier"],
        "persons"
    );
    assert_eq!(
        manifest["parent_map"]["model.shop.customers"]
            .as_array()
            .unwrap()
            .len(),
        c.parent_map["model.shop.customers"].len()
    );
    assert!(
        manifest["child_map"]["model.shop.orders"]
            .as_array()
            .unwrap()
            .contains(&json!("model.shop.customers"))
    );
    assert!(manifest["disabled"]["model.shop.old_orders"].is_array());
    assert!(manifest["exposures"]["exposure.shop.weekly_dashboard"].is_object());
    assert!(manifest["unit_tests"]["unit_test.shop.orders.orders_sum_payments"].is_object());
    let test = manifest["nodes"]
        .as_object()
        .unwrap()
        .values()
        .find(|n| n["name"] == "unique_orders_order_id")
        .unwrap();
    assert_eq!(test["test_metadata"]["name"], "unique");
    assert_eq!(test["column_name"], "order_id");
}
