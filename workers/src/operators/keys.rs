//! Shared helpers for keyed operators: grouping rows by key columns, and reading event time.

use arrow::array::{Array, ArrayRef, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow_row::{Row, RowConverter, RowParser, Rows, SortField};
use hashbrown::HashMap;

use crate::error::TaskResult;

/// Event time of a timestamp column as milliseconds (any time unit or zone); nulls stay null.
pub fn timestamp_millis(array: &ArrayRef) -> TaskResult<TimestampMillisecondArray> {
    let target = DataType::Timestamp(TimeUnit::Millisecond, None);
    let ms = match array.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, None) => array.clone(),
        _ => cast(array, &target)?,
    };
    Ok(ms.as_any().downcast_ref::<TimestampMillisecondArray>().expect("cast to timestamp(ms)").clone())
}

/// Maps key rows to dense group ids, keeping the key of each group for output.
pub struct GroupKeys {
    converter: RowConverter,
    parser: RowParser,
    num_keys: usize,
    ids: HashMap<Box<[u8]>, usize>,
    keys: Vec<Box<[u8]>>,
    free: Vec<usize>,
}

impl GroupKeys {
    pub fn try_new(schema: &SchemaRef, columns: &[usize]) -> TaskResult<Self> {
        let fields = columns.iter().map(|c| SortField::new(schema.field(*c).data_type().clone())).collect();
        let converter = RowConverter::new(fields)?;
        let parser = converter.parser();
        Ok(GroupKeys {
            converter,
            parser,
            num_keys: columns.len(),
            ids: HashMap::new(),
            keys: Vec::new(),
            free: Vec::new(),
        })
    }

    /// The encoded key of every row.
    pub fn rows(&self, columns: &[ArrayRef]) -> TaskResult<Rows> {
        Ok(self.converter.convert_columns(columns)?)
    }

    /// The group id of every row, and whether the row created its group. Rows of a batch with
    /// no key columns all belong to one group.
    pub fn assign(&mut self, columns: &[ArrayRef], num_rows: usize) -> TaskResult<Vec<(usize, bool)>> {
        if columns.is_empty() {
            let (id, new) = self.intern_bytes(&[]);
            let mut out = vec![(id, false); num_rows];
            if let Some(first) = out.first_mut() {
                first.1 = new;
            }
            return Ok(out);
        }
        let rows = self.converter.convert_columns(columns)?;
        Ok(rows.iter().map(|row| self.intern_bytes(row.data())).collect())
    }

    /// The group id of `row`, creating the group if it is new (`true` when new).
    pub fn intern(&mut self, row: Row<'_>) -> (usize, bool) {
        self.intern_bytes(row.data())
    }

    fn intern_bytes(&mut self, bytes: &[u8]) -> (usize, bool) {
        if let Some(id) = self.ids.get(bytes) {
            return (*id, false);
        }
        let owned: Box<[u8]> = bytes.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.keys[id] = owned.clone();
                id
            }
            None => {
                self.keys.push(owned.clone());
                self.keys.len() - 1
            }
        };
        self.ids.insert(owned, id);
        (id, true)
    }

    /// Forgets a group; its id is reused.
    pub fn remove(&mut self, id: usize) {
        let key = std::mem::take(&mut self.keys[id]);
        self.ids.remove(&key);
        self.free.push(id);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The key columns of the given groups, in order.
    pub fn key_columns(&self, groups: &[usize]) -> TaskResult<Vec<ArrayRef>> {
        if self.num_keys == 0 {
            return Ok(vec![]);
        }
        let rows = groups.iter().map(|g| self.parser.parse(&self.keys[*g]));
        Ok(self.converter.convert_rows(rows)?)
    }

    /// Capacity for dense per-group vectors.
    pub fn capacity(&self) -> usize {
        self.keys.len()
    }
}
