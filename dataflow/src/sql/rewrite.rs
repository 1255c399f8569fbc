//! Rewrites of the parsed query before DataFusion plans it: Flink syntax DataFusion does not
//! plan itself becomes calls of Weir's functions.
//!
//! - `FLOOR(ts TO MINUTE)` / `CEIL(ts TO HOUR)` → `weir_floor_time(ts, 'MINUTE')` / `weir_ceil_time(…)`
//! - `TIMESTAMPADD(MINUTE, n, ts)` / `TIMESTAMPDIFF(SECOND, a, b)`: the unit becomes a string.
//! - Flink's legacy group windows, `GROUP BY k, TUMBLE(ts, INTERVAL …)` with `TUMBLE_START(…)`
//!   and friends (likewise `HOP`, `SESSION`), become the window TVF over the single table of
//!   the `FROM` clause, grouped by `window_start, window_end`.
//! - `SELECT person.id FROM t`: a nested field selected without an alias is named after the
//!   field (`id`), as Flink names it, where DataFusion would name it `t.person[id]`.
//! - Long chains of one associative operator (`a OR b OR …`, `AND`, `||`, `UNION ALL`), which
//!   the parser builds one level deeper per operand, become balanced trees of the same
//!   operands in the same order: thousands of terms nest a dozen levels, not thousands, so
//!   planning and evaluating them does not recurse thousands of frames deep.

use std::ops::ControlFlow;

use sqlparser::ast::{
    self, BinaryOperator, CeilFloorKind, DateTimeField, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, SelectItem, SetExpr, SetOperator, SetQuantifier, TableFactor,
    Value, VisitMut, VisitorMut,
};

/// Operand chains up to this long keep the parser's shape (and so their usual `EXPLAIN`).
const LONGEST_UNBALANCED_CHAIN: usize = 32;

pub fn rewrite_query(query: &mut ast::Query) {
    let _ = query.visit(&mut FlinkSyntax);
}

pub fn rewrite_expr(expr: &mut Expr) {
    let _ = expr.visit(&mut FlinkSyntax);
}

struct FlinkSyntax;

impl VisitorMut for FlinkSyntax {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
        balance_union_all_chain(&mut query.body);
        if let SetExpr::Select(select) = query.body.as_mut() {
            group_window_to_tvf(select);
        }
        name_nested_fields(&mut query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        balance_operator_chain(expr);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let floor = matches!(expr, Expr::Floor { .. });
        match expr {
            Expr::Floor { expr: inner, field: CeilFloorKind::DateTimeField(unit) }
            | Expr::Ceil { expr: inner, field: CeilFloorKind::DateTimeField(unit) }
                if *unit != DateTimeField::NoDateTime =>
            {
                let name = if floor { "weir_floor_time" } else { "weir_ceil_time" };
                let unit = unit_name(unit);
                let inner = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
                *expr = call(name, vec![inner, string(&unit)]);
            }
            Expr::Function(f) if legacy_window_column(&f.name.to_string()).is_some() => {
                let column = legacy_window_column(&f.name.to_string()).expect("checked by the guard");
                *expr = Expr::Identifier(Ident::new(column));
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_uppercase();
                if matches!(name.as_str(), "TIMESTAMPADD" | "TIMESTAMPDIFF")
                    && let FunctionArguments::List(list) = &mut f.args
                    && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) = list.args.first_mut()
                    && let Expr::Identifier(unit) = first
                {
                    *first = string(&unit.value.to_uppercase());
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Rebalances a long left-deep chain `a op b op c …` of an associative operator (`AND`, `OR`,
/// `||`: regrouping changes neither the value, NULLs included, nor the column name DataFusion
/// gives it, which it prints without parentheses between equal operators).
fn balance_operator_chain(expr: &mut Expr) {
    let Expr::BinaryOp { op, .. } = expr else { return };
    if !matches!(op, BinaryOperator::And | BinaryOperator::Or | BinaryOperator::StringConcat) {
        return;
    }
    let op = op.clone();
    let mut length = 1;
    let mut spine = &*expr;
    while let Expr::BinaryOp { left, op: next, .. } = spine
        && *next == op
    {
        length += 1;
        spine = left;
    }
    if length <= LONGEST_UNBALANCED_CHAIN {
        return;
    }
    // The operands in order, gathered without recursion.
    let mut operands = Vec::with_capacity(length);
    let mut pending = vec![std::mem::replace(expr, Expr::value(Value::Null))];
    while let Some(next) = pending.pop() {
        match next {
            Expr::BinaryOp { left, op: next_op, right } if next_op == op => {
                pending.push(*right);
                pending.push(*left);
            }
            operand => operands.push(operand),
        }
    }
    *expr = balanced(operands, &|left, right| Expr::BinaryOp {
        left: Box::new(left),
        op: op.clone(),
        right: Box::new(right),
    });
}

/// Rebalances a long chain `q1 UNION ALL q2 UNION ALL …`, as [`balance_operator_chain`].
fn balance_union_all_chain(body: &mut SetExpr) {
    let is_union_all = |e: &SetExpr| {
        matches!(e, SetExpr::SetOperation { op: SetOperator::Union, set_quantifier: SetQuantifier::All, .. })
    };
    let mut length = 1;
    let mut spine = &*body;
    while let SetExpr::SetOperation { left, .. } = spine
        && is_union_all(spine)
    {
        length += 1;
        spine = left;
    }
    if length <= LONGEST_UNBALANCED_CHAIN {
        return;
    }
    let mut operands = Vec::with_capacity(length);
    let placeholder = SetExpr::Values(ast::Values { explicit_row: false, value_keyword: false, rows: vec![] });
    let mut pending = vec![std::mem::replace(body, placeholder)];
    while let Some(next) = pending.pop() {
        match next {
            SetExpr::SetOperation { op: SetOperator::Union, set_quantifier: SetQuantifier::All, left, right } => {
                pending.push(*right);
                pending.push(*left);
            }
            operand => operands.push(operand),
        }
    }
    *body = balanced(operands, &|left, right| SetExpr::SetOperation {
        op: SetOperator::Union,
        set_quantifier: SetQuantifier::All,
        left: Box::new(left),
        right: Box::new(right),
    });
}

/// A tree of `join` over `operands` (at least one), in order, about log2(n) levels deep.
fn balanced<T>(mut operands: Vec<T>, join: &dyn Fn(T, T) -> T) -> T {
    if operands.len() == 1 {
        return operands.pop().expect("one operand");
    }
    let right = operands.split_off(operands.len() / 2);
    let left = balanced(operands, join);
    join(left, balanced(right, join))
}

/// `TUMBLE_START(…)` → `window_start` and so on.
fn legacy_window_column(function: &str) -> Option<&'static str> {
    let upper = function.to_uppercase();
    let (window, part) = upper.split_once('_')?;
    if !matches!(window, "TUMBLE" | "HOP" | "SESSION") {
        return None;
    }
    match part {
        "START" => Some("window_start"),
        "END" => Some("window_end"),
        "ROWTIME" => Some("window_time"),
        _ => None,
    }
}

fn group_window_to_tvf(select: &mut ast::Select) {
    let ast::GroupByExpr::Expressions(exprs, _) = &mut select.group_by else { return };
    let Some(position) = exprs.iter().position(|e| {
        matches!(e, Expr::Function(f) if matches!(f.name.to_string().to_uppercase().as_str(), "TUMBLE" | "HOP" | "SESSION"))
    }) else {
        return;
    };
    // The window applies to the one table of the FROM clause.
    let [from] = select.from.as_mut_slice() else { return };
    if !from.joins.is_empty() {
        return;
    }
    let TableFactor::Table { name, alias, args: None, .. } = &from.relation else { return };
    let Expr::Function(window_call) = &exprs[position] else { return };
    let FunctionArguments::List(list) = &window_call.args else { return };
    let mut args = list.args.clone();
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(time))) = args.first().cloned() else { return };
    let time_name = match time {
        Expr::Identifier(i) => i,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(i) => i.clone(),
            None => return,
        },
        _ => return,
    };
    let table_ident = Expr::CompoundIdentifier(name.0.iter().filter_map(|p| p.as_ident().cloned()).collect());
    args[0] = FunctionArg::Unnamed(FunctionArgExpr::Expr(call(super::dialect::TABLE_ARG_FUNCTION, vec![table_ident])));
    args.insert(1, FunctionArg::Unnamed(FunctionArgExpr::Expr(call("DESCRIPTOR", vec![Expr::Identifier(time_name)]))));
    let function = window_call.name.to_string().to_uppercase();
    let alias = alias.clone().or_else(|| {
        name.0.last().and_then(|p| p.as_ident()).map(|i| ast::TableAlias {
            explicit: true,
            name: i.clone(),
            columns: vec![],
            at: None,
        })
    });
    let tvf = Expr::Function(ast::Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(function))]),
        args: FunctionArguments::List(FunctionArgumentList { duplicate_treatment: None, args, clauses: vec![] }),
        ..window_call.clone()
    });
    from.relation = TableFactor::TableFunction { expr: tvf, alias };
    exprs.splice(
        position..=position,
        [Expr::Identifier(Ident::new("window_start")), Expr::Identifier(Ident::new("window_end"))],
    );
}

fn name_nested_fields(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            let relations: Vec<String> = select
                .from
                .iter()
                .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
                .filter_map(relation_name)
                .collect();
            for item in &mut select.projection {
                let SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) = item else { continue };
                let is_field =
                    parts.len() >= 3 || (parts.len() == 2 && !relations.iter().any(|r| *r == parts[0].value));
                if is_field && let Some(last) = parts.last().cloned() {
                    let expr = Expr::CompoundIdentifier(std::mem::take(parts));
                    *item = SelectItem::ExprWithAlias { expr, alias: last };
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_nested_fields(left);
            name_nested_fields(right);
        }
        _ => {}
    }
}

/// The name a relation in FROM is referred to by: its alias, or its table name.
fn relation_name(factor: &TableFactor) -> Option<String> {
    let alias = match factor {
        TableFactor::Table { name, alias, .. } => {
            return Some(match alias {
                Some(a) => a.name.value.clone(),
                None => name.0.last()?.as_ident()?.value.clone(),
            });
        }
        TableFactor::Derived { alias, .. } | TableFactor::TableFunction { alias, .. } => alias,
        _ => return None,
    };
    alias.as_ref().map(|a| a.name.value.clone())
}

fn unit_name(unit: &DateTimeField) -> String {
    match unit {
        DateTimeField::Custom(i) => i.value.to_uppercase(),
        other => other.to_string().to_uppercase(),
    }
}

fn string(s: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(s.to_string()))
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(ast::Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args.into_iter().map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e))).collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}
