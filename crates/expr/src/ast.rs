//! The expression tree and its evaluation.

use std::cmp::Ordering;

use crate::value::{Attributes, Value};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Lit(Lit),
    Attr(Box<str>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Bin {
        op: BinOp,
        left: Box<Node>,
        right: Box<Node>,
        /// Depth of this subtree, kept so the parser can bound it cheaply.
        depth: usize,
    },
}

impl Node {
    pub(crate) fn bin(op: BinOp, left: Node, right: Node) -> Node {
        let depth = 1 + left.depth().max(right.depth());
        Node::Bin {
            op,
            left: Box::new(left),
            right: Box::new(right),
            depth,
        }
    }

    pub(crate) fn depth(&self) -> usize {
        match self {
            Node::Lit(_) | Node::Attr(_) => 1,
            Node::Not(inner) | Node::Neg(inner) => 1 + inner.depth(),
            Node::Bin { depth, .. } => *depth,
        }
    }

    pub(crate) fn visit_attrs<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        match self {
            Node::Lit(_) => {}
            Node::Attr(name) => f(name),
            Node::Not(inner) | Node::Neg(inner) => inner.visit_attrs(f),
            Node::Bin { left, right, .. } => {
                left.visit_attrs(f);
                right.visit_attrs(f);
            }
        }
    }

    pub(crate) fn eval<'a, A: Attributes + ?Sized>(&'a self, attrs: &'a A) -> Value<'a> {
        match self {
            Node::Lit(Lit::Bool(b)) => Value::Bool(*b),
            Node::Lit(Lit::Int(i)) => Value::Int(*i),
            Node::Lit(Lit::Float(f)) => Value::Float(*f),
            Node::Lit(Lit::Str(s)) => Value::Str(s),
            Node::Attr(name) => attrs.get(name).unwrap_or(Value::Undefined),
            Node::Not(inner) => match inner.eval(attrs) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Undefined,
            },
            Node::Neg(inner) => match inner.eval(attrs) {
                Value::Int(i) => i.checked_neg().map_or(Value::Undefined, Value::Int),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Undefined,
            },
            Node::Bin {
                op, left, right, ..
            } => match op {
                BinOp::And => {
                    let l = left.eval(attrs);
                    if l == Value::Bool(false) {
                        return l;
                    }
                    match (l, right.eval(attrs)) {
                        (_, Value::Bool(false)) => Value::Bool(false),
                        (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                        _ => Value::Undefined,
                    }
                }
                BinOp::Or => {
                    let l = left.eval(attrs);
                    if l == Value::Bool(true) {
                        return l;
                    }
                    match (l, right.eval(attrs)) {
                        (_, Value::Bool(true)) => Value::Bool(true),
                        (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                        _ => Value::Undefined,
                    }
                }
                BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                    compare(*op, left.eval(attrs), right.eval(attrs))
                }
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                    arith(*op, left.eval(attrs), right.eval(attrs))
                }
            },
        }
    }
}

fn compare(op: BinOp, l: Value<'_>, r: Value<'_>) -> Value<'static> {
    let ord = match (l, r) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(&b)),
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => {
            // Booleans compare for equality only.
            return match op {
                BinOp::Eq => Value::Bool(a == b),
                BinOp::Ne => Value::Bool(a != b),
                _ => Value::Undefined,
            };
        }
        (a, b) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    };
    let Some(ord) = ord else {
        return Value::Undefined;
    };
    Value::Bool(match op {
        BinOp::Eq => ord == Ordering::Equal,
        BinOp::Ne => ord != Ordering::Equal,
        BinOp::Lt => ord == Ordering::Less,
        BinOp::Le => ord != Ordering::Greater,
        BinOp::Gt => ord == Ordering::Greater,
        BinOp::Ge => ord != Ordering::Less,
        _ => return Value::Undefined,
    })
}

fn arith(op: BinOp, l: Value<'_>, r: Value<'_>) -> Value<'static> {
    if let (Value::Int(a), Value::Int(b)) = (l, r) {
        let out = match op {
            BinOp::Add => a.checked_add(b),
            BinOp::Sub => a.checked_sub(b),
            BinOp::Mul => a.checked_mul(b),
            BinOp::Div => a.checked_div(b),
            _ => None,
        };
        return out.map_or(Value::Undefined, Value::Int);
    }
    let (Some(a), Some(b)) = (l.as_f64(), r.as_f64()) else {
        return Value::Undefined;
    };
    let out = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div if b != 0.0 => a / b,
        _ => return Value::Undefined,
    };
    if out.is_nan() {
        Value::Undefined
    } else {
        Value::Float(out)
    }
}
