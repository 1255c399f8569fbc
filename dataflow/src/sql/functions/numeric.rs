//! Flink's MOD, ROUND and TRUNCATE. MOD takes the type of its second operand (Calcite's
//! rule) and keeps the dividend's sign like Java's `%`; ROUND rounds HALF_UP on the decimal
//! form of the value (`BigDecimal.valueOf` for doubles) and gives DECIMALs the rounded scale;
//! TRUNCATE does the same rounding toward zero.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float32Array, Float64Array, Int64Array, PrimitiveArray};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type, i256,
};
use datafusion_common::{Result, ScalarValue, exec_err, plan_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, Volatility};

use super::common::{coerce_integer, eval_arrays, expect_arg_count, flink_udf, int64_values, is_integer, literal_i64};
use super::decimal::{
    decimal_of, decimal_operand, decimal_result, fit, is_float, modulo_type, pow10, rescale_down, rescale_half_up,
    round_type,
};

pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let immutable = Volatility::Immutable;
    vec![
        flink_udf("mod", &[], immutable, coerce_mod, return_mod, invoke_mod),
        flink_udf("round", &[], immutable, coerce_round, return_round, invoke_round),
        flink_udf("truncate", &[], immutable, coerce_round, return_round, invoke_truncate),
    ]
}

// ------------------------------------------------------------------------------------------
// MOD
// ------------------------------------------------------------------------------------------

fn coerce_mod(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 2)?;
    types
        .iter()
        .map(|t| match t {
            DataType::Null => Ok(DataType::Int32),
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => Ok(DataType::Decimal128(*p, *s)),
            DataType::Float16 => Ok(DataType::Float32),
            t if decimal_of(t).is_some() || is_float(t) => Ok(t.clone()),
            t => plan_err!("{name} expects numeric arguments, got {t}"),
        })
        .collect()
}

fn return_mod(types: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    let (a, b) = (&types[0], &types[1]);
    if is_float(a) || is_float(b) {
        // Calcite rejects MOD on approximate numerics; Weir evaluates it like Java's '%'.
        return Ok(if a == &DataType::Float32 && b == &DataType::Float32 {
            DataType::Float32
        } else {
            DataType::Float64
        });
    }
    if matches!(a, DataType::Decimal128(..)) || matches!(b, DataType::Decimal128(..)) {
        let ((p1, s1), (p2, s2)) = (decimal_of(a).unwrap_or((19, 0)), decimal_of(b).unwrap_or((19, 0)));
        let (p, s) = modulo_type(p1, s1, p2, s2);
        return Ok(DataType::Decimal128(p, s));
    }
    Ok(b.clone())
}

/// Narrows an i64 to the integer type `T` with Java's wrapping narrowing conversion.
fn narrow<T: ArrowPrimitiveType>(values: Vec<Option<i64>>) -> ArrayRef
where
    T::Native: num_like::FromI64,
{
    let array: PrimitiveArray<T> =
        values.into_iter().map(|v| v.map(<T::Native as num_like::FromI64>::from_i64_wrapping)).collect();
    Arc::new(array)
}

mod num_like {
    //! Java-style wrapping narrowing from `long`.
    pub(crate) trait FromI64 {
        fn from_i64_wrapping(v: i64) -> Self;
    }
    macro_rules! impl_from_i64 {
        ($($t:ty),*) => {$(impl FromI64 for $t {
            fn from_i64_wrapping(v: i64) -> Self { v as $t }
        })*};
    }
    impl_from_i64!(i8, i16, i32, i64, u8, u16, u32, u64);
}

fn integers_as_i64(array: &ArrayRef) -> Result<Int64Array> {
    match array.data_type() {
        // Wrapping keeps values above i64::MAX from failing the cast; Flink has no UInt64.
        DataType::UInt64 => Ok(array.as_primitive::<UInt64Type>().unary(|v| v as i64)),
        _ => int64_values(array),
    }
}

fn build_integer(values: Vec<Option<i64>>, t: &DataType) -> Result<ArrayRef> {
    Ok(match t {
        DataType::Int8 => narrow::<Int8Type>(values),
        DataType::Int16 => narrow::<Int16Type>(values),
        DataType::Int32 => narrow::<Int32Type>(values),
        DataType::Int64 => narrow::<Int64Type>(values),
        DataType::UInt8 => narrow::<UInt8Type>(values),
        DataType::UInt16 => narrow::<UInt16Type>(values),
        DataType::UInt32 => narrow::<UInt32Type>(values),
        DataType::UInt64 => narrow::<UInt64Type>(values),
        other => return exec_err!("expected an integer result type, got {other}"),
    })
}

fn invoke_mod(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let return_type = args.return_type().clone();
    eval_arrays(args, |arrays, len| match &return_type {
        DataType::Float32 | DataType::Float64 => {
            let cast = |a: &ArrayRef| -> Result<Float64Array> {
                Ok(arrow::compute::cast(a, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
            };
            let (a, b) = (cast(&arrays[0])?, cast(&arrays[1])?);
            let out: Float64Array =
                (0..len).map(|i| (a.is_valid(i) && b.is_valid(i)).then(|| a.value(i) % b.value(i))).collect();
            let out: ArrayRef = Arc::new(out);
            Ok(arrow::compute::cast(&out, &return_type)?)
        }
        DataType::Decimal128(p, s) => {
            let (a, _, s1) = decimal_operand(&arrays[0])?;
            let (b, _, s2) = decimal_operand(&arrays[1])?;
            let (s1, s2) = (i32::from(s1), i32::from(s2));
            let common = s1.max(s2);
            let mut out = Vec::with_capacity(len);
            for i in 0..len {
                if a.is_null(i) || b.is_null(i) {
                    out.push(None);
                    continue;
                }
                let x = rescale_half_up(i256::from_i128(a.value(i)), s1, common);
                let y = rescale_half_up(i256::from_i128(b.value(i)), s2, common);
                let (Some(x), Some(y)) = (x, y) else {
                    out.push(None);
                    continue;
                };
                if y == i256::ZERO {
                    return exec_err!("division by zero");
                }
                out.push(fit(x.wrapping_rem(y), common, *p, *s));
            }
            decimal_result(out, *p, *s)
        }
        t if is_integer(t) => {
            let (a, b) = (integers_as_i64(&arrays[0])?, integers_as_i64(&arrays[1])?);
            let mut out = Vec::with_capacity(len);
            for i in 0..len {
                if a.is_null(i) || b.is_null(i) {
                    out.push(None);
                    continue;
                }
                if b.value(i) == 0 {
                    return exec_err!("division by zero");
                }
                // wrapping_rem gives Java's 0 for i64::MIN % -1 instead of overflowing.
                out.push(Some(a.value(i).wrapping_rem(b.value(i))));
            }
            build_integer(out, t)
        }
        other => exec_err!("MOD: unsupported result type {other}"),
    })
}

// ------------------------------------------------------------------------------------------
// ROUND / TRUNCATE
// ------------------------------------------------------------------------------------------

fn coerce_round(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 1, 2)?;
    let value = match &types[0] {
        DataType::Null => DataType::Float64,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        DataType::Float16 => DataType::Float32,
        t if t.is_numeric() && !matches!(t, DataType::Decimal256(..)) => t.clone(),
        t => return plan_err!("{name} expects a numeric argument, got {t}"),
    };
    let mut out = vec![value];
    if let Some(t) = types.get(1) {
        out.push(coerce_integer(name, t)?);
    }
    Ok(out)
}

/// Decimal results take the scale the (literal) digit count gives; with a non-literal count
/// the input type is kept, since the result type must be known before any row is seen.
fn return_round(types: &[DataType], literals: &[Option<&ScalarValue>]) -> Result<DataType> {
    match &types[0] {
        DataType::Decimal128(p, s) => {
            let digits = if types.len() == 1 { Some(0) } else { literal_i64(literals.get(1).copied().flatten()) };
            Ok(match digits {
                Some(d) => {
                    let (p, s) = round_type(*p, *s, d);
                    DataType::Decimal128(p, s)
                }
                None => DataType::Decimal128(*p, *s),
            })
        }
        t => Ok(t.clone()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rounding {
    HalfUp,
    Down,
}

fn rescale(v: i256, from: i32, to: i32, mode: Rounding) -> Option<i256> {
    match mode {
        Rounding::HalfUp => rescale_half_up(v, from, to),
        Rounding::Down => rescale_down(v, from, to),
    }
}

/// Rounds an unscaled decimal at scale `scale` to `digits` decimal places, leaving the result
/// at scale `scale` (digits may be negative: tens, hundreds, ...).
fn round_unscaled(v: i256, scale: i32, digits: i64, mode: Rounding) -> Option<i256> {
    let digits = i32::try_from(digits.clamp(-200, 200)).ok()?;
    if digits >= scale {
        return Some(v);
    }
    let rounded = rescale(v, scale, digits, mode)?;
    if rounded == i256::ZERO {
        return Some(i256::ZERO);
    }
    // Scaling back up is exact.
    rescale(rounded, digits, scale, mode)
}

/// The shortest decimal that reads back as `x`, as `Double.toString` (and so
/// `BigDecimal.valueOf`) produces it: unscaled digits and scale.
fn shortest_decimal(x: f64) -> Option<(i256, i32)> {
    if !x.is_finite() {
        return None;
    }
    let text = format!("{x:e}");
    let (mantissa, exponent) = text.split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches('-');
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int_part}{frac_part}");
    let unscaled = i256::from_string(&digits)?;
    let scale = frac_part.len() as i32 - exponent;
    Some((if negative { unscaled.wrapping_neg() } else { unscaled }, scale))
}

fn decimal_to_f64(v: i256, scale: i32) -> f64 {
    let text = v.to_string();
    // Formatting as "<digits>e<-scale>" lets the standard parser round correctly once.
    format!("{text}e{}", -scale).parse().unwrap_or(f64::NAN)
}

/// ROUND/TRUNCATE of a double via its decimal form. TRUNCATE first casts to DECIMAL(38, 18)
/// as Flink does, which makes values of 1e20 or more NULL.
fn round_double(x: f64, digits: i64, mode: Rounding) -> Option<f64> {
    let Some((v, scale)) = shortest_decimal(x) else {
        // Java's BigDecimal.valueOf fails on NaN and infinities; passing them through is kinder.
        return Some(x);
    };
    let (v, scale) = if mode == Rounding::Down {
        let at18 = rescale_half_up(v, scale, 18)?;
        if super::decimal::digit_count(at18) > 38 {
            return None;
        }
        (at18, 18)
    } else {
        (v, scale)
    };
    let rounded = round_unscaled(v, scale, digits, mode)?;
    Some(decimal_to_f64(rounded, scale))
}

fn round_integer(x: i64, digits: i64, mode: Rounding) -> i64 {
    if digits >= 0 {
        return x;
    }
    let Some(p) = pow10(u32::try_from(digits.unsigned_abs()).unwrap_or(40).min(40)) else {
        return 0;
    };
    let v = i256::from_i128(i128::from(x));
    let rounded = match mode {
        Rounding::HalfUp => super::decimal::div_half_up(v, p),
        Rounding::Down => v.wrapping_div(p),
    };
    // BigDecimal.longValue keeps the low 64 bits, like this.
    rounded.wrapping_mul(p).as_i128() as i64
}

fn round_arrays(args: &ScalarFunctionArgs, mode: Rounding) -> Result<ColumnarValue> {
    let return_type = args.return_type().clone();
    eval_arrays(args, |arrays, len| {
        let digits = match arrays.get(1) {
            Some(a) => int64_values(a)?,
            None => Int64Array::from(vec![0; len]),
        };
        let input_type = arrays[0].data_type().clone();
        match (&input_type, &return_type) {
            (DataType::Decimal128(_, s_in), DataType::Decimal128(p, s)) => {
                let (a, _, _) = decimal_operand(&arrays[0])?;
                let s_in = i32::from(*s_in);
                let out = (0..len)
                    .map(|i| {
                        if a.is_null(i) || digits.is_null(i) {
                            return None;
                        }
                        let rounded = round_unscaled(i256::from_i128(a.value(i)), s_in, digits.value(i), mode)?;
                        fit(rounded, s_in, *p, *s)
                    })
                    .collect();
                decimal_result(out, *p, *s)
            }
            (DataType::Float64, _) => {
                let a = arrays[0].as_primitive::<Float64Type>();
                let out: Float64Array = (0..len)
                    .map(|i| {
                        if a.is_null(i) || digits.is_null(i) {
                            return None;
                        }
                        round_double(a.value(i), digits.value(i), mode)
                    })
                    .collect();
                Ok(Arc::new(out) as ArrayRef)
            }
            (DataType::Float32, _) => {
                let a = arrays[0].as_primitive::<Float32Type>();
                let out: Float32Array = (0..len)
                    .map(|i| {
                        if a.is_null(i) || digits.is_null(i) {
                            return None;
                        }
                        // Java widens the float to double before taking its decimal form.
                        round_double(f64::from(a.value(i)), digits.value(i), mode).map(|v| v as f32)
                    })
                    .collect();
                Ok(Arc::new(out) as ArrayRef)
            }
            (t, _) if is_integer(t) => {
                let a = integers_as_i64(&arrays[0])?;
                let out = (0..len)
                    .map(|i| {
                        (a.is_valid(i) && digits.is_valid(i)).then(|| round_integer(a.value(i), digits.value(i), mode))
                    })
                    .collect();
                build_integer(out, t)
            }
            (t, _) => exec_err!("ROUND/TRUNCATE: unsupported type {t}"),
        }
    })
}

fn invoke_round(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    round_arrays(args, Rounding::HalfUp)
}

fn invoke_truncate(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    round_arrays(args, Rounding::Down)
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::scalar;
    use super::*;

    fn udf(name: &str) -> Arc<ScalarUDF> {
        functions().into_iter().find(|f| f.name() == name).expect("function is registered")
    }

    fn dec(v: i128, p: u8, s: i8) -> ScalarValue {
        ScalarValue::Decimal128(Some(v), p, s)
    }

    fn i32v(v: i32) -> ScalarValue {
        ScalarValue::Int32(Some(v))
    }

    #[test]
    fn mod_follows_java_and_calcite() {
        let m = udf("mod");
        assert_eq!(scalar(&m, vec![i32v(-7), i32v(3)]).unwrap(), ScalarValue::Int32(Some(-1)));
        assert_eq!(scalar(&m, vec![i32v(7), i32v(-3)]).unwrap(), ScalarValue::Int32(Some(1)));
        // MOD(BIGINT, INT) is an INT; MOD(INT, BIGINT) a BIGINT.
        assert_eq!(
            scalar(&m, vec![ScalarValue::Int64(Some(10_000_000_007)), i32v(10)]).unwrap(),
            ScalarValue::Int32(Some(7))
        );
        assert_eq!(scalar(&m, vec![i32v(7), ScalarValue::Int64(Some(4))]).unwrap(), ScalarValue::Int64(Some(3)));
        assert_eq!(
            scalar(&m, vec![ScalarValue::Int64(Some(i64::MIN)), ScalarValue::Int64(Some(-1))]).unwrap(),
            ScalarValue::Int64(Some(0))
        );
        assert!(scalar(&m, vec![i32v(1), i32v(0)]).is_err());
        assert_eq!(scalar(&m, vec![ScalarValue::Int32(None), i32v(0)]).unwrap(), ScalarValue::Int32(None));
        // DECIMAL(5,2) MOD INT -> DECIMAL(5,2).
        assert_eq!(scalar(&m, vec![dec(-1050, 5, 2), i32v(4)]).unwrap(), dec(-250, 5, 2));
        assert_eq!(
            scalar(&m, vec![ScalarValue::Float64(Some(-7.5)), ScalarValue::Float64(Some(2.0))]).unwrap(),
            ScalarValue::Float64(Some(-1.5))
        );
    }

    #[test]
    fn round_follows_flink_tests() {
        let r = udf("round");
        // ROUND(125.315) -> 125, ROUND(-125.315, 2) -> -125.32.
        assert_eq!(scalar(&r, vec![dec(125_315, 6, 3)]).unwrap(), dec(125, 4, 0));
        assert_eq!(scalar(&r, vec![dec(-125_315, 6, 3), i32v(2)]).unwrap(), dec(-12_532, 6, 2));
        assert_eq!(scalar(&r, vec![dec(14, 2, 1), i32v(1)]).unwrap(), dec(14, 2, 1));
        assert_eq!(scalar(&r, vec![dec(189_000, 10, 2), i32v(0)]).unwrap(), dec(1890, 9, 0));
        assert_eq!(scalar(&r, vec![dec(12_345, 5, 4), i32v(3)]).unwrap(), dec(1235, 5, 3));
        assert_eq!(scalar(&r, vec![ScalarValue::Int8(Some(123)), i32v(-2)]).unwrap(), ScalarValue::Int8(Some(100)));
        assert_eq!(scalar(&r, vec![ScalarValue::Int32(Some(-125)), i32v(-1)]).unwrap(), ScalarValue::Int32(Some(-130)));
        assert_eq!(
            scalar(&r, vec![ScalarValue::Float64(Some(1.2345)), i32v(3)]).unwrap(),
            ScalarValue::Float64(Some(1.235))
        );
        assert_eq!(scalar(&r, vec![ScalarValue::Float64(Some(1.2345))]).unwrap(), ScalarValue::Float64(Some(1.0)));
        assert_eq!(
            scalar(&r, vec![ScalarValue::Float64(Some(2.675)), i32v(2)]).unwrap(),
            ScalarValue::Float64(Some(2.68))
        );
        assert_eq!(
            scalar(&r, vec![ScalarValue::Float32(Some(1.2345)), i32v(3)]).unwrap(),
            ScalarValue::Float32(Some(1.235))
        );
        assert_eq!(scalar(&r, vec![ScalarValue::Float64(Some(0.5))]).unwrap(), ScalarValue::Float64(Some(1.0)));
        assert_eq!(scalar(&r, vec![ScalarValue::Float64(Some(-0.5))]).unwrap(), ScalarValue::Float64(Some(-1.0)));
        assert_eq!(
            scalar(&r, vec![ScalarValue::Float64(Some(1234.5)), i32v(-2)]).unwrap(),
            ScalarValue::Float64(Some(1200.0))
        );
        assert_eq!(scalar(&r, vec![ScalarValue::Float64(None), i32v(3)]).unwrap(), ScalarValue::Float64(None));
        assert_eq!(
            scalar(&r, vec![ScalarValue::Float64(Some(1e300)), i32v(-100)]).unwrap(),
            ScalarValue::Float64(Some(1e300))
        );
        assert_eq!(
            scalar(&r, vec![ScalarValue::Float64(Some(123.0)), i32v(-150)]).unwrap(),
            ScalarValue::Float64(Some(0.0))
        );
        assert_eq!(scalar(&r, vec![dec(12_345, 5, 2), i32v(-100)]).unwrap(), dec(0, 4, 0));
        assert_eq!(
            scalar(&r, vec![ScalarValue::Float64(Some(1.5)), ScalarValue::Int32(None)]).unwrap(),
            ScalarValue::Float64(None)
        );
    }

    #[test]
    fn truncate_follows_flink_tests() {
        let t = udf("truncate");
        assert_eq!(
            scalar(&t, vec![ScalarValue::Float64(Some(0.46)), i32v(1)]).unwrap(),
            ScalarValue::Float64(Some(0.4))
        );
        assert_eq!(scalar(&t, vec![ScalarValue::Float64(Some(0.46))]).unwrap(), ScalarValue::Float64(Some(0.0)));
        assert_eq!(scalar(&t, vec![ScalarValue::Int32(Some(42)), i32v(-1)]).unwrap(), ScalarValue::Int32(Some(40)));
        assert_eq!(scalar(&t, vec![ScalarValue::Int32(Some(42)), i32v(-3)]).unwrap(), ScalarValue::Int32(Some(0)));
        assert_eq!(scalar(&t, vec![ScalarValue::Int64(Some(44)), i32v(2)]).unwrap(), ScalarValue::Int64(Some(44)));
        // truncate(cast(-0.1231231321321321111 as decimal(38, 18)), 2) -> -0.12
        let v = dec(-123_123_132_132_132_111, 38, 18);
        assert_eq!(scalar(&t, vec![v.clone(), i32v(2)]).unwrap(), dec(-12, 23, 2));
        assert_eq!(scalar(&t, vec![v]).unwrap(), dec(0, 21, 0));
        assert_eq!(
            scalar(&t, vec![ScalarValue::Float32(Some(0.45)), i32v(1)]).unwrap(),
            ScalarValue::Float32(Some(0.4))
        );
        assert_eq!(scalar(&t, vec![ScalarValue::Float64(Some(1e25)), i32v(1)]).unwrap(), ScalarValue::Float64(None));
    }
}
