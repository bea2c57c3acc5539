//! Completion conditions: the aggregation strategies compiled to one monotone boolean tree, and
//! the expression language (`api && (kafka_a || kafka_b)`, `2 of (a, b, c)`).
//!
//! Conditions have no negation, so they are monotone: once satisfied by the received sources,
//! more events never unsatisfy them. That is what makes completion independent of arrival order.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{SourceName, is_reserved_word};
use crate::limits::{MAX_EXPRESSION_BYTES, MAX_EXPRESSION_DEPTH};

/// A monotone condition over the set of satisfied sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// This source has an accepted event.
    Source(SourceName),
    /// Every part holds. `All([])` holds at once.
    All(Vec<Condition>),
    /// Some part holds. `Any([])` never holds.
    Any(Vec<Condition>),
    /// At least `k` parts hold.
    AtLeast {
        /// How many parts must hold.
        k: usize,
        /// The parts.
        of: Vec<Condition>,
    },
}

impl Condition {
    /// Evaluates the condition against the sources that have an accepted event.
    pub fn holds(&self, satisfied: &BTreeSet<SourceName>) -> bool {
        match self {
            Self::Source(name) => satisfied.contains(name),
            Self::All(parts) => parts.iter().all(|p| p.holds(satisfied)),
            Self::Any(parts) => parts.iter().any(|p| p.holds(satisfied)),
            Self::AtLeast { k, of } => of.iter().filter(|p| p.holds(satisfied)).count() >= *k,
        }
    }

    /// Every source the condition mentions, in first-mention order, without repeats.
    pub fn sources(&self) -> Vec<SourceName> {
        let mut out = Vec::new();
        self.collect_sources(&mut out);
        out
    }

    fn collect_sources(&self, out: &mut Vec<SourceName>) {
        match self {
            Self::Source(name) => {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            Self::All(parts) | Self::Any(parts) | Self::AtLeast { of: parts, .. } => {
                parts.iter().for_each(|p| p.collect_sources(out));
            }
        }
    }

    /// Parses the expression language.
    ///
    /// ```text
    /// expr := and (("||" | "or") and)*
    /// and  := atom (("&&" | "and") atom)*
    /// atom := source | "(" expr ")" | N "of" "(" expr ("," expr)* ")"
    /// ```
    ///
    /// At most [`MAX_EXPRESSION_BYTES`] long and [`MAX_EXPRESSION_DEPTH`] parentheses deep, so
    /// no expression can exhaust the stack of the parser or of a later walk over the tree.
    pub fn parse_expression(text: &str) -> Result<Self, String> {
        if text.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "is {} bytes, over the limit of {MAX_EXPRESSION_BYTES} bytes",
                text.len()
            ));
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            len: text.len(),
            depth: 0,
        };
        let condition = parser.or()?;
        match parser.peek() {
            None => Ok(condition),
            Some((at, token)) => Err(format!("at {at}: unexpected {token}")),
        }
    }

    fn fmt_part(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All(parts) | Self::Any(parts) if parts.len() > 1 => write!(f, "({self})"),
            _ => write!(f, "{self}"),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, parts: &[Condition], sep: &str| {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                part.fmt_part(f)?;
            }
            Ok(())
        };
        match self {
            Self::Source(name) => f.write_str(name.as_str()),
            Self::All(parts) if parts.is_empty() => f.write_str("true"),
            Self::Any(parts) if parts.is_empty() => f.write_str("false"),
            Self::All(parts) => join(f, parts, " && "),
            Self::Any(parts) => join(f, parts, " || "),
            Self::AtLeast { k, of } => {
                write!(f, "{k} of (")?;
                for (i, part) in of.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{part}")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number(usize),
    And,
    Or,
    Of,
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ident(name) => write!(f, "source name {name:?}"),
            Self::Number(n) => write!(f, "number {n}"),
            Self::And => f.write_str("'&&'"),
            Self::Or => f.write_str("'||'"),
            Self::Of => f.write_str("'of'"),
            Self::Open => f.write_str("'('"),
            Self::Close => f.write_str("')'"),
            Self::Comma => f.write_str("','"),
        }
    }
}

/// Splits an expression into tokens, each with its byte offset.
fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, String> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Token::Open,
            b')' => Token::Close,
            b',' => Token::Comma,
            b'&' | b'|' => {
                if bytes.get(i + 1) != Some(&c) {
                    return Err(format!("at {start}: expected '{0}{0}'", c as char));
                }
                i += 1;
                if c == b'&' { Token::And } else { Token::Or }
            }
            b'0'..=b'9' => {
                while i + 1 < bytes.len() && bytes[i + 1].is_ascii_digit() {
                    i += 1;
                }
                let digits = &text[start..=i];
                Token::Number(
                    digits
                        .parse()
                        .map_err(|_| format!("at {start}: number {digits} is too large"))?,
                )
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i + 1 < bytes.len()
                    && (bytes[i + 1].is_ascii_alphanumeric() || bytes[i + 1] == b'_')
                {
                    i += 1;
                }
                match &text[start..=i] {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "of" => Token::Of,
                    word => Token::Ident(word.to_owned()),
                }
            }
            b'!' => {
                return Err(format!(
                    "at {start}: negation is not supported (conditions are monotone)"
                ));
            }
            _ => {
                let ch = text[start..].chars().next().unwrap_or('?');
                return Err(format!("at {start}: unexpected character {ch:?}"));
            }
        };
        tokens.push((start, token));
        i += 1;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
    /// How many parentheses the parser is inside.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Token)> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self, wanted: &str) -> Result<(usize, Token), String> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| format!("at {}: expected {wanted}, found the end", self.len))?;
        self.pos += 1;
        Ok(token)
    }

    fn expect(&mut self, want: Token) -> Result<(), String> {
        let (at, token) = self.next(&want.to_string())?;
        if token == want {
            Ok(())
        } else {
            Err(format!("at {at}: expected {want}, found {token}"))
        }
    }

    fn or(&mut self) -> Result<Condition, String> {
        let mut parts = vec![self.and()?];
        while matches!(self.peek(), Some((_, Token::Or))) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::Any(parts)
        })
    }

    fn and(&mut self) -> Result<Condition, String> {
        let mut parts = vec![self.atom()?];
        while matches!(self.peek(), Some((_, Token::And))) {
            self.pos += 1;
            parts.push(self.atom()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::All(parts)
        })
    }

    /// Parses what is inside one more pair of parentheses, refusing to nest past the limit.
    fn nested<T>(
        &mut self,
        at: usize,
        inner: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, String> {
        if self.depth == MAX_EXPRESSION_DEPTH {
            return Err(format!(
                "at {at}: nests deeper than the limit of {MAX_EXPRESSION_DEPTH} parentheses"
            ));
        }
        self.depth += 1;
        let result = inner(self);
        self.depth -= 1;
        result
    }

    fn atom(&mut self) -> Result<Condition, String> {
        let (at, token) = self.next("a source name, '(' or 'N of (...)'")?;
        match token {
            Token::Ident(word) => {
                if is_reserved_word(&word) {
                    return Err(format!("at {at}: {word:?} is a reserved word"));
                }
                SourceName::parse(word)
                    .map(Condition::Source)
                    .map_err(|e| format!("at {at}: {e}"))
            }
            Token::Open => self.nested(at, |p| {
                let inner = p.or()?;
                p.expect(Token::Close)?;
                Ok(inner)
            }),
            Token::Number(k) => {
                self.expect(Token::Of)?;
                self.expect(Token::Open)?;
                let of = self.nested(at, |p| {
                    let mut of = vec![p.or()?];
                    while matches!(p.peek(), Some((_, Token::Comma))) {
                        p.pos += 1;
                        of.push(p.or()?);
                    }
                    p.expect(Token::Close)?;
                    Ok(of)
                })?;
                if k == 0 || k > of.len() {
                    return Err(format!(
                        "at {at}: {k} of {} parts can never be met sensibly (k must be 1..={})",
                        of.len(),
                        of.len()
                    ));
                }
                Ok(Condition::AtLeast { k, of })
            }
            other => Err(format!(
                "at {at}: expected a source name, '(' or 'N of (...)', found {other}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<SourceName> {
        names
            .iter()
            .map(|n| SourceName::parse(*n).unwrap())
            .collect()
    }

    #[test]
    fn parses_precedence_and_round_trips() {
        let c = Condition::parse_expression("api && (kafka_a || kafka_b)").unwrap();
        assert_eq!(c.to_string(), "api && (kafka_a || kafka_b)");
        assert!(!c.holds(&set(&["api"])));
        assert!(c.holds(&set(&["api", "kafka_b"])));
        let c = Condition::parse_expression("a || b and c").unwrap();
        assert_eq!(c.to_string(), "a || (b && c)");
        assert!(c.holds(&set(&["a"])));
        assert!(!c.holds(&set(&["b"])));
        let again = Condition::parse_expression(&c.to_string()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn nesting_to_the_limit_parses_and_round_trips_through_serde() {
        let deepest = format!("{}api{}", "(".repeat(16), ")".repeat(16));
        assert_eq!(
            Condition::parse_expression(&deepest).unwrap(),
            Condition::Source(SourceName::api())
        );
        let deepest = format!("{}api{}", "1 of (".repeat(16), ")".repeat(16));
        let c = Condition::parse_expression(&deepest).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Condition>(&json).unwrap(), c);
    }

    #[test]
    fn k_of_n() {
        let c = Condition::parse_expression("2 of (a, b, c && d)").unwrap();
        assert_eq!(c.to_string(), "2 of (a, b, c && d)");
        assert!(!c.holds(&set(&["a", "c"])));
        assert!(c.holds(&set(&["a", "c", "d"])));
        assert_eq!(
            c.sources(),
            set(&["a", "b", "c", "d"]).into_iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn errors_name_the_position() {
        for (text, want) in [
            ("api &&", "at 6: expected a source name"),
            ("api & kafka", "at 4: expected '&&'"),
            ("(api", "expected ')', found the end"),
            ("api kafka", "at 4: unexpected source name"),
            ("!api", "negation is not supported"),
            ("3 of (a, b)", "k must be 1..=2"),
            ("Api", "at 0: source name: must start with a lowercase"),
            ("a # b", "unexpected character '#'"),
            ("", "expected a source name"),
            (
                format!("{}api{}", "(".repeat(17), ")".repeat(17)).as_str(),
                "at 16: nests deeper than the limit of 16 parentheses",
            ),
            (
                format!("{}api{}", "1 of (".repeat(580), ")".repeat(580)).as_str(),
                "nests deeper than the limit of 16 parentheses",
            ),
            (
                "a || ".repeat(1000).as_str(),
                "over the limit of 4096 bytes",
            ),
        ] {
            let err = Condition::parse_expression(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }
}
