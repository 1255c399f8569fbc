//! How deep a script may nest, and the thread it is planned on.
//!
//! Parsing, DataFusion's planning and optimising, and the translation into a stream plan all
//! walk trees recursively, a stack frame or more per level. Planning runs on a thread of its own
//! with a large stack ([`PLANNER_STACK_BYTES`]), so that scripts far deeper than realistic ones
//! plan; nesting beyond the limits below is refused with an error at the place it goes too
//! deep. Neither may ever overflow a stack: the planner runs inside the long-running server,
//! where an overflow would abort the process and every job in it.
//!
//! Long chains of one associative operator (`OR`, `AND`, `||`, `UNION ALL`) are rebalanced
//! first ([`super::rewrite`]), so they count a dozen levels, not thousands.

use std::ops::ControlFlow;

use sqlparser::ast::{self, Spanned, Visit, Visitor};
use sqlparser::tokenizer::Location;

use super::SqlError;
use super::catalog::Catalog;

/// The stack of the planning thread. Only the pages a script's depth touches are committed.
pub const PLANNER_STACK_BYTES: usize = 1 << 30;

/// The deepest nesting of expressions and subqueries in one statement. Expressions are also
/// evaluated recursively at run time, on the workers' ordinary stacks.
pub const MAX_EXPRESSION_DEPTH: usize = 200;

/// The longest chain of views built on views.
pub const MAX_VIEW_DEPTH: usize = 10_000;

/// Runs `plan` on a thread with a stack of [`PLANNER_STACK_BYTES`] and returns its result. A
/// panic in the planner (a bug) becomes an error of the script rather than the caller's.
pub fn on_planner_thread<T: Send>(plan: impl FnOnce() -> Result<T, SqlError> + Send) -> Result<T, SqlError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("weir-sql-planner".into())
            .stack_size(PLANNER_STACK_BYTES)
            .spawn_scoped(scope, plan)
            .map_err(|e| SqlError::new(1, 1, format!("cannot start the SQL planner: {e}; try again")))?;
        thread.join().unwrap_or_else(|_| {
            Err(SqlError::new(1, 1, "the SQL planner failed on this script (a bug in Weir); please report it"))
        })
    })
}

/// Refuses a query whose expressions and subqueries nest deeper than [`MAX_EXPRESSION_DEPTH`],
/// naming where the nesting passes the limit.
pub fn check_query_depth(query: &ast::Query) -> Result<(), SqlError> {
    match query.visit(&mut DepthMeter::default()) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(at) => Err(too_deep(at)),
    }
}

/// [`check_query_depth`] for a lone expression (a computed column, a watermark).
pub fn check_expr_depth(expr: &ast::Expr) -> Result<(), SqlError> {
    match expr.visit(&mut DepthMeter::default()) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(at) => Err(too_deep(at)),
    }
}

fn too_deep(at: Location) -> SqlError {
    SqlError::at(
        at,
        format!(
            "this expression nests more than {MAX_EXPRESSION_DEPTH} levels deep; split it into simpler \
             expressions or views"
        ),
    )
}

#[derive(Default)]
struct DepthMeter {
    depth: usize,
    /// Where the innermost query started, for nodes without a place of their own.
    last_location: Option<Location>,
}

impl DepthMeter {
    fn enter(&mut self, location: Location) -> ControlFlow<Location> {
        if location.line > 0 {
            self.last_location = Some(location);
        }
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_DEPTH {
            return ControlFlow::Break(self.last_location.unwrap_or(Location::new(1, 1)));
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for DepthMeter {
    type Break = Location;

    fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<Location> {
        self.enter(query.span().start)
    }

    fn post_visit_query(&mut self, _query: &ast::Query) -> ControlFlow<Location> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &ast::Expr) -> ControlFlow<Location> {
        self.enter(expr.span().start)
    }

    fn post_visit_expr(&mut self, _expr: &ast::Expr) -> ControlFlow<Location> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// How many views deep a view defined by `query` would be: one more than the deepest view it
/// reads. Refused beyond [`MAX_VIEW_DEPTH`].
pub fn view_depth(query: &ast::Query, catalog: &Catalog, at: Location) -> Result<usize, SqlError> {
    struct Relations<'c> {
        catalog: &'c Catalog,
        deepest: usize,
    }
    impl Visitor for Relations<'_> {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ast::ObjectName) -> ControlFlow<()> {
            if let Some(name) = relation.0.last().and_then(|part| part.as_ident()) {
                self.deepest = self.deepest.max(self.catalog.view_depth(&name.value));
            }
            ControlFlow::Continue(())
        }
    }
    let mut relations = Relations { catalog, deepest: 0 };
    let _ = query.visit(&mut relations);
    let depth = relations.deepest + 1;
    if depth > MAX_VIEW_DEPTH {
        return Err(SqlError::at(
            at,
            format!(
                "this view is built on {} views built on one another, more than the {MAX_VIEW_DEPTH} Weir plans; \
                 define it on fewer levels of views",
                depth - 1
            ),
        ));
    }
    Ok(depth)
}
