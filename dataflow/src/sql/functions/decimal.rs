//! DECIMAL arithmetic with Flink's result types and rounding: `weir_decimal_add`, `_sub`,
//! `_mul` and `_div` (and the decimal helpers MOD, ROUND and TRUNCATE share). Result types
//! follow Flink's `LogicalTypeMerging` (SQL Server's rules, capped at precision 38 by giving
//! up scale); values round HALF_UP and a result that does not fit its type is NULL, as Flink's
//! `DecimalData.fromBigDecimal` makes it. Intermediate values use 256-bit integers, which hold
//! any product of two 38-digit operands exactly.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Float64Array};
use arrow::datatypes::{DataType, Decimal128Type, Float64Type, i256};
use datafusion_common::{Result, ScalarValue, exec_err, plan_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, Volatility};

use super::common::{eval_arrays, expect_arg_count, flink_udf};

pub(crate) const MAX_PRECISION: u8 = 38;
const MINIMUM_ADJUSTED_SCALE: i32 = 6;

pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let immutable = Volatility::Immutable;
    vec![
        flink_udf("weir_decimal_add", &[], immutable, coerce_decimal_operands, return_add, invoke_add),
        flink_udf("weir_decimal_sub", &[], immutable, coerce_decimal_operands, return_add, invoke_sub),
        flink_udf("weir_decimal_mul", &[], immutable, coerce_decimal_operands, return_mul, invoke_mul),
        flink_udf("weir_decimal_div", &[], immutable, coerce_decimal_operands, return_div, invoke_div),
    ]
}

// ------------------------------------------------------------------------------------------
// Types
// ------------------------------------------------------------------------------------------

/// The DECIMAL type Flink gives an exact numeric operand: integers become DECIMAL with as many
/// digits as their range needs.
pub(crate) fn decimal_of(t: &DataType) -> Option<(u8, i8)> {
    Some(match t {
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => (*p, *s),
        DataType::Int8 | DataType::UInt8 => (3, 0),
        DataType::Int16 | DataType::UInt16 => (5, 0),
        DataType::Int32 | DataType::UInt32 => (10, 0),
        DataType::Int64 => (19, 0),
        DataType::UInt64 => (20, 0),
        _ => return None,
    })
}

pub(crate) fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

/// `LogicalTypeMerging.adjustPrecisionScale`.
pub(crate) fn adjust_precision_scale(precision: i32, scale: i32) -> (u8, i8) {
    if precision <= i32::from(MAX_PRECISION) {
        return (precision as u8, scale as i8);
    }
    let digit_part = precision - scale;
    let min_scale_part = scale.min(MINIMUM_ADJUSTED_SCALE);
    let adjusted_scale = (i32::from(MAX_PRECISION) - digit_part).max(min_scale_part);
    (MAX_PRECISION, adjusted_scale as i8)
}

pub(crate) fn addition_type(p1: u8, s1: i8, p2: u8, s2: i8) -> (u8, i8) {
    let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
    let scale = s1.max(s2);
    adjust_precision_scale((p1 - s1).max(p2 - s2) + scale + 1, scale)
}

pub(crate) fn multiplication_type(p1: u8, s1: i8, p2: u8, s2: i8) -> (u8, i8) {
    let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
    adjust_precision_scale(p1 + p2 + 1, s1 + s2)
}

pub(crate) fn division_type(p1: u8, s1: i8, p2: u8, s2: i8) -> (u8, i8) {
    let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
    let scale = MINIMUM_ADJUSTED_SCALE.max(s1 + p2 + 1);
    adjust_precision_scale(p1 - s1 + s2 + scale, scale)
}

pub(crate) fn modulo_type(p1: u8, s1: i8, p2: u8, s2: i8) -> (u8, i8) {
    let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
    let scale = s1.max(s2);
    adjust_precision_scale((p1 - s1).min(p2 - s2) + scale, scale)
}

/// `LogicalTypeMerging.findRoundDecimalType`, also used for TRUNCATE.
pub(crate) fn round_type(p: u8, s: i8, round: i64) -> (u8, i8) {
    if round >= i64::from(s) {
        return (p, s);
    }
    let (p32, s32) = (i32::from(p), i32::from(s));
    if round < 0 {
        return ((1 + p32 - s32).min(i32::from(MAX_PRECISION)) as u8, 0);
    }
    ((1 + p32 - s32 + round as i32) as u8, round as i8)
}

// ------------------------------------------------------------------------------------------
// 256-bit decimal arithmetic
// ------------------------------------------------------------------------------------------

pub(crate) fn pow10(k: u32) -> Option<i256> {
    i256::from_i128(10).checked_pow(k)
}

/// Number of decimal digits of |v|, with 0 counting as one digit like `BigDecimal.precision`.
pub(crate) fn digit_count(v: i256) -> u32 {
    let mut n = 1;
    let mut x = v.wrapping_abs();
    let ten = i256::from_i128(10);
    while x >= ten {
        x = x.wrapping_div(ten);
        n += 1;
    }
    n
}

/// `n / d` rounded HALF_UP (away from zero on ties); `d` must be positive.
pub(crate) fn div_half_up(n: i256, d: i256) -> i256 {
    let q = n.wrapping_div(d);
    let r = n.wrapping_rem(d).wrapping_abs();
    // r < d, so doubling cannot overflow for the magnitudes used here (< 10^77).
    if r.wrapping_mul(i256::from_i128(2)) >= d {
        if n.is_negative() { q.wrapping_sub(i256::ONE) } else { q.wrapping_add(i256::ONE) }
    } else {
        q
    }
}

/// Rescales an unscaled value from scale `from` to scale `to`, rounding HALF_UP when digits
/// are dropped. `None` when the value does not fit 256 bits.
pub(crate) fn rescale_half_up(v: i256, from: i32, to: i32) -> Option<i256> {
    if to >= from {
        v.checked_mul(pow10((to - from) as u32)?)
    } else {
        let drop = (from - to) as u32;
        match pow10(drop) {
            Some(p) => Some(div_half_up(v, p)),
            // Dropping more digits than 256 bits hold leaves nothing to round up.
            None => Some(i256::ZERO),
        }
    }
}

/// Rescales dropping digits toward zero (RoundingMode.DOWN).
pub(crate) fn rescale_down(v: i256, from: i32, to: i32) -> Option<i256> {
    if to >= from {
        v.checked_mul(pow10((to - from) as u32)?)
    } else {
        match pow10((from - to) as u32) {
            Some(p) => Some(v.wrapping_div(p)),
            None => Some(i256::ZERO),
        }
    }
}

/// `DecimalData.fromBigDecimal`: round to the target scale, NULL if it needs more precision.
pub(crate) fn fit(v: i256, from_scale: i32, precision: u8, scale: i8) -> Option<i128> {
    let r = rescale_half_up(v, from_scale, i32::from(scale))?;
    if digit_count(r) > u32::from(precision) {
        return None;
    }
    r.to_i128()
}

/// `a / b` as `BigDecimal.divide(b, new MathContext(38, HALF_UP))` followed by rescaling to
/// `scale` HALF_UP: Flink rounds twice, and so does this. `b` must be non-zero.
pub(crate) fn divide(a: i256, s1: i32, b: i256, s2: i32, precision: u8, scale: i8) -> Option<i128> {
    if a == i256::ZERO {
        return Some(0);
    }
    let negative = a.is_negative() != b.is_negative();
    let (abs_a, abs_b) = (a.wrapping_abs(), b.wrapping_abs());
    // Pick k so that floor(|a| * 10^k / |b|) has exactly 38 digits.
    let integer_digits = if abs_a >= abs_b { digit_count(abs_a.wrapping_div(abs_b)) } else { 0 };
    let k = if integer_digits > 0 {
        u32::from(MAX_PRECISION).saturating_sub(integer_digits)
    } else {
        let mut k0 = 1;
        while abs_a.checked_mul(pow10(k0)?)? < abs_b {
            k0 += 1;
        }
        k0 + u32::from(MAX_PRECISION) - 1
    };
    let numerator = abs_a.checked_mul(pow10(k)?)?;
    let mut q = numerator.wrapping_div(abs_b);
    let r = numerator.wrapping_rem(abs_b);
    if r.checked_mul(i256::from_i128(2))? >= abs_b {
        q = q.wrapping_add(i256::ONE);
    }
    let q = if negative { q.wrapping_neg() } else { q };
    fit(q, k as i32 + s1 - s2, precision, scale)
}

// ------------------------------------------------------------------------------------------
// Operands
// ------------------------------------------------------------------------------------------

/// Reads an exact numeric array as unscaled i128 values at the operand's Flink decimal type.
pub(crate) fn decimal_operand(array: &ArrayRef) -> Result<(Decimal128Array, u8, i8)> {
    let Some((p, s)) = decimal_of(array.data_type()) else {
        return exec_err!("expected an exact numeric array, got {}", array.data_type());
    };
    let target = DataType::Decimal128(p, s);
    let cast = if array.data_type() == &target { Arc::clone(array) } else { arrow::compute::cast(array, &target)? };
    Ok((cast.as_primitive::<Decimal128Type>().clone(), p, s))
}

pub(crate) fn decimal_result(values: Vec<Option<i128>>, p: u8, s: i8) -> Result<ArrayRef> {
    Ok(Arc::new(Decimal128Array::from(values).with_precision_and_scale(p, s)?))
}

fn coerce_decimal_operands(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 2)?;
    types
        .iter()
        .map(|t| match t {
            DataType::Null => Ok(DataType::Int32),
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => Ok(DataType::Decimal128(*p, *s)),
            DataType::Float16 | DataType::Float32 => Ok(DataType::Float64),
            t if decimal_of(t).is_some() || is_float(t) => Ok(t.clone()),
            t => plan_err!("{name} expects numeric arguments, got {t}"),
        })
        .collect()
}

type TypeRule = fn(u8, i8, u8, i8) -> (u8, i8);

fn binary_return_type(types: &[DataType], rule: TypeRule) -> Result<DataType> {
    if types.iter().any(is_float) {
        // Flink evaluates DECIMAL op DOUBLE in DOUBLE.
        return Ok(DataType::Float64);
    }
    match (decimal_of(&types[0]), decimal_of(&types[1])) {
        (Some((p1, s1)), Some((p2, s2))) => {
            let (p, s) = rule(p1, s1, p2, s2);
            Ok(DataType::Decimal128(p, s))
        }
        _ => plan_err!("decimal arithmetic expects numeric arguments, got {} and {}", types[0], types[1]),
    }
}

fn return_add(types: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    binary_return_type(types, addition_type)
}

fn return_mul(types: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    binary_return_type(types, multiplication_type)
}

fn return_div(types: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    binary_return_type(types, division_type)
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

fn float_operand(array: &ArrayRef) -> Result<Float64Array> {
    let cast = arrow::compute::cast(array, &DataType::Float64)?;
    Ok(cast.as_primitive::<Float64Type>().clone())
}

fn apply(args: &ScalarFunctionArgs, op: Op) -> Result<ColumnarValue> {
    let return_type = args.return_type().clone();
    eval_arrays(args, |arrays, len| {
        if return_type == DataType::Float64 {
            let (a, b) = (float_operand(&arrays[0])?, float_operand(&arrays[1])?);
            let out: Float64Array = (0..len)
                .map(|i| {
                    if a.is_null(i) || b.is_null(i) {
                        return None;
                    }
                    let (x, y) = (a.value(i), b.value(i));
                    Some(match op {
                        Op::Add => x + y,
                        Op::Sub => x - y,
                        Op::Mul => x * y,
                        Op::Div => x / y,
                    })
                })
                .collect();
            return Ok(Arc::new(out) as ArrayRef);
        }
        let DataType::Decimal128(p, s) = return_type else {
            return exec_err!("unexpected decimal result type {return_type}");
        };
        let (a, _, s1) = decimal_operand(&arrays[0])?;
        let (b, _, s2) = decimal_operand(&arrays[1])?;
        let (s1, s2) = (i32::from(s1), i32::from(s2));
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            if a.is_null(i) || b.is_null(i) {
                out.push(None);
                continue;
            }
            let (x, y) = (i256::from_i128(a.value(i)), i256::from_i128(b.value(i)));
            let common = s1.max(s2);
            out.push(match op {
                Op::Add | Op::Sub => {
                    let (xs, ys) = (rescale_half_up(x, s1, common), rescale_half_up(y, s2, common));
                    match (xs, ys) {
                        (Some(xs), Some(ys)) => {
                            let sum = if matches!(op, Op::Add) { xs.checked_add(ys) } else { xs.checked_sub(ys) };
                            sum.and_then(|v| fit(v, common, p, s))
                        }
                        _ => None,
                    }
                }
                Op::Mul => x.checked_mul(y).and_then(|v| fit(v, s1 + s2, p, s)),
                Op::Div => {
                    if y == i256::ZERO {
                        return exec_err!("division by zero");
                    }
                    divide(x, s1, y, s2, p, s)
                }
            });
        }
        decimal_result(out, p, s)
    })
}

fn invoke_add(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    apply(args, Op::Add)
}

fn invoke_sub(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    apply(args, Op::Sub)
}

fn invoke_mul(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    apply(args, Op::Mul)
}

fn invoke_div(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    apply(args, Op::Div)
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

    #[test]
    fn result_types_follow_logical_type_merging() {
        assert_eq!(division_type(10, 2, 10, 0), (21, 13));
        assert_eq!(multiplication_type(10, 2, 2, 1), (13, 3));
        assert_eq!(multiplication_type(3, 3, 19, 0), (23, 3));
        assert_eq!(addition_type(10, 2, 5, 4), (13, 4));
        assert_eq!(division_type(38, 10, 38, 10), (38, 6));
        assert_eq!(multiplication_type(38, 10, 38, 10), (38, 6));
        assert_eq!(modulo_type(10, 2, 10, 0), (10, 2));
        assert_eq!(round_type(10, 2, 0), (9, 0));
        assert_eq!(round_type(10, 2, 5), (10, 2));
        assert_eq!(round_type(10, 2, -1), (9, 0));
    }

    #[test]
    fn arithmetic_matches_flink_examples() {
        // amount DECIMAL(10,2) = 1890.00; amount / 3 -> DECIMAL(21,13) 630.0000000000000.
        let out = scalar(&udf("weir_decimal_div"), vec![dec(189_000, 10, 2), ScalarValue::Int32(Some(3))]).unwrap();
        assert_eq!(out, dec(6_300_000_000_000_000, 21, 13));
        // amount * 1.1 -> DECIMAL(13,3) 2079.000.
        let out = scalar(&udf("weir_decimal_mul"), vec![dec(189_000, 10, 2), dec(11, 2, 1)]).unwrap();
        assert_eq!(out, dec(2_079_000, 13, 3));
        // 0.908 * price (BIGINT) -> DECIMAL(23,3).
        let out = scalar(&udf("weir_decimal_mul"), vec![dec(908, 3, 3), ScalarValue::Int64(Some(10))]).unwrap();
        assert_eq!(out, dec(9_080, 23, 3));
        let out = scalar(&udf("weir_decimal_add"), vec![dec(12_345, 10, 2), dec(1, 5, 4)]).unwrap();
        assert_eq!(out, dec(1_234_501, 13, 4));
        let out = scalar(&udf("weir_decimal_sub"), vec![dec(100, 3, 2), dec(1, 3, 0)]).unwrap();
        assert_eq!(out, dec(0, 6, 2));
    }

    #[test]
    fn division_rounds_half_up() {
        // 2 / 3 at DECIMAL(10,0) / DECIMAL(10,0): scale 11 -> 0.66666666667.
        let out =
            scalar(&udf("weir_decimal_div"), vec![ScalarValue::Int32(Some(2)), ScalarValue::Int32(Some(3))]).unwrap();
        assert_eq!(out, dec(66_666_666_667, 21, 11));
        let out =
            scalar(&udf("weir_decimal_div"), vec![ScalarValue::Int32(Some(-2)), ScalarValue::Int32(Some(3))]).unwrap();
        assert_eq!(out, dec(-66_666_666_667, 21, 11));
        assert!(
            scalar(&udf("weir_decimal_div"), vec![ScalarValue::Int32(Some(1)), ScalarValue::Int32(Some(0))]).is_err()
        );
        let null =
            scalar(&udf("weir_decimal_div"), vec![ScalarValue::Int32(None), ScalarValue::Int32(Some(3))]).unwrap();
        assert_eq!(null, ScalarValue::Decimal128(None, 21, 11));
    }

    #[test]
    fn overflow_is_null() {
        let big = 10_i128.pow(37) * 9;
        let out = scalar(&udf("weir_decimal_mul"), vec![dec(big, 38, 0), dec(big, 38, 0)]).unwrap();
        assert_eq!(out, ScalarValue::Decimal128(None, 38, 0));
        let out = scalar(&udf("weir_decimal_add"), vec![dec(big, 38, 0), dec(big, 38, 0)]).unwrap();
        assert_eq!(out, ScalarValue::Decimal128(None, 38, 0));
    }

    #[test]
    fn doubles_win() {
        let out = scalar(&udf("weir_decimal_mul"), vec![dec(15, 2, 1), ScalarValue::Float64(Some(2.0))]).unwrap();
        assert_eq!(out, ScalarValue::Float64(Some(3.0)));
    }
}
