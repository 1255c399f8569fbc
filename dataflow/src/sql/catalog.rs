//! Tables and views a script has declared, and how DataFusion sees them.
//!
//! A table is planned once, when it is created, into a logical plan: a scan of its physical
//! columns, a projection adding its computed columns, and its watermark assigner. DataFusion
//! inlines that plan wherever a query names the table, exactly as it inlines a view, so
//! computed columns and watermarks need no special casing in queries.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion_expr::{LogicalPlan, TableProviderFilterPushDown, TableSource, TableType};

use super::nodes::ViewNode;
use super::parser::TableDef;

#[derive(Debug)]
pub struct TableEntry {
    pub def: TableDef,
    /// The columns the connector reads or writes.
    pub physical_schema: SchemaRef,
    /// Scan + computed columns + watermark assigner.
    pub plan: LogicalPlan,
}

#[derive(Debug, Default)]
pub struct Catalog {
    tables: BTreeMap<String, Arc<TableEntry>>,
    views: BTreeMap<String, Arc<LogicalPlan>>,
    /// Per view: how many views deep it is (1 for a view over tables only).
    view_depths: BTreeMap<String, usize>,
}

impl Catalog {
    pub fn contains(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.views.contains_key(name)
    }

    pub fn add_table(&mut self, entry: TableEntry) {
        self.tables.insert(entry.def.name.clone(), Arc::new(entry));
    }

    /// Adds a view; queries naming it see a [`ViewNode`] until they are expanded for translation.
    pub fn add_view(&mut self, name: String, plan: LogicalPlan, depth: usize) {
        self.view_depths.insert(name.clone(), depth);
        let node = ViewNode { name: name.clone(), plan: Arc::new(plan) };
        self.views.insert(name, Arc::new(LogicalPlan::Extension(datafusion_expr::Extension { node: Arc::new(node) })));
    }

    /// How many views deep `name` is; 0 for a table or an unknown name.
    pub fn view_depth(&self, name: &str) -> usize {
        self.view_depths.get(name).or_else(|| self.view_depths.get(last_part(name))).copied().unwrap_or(0)
    }

    pub fn table(&self, name: &str) -> Option<&Arc<TableEntry>> {
        self.tables.get(name).or_else(|| self.tables.get(last_part(name)))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().chain(self.views.keys()).map(String::as_str)
    }

    pub fn table_source(&self, name: &str) -> Option<Arc<dyn TableSource>> {
        if let Some(view) = self.views.get(name).or_else(|| self.views.get(last_part(name))) {
            return Some(Arc::new(PlanSource { plan: view.clone() }));
        }
        self.table(name).map(|t| Arc::new(PlanSource { plan: Arc::new(t.plan.clone()) }) as Arc<dyn TableSource>)
    }
}

fn last_part(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// A table or view as DataFusion sees it: a plan to inline.
#[derive(Debug)]
struct PlanSource {
    plan: Arc<LogicalPlan>,
}

impl TableSource for PlanSource {
    fn schema(&self) -> SchemaRef {
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        Some(Cow::Borrowed(self.plan.as_ref()))
    }
}

/// The physical columns of a table, read by its connector: the leaf of every table's plan.
#[derive(Debug)]
pub struct PhysicalScan {
    pub table: String,
    pub schema: SchemaRef,
}

impl TableSource for PhysicalScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion_expr::Expr],
    ) -> datafusion_common::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()])
    }
}
