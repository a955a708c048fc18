//! Turns source text into tokens, each with its 1-based column.

use crate::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    True,
    False,
    OrOr,
    AndAnd,
    Bang,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
}

impl Tok {
    /// How the token is written, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("'{name}'"),
            Tok::Int(i) => format!("'{i}'"),
            Tok::Float(f) => format!("'{f}'"),
            Tok::Str(_) => "a string".to_owned(),
            Tok::True => "'true'".to_owned(),
            Tok::False => "'false'".to_owned(),
            other => format!("'{}'", other.symbol()),
        }
    }

    pub(crate) fn symbol(&self) -> &'static str {
        match self {
            Tok::OrOr => "||",
            Tok::AndAnd => "&&",
            Tok::Bang => "!",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::LParen => "(",
            Tok::RParen => ")",
            _ => "",
        }
    }
}

/// A token and the column (1-based, in characters) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned {
    pub tok: Tok,
    pub column: usize,
}

pub(crate) fn lex(src: &str) -> Result<Vec<Spanned>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = chars.get(i + 1).copied();
        let (tok, len) = match c {
            '|' if two == Some('|') => (Tok::OrOr, 2),
            '|' => {
                return Err(ParseError::new(
                    column,
                    "expected '||' (a single '|' is not an operator)",
                ));
            }
            '&' if two == Some('&') => (Tok::AndAnd, 2),
            '&' => {
                return Err(ParseError::new(
                    column,
                    "expected '&&' (a single '&' is not an operator)",
                ));
            }
            '=' if two == Some('=') => (Tok::EqEq, 2),
            '=' => {
                return Err(ParseError::new(
                    column,
                    "expected '==' (a single '=' is not an operator)",
                ));
            }
            '!' if two == Some('=') => (Tok::NotEq, 2),
            '!' => (Tok::Bang, 1),
            '<' if two == Some('=') => (Tok::Le, 2),
            '<' => (Tok::Lt, 1),
            '>' if two == Some('=') => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            '*' => (Tok::Star, 1),
            '/' => (Tok::Slash, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '"' => lex_string(&chars, i)?,
            c if c.is_ascii_digit() => lex_number(&chars, i)?,
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = i;
                while end < chars.len()
                    && (chars[end].is_ascii_alphanumeric()
                        || chars[end] == '_'
                        || chars[end] == '.')
                {
                    end += 1;
                }
                let word: String = chars[i..end].iter().collect();
                let tok = match word.as_str() {
                    "true" => Tok::True,
                    "false" => Tok::False,
                    _ => Tok::Ident(word),
                };
                (tok, end - i)
            }
            other => {
                return Err(ParseError::new(
                    column,
                    format!("unexpected character {other:?}"),
                ));
            }
        };
        out.push(Spanned { tok, column });
        i += len;
    }
    Ok(out)
}

fn lex_string(chars: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(ParseError::new(
                    start + 1,
                    "string is not terminated (missing closing '\"')",
                ));
            }
            Some('"') => return Ok((Tok::Str(s), i + 1 - start)),
            Some('\\') => {
                let escaped = match chars.get(i + 1) {
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(other) => {
                        return Err(ParseError::new(
                            i + 2,
                            format!("unknown escape '\\{other}' in string (use \\\" \\\\ \\n \\t)"),
                        ));
                    }
                    None => {
                        return Err(ParseError::new(
                            start + 1,
                            "string is not terminated (missing closing '\"')",
                        ));
                    }
                };
                s.push(escaped);
                i += 2;
            }
            Some(&c) => {
                s.push(c);
                i += 1;
            }
        }
    }
}

fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let digits = |mut i: usize| {
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut end = digits(start);
    let mut is_float = false;
    if chars.get(end) == Some(&'.') && chars.get(end + 1).is_some_and(|c| c.is_ascii_digit()) {
        is_float = true;
        end = digits(end + 1);
    }
    if matches!(chars.get(end), Some('e' | 'E')) {
        let mut j = end + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
            is_float = true;
            end = digits(j);
        }
    }
    if chars
        .get(end)
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
    {
        return Err(ParseError::new(
            end + 1,
            format!("unexpected {:?} right after a number", chars[end]),
        ));
    }
    let text: String = chars[start..end].iter().collect();
    let tok = if is_float {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Tok::Float(f),
            _ => return Err(ParseError::new(start + 1, "number is too large")),
        }
    } else {
        match text.parse::<i64>() {
            Ok(i) => Tok::Int(i),
            Err(_) => {
                return Err(ParseError::new(
                    start + 1,
                    "integer is too large (the limit is 9223372036854775807)",
                ));
            }
        }
    };
    Ok((tok, end - start))
}
