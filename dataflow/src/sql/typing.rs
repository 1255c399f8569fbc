//! Flink's typing where DataFusion's differs, applied to the logical plan before DataFusion's
//! type coercion runs:
//!
//! - an integer literal that fits is an `INT` (DataFusion makes every one a `BIGINT`), which
//!   decides the result type of decimal arithmetic (`amount / 3` has 13 fraction digits in
//!   Flink because 3 is `DECIMAL(10, 0)`, not `DECIMAL(20, 0)`);
//! - `+ - * /` on decimals follow Flink's precision and scale rules (`weir_decimal_*`);
//! - `CAST(x AS STRING)` prints values as Flink does (`TRUE`, `2024-01-01 10:00:00.000`).
//!
//! Rewritten expressions keep their names, so the columns that refer to them still resolve.

use arrow::datatypes::DataType;
use datafusion_common::tree_node::{Transformed, TreeNode};
use datafusion_common::{DFSchema, Result, ScalarValue};
use datafusion_expr::expr::{Cast, ScalarFunction};
use datafusion_expr::expr_rewriter::NamePreserver;
use datafusion_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};

use super::context::FunctionRegistry;

pub fn apply_flink_typing(plan: LogicalPlan, functions: &FunctionRegistry) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let inputs = node.inputs();
        let mut schema = match inputs.first() {
            Some(first) => first.schema().as_ref().clone(),
            None => DFSchema::empty(),
        };
        for other in inputs.iter().skip(1) {
            schema.merge(other.schema());
        }
        let names = NamePreserver::new(&node);
        let rewritten = node.map_expressions(|e| {
            let saved = names.save(&e);
            let t = e.transform_up(|sub| rewrite(sub, &schema, functions))?;
            Ok(t.update_data(|e| saved.restore(e)))
        })?;
        if rewritten.transformed { Ok(Transformed::yes(rewritten.data.recompute_schema()?)) } else { Ok(rewritten) }
    })
    .map(|t| t.data)
}

fn rewrite(expr: Expr, schema: &DFSchema, functions: &FunctionRegistry) -> Result<Transformed<Expr>> {
    match expr {
        Expr::Literal(ScalarValue::Int64(Some(v)), metadata) if i32::try_from(v).is_ok() => {
            Ok(Transformed::yes(Expr::Literal(ScalarValue::Int32(Some(v as i32)), metadata)))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply | Operator::Divide) =>
        {
            let (lt, rt) = (left.get_type(schema), right.get_type(schema));
            let decimal = match (&lt, &rt) {
                (Ok(l), Ok(r)) => is_decimal_operand(l, r) || is_decimal_operand(r, l),
                _ => false,
            };
            let name = match op {
                Operator::Plus => "weir_decimal_add",
                Operator::Minus => "weir_decimal_sub",
                Operator::Multiply => "weir_decimal_mul",
                _ => "weir_decimal_div",
            };
            match functions.scalar(name) {
                Some(f) if decimal => {
                    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(f, vec![*left, *right]))))
                }
                _ => Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right }))),
            }
        }
        Expr::Cast(Cast { expr, field }) if field.data_type() == &DataType::Utf8 => {
            let from = expr.get_type(schema)?;
            match functions.scalar("weir_cast_to_string") {
                Some(f)
                    if !matches!(from, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null) =>
                {
                    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(f, vec![*expr]))))
                }
                _ => Ok(Transformed::no(Expr::Cast(Cast { expr, field }))),
            }
        }
        other => Ok(Transformed::no(other)),
    }
}

/// `a op b` is decimal arithmetic when `a` is a decimal and `b` a decimal or an integer.
fn is_decimal_operand(a: &DataType, b: &DataType) -> bool {
    matches!(a, DataType::Decimal128(_, _))
        && (matches!(b, DataType::Decimal128(_, _)) || (b.is_integer() && !matches!(b, DataType::UInt64)))
}
