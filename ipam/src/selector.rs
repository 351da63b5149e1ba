//! Calico's label selector language, the subset pools' `nodeSelector` uses:
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" expr ")" | "all()" | "has(" key ")"
//!          | key "==" string | key "!=" string
//!          | key "in" "{" strings "}" | key "not" "in" "{" strings "}"
//! string  := '...' | "..."            (no escapes, as in Calico)
//! key     := [A-Za-z0-9_./-]+          (Kubernetes label keys, with their prefix)
//! ```
//!
//! As in Calico, `k != 'v'` and `k not in {...}` also match when `k` is absent, and an empty
//! selector means `all()`. Parse once with [`Selector::parse`], then evaluate with
//! [`Selector::matches`] against a node's labels. Bad input is a [`SelectorError`] with the byte
//! position, never a panic; nesting is limited so that no input can exhaust the stack.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Deepest nesting of parentheses and `!` accepted.
const MAX_DEPTH: usize = 64;

/// A parsed selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(Expr);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    All,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// A selector that does not parse: what was wrong, and where (a byte offset into the input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("selector {input:?}, at position {pos}: {msg}")]
pub struct SelectorError {
    pub input: String,
    pub pos: usize,
    pub msg: String,
}

impl Selector {
    /// Parses `input`; an empty or blank selector is `all()`.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let tokens = lex(input)?;
        let mut p = Parser {
            input,
            tokens,
            next: 0,
            depth: 0,
        };
        if p.peek().is_none() {
            return Ok(Selector(Expr::All));
        }
        let expr = p.or()?;
        if let Some((pos, tok)) = p.peek_with_pos() {
            return Err(p.err(pos, format!("unexpected {tok} after a complete expression")));
        }
        Ok(Selector(expr))
    }

    /// Whether a node with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.eval(labels)
    }
}

impl Expr {
    fn eval(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Expr::All => true,
            Expr::Has(k) => labels.contains_key(k),
            Expr::Eq(k, v) => labels.get(k) == Some(v),
            Expr::Ne(k, v) => labels.get(k) != Some(v),
            Expr::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Expr::NotIn(k, set) => !labels.get(k).is_some_and(|v| set.contains(v)),
            Expr::Not(e) => !e.eval(labels),
            Expr::And(es) => es.iter().all(|e| e.eval(labels)),
            Expr::Or(es) => es.iter().any(|e| e.eval(labels)),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn fmt_set(f: &mut fmt::Formatter<'_>, set: &BTreeSet<String>) -> fmt::Result {
    f.write_str("{")?;
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}", quote(v))?;
    }
    f.write_str("}")
}

/// Quotes with whichever quote the value does not contain (it cannot contain both: the lexer
/// ends a string at its own quote).
fn quote(v: &str) -> String {
    if v.contains('\'') {
        format!("\"{v}\"")
    } else {
        format!("'{v}'")
    }
}

impl fmt::Display for Expr {
    /// A canonical form that parses back to the same selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, es: &[Expr], op: &str| -> fmt::Result {
            f.write_str("(")?;
            for (i, e) in es.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{e}")?;
            }
            f.write_str(")")
        };
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => write!(f, "{k} == {}", quote(v)),
            Expr::Ne(k, v) => write!(f, "{k} != {}", quote(v)),
            Expr::In(k, set) => {
                write!(f, "{k} in ")?;
                fmt_set(f, set)
            }
            Expr::NotIn(k, set) => {
                write!(f, "{k} not in ")?;
                fmt_set(f, set)
            }
            Expr::Not(e) => write!(f, "!({e})"),
            Expr::And(es) => join(f, es, "&&"),
            Expr::Or(es) => join(f, es, "||"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Str(String),
    Word(String),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::LBrace => f.write_str("'{'"),
            Tok::RBrace => f.write_str("'}'"),
            Tok::Comma => f.write_str("','"),
            Tok::And => f.write_str("'&&'"),
            Tok::Or => f.write_str("'||'"),
            Tok::Not => f.write_str("'!'"),
            Tok::Eq => f.write_str("'=='"),
            Tok::Ne => f.write_str("'!='"),
            Tok::Str(s) => write!(f, "string {}", quote(s)),
            Tok::Word(w) => write!(f, "{w:?}"),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, SelectorError> {
    let err = |pos: usize, msg: String| SelectorError {
        input: input.to_string(),
        pos,
        msg,
    };
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        let two = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, want: char| {
            if chars.peek().map(|&(_, c)| c) == Some(want) {
                chars.next();
                true
            } else {
                false
            }
        };
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            ',' => Tok::Comma,
            '&' if two(&mut chars, '&') => Tok::And,
            '|' if two(&mut chars, '|') => Tok::Or,
            '=' if two(&mut chars, '=') => Tok::Eq,
            '!' if two(&mut chars, '=') => Tok::Ne,
            '!' => Tok::Not,
            '&' | '|' | '=' => {
                return Err(err(pos, format!("{c:?} must be doubled ('{c}{c}')")));
            }
            '\'' | '"' => {
                let start = pos + 1;
                let mut end = None;
                for (p, ch) in chars.by_ref() {
                    if ch == c {
                        end = Some(p);
                        break;
                    }
                }
                let Some(end) = end else {
                    return Err(err(pos, "string is not terminated".to_string()));
                };
                Tok::Str(input[start..end].to_string())
            }
            c if is_word_char(c) => {
                let mut end = pos + c.len_utf8();
                while let Some(&(p, ch)) = chars.peek() {
                    if !is_word_char(ch) {
                        break;
                    }
                    end = p + ch.len_utf8();
                    chars.next();
                }
                Tok::Word(input[pos..end].to_string())
            }
            other => return Err(err(pos, format!("unexpected character {other:?}"))),
        };
        out.push((pos, tok));
    }
    Ok(out)
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<(usize, Tok)>,
    next: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, pos: usize, msg: String) -> SelectorError {
        SelectorError {
            input: self.input.to_string(),
            pos,
            msg,
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }

    fn peek_with_pos(&self) -> Option<(usize, &Tok)> {
        self.tokens.get(self.next).map(|(p, t)| (*p, t))
    }

    /// Position for an error at the next token, or at the end of input.
    fn here(&self) -> usize {
        self.tokens
            .get(self.next)
            .map_or(self.input.len(), |(p, _)| *p)
    }

    fn bump(&mut self) -> Option<(usize, Tok)> {
        let t = self.tokens.get(self.next).cloned();
        if t.is_some() {
            self.next += 1;
        }
        t
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), SelectorError> {
        match self.bump() {
            Some((_, t)) if &t == want => Ok(()),
            Some((pos, t)) => Err(self.err(pos, format!("expected {what}, found {t}"))),
            None => Err(self.err(self.input.len(), format!("expected {what}, found the end"))),
        }
    }

    fn enter(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(self.here(), format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut terms = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.bump();
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut terms = vec![self.unary()?];
        while self.peek() == Some(&Tok::And) {
            self.bump();
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Expr, SelectorError> {
        if self.peek() == Some(&Tok::Not) {
            self.bump();
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, SelectorError> {
        let Some((pos, tok)) = self.bump() else {
            return Err(self.err(
                self.input.len(),
                "expected an expression, found the end".into(),
            ));
        };
        match tok {
            Tok::LParen => {
                self.enter()?;
                let e = self.or()?;
                self.expect(&Tok::RParen, "')'")?;
                self.depth -= 1;
                Ok(e)
            }
            Tok::Word(w) if w == "all" && self.peek() == Some(&Tok::LParen) => {
                self.bump();
                self.expect(&Tok::RParen, "')' after all(")?;
                Ok(Expr::All)
            }
            Tok::Word(w) if w == "has" && self.peek() == Some(&Tok::LParen) => {
                self.bump();
                let key = self.key("a label key in has(...)")?;
                self.expect(&Tok::RParen, "')' after has(key")?;
                Ok(Expr::Has(key))
            }
            Tok::Word(key) => self.comparison(key),
            other => Err(self.err(pos, format!("expected an expression, found {other}"))),
        }
    }

    fn key(&mut self, what: &str) -> Result<String, SelectorError> {
        match self.bump() {
            Some((_, Tok::Word(w))) => Ok(w),
            Some((pos, t)) => Err(self.err(pos, format!("expected {what}, found {t}"))),
            None => Err(self.err(self.input.len(), format!("expected {what}, found the end"))),
        }
    }

    fn comparison(&mut self, key: String) -> Result<Expr, SelectorError> {
        let Some((pos, tok)) = self.bump() else {
            return Err(self.err(
                self.input.len(),
                format!("expected ==, !=, in or not in after label {key:?}, found the end"),
            ));
        };
        match tok {
            Tok::Eq => Ok(Expr::Eq(key, self.string()?)),
            Tok::Ne => Ok(Expr::Ne(key, self.string()?)),
            Tok::Word(w) if w == "in" => Ok(Expr::In(key, self.set()?)),
            Tok::Word(w) if w == "not" => {
                match self.bump() {
                    Some((_, Tok::Word(w))) if w == "in" => {}
                    Some((p, t)) => {
                        return Err(self.err(p, format!("expected 'in' after 'not', found {t}")))
                    }
                    None => {
                        return Err(self.err(
                            self.input.len(),
                            "expected 'in' after 'not', found the end".into(),
                        ))
                    }
                }
                Ok(Expr::NotIn(key, self.set()?))
            }
            other => Err(self.err(
                pos,
                format!("expected ==, !=, in or not in after label {key:?}, found {other}"),
            )),
        }
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        match self.bump() {
            Some((_, Tok::Str(s))) => Ok(s),
            Some((pos, t)) => Err(self.err(pos, format!("expected a quoted string, found {t}"))),
            None => Err(self.err(
                self.input.len(),
                "expected a quoted string, found the end".into(),
            )),
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect(&Tok::LBrace, "'{'")?;
        let mut set = BTreeSet::new();
        if self.peek() == Some(&Tok::RBrace) {
            self.bump();
            return Ok(set);
        }
        loop {
            set.insert(self.string()?);
            match self.bump() {
                Some((_, Tok::Comma)) => continue,
                Some((_, Tok::RBrace)) => return Ok(set),
                Some((pos, t)) => {
                    return Err(self.err(pos, format!("expected ',' or '}}', found {t}")))
                }
                None => {
                    return Err(self.err(
                        self.input.len(),
                        "expected ',' or '}', found the end".into(),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_operator_evaluates_as_calico() {
        let node = labels(&[("zone", "a"), ("kubernetes.io/os", "linux"), ("rack", "r1")]);
        let cases = [
            ("", true),
            ("  ", true),
            ("all()", true),
            ("has(zone)", true),
            ("has(gpu)", false),
            ("!has(gpu)", true),
            ("zone == 'a'", true),
            ("zone == \"b\"", false),
            ("zone != 'b'", true),
            ("gpu != 'yes'", true), // absent labels are "not equal"
            ("zone in {'a', 'b'}", true),
            ("zone in {}", false),
            ("gpu in {'a'}", false),
            ("zone not in {'b','c'}", true),
            ("gpu not in {'x'}", true),
            ("kubernetes.io/os == 'linux' && zone == 'a'", true),
            ("zone == 'b' || rack == 'r1'", true),
            ("zone == 'b' || rack == 'r2'", false),
            ("!(zone == 'a' && rack == 'r1')", false),
            ("!!has(zone)", true),
            ("has(zone) && (rack == 'r2' || !has(gpu))", true),
            // && binds tighter than ||.
            ("zone == 'a' || zone == 'x' && rack == 'r9'", true),
            ("(zone == 'a' || zone == 'x') && rack == 'r9'", false),
            ("all == 'x'", false), // "all" without () is a key
        ];
        for (s, want) in cases {
            assert_eq!(sel(s).matches(&node), want, "{s}");
        }
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("zone = 'a'", 5, "must be doubled"),
            ("zone == 'a", 8, "not terminated"),
            ("zone == a", 8, "quoted string"),
            ("zone", 4, "found the end"),
            ("has(zone", 8, "')'"),
            ("(zone == 'a'", 12, "')'"),
            ("zone == 'a' zone", 12, "after a complete expression"),
            ("zone in {'a' 'b'}", 13, "',' or '}'"),
            ("zone not {'a'}", 9, "'in' after 'not'"),
            ("&& x", 0, "expected an expression"),
            ("zone == 'a' && ", 15, "found the end"),
            ("zone ~ 'a'", 5, "unexpected character"),
            ("all(x)", 4, "')' after all("),
        ];
        for (s, pos, msg) in cases {
            let e = Selector::parse(s).expect_err(s);
            assert_eq!(e.pos, pos, "{s}: {e}");
            assert!(e.msg.contains(msg), "{s}: {e}");
            assert!(e.to_string().contains(&format!("position {pos}")), "{e}");
        }
        let deep = format!("{}has(a){}", "(".repeat(100), ")".repeat(100));
        assert!(Selector::parse(&deep)
            .expect_err("deep")
            .msg
            .contains("nested"));
        let nots = format!("{}has(a)", "!".repeat(100_000));
        assert!(Selector::parse(&nots).is_err());
    }

    #[test]
    fn display_parses_back_to_the_same_selector() {
        for s in [
            "all()",
            "has(a) && !has(b)",
            "a == \"it's\" || b != 'x'",
            "a in {'x', 'y'} && b not in {}",
            "!(a == 'x' || (b == 'y' && c == 'z'))",
        ] {
            let first = sel(s);
            assert_eq!(sel(&first.to_string()), first, "{s} -> {first}");
        }
    }

    /// Fuzz-style: random strings over the language's alphabet (and some noise) never panic,
    /// and whatever parses prints back to an equivalent selector.
    #[test]
    fn random_input_never_panics() {
        let pieces = [
            "(", ")", "{", "}", ",", "&&", "||", "!", "==", "!=", "&", "|", "=", "'", "\"", " ",
            "all()", "has(", "in", "not", "zone", "a", "'a'", "\"b\"", "é", "\u{0}", "\t", "k/x",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let node = labels(&[("zone", "a"), ("a", "b")]);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let s: String = (0..len)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            if let Ok(selector) = Selector::parse(&s) {
                parsed += 1;
                let again = Selector::parse(&selector.to_string())
                    .unwrap_or_else(|e| panic!("{s:?} printed as {selector}: {e}"));
                assert_eq!(again.matches(&node), selector.matches(&node), "{s:?}");
            }
        }
        assert!(
            parsed > 100,
            "the generator should also produce valid selectors"
        );
    }
}
