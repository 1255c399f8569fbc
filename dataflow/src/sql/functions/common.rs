//! Plumbing shared by every Flink function: the one `ScalarUDFImpl` all of them use, argument
//! coercion helpers, and typed access to string, integer and temporal Arrow arrays so each
//! function body works on whole arrays whatever string or timestamp encoding it is handed.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, LargeStringArray, StringArray, StringViewArray, make_array};
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion_common::{Result, ScalarValue, exec_err, plan_err};
use datafusion_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Decides the argument types DataFusion must cast to before calling the function.
pub(crate) type CoerceFn = fn(&str, &[DataType]) -> Result<Vec<DataType>>;
/// Computes the result type from the (coerced) argument types and any literal arguments.
pub(crate) type ReturnTypeFn = fn(&[DataType], &[Option<&ScalarValue>]) -> Result<DataType>;
/// Evaluates the function over one batch.
pub(crate) type InvokeFn = fn(&ScalarFunctionArgs) -> Result<ColumnarValue>;

/// One Flink built-in, described by plain function pointers so that each function is a few
/// free functions rather than a struct and a trait impl of its own.
#[derive(Debug)]
pub(crate) struct FlinkFunction {
    name: &'static str,
    aliases: Vec<String>,
    signature: Signature,
    coerce: CoerceFn,
    return_type: ReturnTypeFn,
    invoke: InvokeFn,
}

// Function names are unique within the registry, so the name is the identity; comparing the
// function pointers would be both unnecessary and unreliable.
impl PartialEq for FlinkFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for FlinkFunction {}
impl Hash for FlinkFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for FlinkFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        (self.coerce)(self.name, arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let no_literals = vec![None; arg_types.len()];
        (self.return_type)(arg_types, &no_literals)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args.arg_fields.iter().map(|f| f.data_type().clone()).collect();
        let data_type = (self.return_type)(&types, args.scalar_arguments)?;
        Ok(Arc::new(Field::new(self.name, data_type, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        (self.invoke)(&args)
    }
}

/// Builds a registry entry; every function uses user-defined coercion so that it, not
/// DataFusion's generic rules, decides how Flink's implicit casts apply.
pub(crate) fn flink_udf(
    name: &'static str,
    aliases: &[&str],
    volatility: Volatility,
    coerce: CoerceFn,
    return_type: ReturnTypeFn,
    invoke: InvokeFn,
) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(FlinkFunction {
        name,
        aliases: aliases.iter().map(|a| (*a).to_string()).collect(),
        signature: Signature::user_defined(volatility),
        coerce,
        return_type,
        invoke,
    }))
}

// ------------------------------------------------------------------------------------------
// Coercion helpers
// ------------------------------------------------------------------------------------------

pub(crate) fn expect_arg_count(name: &str, types: &[DataType], min: usize, max: usize) -> Result<()> {
    if types.len() < min || types.len() > max {
        if min == max {
            return plan_err!("{name} expects {min} arguments, got {}", types.len());
        }
        return plan_err!("{name} expects {min} to {max} arguments, got {}", types.len());
    }
    Ok(())
}

pub(crate) fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

pub(crate) fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

/// String parameters keep their encoding (all three are read natively); anything else is cast
/// to Utf8, which is what Flink's implicit cast to STRING would do for literals.
pub(crate) fn coerce_string(t: &DataType) -> DataType {
    if is_string(t) { t.clone() } else { DataType::Utf8 }
}

/// Integer parameters keep their type, so that integer literals stay literals (return types
/// may depend on them) and are widened to Int64 when read; NULL reads as Int64.
pub(crate) fn coerce_integer(name: &str, t: &DataType) -> Result<DataType> {
    if is_integer(t) {
        Ok(t.clone())
    } else if matches!(t, DataType::Null) {
        Ok(DataType::Int64)
    } else {
        // Flink rejects these at validation; an error beats a silently wrong cast.
        plan_err!("{name} expects an integer argument, got {t}")
    }
}

/// Temporal parameters: timestamps of any unit and DATE are read natively, Date64 and strings
/// are cast to TIMESTAMP(3).
pub(crate) fn coerce_temporal(name: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Timestamp(_, _) | DataType::Date32 => Ok(t.clone()),
        DataType::Date64 | DataType::Null => Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
        t if is_string(t) => Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
        _ => plan_err!("{name} expects a TIMESTAMP or DATE argument, got {t}"),
    }
}

/// Reads a literal argument as an upper-cased string (time units, formats known at plan time).
pub(crate) fn literal_string(v: Option<&ScalarValue>) -> Option<String> {
    match v? {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Some(s.clone())
        }
        _ => None,
    }
}

pub(crate) fn literal_i64(v: Option<&ScalarValue>) -> Option<i64> {
    match v? {
        ScalarValue::Int8(Some(x)) => Some(i64::from(*x)),
        ScalarValue::Int16(Some(x)) => Some(i64::from(*x)),
        ScalarValue::Int32(Some(x)) => Some(i64::from(*x)),
        ScalarValue::Int64(Some(x)) => Some(*x),
        ScalarValue::UInt8(Some(x)) => Some(i64::from(*x)),
        ScalarValue::UInt16(Some(x)) => Some(i64::from(*x)),
        ScalarValue::UInt32(Some(x)) => Some(i64::from(*x)),
        ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------
// Evaluation helpers
// ------------------------------------------------------------------------------------------

/// Runs `body` on the arguments materialised as arrays. When every argument is a scalar the
/// body sees one-row arrays and the result is handed back as a scalar, so constant folding and
/// scalar calls cost one row, not a batch.
pub(crate) fn eval_arrays(
    args: &ScalarFunctionArgs,
    body: impl FnOnce(&[ArrayRef], usize) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let len = if all_scalar { 1 } else { args.number_rows };
    let arrays = args.args.iter().map(|a| a.to_array(len)).collect::<Result<Vec<_>>>()?;
    let result = body(&arrays, len)?;
    if result.len() != len {
        return exec_err!("function produced {} rows for {len} inputs", result.len());
    }
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?))
    } else {
        Ok(ColumnarValue::Array(result))
    }
}

/// The literal value of argument `i` when the caller passed a scalar, used to compile a pattern
/// once per call instead of once per row.
pub(crate) fn scalar_string_arg(args: &ScalarFunctionArgs, i: usize) -> Option<Option<String>> {
    match args.args.get(i)? {
        ColumnarValue::Scalar(v) => match v {
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => Some(s.clone()),
            ScalarValue::Null => Some(None),
            _ => None,
        },
        ColumnarValue::Array(_) => None,
    }
}

/// A pattern argument (date format, regex) compiled once per call when it is a literal, and
/// once per distinct value otherwise. Compilation errors are kept per pattern so each function
/// decides whether a bad pattern is a NULL or an error, as Flink does.
pub(crate) struct CompiledArg<'a, T> {
    constant: Option<Option<Result<Arc<T>, String>>>,
    strings: Strings<'a>,
    cache: std::collections::HashMap<&'a str, Result<Arc<T>, String>>,
    compile: &'a dyn Fn(&str) -> Result<T, String>,
}

impl<'a, T> CompiledArg<'a, T> {
    pub(crate) fn new(
        args: &ScalarFunctionArgs,
        index: usize,
        array: &'a ArrayRef,
        compile: &'a dyn Fn(&str) -> Result<T, String>,
    ) -> Result<Self> {
        let constant = scalar_string_arg(args, index).map(|literal| literal.map(|p| compile(&p).map(Arc::new)));
        Ok(CompiledArg { constant, strings: Strings::new(array)?, cache: std::collections::HashMap::new(), compile })
    }

    /// The compiled pattern of row `i`, or `None` when the pattern is NULL.
    pub(crate) fn get(&mut self, i: usize) -> Option<Result<Arc<T>, String>> {
        if let Some(constant) = &self.constant {
            return constant.clone();
        }
        let text = self.strings.get(i)?;
        let compile = self.compile;
        Some(self.cache.entry(text).or_insert_with(|| compile(text).map(Arc::new)).clone())
    }
}

/// Read access to any of Arrow's three string encodings.
pub(crate) enum Strings<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
    /// A NULL-typed argument: every row reads as NULL.
    AllNull,
}

impl<'a> Strings<'a> {
    pub(crate) fn new(array: &'a ArrayRef) -> Result<Self> {
        match array.data_type() {
            DataType::Utf8 => Ok(Strings::Utf8(array.as_string::<i32>())),
            DataType::LargeUtf8 => Ok(Strings::Large(array.as_string::<i64>())),
            DataType::Utf8View => Ok(Strings::View(array.as_string_view())),
            DataType::Null => Ok(Strings::AllNull),
            other => exec_err!("expected a string array, got {other}"),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::View(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::AllNull => None,
        }
    }
}

/// Reads an integer argument (already coerced to Int64) or an all-null array.
pub(crate) fn int64_values(array: &ArrayRef) -> Result<Int64Array> {
    match array.data_type() {
        DataType::Int64 => Ok(array.as_primitive::<arrow::datatypes::Int64Type>().clone()),
        DataType::Null => Ok(Int64Array::new_null(array.len())),
        _ => {
            let cast = arrow::compute::cast(array, &DataType::Int64)?;
            Ok(cast.as_primitive::<arrow::datatypes::Int64Type>().clone())
        }
    }
}

/// A temporal value as Flink's `TimestampData` holds it: epoch milliseconds plus the
/// non-negative nanoseconds within that millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Millis {
    pub(crate) millis: i64,
    pub(crate) nanos_of_milli: i64,
}

/// How a temporal column is encoded, so results can be written back in the same encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemporalKind {
    Timestamp(TimeUnit, Option<Arc<str>>),
    Date,
}

pub(crate) struct Temporal {
    pub(crate) kind: TemporalKind,
    values: Int64Array,
}

impl Temporal {
    pub(crate) fn new(array: &ArrayRef) -> Result<Self> {
        match array.data_type() {
            DataType::Timestamp(unit, tz) => {
                Ok(Temporal { kind: TemporalKind::Timestamp(*unit, tz.clone()), values: reinterpret_i64(array)? })
            }
            DataType::Date32 => {
                let days = array.as_primitive::<arrow::datatypes::Date32Type>();
                let values: Int64Array = days.unary(i64::from);
                Ok(Temporal { kind: TemporalKind::Date, values })
            }
            DataType::Null => Ok(Temporal {
                kind: TemporalKind::Timestamp(TimeUnit::Millisecond, None),
                values: Int64Array::new_null(array.len()),
            }),
            other => exec_err!("expected a TIMESTAMP or DATE array, got {other}"),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    /// The raw stored value: epoch days for DATE, epoch units for TIMESTAMP.
    pub(crate) fn raw(&self, i: usize) -> Option<i64> {
        self.values.is_valid(i).then(|| self.values.value(i))
    }

    pub(crate) fn millis(&self, i: usize) -> Option<Millis> {
        let v = self.raw(i)?;
        Some(match &self.kind {
            TemporalKind::Date => Millis { millis: v.checked_mul(MILLIS_PER_DAY)?, nanos_of_milli: 0 },
            TemporalKind::Timestamp(unit, _) => to_millis(v, *unit),
        })
    }
}

pub(crate) const MILLIS_PER_DAY: i64 = 86_400_000;

fn reinterpret_i64(array: &ArrayRef) -> Result<Int64Array> {
    let data = array.to_data().into_builder().data_type(DataType::Int64).build()?;
    Ok(Int64Array::from(data))
}

pub(crate) fn to_millis(v: i64, unit: TimeUnit) -> Millis {
    match unit {
        TimeUnit::Second => Millis { millis: v.saturating_mul(1000), nanos_of_milli: 0 },
        TimeUnit::Millisecond => Millis { millis: v, nanos_of_milli: 0 },
        TimeUnit::Microsecond => Millis { millis: v.div_euclid(1000), nanos_of_milli: v.rem_euclid(1000) * 1000 },
        TimeUnit::Nanosecond => Millis { millis: v.div_euclid(1_000_000), nanos_of_milli: v.rem_euclid(1_000_000) },
    }
}

/// Encodes epoch milliseconds (plus nanos) in `unit`; `None` when it does not fit.
pub(crate) fn from_millis(m: Millis, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => Some(m.millis.div_euclid(1000)),
        TimeUnit::Millisecond => Some(m.millis),
        TimeUnit::Microsecond => m.millis.checked_mul(1000)?.checked_add(m.nanos_of_milli / 1000),
        TimeUnit::Nanosecond => m.millis.checked_mul(1_000_000)?.checked_add(m.nanos_of_milli),
    }
}

/// Flink prints a timestamp with exactly its declared precision; Arrow's unit stands in for it.
pub(crate) fn precision_of(unit: TimeUnit) -> usize {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// Wraps raw i64 values as a timestamp array of the given type.
pub(crate) fn timestamp_array(values: Int64Array, data_type: &DataType) -> Result<ArrayRef> {
    let data = values.into_data().into_builder().data_type(data_type.clone()).build()?;
    Ok(make_array(data))
}

/// Wraps i64 epoch days as a Date32 array, turning out-of-range days into NULL.
pub(crate) fn date_array(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    let dates: arrow::array::Date32Array = values.map(|v| v.and_then(|d| i32::try_from(d).ok())).collect();
    Arc::new(dates)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Calls a UDF the way DataFusion's physical planner does, for unit tests.
    use super::*;
    use datafusion_common::config::ConfigOptions;

    pub(crate) fn call(udf: &ScalarUDF, args: Vec<ColumnarValue>, rows: usize) -> Result<ColumnarValue> {
        let types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
        let coerced = udf.coerce_types(&types)?;
        let args = args.into_iter().zip(coerced.iter()).map(|(a, t)| a.cast_to(t, None)).collect::<Result<Vec<_>>>()?;
        let arg_fields: Vec<FieldRef> =
            coerced.iter().enumerate().map(|(i, t)| Arc::new(Field::new(format!("a{i}"), t.clone(), true))).collect();
        let scalars: Vec<Option<ScalarValue>> = args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s.clone()),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let scalar_refs: Vec<Option<&ScalarValue>> = scalars.iter().map(|s| s.as_ref()).collect();
        let return_field =
            udf.return_field_from_args(ReturnFieldArgs { arg_fields: &arg_fields, scalar_arguments: &scalar_refs })?;
        udf.invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows: rows,
            return_field,
            config_options: Arc::new(ConfigOptions::default()),
        })
    }

    pub(crate) fn scalar(udf: &ScalarUDF, args: Vec<ScalarValue>) -> Result<ScalarValue> {
        match call(udf, args.into_iter().map(ColumnarValue::Scalar).collect(), 1)? {
            ColumnarValue::Scalar(s) => Ok(s),
            ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0),
        }
    }

    pub(crate) fn utf8(s: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(s.to_string()))
    }

    pub(crate) fn ts_ms(s: &str) -> ScalarValue {
        let dt =
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect("test timestamps are well formed");
        ScalarValue::TimestampMillisecond(Some(dt.and_utc().timestamp_millis()), None)
    }

    pub(crate) fn date(s: &str) -> ScalarValue {
        let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test dates are well formed");
        let days = d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"));
        ScalarValue::Date32(Some(days.num_days() as i32))
    }

    pub(crate) fn string_of(v: &ScalarValue) -> Option<String> {
        match v {
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.clone(),
            _ => panic!("expected a string scalar, got {v:?}"),
        }
    }
}
