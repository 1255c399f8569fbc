//! Splits a Flink SQL script into statements and parses each: DDL (`CREATE TABLE` with computed
//! columns, watermarks, primary keys and `WITH` options; `CREATE VIEW`), `SET`, `INSERT INTO`,
//! bare queries and `EXPLAIN`. Queries themselves are parsed by sqlparser in the Flink dialect.
//!
//! One parser runs over the whole script, so every location in an error is the line and column
//! in the script as the user wrote it.

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use sqlparser::ast::{self, Ident};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::SqlError;
use super::dialect::FlinkDialect;
use super::types::parse_type;

/// A statement and where it starts in the script.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub node: T,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub enum Statement {
    CreateTable(Box<TableDef>),
    CreateView(ViewDef),
    Set { key: String, value: String },
    Reset { key: Option<String> },
    Insert(InsertDef),
    Query(Box<ast::Query>),
    Explain(Box<Located<Statement>>),
}

#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    pub primary_key: Vec<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub kind: ColumnKind,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub enum ColumnKind {
    /// Read from (or written to) the connector.
    Physical { data_type: DataType, nullable: bool },
    /// `name AS expr`: computed from the physical columns after reading.
    Computed { expr: Box<ast::Expr> },
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`: connector metadata.
    Metadata { data_type: DataType, key: Option<String>, is_virtual: bool },
}

#[derive(Debug, Clone)]
pub struct WatermarkDef {
    pub column: String,
    pub expr: ast::Expr,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct ViewDef {
    pub name: String,
    pub columns: Vec<String>,
    pub query: Box<ast::Query>,
}

#[derive(Debug, Clone)]
pub struct InsertDef {
    pub table: String,
    pub columns: Vec<String>,
    pub query: Box<ast::Query>,
}

/// Parses a whole script. Statements are separated by `;`.
pub fn parse_script(sql: &str) -> Result<Vec<Located<Statement>>, SqlError> {
    let dialect = FlinkDialect;
    let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| {
        let (line, column) = (e.location.line, e.location.column);
        SqlError::new(line, column, e.message)
    })?;
    let all_tokens = tokens.clone();
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token_ref().token == Token::EOF {
            break;
        }
        let statement = parse_statement(&mut parser).map_err(|e| to_sql_error(e, &parser, &all_tokens))?;
        let next = parser.peek_token_ref();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            let found = next.clone();
            return Err(SqlError::new(
                found.span.start.line,
                found.span.start.column,
                format!("expected ';' or the end of the script, found {}", found.token),
            ));
        }
        statements.push(statement);
    }
    Ok(statements)
}

fn to_sql_error(error: ParserError, parser: &Parser, tokens: &[TokenWithSpan]) -> SqlError {
    let text = match error {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
        ParserError::RecursionLimitExceeded => "statement is nested too deeply".to_string(),
    };
    let (message, mut at) = match text.rfind(" at Line: ") {
        Some(idx) => {
            let tail = &text[idx + " at Line: ".len()..];
            let mut parts = tail.split(", Column: ");
            let line = parts.next().and_then(|l| l.trim().parse().ok());
            let column = parts.next().and_then(|c| c.trim().parse().ok());
            match (line, column) {
                (Some(line), Some(column)) => (tidy_message(&text[..idx]), Location::new(line, column)),
                _ => (tidy_message(&text), parser.peek_token_ref().span.start),
            }
        }
        None => (tidy_message(&text), parser.peek_token_ref().span.start),
    };
    // "found: X" may be placed after X (sqlparser places some at the token it stopped on):
    // point at the X at or before that place.
    let found = message.rsplit_once("found: ").map(|(_, found)| found.trim().to_string());
    let mut message = message;
    if let Some(found) = found {
        let before = tokens.iter().rposition(|t| t.span.start.line > 0 && t.span.start <= at);
        let position = before.and_then(|last| tokens[..=last].iter().rposition(|t| t.token.to_string() == found));
        if let Some(position) = position {
            at = tokens[position].span.start;
            let previous = tokens[..position].iter().rev().find(|t| !matches!(t.token, Token::Whitespace(_)));
            if found.eq_ignore_ascii_case("FROM") && previous.is_some_and(|t| t.token == Token::Comma) {
                message.push_str("; remove the comma after the last column of the SELECT list");
            }
        }
    }
    SqlError::new(at.line, at.column, message)
}

fn tidy_message(text: &str) -> String {
    let text = text.replace("sql parser error: ", "");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().collect::<String>() + chars.as_str(),
        None => text,
    }
}

fn parse_statement(parser: &mut Parser) -> Result<Located<Statement>, ParserError> {
    let location = parser.peek_token_ref().span.start;
    let node = if parser.parse_keyword(Keyword::EXPLAIN) {
        let _ = parser.parse_keywords(&[Keyword::PLAN, Keyword::FOR]);
        Statement::Explain(Box::new(parse_statement(parser)?))
    } else if parser.parse_keyword(Keyword::CREATE) {
        let _ = parser.parse_keyword(Keyword::TEMPORARY);
        if parser.parse_keyword(Keyword::TABLE) {
            Statement::CreateTable(Box::new(parse_create_table(parser)?))
        } else if parser.parse_keyword(Keyword::VIEW) {
            Statement::CreateView(parse_create_view(parser)?)
        } else {
            return parser.expected_ref("TABLE or VIEW after CREATE", parser.peek_token_ref());
        }
    } else if parser.parse_keyword(Keyword::SET) {
        let (key, value) = parse_set(parser)?;
        Statement::Set { key, value }
    } else if parser.parse_keyword(Keyword::RESET) {
        let key = match parser.peek_token_ref().token {
            Token::SemiColon | Token::EOF => None,
            _ => Some(parse_option_text(parser)?),
        };
        Statement::Reset { key }
    } else if parser.parse_keyword(Keyword::INSERT) {
        parser.expect_keyword(Keyword::INTO)?;
        let table = object_name(parser)?;
        let columns = if parser.peek_token_ref().token == Token::LParen
            && !matches!(parser.peek_nth_token_ref(1).token, Token::Word(ref w) if w.keyword == Keyword::SELECT || w.keyword == Keyword::WITH)
        {
            parser.expect_token(&Token::LParen)?;
            let cols = parser.parse_comma_separated(|p| p.parse_identifier())?;
            parser.expect_token(&Token::RParen)?;
            cols.into_iter().map(|c| c.value).collect()
        } else {
            vec![]
        };
        let query = parser.parse_query()?;
        Statement::Insert(InsertDef { table, columns, query })
    } else if is_query_start(parser) {
        Statement::Query(parser.parse_query()?)
    } else {
        return parser.expected_ref(
            "CREATE TABLE, CREATE VIEW, SET, RESET, INSERT INTO, SELECT or EXPLAIN",
            parser.peek_token_ref(),
        );
    };
    Ok(Located { node, location })
}

fn is_query_start(parser: &Parser) -> bool {
    match &parser.peek_token_ref().token {
        Token::Word(w) => matches!(w.keyword, Keyword::SELECT | Keyword::WITH | Keyword::VALUES),
        Token::LParen => true,
        _ => false,
    }
}

fn object_name(parser: &mut Parser) -> Result<String, ParserError> {
    let name = parser.parse_object_name(false)?;
    Ok(name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.clone())).collect::<Vec<_>>().join("."))
}

fn parse_create_view(parser: &mut Parser) -> Result<ViewDef, ParserError> {
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(parser)?;
    let columns = if parser.consume_token(&Token::LParen) {
        let cols = parser.parse_comma_separated(|p| p.parse_identifier())?;
        parser.expect_token(&Token::RParen)?;
        cols.into_iter().map(|c| c.value).collect()
    } else {
        vec![]
    };
    parser.expect_keyword(Keyword::AS)?;
    let query = parser.parse_query()?;
    Ok(ViewDef { name, columns, query })
}

fn parse_set(parser: &mut Parser) -> Result<(String, String), ParserError> {
    let key = parse_option_text(parser)?;
    parser.expect_token(&Token::Eq)?;
    let value = parse_option_text(parser)?;
    Ok((key, value))
}

/// An option key or value: a quoted string, or (as Flink's SQL client also accepts) a bare
/// dotted word or number.
fn parse_option_text(parser: &mut Parser) -> Result<String, ParserError> {
    let token = parser.next_token();
    match token.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Ok(s),
        Token::Number(n, _) => Ok(n),
        Token::Word(w) => {
            let mut text = w.value;
            while parser.consume_token(&Token::Period) {
                match parser.next_token().token {
                    Token::Word(w) => text = format!("{text}.{}", w.value),
                    Token::Number(n, _) => text = format!("{text}.{n}"),
                    _ => return parser.expected_ref("an option name", parser.peek_token_ref()),
                }
            }
            Ok(text)
        }
        _ => parser.expected_ref("a quoted option key or value", &token),
    }
}

fn parse_create_table(parser: &mut Parser) -> Result<TableDef, ParserError> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(parser)?;
    parser.expect_token(&Token::LParen)?;
    let mut columns: Vec<ColumnDef> = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    loop {
        if parser.consume_token(&Token::RParen) {
            break;
        }
        let location = parser.peek_token_ref().span.start;
        if peek_word(parser, 0, "WATERMARK") {
            parser.next_token();
            parser.expect_keyword(Keyword::FOR)?;
            let column = parser.parse_identifier()?.value;
            parser.expect_keyword(Keyword::AS)?;
            let expr = parser.parse_expr()?;
            watermark = Some(WatermarkDef { column, expr, location });
        } else if parser.parse_keyword(Keyword::CONSTRAINT) || peek_word(parser, 0, "PRIMARY") {
            if !peek_word(parser, 0, "PRIMARY") {
                parser.parse_identifier()?;
            }
            parser.expect_keywords(&[Keyword::PRIMARY, Keyword::KEY])?;
            parser.expect_token(&Token::LParen)?;
            primary_key =
                parser.parse_comma_separated(|p| p.parse_identifier())?.into_iter().map(|i| i.value).collect();
            parser.expect_token(&Token::RParen)?;
            parser.expect_keywords(&[Keyword::NOT, Keyword::ENFORCED])?;
        } else {
            columns.push(parse_column(parser, location)?);
        }
        if !parser.consume_token(&Token::Comma) {
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    skip_comment(parser);
    if parser.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        parser.expect_token(&Token::LParen)?;
        parser.parse_comma_separated(|p| p.parse_identifier())?;
        parser.expect_token(&Token::RParen)?;
    }
    let mut options = BTreeMap::new();
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        loop {
            if parser.consume_token(&Token::RParen) {
                break;
            }
            let (key, value) = parse_set(parser)?;
            options.insert(key, value);
            if !parser.consume_token(&Token::Comma) {
                parser.expect_token(&Token::RParen)?;
                break;
            }
        }
    }
    Ok(TableDef { name, if_not_exists, columns, watermark, primary_key, options })
}

/// Whether the `n`th next token is the word `word` (case-insensitive), keyword or not.
fn peek_word(parser: &Parser, n: usize, word: &str) -> bool {
    matches!(&parser.peek_nth_token_ref(n).token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

fn skip_comment(parser: &mut Parser) {
    if parser.parse_keyword(Keyword::COMMENT)
        && let Token::SingleQuotedString(_) = parser.peek_token_ref().token
    {
        parser.next_token();
    }
}

fn parse_column(parser: &mut Parser, location: Location) -> Result<ColumnDef, ParserError> {
    let Ident { value: name, .. } = parser.parse_identifier()?;
    let kind = if parser.parse_keyword(Keyword::AS) {
        ColumnKind::Computed { expr: Box::new(parser.parse_expr()?) }
    } else {
        let (data_type, nullable) = parse_type(parser)?;
        if parser.parse_keyword(Keyword::METADATA) {
            let key = if parser.parse_keyword(Keyword::FROM) { Some(parser.parse_literal_string()?) } else { None };
            let is_virtual = parser.parse_keyword(Keyword::VIRTUAL);
            ColumnKind::Metadata { data_type, key, is_virtual }
        } else {
            ColumnKind::Physical { data_type, nullable }
        }
    };
    skip_comment(parser);
    Ok(ColumnDef { name, kind, location })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nexmark_ddl_and_queries() {
        let statements = parse_script(include_str!("../../../bench/nexmark/ddl_nexmark_fs.sql")).unwrap();
        let Statement::CreateTable(t) = &statements[0].node else { panic!("not a table") };
        assert_eq!(t.name, "nexmark");
        assert_eq!(t.columns.len(), 5);
        assert!(matches!(t.columns[4].kind, ColumnKind::Computed { .. }));
        assert_eq!(t.watermark.as_ref().unwrap().column, "dateTime");
        assert_eq!(t.options["format"], "json");
    }

    #[test]
    fn statements_and_locations() {
        let s = parse_script("SET 'parallelism.default' = '2';\nEXPLAIN SELECT 1;\n  SELECT a FROM t").unwrap();
        assert_eq!(s.len(), 3);
        assert!(matches!(&s[0].node, Statement::Set { key, value } if key == "parallelism.default" && value == "2"));
        assert!(matches!(&s[1].node, Statement::Explain(_)));
        assert_eq!((s[2].location.line, s[2].location.column), (3, 3));
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse_script("SELECT a\nFROM t\nWHERE ;").unwrap_err();
        assert_eq!((e.line, e.column), (3, 7), "{e}");
        let e = parse_script("CREATE TABLE t (a FOO) WITH ()").unwrap_err();
        assert_eq!((e.line, e.column), (1, 19), "{e}");
        assert!(e.message.contains("unknown data type"), "{e}");
    }

    #[test]
    fn table_argument_in_window_tvf() {
        let s = parse_script(
            "SELECT * FROM TABLE(SESSION(TABLE clicks PARTITION BY user_id, DESCRIPTOR(ts), INTERVAL '20' SECOND))",
        )
        .unwrap();
        let Statement::Query(q) = &s[0].node else { panic!() };
        let text = q.to_string();
        assert!(text.contains("__weir_table(clicks, __weir_partition_by(user_id))"), "{text}");
    }
}
