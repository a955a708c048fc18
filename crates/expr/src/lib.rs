//! Requirement and rank expressions over node attributes, such as
//! `cores >= 4 && arch == "x86_64"` or `free_memory_mb`.
//!
//! An expression is parsed once ([`Expr::parse`]) and evaluated many times
//! against anything that implements [`Attributes`] (a node, usually).
//! Evaluation never allocates and never panics.
//!
//! # Language
//!
//! - Literals: integers (`42`), floats (`1.5`, `2e3`), strings in double
//!   quotes (`"x86_64"`, escapes `\"` `\\` `\n` `\t`), `true`, `false`.
//! - Attribute names: a letter or `_`, then letters, digits, `_` or `.`
//!   (`cores`, `gpu.model`). Names are case-sensitive.
//! - Operators, loosest first (as in C): `||`; `&&`; `==` `!=`; `<` `<=` `>`
//!   `>=`; `+` `-`; `*` `/`; unary `!` and `-`. Parentheses group.
//!
//! # Undefined
//!
//! Like HTCondor's ClassAds, an attribute the node lacks evaluates to
//! [`Value::Undefined`], and so does any operation that makes no sense
//! (comparing a string with a number, `"a" + 1`, integer overflow, division
//! by zero). Undefined spreads through arithmetic and comparisons. The logic
//! operators are three-valued: `false && undefined` is `false`,
//! `true || undefined` is `true`, anything else involving undefined is
//! undefined. Integers and floats mix (the integer is widened); strings
//! compare by bytes, case-sensitively; booleans compare only with `==`/`!=`.
//!
//! - [`Expr::matches`]: a requirement matches only if it evaluates to
//!   exactly `true` (undefined does not match).
//! - [`Expr::rank`]: a number ranks as itself, `true`/`false` as 1/0, and
//!   anything else (undefined, a string) as 0, as HTCondor does.
//!
//! # Limits
//!
//! Parentheses and unary operators may nest at most 200 deep, and the
//! expression tree may be at most 1000 levels deep; deeper input is a
//! [`ParseError`], so that no input can exhaust the stack.

#![warn(missing_docs)]

mod ast;
mod clauses;
mod lexer;
mod parser;
mod value;

use std::fmt;

pub use value::{AttrValue, Attributes, Value};

/// A syntax error, with the 1-based column (in characters) where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// 1-based column, counted in characters, of the offending spot.
    pub column: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl ParseError {
    fn new(column: usize, message: impl Into<String>) -> Self {
        ParseError {
            column,
            message: message.into(),
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    source: Box<str>,
    root: ast::Node,
}

impl Expr {
    /// Parse an expression. Never panics, whatever the input.
    pub fn parse(src: &str) -> Result<Expr, ParseError> {
        let toks = lexer::lex(src)?;
        let end_column = src.chars().count() + 1;
        let root = parser::Parser::new(&toks, end_column).parse_all()?;
        Ok(Expr {
            source: src.into(),
            root,
        })
    }

    /// The text this expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluate against `attrs`.
    pub fn eval<'a, A: Attributes + ?Sized>(&'a self, attrs: &'a A) -> Value<'a> {
        self.root.eval(attrs)
    }

    /// True only if the expression evaluates to exactly `true`.
    pub fn matches<A: Attributes + ?Sized>(&self, attrs: &A) -> bool {
        self.eval(attrs) == Value::Bool(true)
    }

    /// The expression as a rank: numbers as themselves, booleans as 1 or 0,
    /// anything else (undefined, strings) as 0.
    pub fn rank<A: Attributes + ?Sized>(&self, attrs: &A) -> f64 {
        match self.eval(attrs) {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::Str(_) | Value::Undefined => 0.0,
        }
    }

    /// Every attribute name the expression refers to (with repeats), in
    /// source order.
    pub fn attribute_names(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.root.visit_attrs(&mut |name| out.push(name));
        out
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Expr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expr::parse(s)
    }
}

/// Serialized as its source text.
impl serde::Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let src = String::deserialize(d)?;
        Expr::parse(&src).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Vec<(&'static str, AttrValue)> {
        vec![
            ("cores", AttrValue::Int(8)),
            ("memory_mb", AttrValue::Int(16384)),
            ("free_memory_mb", AttrValue::Int(4096)),
            ("arch", AttrValue::from("x86_64")),
            ("gpu", AttrValue::Bool(true)),
            ("load", AttrValue::Float(0.5)),
            ("rack.row", AttrValue::Int(3)),
        ]
    }

    fn eval_str(src: &str) -> String {
        let e = Expr::parse(src).unwrap_or_else(|err| panic!("{src}: {err}"));
        e.eval(node().as_slice()).to_string()
    }

    fn err(src: &str) -> String {
        match Expr::parse(src) {
            Ok(_) => panic!("{src:?} parsed but should not"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn precedence_follows_c() {
        assert_eq!(eval_str("1 + 2 * 3"), "7");
        assert_eq!(eval_str("(1 + 2) * 3"), "9");
        assert_eq!(eval_str("10 - 4 - 3"), "3"); // left associative
        assert_eq!(eval_str("12 / 3 / 2"), "2");
        assert_eq!(eval_str("-2 * 3"), "-6");
        assert_eq!(eval_str("1 < 2 == true"), "true");
        assert_eq!(eval_str("true || false && false"), "true");
        assert_eq!(eval_str("(true || false) && false"), "false");
        assert_eq!(eval_str("!false && false"), "false");
        assert_eq!(eval_str("!(false && false)"), "true");
        assert_eq!(eval_str("1 + 2 > 2 && 2 * 2 == 4"), "true");
    }

    #[test]
    fn attributes_and_types() {
        assert_eq!(eval_str("cores >= 4 && arch == \"x86_64\""), "true");
        assert_eq!(eval_str("cores * 2"), "16");
        assert_eq!(eval_str("load < 1"), "true");
        assert_eq!(eval_str("cores + 0.5"), "8.5");
        assert_eq!(eval_str("rack.row == 3"), "true");
        assert_eq!(eval_str("gpu"), "true");
        assert_eq!(eval_str("arch < \"y\""), "true");
        assert_eq!(eval_str("7 / 2"), "3");
        assert_eq!(eval_str("7.0 / 2"), "3.5");
    }

    #[test]
    fn undefined_attributes_and_three_valued_logic() {
        assert_eq!(eval_str("nosuch"), "undefined");
        assert_eq!(eval_str("nosuch > 3"), "undefined");
        assert_eq!(eval_str("nosuch + 1"), "undefined");
        assert_eq!(eval_str("false && nosuch"), "false");
        assert_eq!(eval_str("nosuch && false"), "false");
        assert_eq!(eval_str("true && nosuch"), "undefined");
        assert_eq!(eval_str("true || nosuch"), "true");
        assert_eq!(eval_str("nosuch || true"), "true");
        assert_eq!(eval_str("false || nosuch"), "undefined");
        assert_eq!(eval_str("!nosuch"), "undefined");
        // Type mismatches and arithmetic faults are undefined too.
        assert_eq!(eval_str("arch == 3"), "undefined");
        assert_eq!(eval_str("\"a\" + 1"), "undefined");
        assert_eq!(eval_str("1 / 0"), "undefined");
        assert_eq!(eval_str("1.0 / 0"), "undefined");
        assert_eq!(eval_str("9223372036854775807 + 1"), "undefined");
        assert_eq!(eval_str("true < false"), "undefined");
        assert_eq!(eval_str("3 && true"), "undefined");
    }

    #[test]
    fn matches_only_on_true() {
        let attrs = node();
        let m = |s: &str| Expr::parse(s).unwrap().matches(attrs.as_slice());
        assert!(m("cores >= 8"));
        assert!(!m("cores > 8"));
        assert!(!m("nosuch == 1"));
        assert!(!m("cores")); // an integer is not `true`
        assert!(!m("!(nosuch == 1)"));
    }

    #[test]
    fn rank_of_each_kind() {
        let attrs = node();
        let r = |s: &str| Expr::parse(s).unwrap().rank(attrs.as_slice());
        assert_eq!(r("free_memory_mb"), 4096.0);
        assert_eq!(r("load * 2"), 1.0);
        assert_eq!(r("gpu"), 1.0);
        assert_eq!(r("cores > 100"), 0.0);
        assert_eq!(r("nosuch"), 0.0);
        assert_eq!(r("arch"), 0.0);
        assert_eq!(r("-cores"), -8.0);
    }

    #[test]
    fn errors_point_at_the_column() {
        assert_eq!(
            err("cores >= 4 &&"),
            "column 14: expected a value after '&&'"
        );
        assert_eq!(
            err("cores >= 4 && && x"),
            "column 15: expected a value after '&&', found '&&'"
        );
        assert_eq!(err(""), "column 1: expression is empty");
        assert_eq!(err("   "), "column 1: expression is empty");
        assert_eq!(
            err("cores = 4"),
            "column 7: expected '==' (a single '=' is not an operator)"
        );
        assert_eq!(
            err("a & b"),
            "column 3: expected '&&' (a single '&' is not an operator)"
        );
        assert_eq!(
            err("(cores > 4"),
            "column 11: expected ')' to close the '(' at column 1"
        );
        assert_eq!(err("cores > 4)"), "column 10: unmatched ')'");
        assert_eq!(
            err("cores 4"),
            "column 7: expected an operator or the end, found '4'"
        );
        assert_eq!(
            err("arch == \"x86"),
            "column 9: string is not terminated (missing closing '\"')"
        );
        assert_eq!(err("cores # 2"), "column 7: unexpected character '#'");
        assert_eq!(
            err("12abc"),
            "column 3: unexpected 'a' right after a number"
        );
        assert_eq!(
            err("99999999999999999999"),
            "column 1: integer is too large (the limit is 9223372036854775807)"
        );
        assert_eq!(err("()"), "column 2: expected a value after '(', found ')'");
        assert_eq!(err("-"), "column 2: expected a value after '-'");
        // Columns count characters, not bytes.
        assert_eq!(
            err("\"é\" == ="),
            "column 8: expected '==' (a single '=' is not an operator)"
        );
    }

    #[test]
    fn deep_input_is_refused_not_crashed() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(err(&deep).contains("nested too deeply"));
        let nots = format!("{}true", "!".repeat(10_000));
        assert!(err(&nots).contains("nested too deeply"));
        let long = vec!["a"; 5_000].join(" || ");
        assert!(err(&long).contains("too long"));
        // Reasonable sizes still parse.
        let ok = vec!["a"; 500].join(" || ");
        assert!(Expr::parse(&ok).is_ok());
        let nested = format!("{}1{}", "(".repeat(150), ")".repeat(150));
        assert!(Expr::parse(&nested).is_ok());
    }

    #[test]
    fn string_escapes() {
        assert_eq!(eval_str(r#""a\"b" == "a\"b""#), "true");
        assert!(err(r#""a\qb""#).contains("unknown escape"));
    }

    #[test]
    fn serde_round_trip_uses_the_source() {
        let e = Expr::parse("cores >= 4").unwrap();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, "\"cores >= 4\"");
        let back: Expr = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let bad: Result<Expr, _> = serde_json::from_str("\"cores >=\"");
        assert!(bad.is_err());
    }

    #[test]
    fn attribute_names_are_listed() {
        let e = Expr::parse("cores > 2 && (arch == \"x\" || gpu.model == 1)").unwrap();
        assert_eq!(e.attribute_names(), vec!["cores", "arch", "gpu.model"]);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(src in "\\PC{0,64}") {
            let _ = Expr::parse(&src);
        }

        #[test]
        fn parse_never_panics_on_operator_soup(src in "[a-z0-9 ()!&|=<>+*/\"\\-.]{0,80}") {
            if let Ok(e) = Expr::parse(&src) {
                let _ = e.eval(node().as_slice());
                let _ = e.rank(node().as_slice());
            }
        }

        #[test]
        fn error_columns_lie_within_the_input(src in "[a-z0-9 ()!&|=<>+*/\"\\-.]{0,80}") {
            if let Err(e) = Expr::parse(&src) {
                proptest::prop_assert!(e.column >= 1 && e.column <= src.chars().count() + 1);
            }
        }
    }
}
