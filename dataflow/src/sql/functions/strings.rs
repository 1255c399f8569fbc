//! Flink's string functions whose NULL handling, indexing or character model differ from
//! DataFusion's: SPLIT_INDEX, INITCAP, CONCAT, CONCAT_WS, LPAD, RPAD, CHAR_LENGTH, POSITION,
//! LOCATE and SUBSTRING. Positions count Unicode code points, as Flink's `BinaryStringData`
//! does; LPAD/RPAD count UTF-16 units because Flink implements them on Java `char[]`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, StringBuilder};
use arrow::datatypes::DataType;
use datafusion_common::{Result, ScalarValue, exec_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, Volatility};

use super::common::{
    Strings, coerce_integer, coerce_string, eval_arrays, expect_arg_count, flink_udf, int64_values, is_integer,
};

pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let immutable = Volatility::Immutable;
    vec![
        flink_udf("split_index", &[], immutable, coerce_split_index, return_utf8, invoke_split_index),
        flink_udf("initcap", &[], immutable, coerce_all_strings, return_utf8, invoke_initcap),
        flink_udf("concat", &[], immutable, coerce_all_strings, return_utf8, invoke_concat),
        flink_udf("concat_ws", &[], immutable, coerce_all_strings, return_utf8, invoke_concat_ws),
        flink_udf("lpad", &[], immutable, coerce_pad, return_utf8, invoke_lpad),
        flink_udf("rpad", &[], immutable, coerce_pad, return_utf8, invoke_rpad),
        flink_udf(
            "char_length",
            &["character_length"],
            immutable,
            coerce_all_strings,
            return_int32,
            invoke_char_length,
        ),
        flink_udf("weir_position", &[], immutable, coerce_all_strings, return_int32, invoke_position),
        flink_udf("locate", &[], immutable, coerce_locate, return_int32, invoke_locate),
        flink_udf("substring", &["substr"], immutable, coerce_substring, return_utf8, invoke_substring),
    ]
}

fn return_utf8(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Utf8)
}

fn return_int32(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Int32)
}

fn coerce_all_strings(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    let (min, max) = match name {
        "initcap" | "char_length" => (1, 1),
        "weir_position" => (2, 2),
        "concat" => (1, usize::MAX),
        _ => (2, usize::MAX),
    };
    expect_arg_count(name, types, min, max)?;
    Ok(types.iter().map(coerce_string).collect())
}

/// Java's `Character.isWhitespace`: Unicode separators except the no-break spaces, plus the
/// ASCII control separators.
fn java_is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{1C}'..='\u{1F}')
        || (c.is_whitespace() && !matches!(c, '\u{85}' | '\u{A0}' | '\u{2007}' | '\u{202F}'))
}

// ------------------------------------------------------------------------------------------
// SPLIT_INDEX
// ------------------------------------------------------------------------------------------

fn coerce_split_index(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 3, 3)?;
    // Flink also accepts the separator as a character code.
    let separator = if is_integer(&types[1]) { DataType::Int64 } else { coerce_string(&types[1]) };
    Ok(vec![coerce_string(&types[0]), separator, coerce_integer(name, &types[2])?])
}

/// Commons Lang `splitByWholeSeparatorPreserveAllTokens(str, sep)[index]`: an empty string has
/// no tokens, and an empty separator splits on every whitespace character.
fn split_index<'a>(s: &'a str, separator: &str, index: usize) -> Option<&'a str> {
    if s.is_empty() {
        return None;
    }
    if separator.is_empty() { s.split(java_is_whitespace).nth(index) } else { s.split(separator).nth(index) }
}

fn invoke_split_index(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let input = Strings::new(&arrays[0])?;
        let indexes = int64_values(&arrays[2])?;
        let mut out = StringBuilder::with_capacity(len, len * 8);
        if arrays[1].data_type() == &DataType::Int64 {
            let codes = int64_values(&arrays[1])?;
            for i in 0..len {
                let value = match (input.get(i), codes.is_valid(i), indexes.is_valid(i)) {
                    (Some(s), true, true) => {
                        let (code, index) = (codes.value(i), indexes.value(i));
                        match (u8::try_from(code), usize::try_from(index)) {
                            (Ok(c), Ok(index)) if c >= 1 && !s.is_empty() => s.split(char::from(c)).nth(index),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                out.append_option(value);
            }
        } else {
            let separators = Strings::new(&arrays[1])?;
            for i in 0..len {
                let value = match (input.get(i), separators.get(i), indexes.is_valid(i)) {
                    (Some(s), Some(sep), true) => {
                        usize::try_from(indexes.value(i)).ok().and_then(|index| split_index(s, sep, index))
                    }
                    _ => None,
                };
                out.append_option(value);
            }
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

// ------------------------------------------------------------------------------------------
// INITCAP
// ------------------------------------------------------------------------------------------

/// Flink's `SqlFunctionUtils.initcap` (Calcite's algorithm): only ASCII letters and digits
/// form words, so any other character, including a non-ASCII letter, starts a new word;
/// only ASCII letters change case.
pub(crate) fn initcap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            if c.is_ascii_alphanumeric() {
                start = false;
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        } else if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else {
            start = true;
            out.push(c);
        }
    }
    out
}

fn invoke_initcap(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let input = Strings::new(&arrays[0])?;
        let mut out = StringBuilder::with_capacity(len, len * 8);
        for i in 0..len {
            out.append_option(input.get(i).map(initcap));
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

// ------------------------------------------------------------------------------------------
// CONCAT / CONCAT_WS
// ------------------------------------------------------------------------------------------

fn invoke_concat(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let inputs = arrays.iter().map(Strings::new).collect::<Result<Vec<_>>>()?;
        let mut out = StringBuilder::with_capacity(len, len * 16);
        let mut buffer = String::new();
        'rows: for i in 0..len {
            buffer.clear();
            for input in &inputs {
                match input.get(i) {
                    Some(s) => buffer.push_str(s),
                    None => {
                        out.append_null();
                        continue 'rows;
                    }
                }
            }
            out.append_value(&buffer);
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

fn invoke_concat_ws(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let separator = Strings::new(&arrays[0])?;
        let inputs = arrays[1..].iter().map(Strings::new).collect::<Result<Vec<_>>>()?;
        let mut out = StringBuilder::with_capacity(len, len * 16);
        let mut buffer = String::new();
        for i in 0..len {
            let Some(sep) = separator.get(i) else {
                out.append_null();
                continue;
            };
            buffer.clear();
            let mut first = true;
            for s in inputs.iter().filter_map(|input| input.get(i)) {
                if !first {
                    buffer.push_str(sep);
                }
                buffer.push_str(s);
                first = false;
            }
            out.append_value(&buffer);
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

// ------------------------------------------------------------------------------------------
// LPAD / RPAD
// ------------------------------------------------------------------------------------------

fn coerce_pad(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 3, 3)?;
    Ok(vec![coerce_string(&types[0]), coerce_integer(name, &types[1])?, coerce_string(&types[2])])
}

/// Lengths past this would make Java allocate gigabytes and fail the job; refusing them up
/// front keeps the worker alive.
const MAX_PAD_LENGTH: i64 = 1 << 28;

/// Java `new String(char[])` turned into UTF-8, where a surrogate split by truncation
/// becomes '?', as `String.getBytes(UTF_8)` writes it.
fn from_utf16_java(units: &[u16]) -> String {
    char::decode_utf16(units.iter().copied()).map(|r| r.unwrap_or('?')).collect()
}

fn pad(base: &str, len: i64, pad: &str, left: bool) -> Result<Option<String>> {
    if len < 0 || pad.is_empty() {
        return Ok(None);
    }
    if len > MAX_PAD_LENGTH {
        return exec_err!("{} length {len} is too large", if left { "LPAD" } else { "RPAD" });
    }
    let len = len as usize;
    let base: Vec<u16> = base.encode_utf16().collect();
    let pad: Vec<u16> = pad.encode_utf16().collect();
    let mut data = Vec::with_capacity(len);
    if left {
        let fill = len.saturating_sub(base.len());
        data.extend(pad.iter().cycle().take(fill));
        data.extend(base.iter().take(len - fill));
    } else {
        data.extend(base.iter().take(len));
        let fill = len - data.len();
        data.extend(pad.iter().cycle().take(fill));
    }
    Ok(Some(from_utf16_java(&data)))
}

fn pad_arrays(args: &ScalarFunctionArgs, left: bool) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let input = Strings::new(&arrays[0])?;
        let lengths = int64_values(&arrays[1])?;
        let pads = Strings::new(&arrays[2])?;
        let mut out = StringBuilder::with_capacity(len, len * 8);
        for i in 0..len {
            let value = match (input.get(i), lengths.is_valid(i), pads.get(i)) {
                (Some(s), true, Some(p)) => pad(s, lengths.value(i), p, left)?,
                _ => None,
            };
            out.append_option(value);
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

fn invoke_lpad(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    pad_arrays(args, true)
}

fn invoke_rpad(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    pad_arrays(args, false)
}

// ------------------------------------------------------------------------------------------
// CHAR_LENGTH / POSITION / LOCATE
// ------------------------------------------------------------------------------------------

fn char_count(s: &str) -> usize {
    if s.is_ascii() { s.len() } else { s.chars().count() }
}

fn to_i32(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn invoke_char_length(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let input = Strings::new(&arrays[0])?;
        let out: Int32Array = (0..len).map(|i| input.get(i).map(|s| to_i32(char_count(s)))).collect();
        Ok(Arc::new(out) as ArrayRef)
    })
}

/// `BinaryStringData.indexOf(needle, from)`: code-point index of the first match at or after
/// code point `from` (negative counts as 0), with an empty needle found at index 0.
fn index_of(haystack: &str, needle: &str, from: i64) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    let from = usize::try_from(from.max(0)).unwrap_or(usize::MAX);
    let start = haystack.char_indices().nth(from).map_or(haystack.len(), |(b, _)| b);
    let found = haystack[start..].find(needle)? + start;
    Some(char_count(&haystack[..found]))
}

fn position(needle: &str, haystack: &str, from: i64) -> i32 {
    index_of(haystack, needle, from.saturating_sub(1)).map_or(0, |i| to_i32(i + 1))
}

fn invoke_position(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let needles = Strings::new(&arrays[0])?;
        let haystacks = Strings::new(&arrays[1])?;
        let out: Int32Array = (0..len).map(|i| Some(position(needles.get(i)?, haystacks.get(i)?, 1))).collect();
        Ok(Arc::new(out) as ArrayRef)
    })
}

fn coerce_locate(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 3)?;
    let mut out = vec![coerce_string(&types[0]), coerce_string(&types[1])];
    if let Some(t) = types.get(2) {
        out.push(coerce_integer(name, t)?);
    }
    Ok(out)
}

fn invoke_locate(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let needles = Strings::new(&arrays[0])?;
        let haystacks = Strings::new(&arrays[1])?;
        let starts = arrays.get(2).map(int64_values).transpose()?;
        let out: Int32Array = (0..len)
            .map(|i| {
                let from = match &starts {
                    Some(s) if s.is_null(i) => return None,
                    Some(s) => s.value(i),
                    None => 1,
                };
                Some(position(needles.get(i)?, haystacks.get(i)?, from))
            })
            .collect();
        Ok(Arc::new(out) as ArrayRef)
    })
}

// ------------------------------------------------------------------------------------------
// SUBSTRING
// ------------------------------------------------------------------------------------------

fn coerce_substring(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 3)?;
    let mut out = vec![coerce_string(&types[0])];
    for t in &types[1..] {
        out.push(coerce_integer(name, t)?);
    }
    Ok(out)
}

/// `BinaryStringDataUtil.substringSQL`: 1-based; 0 reads as 1; a negative start counts from
/// the end; a negative length is NULL; ranges past either end are cut, not errors.
pub(crate) fn substring_sql(s: &str, pos: i64, len: i64) -> Option<&str> {
    if len < 0 {
        return None;
    }
    if s.is_empty() {
        return Some("");
    }
    let n = char_count(s) as i64;
    let start = match pos {
        p if p > 0 => {
            if p > n {
                return Some("");
            }
            p - 1
        }
        p if p < 0 => {
            if n + p < 0 {
                return Some("");
            }
            n + p
        }
        _ => 0,
    };
    let end = if n - start < len { n } else { start + len };
    let byte_at = |chars: i64| -> usize {
        if s.is_ascii() { chars as usize } else { s.char_indices().nth(chars as usize).map_or(s.len(), |(b, _)| b) }
    };
    Some(&s[byte_at(start)..byte_at(end)])
}

fn invoke_substring(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let input = Strings::new(&arrays[0])?;
        let starts = int64_values(&arrays[1])?;
        let lengths = arrays.get(2).map(int64_values).transpose()?;
        let mut out = StringBuilder::with_capacity(len, len * 8);
        for i in 0..len {
            let length = match &lengths {
                Some(l) if l.is_null(i) => None,
                Some(l) => Some(l.value(i)),
                None => Some(i64::from(i32::MAX)),
            };
            let value = match (input.get(i), starts.is_valid(i), length) {
                (Some(s), true, Some(l)) => substring_sql(s, starts.value(i), l),
                _ => None,
            };
            out.append_option(value);
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::{call, scalar, string_of, utf8};
    use super::*;

    fn udf(name: &str) -> Arc<ScalarUDF> {
        functions()
            .into_iter()
            .find(|f| f.name() == name || f.aliases().iter().any(|a| a == name))
            .expect("function is registered")
    }

    fn s(name: &str, args: Vec<ScalarValue>) -> Option<String> {
        string_of(&scalar(&udf(name), args).unwrap())
    }

    fn int(v: i64) -> ScalarValue {
        ScalarValue::Int32(Some(v as i32))
    }

    const NULL_STR: ScalarValue = ScalarValue::Utf8(None);

    #[test]
    fn split_index_follows_flink_tests() {
        assert_eq!(s("split_index", vec![utf8("AQIDBA=="), utf8("I"), int(0)]).as_deref(), Some("AQ"));
        assert_eq!(s("split_index", vec![utf8("AQIDBA=="), utf8("I"), int(2)]), None);
        assert_eq!(s("split_index", vec![utf8("AQIDBA=="), utf8("I"), int(-1)]), None);
        assert_eq!(s("split_index", vec![utf8("AQIDBA=="), NULL_STR, int(0)]), None);
        assert_eq!(s("split_index", vec![utf8("AQIDBA=="), int(73), int(0)]).as_deref(), Some("AQ"));
        assert_eq!(s("split_index", vec![utf8("AQIDBA=="), int(256), int(0)]), None);
        assert_eq!(s("split_index", vec![utf8("AQIDBA=="), int(0), int(0)]), None);
        assert_eq!(s("split_index", vec![utf8("Test"), utf8("e"), int(1)]).as_deref(), Some("st"));
        assert_eq!(s("split_index", vec![utf8("a,,b,"), utf8(","), int(1)]).as_deref(), Some(""));
        assert_eq!(s("split_index", vec![utf8("a,,b,"), utf8(","), int(3)]).as_deref(), Some(""));
        assert_eq!(s("split_index", vec![utf8("a::b"), utf8("::"), int(1)]).as_deref(), Some("b"));
        assert_eq!(s("split_index", vec![utf8(""), utf8(","), int(0)]), None);
        assert_eq!(s("split_index", vec![utf8("a b\tc"), utf8(""), int(2)]).as_deref(), Some("c"));
    }

    #[test]
    fn initcap_matches_flink() {
        assert_eq!(initcap("This is a test String."), "This Is A Test String.");
        assert_eq!(initcap("fLinK"), "Flink");
        assert_eq!(initcap("a B"), "A B");
        assert_eq!(initcap("håkon o'neil"), "HåKon O'Neil");
        assert_eq!(initcap("GüL SMITH"), "GüL Smith");
        assert_eq!(initcap("123abc DEF-ghi"), "123abc Def-Ghi");
        assert_eq!(s("initcap", vec![NULL_STR]), None);
    }

    #[test]
    fn concat_and_concat_ws() {
        assert_eq!(s("concat", vec![utf8("AA"), utf8("BB"), utf8("CC"), utf8("---")]).as_deref(), Some("AABBCC---"));
        assert_eq!(s("concat", vec![utf8("xx"), NULL_STR]), None);
        assert_eq!(s("concat", vec![utf8("a")]).as_deref(), Some("a"));
        assert_eq!(
            s("concat_ws", vec![utf8("~"), NULL_STR, utf8("AA"), utf8("BB"), utf8(""), NULL_STR, utf8("CC")])
                .as_deref(),
            Some("AA~BB~~CC")
        );
        assert_eq!(s("concat_ws", vec![NULL_STR, utf8("AA")]), None);
        assert_eq!(s("concat_ws", vec![utf8("~~~~"), utf8("AA")]).as_deref(), Some("AA"));
    }

    #[test]
    fn pads_follow_flink_tests() {
        let lpad = |a: &str, n: i64, p: &str| s("lpad", vec![utf8(a), int(n), utf8(p)]);
        let rpad = |a: &str, n: i64, p: &str| s("rpad", vec![utf8(a), int(n), utf8(p)]);
        assert_eq!(lpad("hi", 1, "??").as_deref(), Some("h"));
        assert_eq!(lpad("hi", 5, "??").as_deref(), Some("???hi"));
        assert_eq!(lpad("", 30, "??").map(|v| v.len()), Some(30));
        assert_eq!(lpad("111", -2, "??"), None);
        assert_eq!(lpad("äääääääää", 2, "??").as_deref(), Some("ää"));
        assert_eq!(lpad("äääääääää", 10, "??").as_deref(), Some("?äääääääää"));
        assert_eq!(lpad("ab", 5, ""), None);
        assert_eq!(lpad("äää", 13, "12345").as_deref(), Some("1234512345äää"));
        assert_eq!(rpad("hi", 5, "??").as_deref(), Some("hi???"));
        assert_eq!(rpad("üö", 1, "??").as_deref(), Some("ü"));
        assert_eq!(rpad("abcd", 5, ""), None);
        assert_eq!(rpad("äää", 13, "12345").as_deref(), Some("äää1234512345"));
        assert_eq!(rpad("hi", 0, "?").as_deref(), Some(""));
        assert_eq!(s("lpad", vec![utf8("hi"), ScalarValue::Int32(None), utf8("?")]), None);
        assert!(scalar(&udf("lpad"), vec![utf8("hi"), int(i64::from(i32::MAX)), utf8("?")]).is_err());
    }

    #[test]
    fn positions_are_one_based() {
        let pos = |n: &str, h: &str| scalar(&udf("weir_position"), vec![utf8(n), utf8(h)]).unwrap();
        assert_eq!(pos("test", "xxxtest"), ScalarValue::Int32(Some(4)));
        assert_eq!(pos("testx", "xxxtest"), ScalarValue::Int32(Some(0)));
        assert_eq!(pos("aa", "aaads"), ScalarValue::Int32(Some(1)));
        assert_eq!(pos("ö", "äöü"), ScalarValue::Int32(Some(2)));
        assert_eq!(pos("", "abc"), ScalarValue::Int32(Some(1)));
        let locate = udf("locate");
        assert_eq!(scalar(&locate, vec![utf8("aa"), utf8("aaads"), int(2)]).unwrap(), ScalarValue::Int32(Some(2)));
        assert_eq!(scalar(&locate, vec![utf8("test"), utf8("xxxtest")]).unwrap(), ScalarValue::Int32(Some(4)));
        assert_eq!(scalar(&locate, vec![utf8("a"), utf8("abc"), int(9)]).unwrap(), ScalarValue::Int32(Some(0)));
        assert_eq!(scalar(&udf("char_length"), vec![utf8("Håkon")]).unwrap(), ScalarValue::Int32(Some(5)));
    }

    #[test]
    fn substring_follows_flink_tests() {
        let f0 = "This is a test String.";
        let sub = |p: i64, l: Option<i64>| {
            let mut args = vec![utf8(f0), int(p)];
            if let Some(l) = l {
                args.push(int(l));
            }
            s("substring", args)
        };
        assert_eq!(sub(2, None).as_deref(), Some("his is a test String."));
        assert_eq!(sub(2, Some(5)).as_deref(), Some("his i"));
        assert_eq!(sub(2, Some(100)).as_deref(), Some("his is a test String."));
        assert_eq!(sub(100, Some(10)).as_deref(), Some(""));
        assert_eq!(sub(2, Some(-1)), None);
        assert_eq!(sub(0, Some(3)).as_deref(), Some("Thi"));
        assert_eq!(sub(-2, None).as_deref(), Some("g."));
        assert_eq!(sub(-2, Some(1)).as_deref(), Some("g"));
        assert_eq!(sub(-2, Some(0)).as_deref(), Some(""));
        assert_eq!(sub(-100, Some(3)).as_deref(), Some(""));
        assert_eq!(s("substr", vec![utf8("1世界"), int(1), int(2)]).as_deref(), Some("1世"));
    }

    #[test]
    fn arrays_mix_with_scalars() {
        let input: ArrayRef = Arc::new(arrow::array::StringViewArray::from(vec![Some("a-b"), None, Some("c-d-e")]));
        let out = call(
            &udf("split_index"),
            vec![ColumnarValue::Array(input), ColumnarValue::Scalar(utf8("-")), ColumnarValue::Scalar(int(1))],
            3,
        )
        .unwrap();
        let ColumnarValue::Array(a) = out else { panic!("expected an array") };
        let a = a.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        assert_eq!(a.value(0), "b");
        assert!(a.is_null(1));
        assert_eq!(a.value(2), "d");
    }
}
