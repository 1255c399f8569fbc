//! Flink's regular-expression functions (REGEXP, REGEXP_EXTRACT, REGEXP_REPLACE,
//! REGEXP_COUNT, REGEXP_INSTR, REGEXP_SUBSTR) and the translation of `java.util.regex`
//! syntax into the Rust `regex` crate's. Constructs the `regex` crate cannot express
//! (back-references, look-around, possessive quantifiers) fail to compile, and each function
//! then answers as Flink does for an invalid pattern: NULL, or FALSE for REGEXP.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, StringBuilder};
use arrow::datatypes::DataType;
use datafusion_common::{Result, ScalarValue};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, Volatility};
use regex::Regex;

use super::common::{
    CompiledArg, Strings, coerce_integer, coerce_string, eval_arrays, expect_arg_count, flink_udf, int64_values,
};

pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let immutable = Volatility::Immutable;
    vec![
        flink_udf("regexp", &[], immutable, coerce_two_strings, return_boolean, invoke_regexp),
        flink_udf("regexp_extract", &[], immutable, coerce_extract, return_utf8, invoke_regexp_extract),
        flink_udf("regexp_replace", &[], immutable, coerce_replace, return_utf8, invoke_regexp_replace),
        flink_udf("regexp_count", &[], immutable, coerce_two_strings, return_int32, invoke_regexp_count),
        flink_udf("regexp_instr", &[], immutable, coerce_two_strings, return_int32, invoke_regexp_instr),
        flink_udf("regexp_substr", &[], immutable, coerce_two_strings, return_utf8, invoke_regexp_substr),
    ]
}

fn return_utf8(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Utf8)
}

fn return_int32(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Int32)
}

fn return_boolean(_: &[DataType], _: &[Option<&ScalarValue>]) -> Result<DataType> {
    Ok(DataType::Boolean)
}

fn coerce_two_strings(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 2)?;
    Ok(types.iter().map(coerce_string).collect())
}

fn coerce_extract(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 2, 3)?;
    let mut out = vec![coerce_string(&types[0]), coerce_string(&types[1])];
    if let Some(t) = types.get(2) {
        out.push(coerce_integer(name, t)?);
    }
    Ok(out)
}

fn coerce_replace(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    expect_arg_count(name, types, 3, 3)?;
    Ok(types.iter().map(coerce_string).collect())
}

// ------------------------------------------------------------------------------------------
// Java -> Rust regex translation
// ------------------------------------------------------------------------------------------

// Java's predefined classes are ASCII-only by default, while the regex crate's are Unicode.
const JAVA_SPACE: &str = r"\t\n\x0B\x0C\r ";
const JAVA_HORIZONTAL_SPACE: &str = r" \t\xA0\x{1680}\x{180e}\x{2000}-\x{200a}\x{202f}\x{205f}\x{3000}";
const JAVA_VERTICAL_SPACE: &str = r"\n\x0B\x0C\r\x{85}\x{2028}\x{2029}";

fn posix_class(name: &str) -> Option<&'static str> {
    Some(match name {
        "Lower" => "a-z",
        "Upper" => "A-Z",
        "ASCII" => r"\x00-\x7F",
        "Alpha" => "a-zA-Z",
        "Digit" => "0-9",
        "Alnum" => "a-zA-Z0-9",
        "Punct" => r"!-/:-@\[-`{-~",
        "Graph" => "!-~",
        "Print" => " -~",
        "Blank" => r" \t",
        "Cntrl" => r"\x00-\x1F\x7F",
        "XDigit" => "0-9a-fA-F",
        "Space" => JAVA_SPACE,
        _ => return None,
    })
}

fn push_class(out: &mut String, body: &str, negated: bool, in_class: bool) {
    if !negated && in_class {
        out.push_str(body);
        return;
    }
    out.push('[');
    if negated {
        out.push('^');
    }
    out.push_str(body);
    out.push(']');
}

fn push_literal(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii() {
        out.push(c);
    } else {
        out.push('\\');
        out.push(c);
    }
}

/// Whether the pattern turns on DOTALL with an embedded flag, in which case `.` already
/// matches every character in both engines.
fn has_dotall_flag(p: &str) -> bool {
    p.match_indices("(?")
        .any(|(i, _)| p[i + 2..].chars().take_while(|c| c.is_ascii_alphabetic() || *c == '-').any(|c| c == 's'))
}

/// Rewrites a `java.util.regex` pattern into `regex` crate syntax.
pub(crate) fn translate_java_regex(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let dotall = has_dotall_flag(pattern);
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let in_class = depth > 0;
        match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err("unexpected trailing backslash".to_string());
                };
                i += 2;
                match next {
                    'Q' => {
                        while i < chars.len() {
                            if chars[i] == '\\' && chars.get(i + 1) == Some(&'E') {
                                i += 2;
                                break;
                            }
                            push_literal(&mut out, chars[i]);
                            i += 1;
                        }
                    }
                    'd' => push_class(&mut out, "0-9", false, in_class),
                    'D' => push_class(&mut out, "0-9", true, in_class),
                    'w' => push_class(&mut out, "0-9A-Za-z_", false, in_class),
                    'W' => push_class(&mut out, "0-9A-Za-z_", true, in_class),
                    's' => push_class(&mut out, JAVA_SPACE, false, in_class),
                    'S' => push_class(&mut out, JAVA_SPACE, true, in_class),
                    'h' => push_class(&mut out, JAVA_HORIZONTAL_SPACE, false, in_class),
                    'H' => push_class(&mut out, JAVA_HORIZONTAL_SPACE, true, in_class),
                    'v' => push_class(&mut out, JAVA_VERTICAL_SPACE, false, in_class),
                    'V' => push_class(&mut out, JAVA_VERTICAL_SPACE, true, in_class),
                    'e' => out.push_str(r"\x1B"),
                    'c' => {
                        let Some(&ctrl) = chars.get(i) else {
                            return Err("illegal control escape".to_string());
                        };
                        i += 1;
                        out.push_str(&format!(r"\x{{{:X}}}", u32::from(ctrl) ^ 64));
                    }
                    '0' => {
                        let mut value = 0u32;
                        let mut digits = 0;
                        while digits < 3 {
                            match chars.get(i).and_then(|d| d.to_digit(8)) {
                                Some(d) if value * 8 + d <= 0o377 => {
                                    value = value * 8 + d;
                                    i += 1;
                                    digits += 1;
                                }
                                _ => break,
                            }
                        }
                        if digits == 0 {
                            return Err("illegal octal escape sequence".to_string());
                        }
                        out.push_str(&format!(r"\x{{{value:X}}}"));
                    }
                    'p' | 'P' => {
                        let negated = next == 'P';
                        let name: String = if chars.get(i) == Some(&'{') {
                            let end = chars[i..].iter().position(|&ch| ch == '}').ok_or("unclosed character family")?;
                            let name = chars[i + 1..i + end].iter().collect();
                            i += end + 1;
                            name
                        } else {
                            let name = chars.get(i).ok_or("illegal character family")?.to_string();
                            i += 1;
                            name
                        };
                        match posix_class(&name) {
                            Some(body) => push_class(&mut out, body, negated, in_class),
                            None => {
                                let name = name.strip_prefix("Is").unwrap_or(&name);
                                out.push('\\');
                                out.push(next);
                                out.push('{');
                                out.push_str(name);
                                out.push('}');
                            }
                        }
                    }
                    _ => {
                        out.push('\\');
                        out.push(next);
                    }
                }
            }
            '[' => {
                // Inside a class Java reads "[:" as a nested class of literal characters,
                // where the regex crate would read a POSIX class.
                if in_class && chars.get(i + 1) == Some(&':') {
                    out.push_str(r"[\:");
                    i += 2;
                } else {
                    out.push('[');
                    i += 1;
                    if chars.get(i) == Some(&'^') {
                        out.push('^');
                        i += 1;
                    }
                }
                depth += 1;
            }
            ']' if in_class => {
                depth -= 1;
                out.push(']');
                i += 1;
            }
            // Java's '.' also stops at '\r' and the Unicode line separators.
            '.' if !in_class && !dotall => {
                out.push_str(r"[^\n\r\x{85}\x{2028}\x{2029}]");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

pub(crate) fn compile_java_regex(pattern: &str) -> Result<Regex, String> {
    let translated = translate_java_regex(pattern)?;
    Regex::new(&translated).map_err(|e| e.to_string())
}

/// Successive matches as `java.util.regex.Matcher.find` reports them. Unlike the regex
/// crate's iterator, Java accepts an empty match right where a non-empty one ended
/// ("baaac" with `a*` matches at 0, 1..4, 4 and 5), which changes REGEXP_REPLACE and
/// REGEXP_COUNT results.
pub(crate) fn java_find_iter<'r, 't>(re: &'r Regex, text: &'t str) -> impl Iterator<Item = regex::Match<'t>> + 'r
where
    't: 'r,
{
    let mut from = Some(0);
    std::iter::from_fn(move || {
        let start = from?;
        let m = re.find_at(text, start)?;
        from = if m.is_empty() {
            // After an empty match Java retries one character further on.
            text[m.end()..].chars().next().map(|c| m.end() + c.len_utf8())
        } else {
            Some(m.end())
        };
        Some(m)
    })
}

fn java_replace_all(re: &Regex, text: &str, replacement: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in java_find_iter(re, text) {
        out.push_str(&text[last..m.start()]);
        out.push_str(replacement);
        last = m.end();
    }
    out.push_str(&text[last..]);
    out
}

/// Java string indexes count UTF-16 units.
fn utf16_len(s: &str) -> usize {
    if s.is_ascii() { s.len() } else { s.encode_utf16().count() }
}

fn to_i32(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

// ------------------------------------------------------------------------------------------
// Functions
// ------------------------------------------------------------------------------------------

/// Evaluates `f(text, regex)` row by row with the pattern compiled once per distinct value;
/// rows with a NULL argument get `None`, rows with an invalid pattern get `on_invalid`.
fn map_rows<T: Clone>(
    args: &ScalarFunctionArgs,
    arrays: &[ArrayRef],
    len: usize,
    on_invalid: Option<T>,
    mut f: impl FnMut(usize, &str, &Regex) -> Option<T>,
) -> Result<Vec<Option<T>>> {
    let input = Strings::new(&arrays[0])?;
    let compile = compile_java_regex;
    let mut patterns = CompiledArg::new(args, 1, &arrays[1], &compile)?;
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let value = match (input.get(i), patterns.get(i)) {
            (Some(text), Some(Ok(re))) => f(i, text, &re),
            (Some(_), Some(Err(_))) => on_invalid.clone(),
            _ => None,
        };
        out.push(value);
    }
    Ok(out)
}

fn invoke_regexp(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let patterns = Strings::new(&arrays[1])?;
        let rows = map_rows(args, arrays, len, Some(false), |i, text, re| {
            // Flink answers FALSE for an empty pattern instead of matching everything.
            Some(patterns.get(i).is_some_and(|p| !p.is_empty()) && re.is_match(text))
        })?;
        Ok(Arc::new(BooleanArray::from(rows)) as ArrayRef)
    })
}

fn invoke_regexp_extract(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        // Flink's two-argument form extracts group 0, the whole match.
        let groups = arrays.get(2).map(int64_values).transpose()?;
        let rows = map_rows(args, arrays, len, None, |i, text, re| {
            let group = match &groups {
                Some(g) if g.is_null(i) => return None,
                Some(g) => usize::try_from(g.value(i)).ok()?,
                None => 0,
            };
            if group >= re.captures_len() {
                return None;
            }
            let caps = re.captures(text)?;
            caps.get(group).map(|m| m.as_str().to_string())
        })?;
        let mut out = StringBuilder::with_capacity(len, len * 8);
        rows.into_iter().for_each(|r| out.append_option(r));
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

fn invoke_regexp_replace(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let replacements = Strings::new(&arrays[2])?;
        // Flink quotes the replacement (Matcher.quoteReplacement): '$1' and '\' are literal.
        let rows = map_rows(args, arrays, len, None, |i, text, re| {
            let replacement = replacements.get(i)?;
            Some(java_replace_all(re, text, replacement))
        })?;
        let mut out = StringBuilder::with_capacity(len, len * 8);
        for (i, r) in rows.into_iter().enumerate() {
            // A NULL replacement is NULL even when the pattern is invalid.
            out.append_option(r.filter(|_| replacements.get(i).is_some()));
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

fn invoke_regexp_count(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let rows = map_rows(args, arrays, len, None, |_, text, re| Some(to_i32(java_find_iter(re, text).count())))?;
        Ok(Arc::new(Int32Array::from(rows)) as ArrayRef)
    })
}

fn invoke_regexp_instr(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let rows = map_rows(args, arrays, len, None, |_, text, re| {
            Some(re.find(text).map_or(0, |m| to_i32(utf16_len(&text[..m.start()]) + 1)))
        })?;
        Ok(Arc::new(Int32Array::from(rows)) as ArrayRef)
    })
}

fn invoke_regexp_substr(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    eval_arrays(args, |arrays, len| {
        let rows = map_rows(args, arrays, len, None, |_, text, re| re.find(text).map(|m| m.as_str().to_string()))?;
        let mut out = StringBuilder::with_capacity(len, len * 8);
        rows.into_iter().for_each(|r| out.append_option(r));
        Ok(Arc::new(out.finish()) as ArrayRef)
    })
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::{scalar, string_of, utf8};
    use super::*;

    fn udf(name: &str) -> Arc<ScalarUDF> {
        functions().into_iter().find(|f| f.name() == name).expect("function is registered")
    }

    fn s(name: &str, args: Vec<ScalarValue>) -> Option<String> {
        string_of(&scalar(&udf(name), args).unwrap())
    }

    const NULL_STR: ScalarValue = ScalarValue::Utf8(None);

    #[test]
    fn translation_keeps_java_meaning() {
        assert_eq!(translate_java_regex(r"\d+").unwrap(), "[0-9]+");
        assert_eq!(translate_java_regex(r"[\d\s]").unwrap(), r"[0-9\t\n\x0B\x0C\r ]");
        assert_eq!(translate_java_regex(r"\Qa.b\E").unwrap(), r"a\.b");
        assert_eq!(translate_java_regex(r"\p{Alpha}").unwrap(), "[a-zA-Z]");
        assert_eq!(translate_java_regex(r"\p{IsLatin}").unwrap(), r"\p{Latin}");
        assert!(compile_java_regex(r"(a)\1").is_err());
        assert!(compile_java_regex(r"a(?=b)").is_err());
        // ASCII-only \d and \w, as in Java.
        let re = compile_java_regex(r"^\w+$").unwrap();
        assert!(re.is_match("abc_1"));
        assert!(!re.is_match("åbc"));
        let dot = compile_java_regex("a.b").unwrap();
        assert!(!dot.is_match("a\rb"));
        assert!(compile_java_regex("(?s)a.b").unwrap().is_match("a\rb"));
    }

    #[test]
    fn regexp_extract_follows_flink_tests() {
        let ex = |args: Vec<ScalarValue>| s("regexp_extract", args);
        let i = |v: i64| ScalarValue::Int64(Some(v));
        assert_eq!(ex(vec![utf8("foothebar"), utf8("foo(.*?)(bar)"), i(2)]).as_deref(), Some("bar"));
        assert_eq!(ex(vec![utf8("foothebar"), utf8("foo(.*?)(bar)"), i(0)]).as_deref(), Some("foothebar"));
        assert_eq!(ex(vec![utf8("foothebar"), utf8("foo(.*?)(bar)"), i(1)]).as_deref(), Some("the"));
        assert_eq!(ex(vec![utf8("foothebar"), utf8(r"foo([\w]+)"), i(1)]).as_deref(), Some("thebar"));
        assert_eq!(ex(vec![utf8("foothebar"), utf8(r"foo([\d]+)"), i(1)]), None);
        assert_eq!(ex(vec![NULL_STR, utf8("foo(.*?)(bar)"), i(2)]), None);
        assert_eq!(ex(vec![utf8("foothebar"), NULL_STR, i(2)]), None);
        assert_eq!(ex(vec![utf8("foothebar"), utf8("foo(.*?)(bar)")]).as_deref(), Some("foothebar"));
        assert_eq!(ex(vec![utf8("ABC"), utf8("[A-Z]+")]).as_deref(), Some("ABC"));
        assert_eq!(ex(vec![utf8("22"), utf8("[A-Z]+")]), None);
        assert_eq!(ex(vec![utf8("foothebar"), utf8("foo(.*?)(bar)"), i(3)]), None);
        assert_eq!(ex(vec![utf8("foothebar"), utf8("foo(.*?)(bar)"), i(-1)]), None);
        assert_eq!(ex(vec![utf8("foothebar"), utf8("(unclosed"), i(0)]), None);
    }

    #[test]
    fn regexp_replace_follows_flink_tests() {
        let rep = |a: &str, b: &str, c: &str| s("regexp_replace", vec![utf8(a), utf8(b), utf8(c)]);
        assert_eq!(rep("foobar", "oo|ar", "abc").as_deref(), Some("fabcbabc"));
        assert_eq!(rep("foofar", "^f", "").as_deref(), Some("oofar"));
        assert_eq!(rep("foobar", "^f*.*r$", "").as_deref(), Some(""));
        assert_eq!(rep("foo1bar2", r"\d", "").as_deref(), Some("foobar"));
        assert_eq!(rep("foobar", r"\w", "").as_deref(), Some(""));
        assert_eq!(rep("fooobar", "oo", "$").as_deref(), Some("f$obar"));
        assert_eq!(rep("foobar", "oo", "\\").as_deref(), Some("f\\bar"));
        assert_eq!(rep("111222333", r"(\d{3})\d*(\d{3})", "$1***$2").as_deref(), Some("$1***$2"));
        assert_eq!(rep("abc", "x*", "-").as_deref(), Some("-a-b-c-"));
        assert_eq!(rep("baaac", "a*", "-").as_deref(), Some("-b--c-"));
        assert_eq!(rep("häll", "", "-").as_deref(), Some("-h-ä-l-l-"));
        assert_eq!(s("regexp_replace", vec![NULL_STR, utf8("oo|ar"), utf8("")]), None);
        assert_eq!(s("regexp_replace", vec![utf8("foobar"), utf8("oo|ar"), NULL_STR]), None);
        assert_eq!(rep("foobar", "(", "x"), None);
    }

    #[test]
    fn regexp_predicates_and_positions() {
        let b = |a: &str, r: &str| scalar(&udf("regexp"), vec![utf8(a), utf8(r)]).unwrap();
        assert_eq!(b("100-200", r"(\d+)"), ScalarValue::Boolean(Some(true)));
        assert_eq!(b("abc-def", r"(\d+)"), ScalarValue::Boolean(Some(false)));
        assert_eq!(b("abc", ""), ScalarValue::Boolean(Some(false)));
        assert_eq!(b("abc", "("), ScalarValue::Boolean(Some(false)));
        assert_eq!(scalar(&udf("regexp"), vec![NULL_STR, utf8("a")]).unwrap(), ScalarValue::Boolean(None));
        let count = |a: &str, r: &str| scalar(&udf("regexp_count"), vec![utf8(a), utf8(r)]).unwrap();
        assert_eq!(count("ababab", "ab"), ScalarValue::Int32(Some(3)));
        assert_eq!(count("abc", "("), ScalarValue::Int32(None));
        assert_eq!(count("baaac", "a*"), ScalarValue::Int32(Some(4)));
        let instr = |a: &str, r: &str| scalar(&udf("regexp_instr"), vec![utf8(a), utf8(r)]).unwrap();
        assert_eq!(instr("hello world", "o"), ScalarValue::Int32(Some(5)));
        assert_eq!(instr("hello", "x"), ScalarValue::Int32(Some(0)));
        assert_eq!(instr("😀ab", "b"), ScalarValue::Int32(Some(4)));
        assert_eq!(s("regexp_substr", vec![utf8("abc123def"), utf8(r"\d+")]).as_deref(), Some("123"));
        assert_eq!(s("regexp_substr", vec![utf8("abc"), utf8(r"\d+")]), None);
    }
}
