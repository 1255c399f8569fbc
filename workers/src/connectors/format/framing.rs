//! Where one record ends and the next begins in a file's bytes. A record is a line, except
//! in the `csv` format, where a quoted field may hold line breaks (RFC 4180, and Flink's
//! Jackson-based reader): a CSV record runs to the first line break outside quotes. This
//! module owns that scan; it reads bytes only, so the decoders still judge whether a record
//! is well-formed (an unclosed quote makes the rest of the file one malformed record).

use memchr::{memchr, memchr2};

use super::FormatOptions;

/// How a format's records are delimited in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFraming {
    /// Every `\n` ends a record.
    Lines,
    /// A `\n` ends a record unless it lies inside a field opened by `quote`.
    QuotedCsv { quote: u8, delimiter: u8, allow_comments: bool },
}

/// The first record of a text: its length without the `\n` that ends it, and how many line
/// breaks lie inside it (for line numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordEnd {
    pub len: usize,
    pub inner_line_breaks: u64,
}

impl RecordFraming {
    pub fn for_format(format: &str, options: &FormatOptions) -> Self {
        match (format, options.csv_quote_character) {
            ("csv", Some(quote)) => Self::QuotedCsv {
                quote,
                delimiter: options.csv_field_delimiter,
                allow_comments: options.csv_allow_comments,
            },
            _ => Self::Lines,
        }
    }

    /// The first record of `text`, which starts at a record boundary; `None` when `text`
    /// does not hold all of it. At the end of a file, what is left is the last record.
    #[inline]
    pub fn next_record(self, text: &[u8]) -> Option<RecordEnd> {
        let line = memchr(b'\n', text)?;
        let simple = RecordEnd { len: line, inner_line_breaks: 0 };
        match self {
            Self::Lines => Some(simple),
            Self::QuotedCsv { quote, delimiter, allow_comments } => {
                // Most lines hold no quote at all: one more vectorised scan settles them.
                if memchr(quote, &text[..line]).is_none() || (allow_comments && text[0] == b'#') {
                    Some(simple)
                } else {
                    quoted_record_end(text, quote, delimiter)
                }
            }
        }
    }
}

/// Walks the fields of a CSV record as the decoder's splitter does: a quote opens a quoted
/// field only as a field's first byte, and inside one a doubled quote stands for itself.
fn quoted_record_end(text: &[u8], quote: u8, delimiter: u8) -> Option<RecordEnd> {
    let mut inner_line_breaks = 0;
    let mut field_start = 0;
    loop {
        let mut pos = field_start;
        if text.get(pos) == Some(&quote) {
            pos += 1;
            loop {
                let at = pos + memchr2(quote, b'\n', &text[pos..])?;
                if text[at] == b'\n' {
                    inner_line_breaks += 1;
                    pos = at + 1;
                    continue;
                }
                // Whether the quote closes the field depends on the byte after it.
                match *text.get(at + 1)? {
                    byte if byte == quote => pos = at + 2,
                    _ => {
                        pos = at + 1;
                        break;
                    }
                }
            }
        }
        let at = pos + memchr2(delimiter, b'\n', &text[pos..])?;
        if text[at] == b'\n' {
            return Some(RecordEnd { len: at, inner_line_breaks });
        }
        field_start = at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: RecordFraming = RecordFraming::QuotedCsv { quote: b'"', delimiter: b',', allow_comments: false };

    /// The records of `text`, the last one unterminated as a file's end may leave it.
    fn records(framing: RecordFraming, text: &str) -> Vec<(String, u64)> {
        let mut text = text.as_bytes();
        let mut records = Vec::new();
        while let Some(end) = framing.next_record(text) {
            records.push((String::from_utf8_lossy(&text[..end.len]).into_owned(), end.inner_line_breaks));
            text = &text[end.len + 1..];
        }
        if !text.is_empty() {
            records.push((format!("rest:{}", String::from_utf8_lossy(text)), 0));
        }
        records
    }

    fn owned(records: &[(&str, u64)]) -> Vec<(String, u64)> {
        records.iter().map(|(text, breaks)| (text.to_string(), *breaks)).collect()
    }

    #[test]
    fn quoted_line_breaks_stay_inside_the_record() {
        let text = "1,\"two\nlines\",x\n2,\"three\r\nlines\n\",y\r\n3,plain,z\n";
        assert_eq!(
            records(CSV, text),
            owned(&[("1,\"two\nlines\",x", 1), ("2,\"three\r\nlines\n\",y\r", 2), ("3,plain,z", 0)])
        );
        assert_eq!(records(RecordFraming::Lines, text).len(), 6, "other formats split every line");
    }

    #[test]
    fn doubled_quotes_and_quotes_inside_unquoted_fields_do_not_open_fields() {
        let text = "1,\"say \"\"hi\nthere\"\"\",x\n2,an \"inch,x\n3,\"\"\n";
        assert_eq!(
            records(CSV, text),
            owned(&[("1,\"say \"\"hi\nthere\"\"\",x", 1), ("2,an \"inch,x", 0), ("3,\"\"", 0)])
        );
    }

    #[test]
    fn an_incomplete_record_needs_more_text() {
        for partial in ["1,\"open\n", "1,\"open\"", "1,\"a\"\"", "1,plain"] {
            assert_eq!(CSV.next_record(partial.as_bytes()), None, "{partial:?}");
        }
        assert_eq!(records(CSV, "1,\"never closed\n2,x\n"), owned(&[("rest:1,\"never closed\n2,x\n", 0)]));
    }

    #[test]
    fn options_choose_the_quote_the_delimiter_and_comment_lines() {
        let options = FormatOptions {
            csv_field_delimiter: b';',
            csv_quote_character: Some(b'\''),
            csv_allow_comments: true,
            ..FormatOptions::default()
        };
        let framing = RecordFraming::for_format("csv", &options);
        let text = "# a 'comment\n1;'a;\nb';\"c\n2;x\n";
        assert_eq!(records(framing, text), owned(&[("# a 'comment", 0), ("1;'a;\nb';\"c", 1), ("2;x", 0)]));
        let unquoted = FormatOptions { csv_quote_character: None, ..FormatOptions::default() };
        assert_eq!(RecordFraming::for_format("csv", &unquoted), RecordFraming::Lines);
        assert_eq!(RecordFraming::for_format("json", &FormatOptions::default()), RecordFraming::Lines);
    }
}
