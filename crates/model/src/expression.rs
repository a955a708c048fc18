//! A requirement or rank expression, parsed once when the job file is
//! read and kept parsed: stored and sent as its text, parsed again only
//! when read back (where a failure is an error, never a silent `None`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed expression with the text it came from.
#[derive(Debug, Clone)]
pub struct Expression(vgrid_expr::Expr);

impl Expression {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Expression, vgrid_expr::ParseError> {
        vgrid_expr::Expr::parse(text).map(Expression)
    }

    /// The expression, ready to evaluate.
    pub fn expr(&self) -> &vgrid_expr::Expr {
        &self.0
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        self.0.source()
    }
}

impl From<vgrid_expr::Expr> for Expression {
    fn from(e: vgrid_expr::Expr) -> Expression {
        Expression(e)
    }
}

/// Two expressions are the same when their texts are.
impl PartialEq for Expression {
    fn eq(&self, other: &Expression) -> bool {
        self.source() == other.source()
    }
}

impl Eq for Expression {}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.source())
    }
}

impl<'de> Deserialize<'de> for Expression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Expression, D::Error> {
        let text = String::deserialize(d)?;
        Expression::parse(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "the expression `{text}` does not parse (column {}: {})",
                e.column, e.message
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_travels_as_its_text_and_a_bad_text_is_an_error() {
        let e = Expression::parse("cores >= 2").expect("parses");
        let json = serde_json::to_string(&e).expect("serializes");
        assert_eq!(json, "\"cores >= 2\"");
        let back: Expression = serde_json::from_str(&json).expect("parses back");
        assert_eq!(back, e);
        let bad = serde_json::from_str::<Expression>("\"cores >= \"").expect_err("refused");
        assert!(bad.to_string().contains("does not parse"), "{bad}");
    }
}
