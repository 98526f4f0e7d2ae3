//! Where pipeline SQL follows DuckDB rather than DataFusion, so that
//! projects written for dbt-duckdb build unchanged and produce the same rows:
//! `/` between two integers divides as floats (DuckDB: `5 / 2` is 2.5;
//! DataFusion, like PostgreSQL, truncates to 2).
//!
//! Applied to the logical plans of model, snapshot and test SQL, and of
//! views when a session resolves them, so a view divides the same way in a
//! build and in any later query. Ad hoc SQL (`plinth sql`, the query API)
//! keeps DataFusion's semantics.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{BinaryExpr, Cast, Expr, ExprSchemable, LogicalPlan, Operator};

/// `plan` with every integer-by-integer division made a float division;
/// output column names are kept.
pub fn duckdb_semantics(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|plan| {
        let schema = match plan.inputs().as_slice() {
            [input] => input.schema().clone(),
            _ => plan.schema().clone(),
        };
        let names = NamePreserver::new(&plan);
        let rewritten = plan.map_expressions(|expr| {
            let saved = names.save(&expr);
            let result = expr.transform_up(|e| float_division(e, &schema))?;
            Ok(if result.transformed {
                result.update_data(|e| saved.restore(e))
            } else {
                result
            })
        })?;
        // Types below may have changed even when this node's expressions
        // did not: recompute every schema on the way up.
        rewritten.map_data(|plan| plan.recompute_schema())
    })
    .map(|t| t.data)
}

fn float_division(expr: Expr, schema: &datafusion::common::DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Divide,
        right,
    }) = &expr
    else {
        return Ok(Transformed::no(expr));
    };
    let integer = |e: &Expr| e.get_type(schema).is_ok_and(|t| t.is_integer());
    if !(integer(left) && integer(right)) {
        return Ok(Transformed::no(expr));
    }
    let left = Expr::Cast(Cast::new(left.clone(), DataType::Float64));
    Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(left),
        Operator::Divide,
        right.clone(),
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn answer(sql: &str) -> String {
        let ctx = SessionContext::new();
        let (state, plan) = ctx.sql(sql).await.unwrap().into_parts();
        let frame = datafusion::dataframe::DataFrame::new(state, duckdb_semantics(plan).unwrap());
        let batches = frame.collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn integers_divide_as_floats_and_names_stay() {
        let out =
            answer("select n / 2 as half, n / 2.0 as exact, 7 / 2 from (select 5 as n) t").await;
        assert!(
            out.contains("| half | exact | Int64(7) / Int64(2) |"),
            "{out}"
        );
        assert!(out.contains("| 2.5  | 2.5   | 3.5"), "{out}");
        let grouped = answer(
            "select k, sum(v) / count(*) as mean from (values (1, 1), (1, 2)) t(k, v) group by k",
        )
        .await;
        assert!(grouped.contains("| 1 | 1.5  |"), "{grouped}");
    }
}
