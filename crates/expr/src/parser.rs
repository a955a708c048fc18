//! Precedence-climbing parser from tokens to the expression tree.

use crate::ParseError;
use crate::ast::{BinOp, Lit, Node};
use crate::lexer::{Spanned, Tok};

/// Parentheses and unary operators may nest this deep; deeper input is
/// refused so that parsing cannot exhaust the stack.
pub(crate) const MAX_NESTING: usize = 200;
/// The tree may be this deep (a long chain `a || b || ...` counts one level
/// per operator); evaluation recurses over the tree, so it is bounded too.
pub(crate) const MAX_DEPTH: usize = 1000;

pub(crate) struct Parser<'t> {
    toks: &'t [Spanned],
    pos: usize,
    /// Column just past the end of the input, for "expected ... at end" errors.
    end_column: usize,
    nesting: usize,
}

impl<'t> Parser<'t> {
    pub(crate) fn new(toks: &'t [Spanned], end_column: usize) -> Self {
        Parser {
            toks,
            pos: 0,
            end_column,
            nesting: 0,
        }
    }

    pub(crate) fn parse_all(mut self) -> Result<Node, ParseError> {
        if self.toks.is_empty() {
            return Err(ParseError::new(1, "expression is empty"));
        }
        let node = self.expr(0, None)?;
        if let Some(t) = self.peek() {
            let msg = if t.tok == Tok::RParen {
                "unmatched ')'".to_owned()
            } else {
                format!(
                    "expected an operator or the end, found {}",
                    t.tok.describe()
                )
            };
            return Err(ParseError::new(t.column, msg));
        }
        Ok(node)
    }

    fn peek(&self) -> Option<&'t Spanned> {
        self.toks.get(self.pos)
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end_column, |t| t.column)
    }

    /// Parses operators binding at least as tightly as `min_prec`.
    /// `after` names the operator whose operand this is, for messages.
    fn expr(&mut self, min_prec: u8, after: Option<&str>) -> Result<Node, ParseError> {
        let mut left = self.unary(after)?;
        while let Some(t) = self.peek() {
            let Some((op, prec)) = binary_op(&t.tok) else {
                break;
            };
            if prec < min_prec {
                break;
            }
            self.pos += 1;
            let right = self.expr(prec + 1, Some(t.tok.symbol()))?;
            left = Node::bin(op, left, right);
            if left.depth() > MAX_DEPTH {
                return Err(ParseError::new(
                    t.column,
                    format!("expression is too long (more than {MAX_DEPTH} levels)"),
                ));
            }
        }
        Ok(left)
    }

    fn unary(&mut self, after: Option<&str>) -> Result<Node, ParseError> {
        let Some(t) = self.peek() else {
            return Err(self.expected_value(after));
        };
        match t.tok {
            Tok::Bang | Tok::Minus => {
                self.enter(t.column)?;
                self.pos += 1;
                let inner = self.unary(Some(t.tok.symbol()))?;
                self.nesting -= 1;
                Ok(if t.tok == Tok::Bang {
                    Node::Not(Box::new(inner))
                } else {
                    Node::Neg(Box::new(inner))
                })
            }
            _ => self.primary(after),
        }
    }

    fn primary(&mut self, after: Option<&str>) -> Result<Node, ParseError> {
        let Some(t) = self.peek() else {
            return Err(self.expected_value(after));
        };
        let node = match &t.tok {
            Tok::Int(i) => Node::Lit(Lit::Int(*i)),
            Tok::Float(f) => Node::Lit(Lit::Float(*f)),
            Tok::Str(s) => Node::Lit(Lit::Str(s.as_str().into())),
            Tok::True => Node::Lit(Lit::Bool(true)),
            Tok::False => Node::Lit(Lit::Bool(false)),
            Tok::Ident(name) => Node::Attr(name.as_str().into()),
            Tok::LParen => {
                self.enter(t.column)?;
                self.pos += 1;
                let inner = self.expr(0, Some("("))?;
                self.nesting -= 1;
                match self.peek() {
                    Some(close) if close.tok == Tok::RParen => {
                        self.pos += 1;
                        return Ok(inner);
                    }
                    Some(other) => {
                        return Err(ParseError::new(
                            other.column,
                            format!(
                                "expected ')' to close the '(' at column {}, found {}",
                                t.column,
                                other.tok.describe()
                            ),
                        ));
                    }
                    None => {
                        return Err(ParseError::new(
                            self.end_column,
                            format!("expected ')' to close the '(' at column {}", t.column),
                        ));
                    }
                }
            }
            _ => return Err(self.expected_value(after)),
        };
        self.pos += 1;
        Ok(node)
    }

    fn enter(&mut self, column: usize) -> Result<(), ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(ParseError::new(
                column,
                format!("expression is nested too deeply (more than {MAX_NESTING} levels)"),
            ));
        }
        Ok(())
    }

    fn expected_value(&self, after: Option<&str>) -> ParseError {
        let found = match self.peek() {
            Some(t) => format!(", found {}", t.tok.describe()),
            None => String::new(),
        };
        let msg = match after {
            Some(op) => format!("expected a value after '{op}'{found}"),
            None => format!("expected a value{found}"),
        };
        ParseError::new(self.column(), msg)
    }
}

/// Binary operators and their precedence (higher binds tighter), as in C.
fn binary_op(tok: &Tok) -> Option<(BinOp, u8)> {
    Some(match tok {
        Tok::OrOr => (BinOp::Or, 1),
        Tok::AndAnd => (BinOp::And, 2),
        Tok::EqEq => (BinOp::Eq, 3),
        Tok::NotEq => (BinOp::Ne, 3),
        Tok::Lt => (BinOp::Lt, 4),
        Tok::Le => (BinOp::Le, 4),
        Tok::Gt => (BinOp::Gt, 4),
        Tok::Ge => (BinOp::Ge, 4),
        Tok::Plus => (BinOp::Add, 5),
        Tok::Minus => (BinOp::Sub, 5),
        Tok::Star => (BinOp::Mul, 6),
        Tok::Slash => (BinOp::Div, 6),
        _ => return None,
    })
}
