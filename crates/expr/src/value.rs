//! Values that expressions compute with, and the attribute lookup trait.

use std::collections::BTreeMap;
use std::fmt;

/// A value produced while evaluating an expression.
///
/// Strings are borrowed (from the expression's literals or from the
/// attributes being evaluated against), so evaluation never allocates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string.
    Str(&'a str),
    /// A missing attribute, or the result of an operation on values that do
    /// not support it (type mismatch, overflow, division by zero).
    Undefined,
}

impl Value<'_> {
    /// The value as a number, if it is an integer or a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Undefined => f.write_str("undefined"),
        }
    }
}

/// An owned attribute value, as stored on a node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// A boolean label.
    Bool(bool),
    /// An integer attribute.
    Int(i64),
    /// A float attribute.
    Float(f64),
    /// A string attribute.
    Str(String),
}

impl AttrValue {
    /// Borrow this attribute as an evaluation value.
    pub fn as_value(&self) -> Value<'_> {
        match self {
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Int(i) => Value::Int(*i),
            AttrValue::Float(f) => Value::Float(*f),
            AttrValue::Str(s) => Value::Str(s),
        }
    }
}

impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}

impl From<f64> for AttrValue {
    fn from(f: f64) -> Self {
        AttrValue::Float(f)
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_owned())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}

/// Something an expression can be evaluated against: a node, usually.
///
/// `get` returns `None` for an attribute the subject does not have; the
/// expression then sees [`Value::Undefined`].
pub trait Attributes {
    /// Look up one attribute by name.
    fn get(&self, name: &str) -> Option<Value<'_>>;
}

impl Attributes for BTreeMap<String, AttrValue> {
    fn get(&self, name: &str) -> Option<Value<'_>> {
        BTreeMap::get(self, name).map(AttrValue::as_value)
    }
}

impl Attributes for std::collections::HashMap<String, AttrValue> {
    fn get(&self, name: &str) -> Option<Value<'_>> {
        std::collections::HashMap::get(self, name).map(AttrValue::as_value)
    }
}

/// A slice of `(name, value)` pairs; handy in tests and small drivers.
impl Attributes for [(&str, AttrValue)] {
    fn get(&self, name: &str) -> Option<Value<'_>> {
        self.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_value())
    }
}
