//! The Flink SQL dialect for sqlparser: backtick identifiers, `FILTER (WHERE …)` on aggregates,
//! named windows, and table arguments `TABLE t [PARTITION BY …]` inside window TVF calls.
//!
//! sqlparser cannot parse Flink's `TUMBLE(TABLE t, DESCRIPTOR(ts), …)`: its function arguments
//! are expressions and `TABLE t` is not one. The dialect's prefix hook parses a table argument
//! into a marker call `__weir_table(t, __weir_partition_by(k1, …))` that the window TVF planner
//! recognises; nothing else can produce a function of that name.

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident, ObjectName,
    ObjectNamePart,
};
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

/// Name of the marker function standing for a table argument.
pub const TABLE_ARG_FUNCTION: &str = "__weir_table";
/// Name of the marker function holding a table argument's `PARTITION BY` keys.
pub const PARTITION_BY_FUNCTION: &str = "__weir_partition_by";

#[derive(Debug, Default, Clone, Copy)]
pub struct FlinkDialect;

impl Dialect for FlinkDialect {
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }

    fn identifier_quote_style(&self, _identifier: &str) -> Option<char> {
        Some('`')
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_' || ch == '$'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }

    fn supports_window_clause_named_window_reference(&self) -> bool {
        true
    }

    fn supports_group_by_expr(&self) -> bool {
        true
    }

    /// `SELECT /*+ STATE_TTL(…) */`: Flink's query hints ([`super::hints`]).
    fn supports_comment_optimizer_hint(&self) -> bool {
        true
    }

    fn supports_left_associative_joins_without_parens(&self) -> bool {
        true
    }

    fn supports_named_fn_args_with_rarrow_operator(&self) -> bool {
        true
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        if !parser.peek_keyword(Keyword::TABLE) {
            return None;
        }
        // `TABLE` as an expression only makes sense as a table argument followed by a name.
        match parser.peek_nth_token_ref(1).token {
            Token::Word(_) => {}
            _ => return None,
        }
        Some(parse_table_argument(parser))
    }
}

fn parse_table_argument(parser: &mut Parser) -> Result<Expr, ParserError> {
    parser.expect_keyword(Keyword::TABLE)?;
    let name = parser.parse_object_name(false)?;
    let mut args = vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(
        name.0.iter().filter_map(|p| p.as_ident().cloned()).collect(),
    )))];
    if parser.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
        // Several keys need parentheses: `PARTITION BY (a, b)`; a comma after a single key
        // starts the next argument of the window function.
        let keys = if parser.consume_token(&Token::LParen) {
            let keys = parser.parse_comma_separated(Parser::parse_expr)?;
            parser.expect_token(&Token::RParen)?;
            keys
        } else {
            vec![parser.parse_expr()?]
        };
        args.push(FunctionArg::Unnamed(FunctionArgExpr::Expr(marker_call(PARTITION_BY_FUNCTION, keys))));
    }
    Ok(Expr::Function(function(TABLE_ARG_FUNCTION, args)))
}

fn marker_call(name: &str, exprs: Vec<Expr>) -> Expr {
    Expr::Function(function(name, exprs.into_iter().map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e))).collect()))
}

fn function(name: &str, args: Vec<FunctionArg>) -> Function {
    Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList { duplicate_treatment: None, args, clauses: vec![] }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    }
}
