//! Flink's `json` format: one JSON object per line, fields matched to the schema by exact
//! name, decoded straight into Arrow columns by a byte-level parser. This module owns that
//! parser. Fields outside the (possibly projected and pruned) schema are skipped with
//! `memchr` and never copied; nothing is allocated per row. Conversions follow Flink's
//! `JsonToRowDataConverters`: text is read with the `asText()`-then-parse rules of the
//! `text` and `temporal` modules, JSON null and absent fields are NULL, and with `ignore_parse_errors` a
//! value that cannot be converted is NULL while malformed JSON still fails the line.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use memchr::memchr2;

use super::columns::{
    Column, ColumnData, FieldLookup, RecordColumns, StructColumn, check_utf8, end_nested_value, name_prefix,
};
use super::temporal::parse_timestamp;
use super::text::{append_text, parse_i64};
use super::{DecodeError, Decoded, FormatError, FormatOptions, LineDecoder, TimestampFormat};

/// Decodes lines of Flink's `json` format.
pub struct JsonDecoder {
    columns: RecordColumns,
    settings: JsonSettings,
    /// Holds a string that had escapes, when its decoded text is needed to convert it.
    scratch: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct JsonSettings {
    ignore_parse_errors: bool,
    fail_on_missing_field: bool,
    timestamp_format: TimestampFormat,
}

impl JsonDecoder {
    pub fn try_new(schema: SchemaRef, options: &FormatOptions) -> Result<Self, FormatError> {
        if options.ignore_parse_errors && options.fail_on_missing_field {
            // Flink refuses this combination too: a missing field is a parse error.
            return Err(FormatError::InvalidOptions {
                reason: "'json.fail-on-missing-field' and 'json.ignore-parse-errors' cannot both be true",
            });
        }
        Ok(Self {
            columns: RecordColumns::try_new(schema, "json")?,
            settings: JsonSettings {
                ignore_parse_errors: options.ignore_parse_errors,
                fail_on_missing_field: options.fail_on_missing_field,
                timestamp_format: options.timestamp_format,
            },
            scratch: Vec::new(),
        })
    }
}

impl LineDecoder for JsonDecoder {
    fn push_line(&mut self, line: &[u8]) -> Result<(), DecodeError> {
        // One pass over the whole line (32 bytes a step while it is ASCII) lets every
        // string below be copied into Utf8 columns without checking it again. Jackson
        // rejects invalid UTF-8 anywhere in the record as well.
        check_utf8(line)?;
        let Self { columns, settings, scratch } = self;
        columns.push_row(|root, row| {
            let mut parser = Parser { bytes: line, pos: 0, settings: *settings, scratch };
            parser.decode_record(root, row)
        })
    }

    fn len(&self) -> usize {
        self.columns.rows
    }

    fn flush(&mut self) -> RecordBatch {
        self.columns.finish()
    }

    fn schema(&self) -> SchemaRef {
        self.columns.schema.clone()
    }
}

/// Where a string's text ended up: still in the line, or decoded into the scratch buffer
/// because it had escapes.
enum Text<'a> {
    Line(&'a [u8]),
    Scratch,
}

/// How deep the parts the parser skips may nest, about Jackson's default limit (1000),
/// so that hostile input is refused rather than walked.
const MAX_SKIPPED_NESTING: usize = 1024;

/// Which of the enclosing skipped containers are objects, one bit per level.
struct NestingStack {
    is_object: [u64; MAX_SKIPPED_NESTING / 64],
    depth: usize,
}

impl NestingStack {
    fn new() -> Self {
        Self { is_object: [0; MAX_SKIPPED_NESTING / 64], depth: 0 }
    }

    fn push(&mut self, is_object: bool) -> bool {
        if self.depth == MAX_SKIPPED_NESTING {
            return false;
        }
        let (word, bit) = (self.depth / 64, self.depth % 64);
        self.is_object[word] = (self.is_object[word] & !(1 << bit)) | (u64::from(is_object) << bit);
        self.depth += 1;
        true
    }

    fn pop(&mut self) {
        self.depth -= 1;
    }

    fn top_is_object(&self) -> bool {
        let top = self.depth - 1;
        self.is_object[top / 64] & (1 << (top % 64)) != 0
    }
}

struct Parser<'a, 's> {
    bytes: &'a [u8],
    pos: usize,
    settings: JsonSettings,
    scratch: &'s mut Vec<u8>,
}

#[inline]
fn is_number_start(byte: u8) -> bool {
    byte == b'-' || byte.is_ascii_digit()
}

impl<'a> Parser<'a, '_> {
    fn syntax(&self, expected: &'static str) -> Box<DecodeError> {
        Box::new(DecodeError::Syntax { offset: self.pos, expected, field: String::new() })
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn decode_record(&mut self, root: &mut StructColumn, row: usize) -> Decoded {
        self.skip_whitespace();
        match self.peek() {
            None => return Err(DecodeError::BlankLine.into()),
            Some(b'{') => {}
            Some(_) => return Err(self.syntax("a JSON object")),
        }
        self.decode_fields(root, row)?;
        self.skip_whitespace();
        if self.pos != self.bytes.len() {
            return Err(self.syntax("the end of the line after the JSON object"));
        }
        Ok(())
    }

    /// Decodes the object at `{` into the struct's children, appending row `row` to each.
    fn decode_fields(&mut self, st: &mut StructColumn, row: usize) -> Decoded {
        st.fill_pending_nulls();
        debug_assert!(st.children.iter().all(|child| child.len() == row));
        self.pos += 1;
        self.skip_whitespace();
        let mut assigned = 0;
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            let mut hint = 0;
            loop {
                match self.read_field_name(&st.lookup, hint)? {
                    Some(index) => {
                        hint = index + 1;
                        let column = &mut st.children[index];
                        if column.len() > row {
                            // A repeated name: the last value wins, as in Jackson's tree.
                            column.truncate(row);
                        } else {
                            assigned += 1;
                        }
                        self.decode_field_value(column).map_err(|error| error.within(st.fields[index].name()))?;
                    }
                    None => self.skip_value()?,
                }
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_whitespace();
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.syntax("',' or '}'")),
                }
            }
        }
        if assigned < st.children.len() {
            for (column, field) in st.children.iter_mut().zip(st.fields.iter()) {
                if column.len() == row {
                    if self.settings.fail_on_missing_field {
                        return Err(DecodeError::MissingField { field: field.name().clone() }.into());
                    }
                    column.append_null().map_err(|error| error.within(field.name()))?;
                }
            }
        }
        Ok(())
    }

    /// Reads `"name":` and finds the name among the struct's fields.
    #[inline]
    fn read_field_name(&mut self, lookup: &FieldLookup, hint: usize) -> Decoded<Option<usize>> {
        if self.peek() != Some(b'"') {
            return Err(self.syntax("a field name"));
        }
        let bytes = self.bytes;
        let start = self.pos + 1;
        let found = match find_quote_or_backslash(bytes, start) {
            Some(end) if bytes[end] == b'"' => {
                self.pos = end + 1;
                let prefix = name_prefix(bytes, start, end - start);
                lookup.find(&bytes[start..end], prefix, hint)
            }
            Some(_) => {
                let mut name = std::mem::take(self.scratch);
                name.clear();
                let decoded = self.read_string_into(&mut name);
                let found = lookup.find(&name, name_prefix(&name, 0, name.len()), hint);
                *self.scratch = name;
                decoded?;
                found
            }
            None => return Err(unterminated_string(bytes)),
        };
        self.skip_whitespace();
        if self.peek() != Some(b':') {
            return Err(self.syntax("':'"));
        }
        self.pos += 1;
        Ok(found)
    }

    /// Decodes one value; a value that cannot be converted is NULL when parse errors are
    /// ignored. On `InvalidValue` the value has been read past and nothing appended.
    #[inline]
    fn decode_field_value(&mut self, column: &mut Column) -> Decoded {
        match self.decode_value(column) {
            Err(error) if self.settings.ignore_parse_errors && matches!(*error, DecodeError::InvalidValue { .. }) => {
                column.append_null()
            }
            result => result,
        }
    }

    /// The common pairs of column type and JSON value, kept small enough to inline; the
    /// rest goes to `decode_value_in_general`.
    #[inline]
    fn decode_value(&mut self, column: &mut Column) -> Decoded {
        self.skip_whitespace();
        let Some(byte) = self.peek() else {
            return Err(self.syntax("a value"));
        };
        match (&mut column.data, byte) {
            (ColumnData::Utf8(text), b'"') => {
                self.read_string_into(&mut text.bytes)?;
                text.end_value()?;
            }
            (ColumnData::Int64(values), b'0'..=b'9' | b'-') => self.read_integer(values, "a BIGINT")?,
            (ColumnData::Int32(values), b'0'..=b'9' | b'-') => self.read_integer(values, "an INT")?,
            (ColumnData::Timestamp { values, unit, .. }, b'"') => {
                let format = self.settings.timestamp_format;
                match self.read_string()? {
                    Text::Line(text) => match parse_timestamp(text, format, *unit) {
                        Some(value) => values.push(value),
                        None => {
                            return Err(DecodeError::invalid_value(text, column.expected()).into());
                        }
                    },
                    Text::Scratch => return append_text(column, &self.scratch[..], format),
                }
            }
            (ColumnData::Struct(st), b'{') => {
                let row = column.validity.len();
                self.decode_fields(st, row)?;
            }
            _ => return self.decode_value_in_general(column, byte),
        }
        column.validity.append_non_null();
        Ok(())
    }

    #[inline(never)]
    fn decode_value_in_general(&mut self, column: &mut Column, byte: u8) -> Decoded {
        if byte == b'n' {
            self.expect_literal(b"null")?;
            return column.append_null();
        }
        let row = column.validity.len();
        match &mut column.data {
            ColumnData::Utf8(text) => {
                self.read_as_text(&mut text.bytes, byte)?;
                text.end_value()?;
            }
            ColumnData::Int64(values) if is_number_start(byte) => {
                self.read_integer(values, "a BIGINT")?;
            }
            ColumnData::Int32(values) if is_number_start(byte) => {
                self.read_integer(values, "an INT")?;
            }
            ColumnData::Int16(values) if is_number_start(byte) => {
                self.read_integer(values, "a SMALLINT")?;
            }
            ColumnData::Int8(values) if is_number_start(byte) => {
                self.read_integer(values, "a TINYINT")?;
            }
            ColumnData::Boolean(values) if byte == b't' || byte == b'f' => {
                let value = byte == b't';
                self.expect_literal(if value { b"true" } else { b"false" })?;
                values.append(value);
            }
            ColumnData::Struct(st) => {
                if byte != b'{' {
                    return self.mismatch("a ROW (JSON object)");
                }
                self.decode_fields(st, row)?;
            }
            ColumnData::List { offsets, element, .. } => {
                if byte != b'[' {
                    return self.mismatch("an ARRAY (JSON array)");
                }
                self.decode_list(element)?;
                end_nested_value(offsets, element.len())?;
            }
            ColumnData::Map { offsets, keys, values, .. } => {
                if byte != b'{' {
                    return self.mismatch("a MAP (JSON object)");
                }
                self.decode_map(keys, values)?;
                end_nested_value(offsets, keys.len())?;
            }
            _ => return self.decode_other_scalar(column, byte),
        }
        column.validity.append_non_null();
        Ok(())
    }

    /// Reads past a value of the wrong JSON kind and reports it.
    fn mismatch(&mut self, expected: &'static str) -> Decoded {
        let start = self.pos;
        self.skip_value()?;
        Err(DecodeError::invalid_value(&self.bytes[start..self.pos], expected).into())
    }

    /// A STRING column takes any JSON value: strings decoded, other values as their text.
    #[inline]
    fn read_as_text(&mut self, out: &mut Vec<u8>, byte: u8) -> Decoded {
        match byte {
            b'"' => self.read_string_into(out),
            b't' => {
                self.expect_literal(b"true")?;
                out.extend_from_slice(b"true");
                Ok(())
            }
            b'f' => {
                self.expect_literal(b"false")?;
                out.extend_from_slice(b"false");
                Ok(())
            }
            b'-' | b'0'..=b'9' => {
                let (token, _) = self.scan_number()?;
                out.extend_from_slice(token);
                Ok(())
            }
            b'{' | b'[' => {
                // Flink takes the object's JSON text; this is its text as written.
                let start = self.pos;
                self.skip_value()?;
                out.extend_from_slice(&self.bytes[start..self.pos]);
                Ok(())
            }
            _ => Err(self.syntax("a value")),
        }
    }

    /// A JSON number into an integer column: integral and in range, or an error.
    #[inline]
    fn read_integer<T: TryFrom<i64>>(&mut self, values: &mut Vec<T>, expected: &'static str) -> Decoded {
        // One pass for the common case: up to 18 digits (no overflow possible), no leading
        // zero, no fraction or exponent. Anything else takes the validating path below.
        let bytes = self.bytes;
        let negative = bytes.get(self.pos) == Some(&b'-');
        let digits_start = self.pos + usize::from(negative);
        let mut pos = digits_start;
        let mut magnitude: u64 = 0;
        while let Some(&byte) = bytes.get(pos) {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(digit));
            pos += 1;
        }
        let digit_count = pos - digits_start;
        let plain = (1..=18).contains(&digit_count)
            && (digit_count == 1 || bytes[digits_start] != b'0')
            && !matches!(bytes.get(pos), Some(b'.' | b'e' | b'E'));
        if plain {
            let value = if negative { -(magnitude as i64) } else { magnitude as i64 };
            if let Ok(value) = T::try_from(value) {
                self.pos = pos;
                values.push(value);
                return Ok(());
            }
        }
        self.read_integer_in_general(values, expected)
    }

    #[inline(never)]
    fn read_integer_in_general<T: TryFrom<i64>>(&mut self, values: &mut Vec<T>, expected: &'static str) -> Decoded {
        let (token, integral) = self.scan_number()?;
        match parse_i64(token).filter(|_| integral).and_then(|value| T::try_from(value).ok()) {
            Some(value) => {
                values.push(value);
                Ok(())
            }
            None => Err(DecodeError::invalid_value(token, expected).into()),
        }
    }

    /// Every other scalar column: the value's text converted with Flink's rules.
    fn decode_other_scalar(&mut self, column: &mut Column, byte: u8) -> Decoded {
        let timestamp_format = self.settings.timestamp_format;
        let token = match byte {
            b'"' => {
                let text = match self.read_string()? {
                    Text::Line(text) => text,
                    Text::Scratch => &self.scratch[..],
                };
                return append_text(column, text, timestamp_format);
            }
            b't' => self.expect_literal(b"true")?,
            b'f' => self.expect_literal(b"false")?,
            b'-' | b'0'..=b'9' => self.scan_number()?.0,
            b'{' | b'[' => {
                let start = self.pos;
                self.skip_value()?;
                if let ColumnData::Boolean(values) = &mut column.data {
                    // Flink: Boolean.parseBoolean(node.asText()), and a container's text is "".
                    values.append(false);
                    column.validity.append_non_null();
                    return Ok(());
                }
                return Err(DecodeError::invalid_value(&self.bytes[start..self.pos], column.expected()).into());
            }
            _ => return Err(self.syntax("a value")),
        };
        if matches!(column.data, ColumnData::Binary(_)) {
            return Err(DecodeError::invalid_value(token, column.expected()).into());
        }
        append_text(column, token, timestamp_format)
    }

    fn decode_list(&mut self, element: &mut Column) -> Decoded {
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.decode_field_value(element)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax("',' or ']'")),
            }
        }
    }

    fn decode_map(&mut self, keys: &mut Column, values: &mut Column) -> Decoded {
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        let timestamp_format = self.settings.timestamp_format;
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.syntax("a field name"));
            }
            let key = match self.read_string()? {
                Text::Line(text) => append_text(keys, text, timestamp_format),
                Text::Scratch => append_text(keys, &self.scratch[..], timestamp_format),
            };
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.syntax("':'"));
            }
            self.pos += 1;
            match key {
                Ok(()) => self.decode_field_value(values)?,
                // Arrow maps cannot hold a NULL key (Flink's would): drop the entry.
                Err(error)
                    if self.settings.ignore_parse_errors && matches!(*error, DecodeError::InvalidValue { .. }) =>
                {
                    self.skip_value()?;
                }
                Err(error) => return Err(error),
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax("',' or '}'")),
            }
        }
    }

    fn expect_literal(&mut self, literal: &'static [u8]) -> Decoded<&'static [u8]> {
        if self.bytes[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            Ok(literal)
        } else {
            Err(self.syntax("a value"))
        }
    }

    /// Reads a number token (JSON's grammar: no leading zeros, `+`, NaN or infinities) and
    /// tells whether it is integral.
    #[inline]
    fn scan_number(&mut self) -> Decoded<(&'a [u8], bool)> {
        let bytes = self.bytes;
        let start = self.pos;
        let mut pos = start;
        let digits_from = |mut pos: usize| {
            while let Some(b'0'..=b'9') = bytes.get(pos) {
                pos += 1;
            }
            pos
        };
        if bytes.get(pos) == Some(&b'-') {
            pos += 1;
        }
        match bytes.get(pos) {
            Some(b'0') => pos += 1,
            Some(b'1'..=b'9') => pos = digits_from(pos + 1),
            _ => {
                self.pos = pos;
                return Err(self.syntax("a digit"));
            }
        }
        let mut integral = true;
        if bytes.get(pos) == Some(&b'.') {
            integral = false;
            let fraction = pos + 1;
            pos = digits_from(fraction);
            if pos == fraction {
                self.pos = pos;
                return Err(self.syntax("a digit after the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = bytes.get(pos) {
            integral = false;
            pos += 1;
            if let Some(b'+' | b'-') = bytes.get(pos) {
                pos += 1;
            }
            let exponent = pos;
            pos = digits_from(exponent);
            if pos == exponent {
                self.pos = pos;
                return Err(self.syntax("a digit in the exponent"));
            }
        }
        self.pos = pos;
        Ok((&bytes[start..pos], integral))
    }

    /// Reads the string at `"`, leaving its text in the line when it has no escapes.
    #[inline]
    fn read_string(&mut self) -> Decoded<Text<'a>> {
        let bytes = self.bytes;
        let start = self.pos + 1;
        match find_quote_or_backslash(bytes, start) {
            Some(end) if bytes[end] == b'"' => {
                self.pos = end + 1;
                Ok(Text::Line(&bytes[start..end]))
            }
            Some(_) => {
                let mut text = std::mem::take(self.scratch);
                text.clear();
                let result = self.read_string_into(&mut text);
                *self.scratch = text;
                result.map(|()| Text::Scratch)
            }
            None => Err(unterminated_string(bytes)),
        }
    }

    /// Appends the decoded text of the string at `"` to `out`.
    #[inline]
    fn read_string_into(&mut self, out: &mut Vec<u8>) -> Decoded {
        let bytes = self.bytes;
        let mut pos = self.pos + 1;
        loop {
            let Some(at) = find_quote_or_backslash(bytes, pos) else {
                return Err(unterminated_string(bytes));
            };
            out.extend_from_slice(&bytes[pos..at]);
            if bytes[at] == b'"' {
                self.pos = at + 1;
                return Ok(());
            }
            pos = decode_escape(bytes, at, out).map_err(|offset| {
                Box::new(DecodeError::Syntax { offset, expected: "a valid escape sequence", field: String::new() })
            })?;
        }
    }

    fn skip_string(&mut self) -> Decoded {
        let bytes = self.bytes;
        let mut pos = self.pos + 1;
        while let Some(at) = find_quote_or_backslash(bytes, pos) {
            if bytes[at] == b'"' {
                self.pos = at + 1;
                return Ok(());
            }
            // Skipped strings are not decoded, so the escape only has to be stepped over.
            pos = (at + 2).min(bytes.len());
        }
        Err(unterminated_string(bytes))
    }

    fn skip_scalar(&mut self) -> Decoded {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b't') => self.expect_literal(b"true").map(drop),
            Some(b'f') => self.expect_literal(b"false").map(drop),
            Some(b'n') => self.expect_literal(b"null").map(drop),
            Some(b'-' | b'0'..=b'9') => self.scan_number().map(drop),
            _ => Err(self.syntax("a value")),
        }
    }

    fn skip_value(&mut self) -> Decoded {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{' | b'[') => self.skip_container(),
            _ => self.skip_scalar(),
        }
    }

    fn skip_name_and_colon(&mut self) -> Decoded {
        if self.peek() != Some(b'"') {
            return Err(self.syntax("a field name"));
        }
        self.skip_string()?;
        self.skip_whitespace();
        if self.peek() != Some(b':') {
            return Err(self.syntax("':'"));
        }
        self.pos += 1;
        Ok(())
    }

    /// Validates and steps over the object or array at `{` / `[`, without recursion so
    /// that deep input cannot exhaust the stack.
    fn skip_container(&mut self) -> Decoded {
        let mut stack = NestingStack::new();
        let mut expecting_value = true;
        loop {
            self.skip_whitespace();
            if expecting_value {
                match self.peek() {
                    Some(open @ (b'{' | b'[')) => {
                        let is_object = open == b'{';
                        if !stack.push(is_object) {
                            return Err(self.syntax("at most 1024 levels of nesting"));
                        }
                        self.pos += 1;
                        self.skip_whitespace();
                        let close = if is_object { b'}' } else { b']' };
                        if self.peek() == Some(close) {
                            self.pos += 1;
                            stack.pop();
                            expecting_value = false;
                        } else if is_object {
                            self.skip_name_and_colon()?;
                        }
                    }
                    _ => {
                        self.skip_scalar()?;
                        expecting_value = false;
                    }
                }
            } else {
                if stack.depth == 0 {
                    return Ok(());
                }
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if stack.top_is_object() {
                            self.skip_whitespace();
                            self.skip_name_and_colon()?;
                        }
                        expecting_value = true;
                    }
                    Some(b'}') if stack.top_is_object() => {
                        self.pos += 1;
                        stack.pop();
                    }
                    Some(b']') if !stack.top_is_object() => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => return Err(self.syntax("',' or a closing bracket")),
                }
            }
        }
    }
}

#[cold]
fn unterminated_string(bytes: &[u8]) -> Box<DecodeError> {
    Box::new(DecodeError::Syntax { offset: bytes.len(), expected: "a closing quote", field: String::new() })
}

const ONES: u64 = 0x0101_0101_0101_0101;
const SHORT_STRING_WORDS: usize = 1;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Sets the high bit of the bytes of `word` equal to `byte`. Only the lowest set bit is
/// exact (a borrow can mark a byte above a match), which is all the callers use.
#[inline]
fn matching_bytes(word: u64, byte: u8) -> u64 {
    let differences = word ^ (ONES * u64::from(byte));
    differences.wrapping_sub(ONES) & !differences & HIGH_BITS
}

/// The position of the first `"` or `\` at or after `pos`. Most strings in records are
/// short (names, timestamps, channels), and eight bytes at a time in a register finds
/// their end sooner than setting up `memchr2`, which takes over for long text.
#[inline(always)]
fn find_quote_or_backslash(bytes: &[u8], pos: usize) -> Option<usize> {
    if let Some(chunk) = bytes.get(pos..pos + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("a range of eight bytes"));
        let found = matching_bytes(word, b'"') | matching_bytes(word, b'\\');
        if found != 0 {
            return Some(pos + (found.trailing_zeros() / 8) as usize);
        }
        return find_quote_or_backslash_after(bytes, pos + 8);
    }
    find_quote_or_backslash_after(bytes, pos)
}

#[inline(never)]
fn find_quote_or_backslash_after(bytes: &[u8], pos: usize) -> Option<usize> {
    let mut at = pos;
    for _ in 0..SHORT_STRING_WORDS {
        let Some(chunk) = bytes.get(at..at + 8) else {
            break;
        };
        let word = u64::from_le_bytes(chunk.try_into().expect("a range of eight bytes"));
        let found = matching_bytes(word, b'"') | matching_bytes(word, b'\\');
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr2(b'"', b'\\', bytes.get(at..)?).map(|offset| at + offset)
}

/// Decodes the escape sequence whose backslash is at `at`, returning where the string goes
/// on, or the offset of a malformed escape.
fn decode_escape(bytes: &[u8], at: usize, out: &mut Vec<u8>) -> Result<usize, usize> {
    let decoded = match bytes.get(at + 1) {
        Some(b'"') => b'"',
        Some(b'\\') => b'\\',
        Some(b'/') => b'/',
        Some(b'b') => 0x08,
        Some(b'f') => 0x0c,
        Some(b'n') => b'\n',
        Some(b'r') => b'\r',
        Some(b't') => b'\t',
        Some(b'u') => return decode_unicode_escape(bytes, at, out),
        _ => return Err(at),
    };
    out.push(decoded);
    Ok(at + 2)
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |value, &digit| Some(value << 4 | char::from(digit).to_digit(16)?))
}

/// `\uXXXX`, joining a surrogate pair into one character; a lone surrogate (which UTF-8
/// cannot carry) becomes U+FFFD.
fn decode_unicode_escape(bytes: &[u8], at: usize, out: &mut Vec<u8>) -> Result<usize, usize> {
    let first = hex4(bytes, at + 2).ok_or(at)?;
    let mut next = at + 6;
    let code_point = match first {
        0xD800..=0xDBFF if bytes.get(next..next + 2) == Some(b"\\u") => {
            match hex4(bytes, next + 2) {
                Some(low @ 0xDC00..=0xDFFF) => {
                    next += 6;
                    0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
                }
                // Not a low surrogate: that escape is decoded on its own next.
                Some(_) => 0xFFFD,
                None => return Err(next),
            }
        }
        0xD800..=0xDFFF => 0xFFFD,
        _ => first,
    };
    let character = char::from_u32(code_point).unwrap_or(char::REPLACEMENT_CHARACTER);
    out.extend_from_slice(character.encode_utf8(&mut [0; 4]).as_bytes());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        DataType, Date32Type, Decimal128Type, Field, Fields, Float64Type, Int8Type, Int32Type, Int64Type, Schema,
        Time32MillisecondType, TimeUnit, TimestampMillisecondType,
    };

    use super::*;

    fn field(name: &str, data_type: DataType) -> Field {
        Field::new(name, data_type, true)
    }

    fn timestamp() -> DataType {
        DataType::Timestamp(TimeUnit::Millisecond, None)
    }

    fn row(fields: Vec<Field>) -> DataType {
        DataType::Struct(Fields::from(fields))
    }

    /// The schema of /work/shared/nexmark/queries/ddl_nexmark_fs.sql.
    fn nexmark_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("event_type", DataType::Int32),
            field(
                "person",
                row(vec![
                    field("id", DataType::Int64),
                    field("name", DataType::Utf8),
                    field("emailAddress", DataType::Utf8),
                    field("creditCard", DataType::Utf8),
                    field("city", DataType::Utf8),
                    field("state", DataType::Utf8),
                    field("dateTime", timestamp()),
                    field("extra", DataType::Utf8),
                ]),
            ),
            field(
                "auction",
                row(vec![
                    field("id", DataType::Int64),
                    field("itemName", DataType::Utf8),
                    field("description", DataType::Utf8),
                    field("initialBid", DataType::Int64),
                    field("reserve", DataType::Int64),
                    field("dateTime", timestamp()),
                    field("expires", timestamp()),
                    field("seller", DataType::Int64),
                    field("category", DataType::Int64),
                    field("extra", DataType::Utf8),
                ]),
            ),
            field(
                "bid",
                row(vec![
                    field("auction", DataType::Int64),
                    field("bidder", DataType::Int64),
                    field("price", DataType::Int64),
                    field("channel", DataType::Utf8),
                    field("url", DataType::Utf8),
                    field("dateTime", timestamp()),
                    field("extra", DataType::Utf8),
                ]),
            ),
        ]))
    }

    /// What a query reading only bids projects: event_type + five bid fields.
    fn pruned_bid_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("event_type", DataType::Int32),
            field(
                "bid",
                row(vec![
                    field("auction", DataType::Int64),
                    field("bidder", DataType::Int64),
                    field("price", DataType::Int64),
                    field("dateTime", timestamp()),
                    field("extra", DataType::Utf8),
                ]),
            ),
        ]))
    }

    fn decoder(schema: SchemaRef) -> JsonDecoder {
        JsonDecoder::try_new(schema, &FormatOptions::default()).expect("schema is supported")
    }

    fn decoder_with(schema: SchemaRef, options: FormatOptions) -> JsonDecoder {
        JsonDecoder::try_new(schema, &options).expect("schema is supported")
    }

    fn single(name: &str, data_type: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![field(name, data_type)]))
    }

    /// Flushes and checks every buffer the way Arrow's full validation does.
    fn flush_valid(decoder: &mut JsonDecoder) -> RecordBatch {
        let batch = decoder.flush();
        for column in batch.columns() {
            column.to_data().validate_full().expect("decoded arrays are valid Arrow");
        }
        batch
    }

    fn millis(date: &str) -> i64 {
        parse_timestamp_for_test(date)
    }

    fn parse_timestamp_for_test(text: &str) -> i64 {
        parse_timestamp(text.as_bytes(), TimestampFormat::Sql, TimeUnit::Millisecond).expect("test timestamp is valid")
    }

    const BID: &str = r#"{"event_type":2,"bid":{"auction":1007,"bidder":2001,"price":45124104,"channel":"channel-3268","url":"https://www.nexmark.com/hbgh/ndc/uxd/item.htm?query=1","dateTime":"2024-01-01 23:59:00.003","extra":"sfwmadnlclbocqrfdcrvnzhjyx"}}"#;
    const AUCTION: &str = r#"{"event_type":1,"auction":{"id":1001,"itemName":"jnazww","description":"j wk xzni ghb","initialBid":287581,"reserve":1456889,"dateTime":"2024-01-01 23:59:00.001","expires":"2024-01-01 23:59:03.004","seller":1000,"category":12,"extra":"xempq"}}"#;
    const PERSON: &str = r#"{"event_type":0,"person":{"id":1001,"name":"Julie Abrams","emailAddress":"pr@cnoj.com","creditCard":"3182 9330 0757 2575","city":"Bend","state":"OR","dateTime":"2024-01-01 23:59:00.049","extra":"bkdic"}}"#;

    #[test]
    fn decodes_full_nexmark_records_into_nested_structs() {
        let mut decoder = decoder(nexmark_schema());
        for line in [BID, AUCTION, PERSON] {
            decoder.push_line(line.as_bytes()).expect("valid nexmark line");
        }
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.num_rows(), 3);
        let event_type = batch.column(0).as_primitive::<Int32Type>();
        assert_eq!(event_type.values().as_ref(), &[2, 1, 0]);

        let bid = batch.column(3).as_struct();
        assert!(bid.is_valid(0) && bid.is_null(1) && bid.is_null(2));
        assert_eq!(bid.column(2).as_primitive::<Int64Type>().value(0), 45124104);
        assert_eq!(bid.column(3).as_string::<i32>().value(0), "channel-3268");
        assert_eq!(
            bid.column(5).as_primitive::<TimestampMillisecondType>().value(0),
            millis("2024-01-01 23:59:00.003")
        );
        assert!(bid.column(0).is_null(1), "children of a null struct are null");

        let auction = batch.column(2).as_struct();
        assert!(auction.is_null(0) && auction.is_valid(1));
        assert_eq!(auction.column(1).as_string::<i32>().value(1), "jnazww");
        assert_eq!(
            auction.column(6).as_primitive::<TimestampMillisecondType>().value(1),
            millis("2024-01-01 23:59:03.004")
        );
        let person = batch.column(1).as_struct();
        assert_eq!(person.column(3).as_string::<i32>().value(2), "3182 9330 0757 2575");
        assert_eq!(decoder.len(), 0, "flush starts a new batch");
    }

    #[test]
    fn projection_skips_unknown_fields_and_pruned_children() {
        let mut decoder = decoder(pruned_bid_schema());
        for line in [BID, AUCTION, PERSON] {
            decoder.push_line(line.as_bytes()).expect("valid nexmark line");
        }
        // Unknown values of every JSON kind, nested deeply, are skipped.
        decoder
            .push_line(
                br#"{"x":[1,{"a":[[],{}],"b":"}\"]"},null,true,-1.5e3],"bid":{"url":{"q":[1,2]},"price":7},"event_type":2}"#,
            )
            .expect("valid JSON with unknown fields");
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.schema(), pruned_bid_schema());
        let bid = batch.column(1).as_struct();
        assert_eq!(bid.num_columns(), 5);
        assert_eq!(bid.column(1).as_primitive::<Int64Type>().value(0), 2001);
        assert_eq!(bid.column(4).as_string::<i32>().value(0), "sfwmadnlclbocqrfdcrvnzhjyx");
        assert!(bid.is_null(1) && bid.is_null(2));
        assert_eq!(bid.column(2).as_primitive::<Int64Type>().value(3), 7);
        assert!(bid.column(0).is_null(3), "absent nested field is null");
        assert_eq!(batch.column(0).as_primitive::<Int32Type>().value(3), 2);
    }

    #[test]
    fn empty_projection_counts_rows_and_still_validates() {
        let mut decoder = decoder(Arc::new(Schema::empty()));
        decoder.push_line(BID.as_bytes()).expect("valid line");
        assert!(decoder.push_line(b"{\"a\":[1,}").is_err());
        assert_eq!(flush_valid(&mut decoder).num_rows(), 1);
    }

    #[test]
    fn decodes_escapes_and_non_ascii_text() {
        let mut decoder = decoder(single("s", DataType::Utf8));
        let lines: [&[u8]; 5] = [
            br#"{"s":"a\"b\\c\/d\n\t\r\b\f"}"#,
            br#"{"s":"caf\u00e9 \u00E9t\u00e9 \ud83d\ude00"}"#,
            "{\"s\":\"naïve 日本 😀\"}".as_bytes(),
            br#"{"s":"lone \ud800 and \udc00 end"}"#,
            br#"{"\u0073":"escaped name"}"#,
        ];
        for line in lines {
            decoder.push_line(line).expect("valid escapes");
        }
        let batch = flush_valid(&mut decoder);
        let text = batch.column(0).as_string::<i32>();
        assert_eq!(text.value(0), "a\"b\\c/d\n\t\r\u{8}\u{c}");
        assert_eq!(text.value(1), "café été 😀");
        assert_eq!(text.value(2), "naïve 日本 😀");
        assert_eq!(text.value(3), "lone \u{FFFD} and \u{FFFD} end");
        assert_eq!(text.value(4), "escaped name");

        for bad in [&br#"{"s":"bad \x escape"}"#[..], br#"{"s":"\u12"}"#, br#"{"s":"open"#, b"{\"s\":\"\xff\"}"] {
            assert!(decoder.push_line(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(decoder.len(), 0);
    }

    #[test]
    fn non_string_values_read_into_strings_as_their_text() {
        let mut decoder = decoder(single("s", DataType::Utf8));
        for line in [r#"{"s":12.50}"#, r#"{"s":true}"#, r#"{"s":{"a": [1]}}"#, r#"{"s":""}"#] {
            decoder.push_line(line.as_bytes()).expect("valid line");
        }
        let batch = flush_valid(&mut decoder);
        let text = batch.column(0).as_string::<i32>();
        assert_eq!((0..4).map(|i| text.value(i)).collect::<Vec<_>>(), ["12.50", "true", r#"{"a": [1]}"#, ""]);
    }

    #[test]
    fn null_and_missing_fields_read_null_unless_fail_on_missing_field() {
        let schema = Arc::new(Schema::new(vec![
            field("a", DataType::Int64),
            field("r", row(vec![field("x", DataType::Utf8), field("y", DataType::Int32)])),
        ]));
        let mut decoder = decoder(schema.clone());
        for line in [r#"{"a":null,"r":null}"#, r#"{}"#, r#"{"r":{"x":"v"}}"#, r#" { "a" : 1 , "r" : { } } "#] {
            decoder.push_line(line.as_bytes()).expect("valid line");
        }
        let batch = flush_valid(&mut decoder);
        let a = batch.column(0).as_primitive::<Int64Type>();
        let r = batch.column(1).as_struct();
        assert!(a.is_null(0) && a.is_null(1) && a.is_null(2) && a.value(3) == 1);
        assert!(r.is_null(0) && r.is_null(1) && r.is_valid(2) && r.is_valid(3));
        assert_eq!(r.column(0).as_string::<i32>().value(2), "v");
        assert!(r.column(1).is_null(2) && r.column(0).is_null(3));

        let options = FormatOptions { fail_on_missing_field: true, ..FormatOptions::default() };
        let mut strict = decoder_with(schema, options);
        strict.push_line(br#"{"a":null,"r":null}"#).expect("null is not missing");
        let error = strict.push_line(br#"{"a":1,"r":{"x":"v"}}"#).expect_err("r.y is missing");
        assert_eq!(error, DecodeError::MissingField { field: "r.y".into() });
        assert_eq!(error.to_string(), "field 'r.y' is missing and 'json.fail-on-missing-field' is set");
        assert_eq!(flush_valid(&mut strict).num_rows(), 1);
    }

    #[test]
    fn not_null_columns_refuse_nulls() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let mut decoder = decoder(schema);
        decoder.push_line(br#"{"id":1}"#).expect("value present");
        assert_eq!(decoder.push_line(br#"{"id":null}"#), Err(DecodeError::NullForNotNull { field: "id".into() }));
        assert!(decoder.push_line(br#"{}"#).is_err());
        assert_eq!(flush_valid(&mut decoder).num_rows(), 1);
    }

    #[test]
    fn integers_accept_integral_numbers_and_text_only() {
        let schema = Arc::new(Schema::new(vec![field("i", DataType::Int32), field("t", DataType::Int8)]));
        let mut decoder = decoder(schema);
        decoder.push_line(br#"{"i":-2147483648,"t":127}"#).expect("in range");
        decoder.push_line(br#"{"i":" 42 ","t":"-5"}"#).expect("integral text");
        for bad in [
            r#"{"i":1.5}"#,
            r#"{"i":1e2}"#,
            r#"{"i":2147483648}"#,
            r#"{"t":128}"#,
            r#"{"i":"4x"}"#,
            r#"{"i":true}"#,
            r#"{"i":[1]}"#,
            r#"{"i":01}"#,
            r#"{"i":-}"#,
        ] {
            assert!(decoder.push_line(bad.as_bytes()).is_err(), "{bad}");
        }
        let error = decoder.push_line(br#"{"i":1.5}"#).expect_err("float into INT");
        assert_eq!(error.to_string(), "field 'i': cannot read '1.5' as an INT");
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.column(0).as_primitive::<Int32Type>().values().as_ref(), &[i32::MIN, 42]);
        assert_eq!(batch.column(1).as_primitive::<Int8Type>().values().as_ref(), &[127, -5]);
    }

    #[test]
    fn booleans_and_floats_follow_java_parsing() {
        let schema = Arc::new(Schema::new(vec![field("b", DataType::Boolean), field("d", DataType::Float64)]));
        let mut decoder = decoder(schema);
        for line in
            [r#"{"b":true,"d":1.5e3}"#, r#"{"b":"TRUE","d":"2.5"}"#, r#"{"b":"yes","d":7}"#, r#"{"b":1,"d":"-0.25d"}"#]
        {
            decoder.push_line(line.as_bytes()).expect("valid line");
        }
        assert!(decoder.push_line(br#"{"d":"abc"}"#).is_err());
        let batch = flush_valid(&mut decoder);
        let b = batch.column(0).as_boolean();
        assert_eq!((0..4).map(|i| b.value(i)).collect::<Vec<_>>(), [true, true, false, false]);
        assert_eq!(batch.column(1).as_primitive::<Float64Type>().values().as_ref(), &[1500.0, 2.5, 7.0, -0.25]);
    }

    #[test]
    fn decimals_are_exact_round_half_up_and_overflow_to_null() {
        let mut decoder = decoder(single("d", DataType::Decimal128(10, 2)));
        let cases = [
            ("1576.00", Some(157600)),
            ("1.005", Some(101)),
            ("-1.005", Some(-101)),
            ("1.004", Some(100)),
            ("0.005", Some(1)),
            ("0.0049999999999999999999999", Some(0)),
            ("12", Some(1200)),
            ("1.2e2", Some(12000)),
            ("125e-3", Some(13)),
            ("\"99999999.994\"", Some(9999999999)),
            ("99999999.995", None),
            ("123456789", None),
            ("1e300", None),
            ("1e-300", Some(0)),
            ("\"+3.14159\"", Some(314)),
            ("null", None),
        ];
        for (text, _) in cases {
            decoder.push_line(format!(r#"{{"d":{text}}}"#).as_bytes()).expect("valid decimal");
        }
        assert!(decoder.push_line(br#"{"d":"1.2.3"}"#).is_err());
        assert!(decoder.push_line(br#"{"d":" 1"}"#).is_err(), "BigDecimal does not trim");
        let batch = flush_valid(&mut decoder);
        let decimals = batch.column(0).as_primitive::<Decimal128Type>();
        assert_eq!(decimals.data_type(), &DataType::Decimal128(10, 2));
        for (index, (text, expected)) in cases.iter().enumerate() {
            assert_eq!(decimals.is_valid(index).then(|| decimals.value(index)), *expected, "{text}");
        }
    }

    #[test]
    fn timestamps_dates_and_times_in_both_formats() {
        let schema = Arc::new(Schema::new(vec![
            field("ts", timestamp()),
            field("ltz", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))),
            field("d", DataType::Date32),
            field("t", DataType::Time32(TimeUnit::Millisecond)),
        ]));
        let mut sql = decoder(schema.clone());
        sql.push_line(
            br#"{"ts":"2024-01-01 23:59:00.003","ltz":"1970-01-01 00:00:01Z","d":"2024-02-29","t":"23:59:59.999999"}"#,
        )
        .expect("sql timestamps");
        sql.push_line(
            br#"{"ts":"1969-12-31 23:59:59.9999","ltz":"2024-02-30 00:00:00","d":"1970-01-01","t":"00:00:00"}"#,
        )
        .expect("fraction truncated, day clamped like Java's SMART resolver");
        for bad in [
            r#"{"ts":"2024-01-01T23:59:00"}"#,
            r#"{"ts":"2024-01-01 23:59"}"#,
            r#"{"ts":"2024-13-01 00:00:00"}"#,
            r#"{"ts":"2024-01-01 24:00:00"}"#,
            r#"{"ts":"2024-01-01 00:00:00.1234567890"}"#,
            r#"{"ts":1704153540003}"#,
            r#"{"d":"2023-02-29"}"#,
            r#"{"t":"12:00"}"#,
        ] {
            assert!(sql.push_line(bad.as_bytes()).is_err(), "{bad}");
        }
        let batch = flush_valid(&mut sql);
        let ts = batch.column(0).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(0), 1_704_153_540_003);
        assert_eq!(ts.value(1), -1, "1969-12-31 23:59:59.999 is one millisecond before the epoch");
        let ltz = batch.column(1).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ltz.timezone(), Some("UTC"));
        assert_eq!(ltz.value(0), 1000);
        assert_eq!(ltz.value(1), millis("2024-02-29 00:00:00"));
        let d = batch.column(2).as_primitive::<Date32Type>();
        assert_eq!((d.value(0), d.value(1)), (19782, 0));
        let t = batch.column(3).as_primitive::<Time32MillisecondType>();
        assert_eq!((t.value(0), t.value(1)), (86_399_999, 0));

        let options = FormatOptions { timestamp_format: TimestampFormat::Iso8601, ..FormatOptions::default() };
        let mut iso = decoder_with(schema, options);
        for line in [
            r#"{"ts":"2024-01-01T23:59:00.003"}"#,
            r#"{"ts":"2024-01-01T23:59:00.003Z"}"#,
            r#"{"ts":"2024-01-01T23:59"}"#,
        ] {
            iso.push_line(line.as_bytes()).expect("iso timestamps");
        }
        assert!(iso.push_line(br#"{"ts":"2024-01-01 23:59:00.003"}"#).is_err());
        assert!(iso.push_line(br#"{"ts":"2024-02-30T00:00:00"}"#).is_err(), "ISO is strict");
        let batch = flush_valid(&mut iso);
        let ts = batch.column(0).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.values().as_ref(), &[1_704_153_540_003, 1_704_153_540_003, 1_704_153_540_000]);
    }

    #[test]
    fn failed_line_leaves_nothing_behind() {
        let mut decoder = decoder(nexmark_schema());
        decoder.push_line(BID.as_bytes()).expect("valid");
        // Each fails after some columns (and half a string) were already written.
        let bad_lines = [
            r#"{"event_type":2,"bid":{"auction":1,"bidder":2,"price":3,"channel":"half written"#,
            r#"{"event_type":2,"bid":{"auction":1,"channel":"c","url":"u","price":"oops"}}"#,
            r#"{"event_type":2,"person":{"id":5,"name":"n"},"bid":{"auction":1,"extra":"x\q"}}"#,
            r#"{"event_type":2,"bid":{"auction":1,"extra":"xyz"}} trailing"#,
            r#"{"event_type":2,"bid":{"dateTime":"2024-01-01 23:59:00.003","extra":"e"},"auction":5}"#,
            r#"[1]"#,
            "",
        ];
        for line in bad_lines {
            assert!(decoder.push_line(line.as_bytes()).is_err(), "{line}");
            assert_eq!(decoder.len(), 1);
        }
        decoder.push_line(AUCTION.as_bytes()).expect("valid");
        decoder.push_line(BID.as_bytes()).expect("valid");
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.num_rows(), 3);
        let bid = batch.column(3).as_struct();
        let channel = bid.column(3).as_string::<i32>();
        assert_eq!((channel.value(0), channel.value(2)), ("channel-3268", "channel-3268"));
        assert_eq!(bid.column(6).as_string::<i32>().value(2), "sfwmadnlclbocqrfdcrvnzhjyx");
        assert!(batch.column(1).as_struct().is_null(1));
        assert_eq!(batch.column(2).as_struct().column(0).as_primitive::<Int64Type>().value(1), 1001);
    }

    #[test]
    fn ignore_parse_errors_nulls_bad_values_but_not_bad_json() {
        let options = FormatOptions { ignore_parse_errors: true, ..FormatOptions::default() };
        let mut decoder = decoder_with(nexmark_schema(), options);
        decoder
            .push_line(br#"{"event_type":"two","bid":{"price":1.5,"dateTime":"yesterday","extra":"kept","auction":{"nested":true}}}"#)
            .expect("bad values become null");
        assert!(decoder.push_line(br#"{"event_type":2,"bid":{"price":1"#).is_err());
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.num_rows(), 1);
        assert!(batch.column(0).is_null(0));
        let bid = batch.column(3).as_struct();
        assert!(bid.column(0).is_null(0) && bid.column(2).is_null(0) && bid.column(5).is_null(0));
        assert_eq!(bid.column(6).as_string::<i32>().value(0), "kept");
        assert!(
            JsonDecoder::try_new(
                nexmark_schema(),
                &FormatOptions { ignore_parse_errors: true, fail_on_missing_field: true, ..FormatOptions::default() }
            )
            .is_err()
        );
    }

    #[test]
    fn repeated_field_names_keep_the_last_value() {
        let mut decoder = decoder(single("s", DataType::Utf8));
        decoder.push_line(br#"{"s":"first","s":"second"}"#).expect("valid");
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "second");
    }

    #[test]
    fn arrays_maps_and_bytes() {
        let map = DataType::Map(
            Arc::new(Field::new(
                "entries",
                row(vec![Field::new("key", DataType::Utf8, false), field("value", DataType::Int64)]),
                false,
            )),
            false,
        );
        let schema = Arc::new(Schema::new(vec![
            field("tags", DataType::List(Arc::new(field("item", DataType::Utf8)))),
            field("points", DataType::List(Arc::new(field("item", row(vec![field("x", DataType::Int32)]))))),
            field("counts", map),
            field("blob", DataType::Binary),
        ]));
        let mut decoder = decoder(schema);
        decoder
            .push_line(
                br#"{"tags":["a",null,"c"],"points":[{"x":1},null,{}],"counts":{"k1":1,"k2":null},"blob":"aGVsbG8="}"#,
            )
            .expect("valid nested values");
        decoder.push_line(br#"{"tags":[],"counts":{},"blob":"aGk"}"#).expect("valid");
        assert!(decoder.push_line(br#"{"tags":"a"}"#).is_err());
        assert!(decoder.push_line(br#"{"blob":"not base64!"}"#).is_err());
        assert!(decoder.push_line(br#"{"tags":["a","b"],"blob":17}"#).is_err());
        let batch = flush_valid(&mut decoder);
        assert_eq!(batch.num_rows(), 2);
        let tags = batch.column(0).as_list::<i32>();
        assert_eq!(tags.value_offsets(), &[0, 3, 3]);
        assert!(tags.values().is_null(1));
        let points = batch.column(1).as_list::<i32>();
        assert!(points.is_null(1));
        assert_eq!(points.value(0).len(), 3);
        let counts = batch.column(2).as_map();
        assert_eq!(counts.keys().as_string::<i32>().value(1), "k2");
        assert!(counts.values().is_null(1));
        let blob = batch.column(3).as_binary::<i32>();
        assert_eq!((blob.value(0), blob.value(1)), (&b"hello"[..], &b"hi"[..]));
    }

    #[test]
    fn malformed_input_never_panics_and_batches_stay_valid() {
        let mut decoder = decoder(nexmark_schema());
        let mut pruned =
            decoder_with(pruned_bid_schema(), FormatOptions { ignore_parse_errors: true, ..FormatOptions::default() });
        let mut random = Random(0x5eed);
        let mut accepted = 0;
        let samples = [BID, AUCTION, PERSON, r#"{"bid":{"extra":"a\"b\u00e9\ud83d\ude00"},"x":[{"y":[]}]}"#];
        for sample in samples {
            let bytes = sample.as_bytes();
            for cut in 0..bytes.len() {
                let _ = decoder.push_line(&bytes[..cut]);
                let _ = pruned.push_line(&bytes[..cut]);
            }
            for _ in 0..2000 {
                let mut mutated = bytes.to_vec();
                for _ in 0..1 + random.below(3) {
                    let at = random.below(mutated.len() as u64) as usize;
                    let replacements = b"{}[]\",:\\0-e.nu \xff";
                    mutated[at] = replacements[random.below(replacements.len() as u64) as usize];
                }
                accepted += usize::from(decoder.push_line(&mutated).is_ok());
                let _ = pruned.push_line(&mutated);
            }
        }
        let mut deep = vec![b'['; 5000];
        deep.splice(0..0, *b"{\"x\":");
        assert!(decoder.push_line(&deep).is_err());
        assert_eq!(decoder.len(), accepted);
        flush_valid(&mut decoder);
        flush_valid(&mut pruned);
    }

    /// Deterministic xorshift: benchmark data and fuzzing need no `rand`.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn letters(&mut self, out: &mut String, min_len: u64, spread: u64) {
            for _ in 0..min_len + self.below(spread) {
                out.push(char::from(b'a' + self.below(26) as u8));
            }
        }
    }

    /// Nexmark-like events in the generator's proportions (1 person : 3 auctions : 46 bids).
    fn nexmark_lines(count: usize) -> Vec<String> {
        let mut random = Random(42);
        let time = |millis: usize| {
            format!("2024-01-01 23:{:02}:{:02}.{:03}", 59 - (millis / 60_000) % 60, (millis / 1000) % 60, millis % 1000)
        };
        (0..count)
            .map(|index| {
                let mut line = String::with_capacity(400);
                match index % 50 {
                    0 => {
                        line.push_str(&format!(r#"{{"event_type":0,"person":{{"id":{},"name":"Julie Abrams","emailAddress":"pr@cnoj.com","creditCard":"3182 9330 0757 2575","city":"Bend","state":"OR","dateTime":"{}","extra":""#, 1000 + index / 50, time(index)));
                        random.letters(&mut line, 100, 100);
                        line.push_str("\"}}");
                    }
                    1..=3 => {
                        line.push_str(&format!(r#"{{"event_type":1,"auction":{{"id":{},"itemName":"jnazww","description":"j wk xzni ghb","initialBid":{},"reserve":{},"dateTime":"{}","expires":"{}","seller":1000,"category":12,"extra":""#, 1000 + index / 20, random.below(10_000_000), random.below(10_000_000), time(index), time(index + 3000)));
                        random.letters(&mut line, 150, 300);
                        line.push_str("\"}}");
                    }
                    _ => {
                        line.push_str(&format!(r#"{{"event_type":2,"bid":{{"auction":{},"bidder":{},"price":{},"channel":"channel-{}","url":"https://www.nexmark.com/hbgh/ndc/uxd/item.htm?query=1","dateTime":"{}","extra":""#, 1000 + random.below(1000), 2000 + random.below(1000), random.below(100_000_000), random.below(10_000), time(index)));
                        random.letters(&mut line, 100, 100);
                        line.push_str("\"}}");
                    }
                }
                line
            })
            .collect()
    }

    fn measure(label: &str, schema: SchemaRef, lines: &[Vec<u8>]) {
        const BATCH_ROWS: usize = 8192;
        let bytes: usize = lines.iter().map(|line| line.len() + 1).sum();
        let mut decoder = decoder(schema);
        let mut best = f64::MAX;
        let mut rows = 0;
        for _ in 0..5 {
            let start = Instant::now();
            for line in lines {
                decoder.push_line(line).expect("generated lines are valid");
                if decoder.len() == BATCH_ROWS {
                    rows += decoder.flush().num_rows();
                }
            }
            rows += decoder.flush().num_rows();
            best = best.min(start.elapsed().as_secs_f64());
        }
        assert_eq!(rows, lines.len() * 5);
        println!(
            "{label}: {} lines, {:.1} MB, best of 5: {:.1} ms = {:.0} MB/s ({:.2} M lines/s)",
            lines.len(),
            bytes as f64 / 1e6,
            best * 1e3,
            bytes as f64 / 1e6 / best,
            lines.len() as f64 / 1e6 / best,
        );
    }

    #[test]
    #[ignore = "benchmark: run with `cargo test --release -- --ignored --nocapture`"]
    fn throughput_nexmark() {
        let generated: Vec<Vec<u8>> = nexmark_lines(200_000).into_iter().map(String::into_bytes).collect();
        measure("generated, full nexmark schema", nexmark_schema(), &generated);
        measure("generated, pruned to event_type + 5 bid fields", pruned_bid_schema(), &generated);
        let real = "/work/shared/conformance/data/nexmark-a/events.json";
        if let Ok(text) = std::fs::read(real) {
            let lines: Vec<Vec<u8>> =
                text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
            measure("nexmark-a/events.json, full schema", nexmark_schema(), &lines);
            measure("nexmark-a/events.json, pruned", pruned_bid_schema(), &lines);
        }
    }
}
