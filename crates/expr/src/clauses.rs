//! The top-level clauses of a requirement (`a && b && c`), each with its
//! own text, so that a scheduler can say which one a node fails.

use crate::Expr;
use crate::lexer::{Spanned, Tok, lex};

impl Expr {
    /// The clauses joined by `&&` at the top of the expression, each as
    /// the user wrote it. A node meets the expression exactly when it
    /// meets every clause (`&&` is true only when both sides are true).
    /// Parentheses around a whole clause are looked through; an
    /// expression with a top-level `||` is one clause.
    pub fn clauses(&self) -> Vec<Expr> {
        let chars: Vec<char> = self.source().chars().collect();
        let Ok(toks) = lex(self.source()) else {
            return vec![self.clone()];
        };
        let mut out = Vec::new();
        split(&chars, &toks, 0, chars.len(), &mut out);
        // Every piece parsed on its own; if one did not (it cannot), the
        // whole expression is the one clause.
        if out.iter().any(Option::is_none) || out.is_empty() {
            return vec![self.clone()];
        }
        out.into_iter().flatten().collect()
    }
}

/// The index of the `)` closing the `(` at `open`.
fn closing(toks: &[Spanned], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits `toks` (the characters `start..end` of the source) at its
/// top-level `&&`s into `out`.
fn split(chars: &[char], toks: &[Spanned], start: usize, end: usize, out: &mut Vec<Option<Expr>>) {
    let last = toks.len().saturating_sub(1);
    if toks.len() >= 2 && toks[0].tok == Tok::LParen && closing(toks, 0) == Some(last) {
        // Columns are 1-based: the `(` is at index column-1.
        let inner_start = toks[0].column;
        let inner_end = toks[last].column - 1;
        return split(chars, &toks[1..last], inner_start, inner_end, out);
    }
    let mut depth = 0i64;
    let mut cuts = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::LParen => depth += 1,
            Tok::RParen => depth -= 1,
            Tok::OrOr if depth == 0 => {
                // `||` binds looser than `&&`: the whole is one clause.
                cuts.clear();
                break;
            }
            Tok::AndAnd if depth == 0 => cuts.push(i),
            _ => {}
        }
    }
    if cuts.is_empty() {
        let text: String = chars[start.min(end)..end].iter().collect();
        out.push(Expr::parse(text.trim()).ok());
        return;
    }
    let (mut from_tok, mut from_char) = (0, start);
    for &cut in cuts.iter().chain(std::iter::once(&toks.len())) {
        let to_char = toks.get(cut).map_or(end, |t| t.column - 1);
        split(chars, &toks[from_tok..cut], from_char, to_char, out);
        from_tok = cut + 1;
        from_char = to_char + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clauses(src: &str) -> Vec<String> {
        Expr::parse(src)
            .expect("parses")
            .clauses()
            .iter()
            .map(|e| e.source().to_string())
            .collect()
    }

    #[test]
    fn top_level_ands_split_into_clauses_as_written() {
        assert_eq!(clauses("cores >= 4"), ["cores >= 4"]);
        assert_eq!(
            clauses("cores >= 4 && arch == \"x86_64\"&&gpu"),
            ["cores >= 4", "arch == \"x86_64\"", "gpu"]
        );
        // Parentheses around a clause or the whole are looked through.
        assert_eq!(
            clauses("(cores >= 4 && (ssd)) && (a || b)"),
            ["cores >= 4", "ssd", "a || b"]
        );
        // A top-level `||` makes one clause; `&&` inside it stays.
        assert_eq!(clauses("a && b || c"), ["a && b || c"]);
        assert_eq!(clauses("(a) || (b && c)"), ["(a) || (b && c)"]);
        // Columns count characters.
        assert_eq!(clauses("name == \"é\" && x"), ["name == \"é\"", "x"]);
    }

    #[test]
    fn a_node_meets_the_whole_exactly_when_it_meets_every_clause() {
        let attrs = [
            ("cores", crate::AttrValue::Int(8)),
            ("ssd", crate::AttrValue::Bool(false)),
        ];
        for src in [
            "cores >= 4 && ssd",
            "cores >= 4 && !ssd && nosuch == 1",
            "(cores > 2 && cores < 9) && !ssd",
            "cores > 100 || ssd && cores > 1",
        ] {
            let e = Expr::parse(src).expect("parses");
            let all = e.clauses().iter().all(|c| c.matches(attrs.as_slice()));
            assert_eq!(all, e.matches(attrs.as_slice()), "{src}");
        }
    }
}
