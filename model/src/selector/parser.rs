//! Recursive-descent parser for the selector language.
//!
//! Grammar (keywords are contextual, see the module documentation):
//!
//! ```text
//! selector   := <empty> | or EOF
//! or         := and ( "||" and )*
//! and        := unary ( "&&" unary )*
//! unary      := "!"* primary
//! primary    := "(" or ")"
//!             | "has" "(" LABEL ")" | "all" "(" ")" | "global" "(" ")"
//!             | LABEL comparison
//! comparison := "==" STRING | "!=" STRING
//!             | "in" set | "not" "in" set | "notin" set
//!             | "contains" STRING
//!             | "starts" "with" STRING | "startswith" STRING
//!             | "ends" "with" STRING | "endswith" STRING
//! set        := "{" [ STRING ( "," STRING )* ] "}"
//! ```
//!
//! The expression is normalised while it is built (see [`Expr::negate`],
//! [`Expr::and`], [`Expr::or`]), so the tree the parser returns prints
//! directly as the canonical form.

use super::expr::Expr;
use super::lexer::{Lexer, Tok, Token};
use super::{MAX_NESTING_DEPTH, MAX_SELECTOR_LEN};

/// A parse failure: byte offset into the selector text and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParseError {
    pub(super) position: usize,
    pub(super) reason: String,
}

impl ParseError {
    pub(super) fn new(position: usize, reason: String) -> Self {
        ParseError { position, reason }
    }
}

type PResult<T> = Result<T, ParseError>;

/// What precedes an expression, for error messages.
const START: &str = "";
const AFTER_AND: &str = " after `&&`";
const AFTER_OR: &str = " after `||`";
const AFTER_NOT: &str = " after `!`";
const AFTER_PAREN: &str = " after `(`";

/// A label name that Kubernetes would not allow as a label key (see
/// [`crate::names::validate_selector_label_key`]) is an error at its
/// position.
fn label_key(label: &str, at: usize) -> PResult<()> {
    crate::names::validate_selector_label_key(label).map_err(|reason| ParseError::new(at, reason))
}

/// Parses a whole selector. Empty or all-whitespace text is `all()`.
pub(super) fn parse(src: &str) -> PResult<Expr> {
    if src.len() > MAX_SELECTOR_LEN {
        return Err(ParseError::new(
            MAX_SELECTOR_LEN,
            format!(
                "selector is {} bytes long; the limit is {MAX_SELECTOR_LEN} bytes",
                src.len()
            ),
        ));
    }
    let mut p = Parser {
        src,
        lexer: Lexer::new(src),
        peeked: None,
    };
    if p.peek()?.tok == Tok::Eof {
        return Ok(Expr::All);
    }
    let expr = p.parse_or(0, START)?;
    let t = p.next()?;
    match t.tok {
        Tok::Eof => Ok(expr),
        Tok::RParen => Err(ParseError::new(t.start, "unmatched `)`".to_owned())),
        _ => Err(p.unexpected(t, "expected `&&`, `||` or the end of the selector")),
    }
}

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
}

impl<'a> Parser<'a> {
    fn next(&mut self) -> PResult<Token<'a>> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn peek(&mut self) -> PResult<Token<'a>> {
        match self.peeked {
            Some(t) => Ok(t),
            None => {
                let t = self.lexer.next_token()?;
                self.peeked = Some(t);
                Ok(t)
            }
        }
    }

    /// Describes a token for an error message: its text in backticks, or
    /// "the end of the selector".
    fn describe(&self, t: Token<'_>) -> String {
        if t.tok == Tok::Eof {
            return "the end of the selector".to_owned();
        }
        let text = &self.src[t.start..t.end];
        const MAX: usize = 40;
        if text.len() <= MAX {
            format!("`{text}`")
        } else {
            let mut cut = MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("`{}…`", &text[..cut])
        }
    }

    /// "`expected`, found `<token>`" at the token's position.
    fn unexpected(&self, t: Token<'_>, expected: &str) -> ParseError {
        ParseError::new(t.start, format!("{expected}, found {}", self.describe(t)))
    }

    fn deeper(depth: usize, t: Token<'_>) -> PResult<usize> {
        let depth = depth + 1;
        if depth > MAX_NESTING_DEPTH {
            return Err(ParseError::new(
                t.start,
                format!("nesting deeper than {MAX_NESTING_DEPTH} levels of parentheses and `!`"),
            ));
        }
        Ok(depth)
    }

    fn parse_or(&mut self, depth: usize, after: &str) -> PResult<Expr> {
        let first = self.parse_and(depth, after)?;
        if self.peek()?.tok != Tok::Or {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.peek()?.tok == Tok::Or {
            self.next()?;
            items.push(self.parse_and(depth, AFTER_OR)?);
        }
        Ok(Expr::or(items))
    }

    fn parse_and(&mut self, depth: usize, after: &str) -> PResult<Expr> {
        let first = self.parse_unary(depth, after)?;
        if self.peek()?.tok != Tok::And {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.peek()?.tok == Tok::And {
            self.next()?;
            items.push(self.parse_unary(depth, AFTER_AND)?);
        }
        Ok(Expr::and(items))
    }

    fn parse_unary(&mut self, mut depth: usize, mut after: &str) -> PResult<Expr> {
        let mut negate = false;
        while self.peek()?.tok == Tok::Bang {
            let t = self.next()?;
            depth = Self::deeper(depth, t)?;
            negate = !negate;
            after = AFTER_NOT;
        }
        let expr = self.parse_primary(depth, after)?;
        Ok(if negate { expr.negate() } else { expr })
    }

    fn parse_primary(&mut self, depth: usize, after: &str) -> PResult<Expr> {
        let t = self.next()?;
        match t.tok {
            Tok::LParen => {
                let depth = Self::deeper(depth, t)?;
                let expr = self.parse_or(depth, AFTER_PAREN)?;
                let close = self.next()?;
                if close.tok != Tok::RParen {
                    return Err(self.unexpected(
                        close,
                        &format!(
                            "expected `&&`, `||` or `)` to close the `(` at position {}",
                            t.start
                        ),
                    ));
                }
                Ok(expr)
            }
            Tok::Ident(name) if self.peek()?.tok == Tok::LParen => {
                self.next()?;
                match name {
                    "has" => {
                        let token = self.next()?;
                        let Tok::Ident(label) = token.tok else {
                            return Err(self.unexpected(token, "expected a label name in `has(`"));
                        };
                        label_key(label, token.start)?;
                        self.expect_close("to close `has(`")?;
                        Ok(Expr::Has(label.to_owned()))
                    }
                    "all" => {
                        self.expect_close("after `all(`")?;
                        Ok(Expr::All)
                    }
                    "global" => {
                        self.expect_close("after `global(`")?;
                        Ok(Expr::Global)
                    }
                    _ => Err(ParseError::new(
                        t.start,
                        format!(
                            "unknown function `{name}`; expected `has(label)`, `all()` or `global()`"
                        ),
                    )),
                }
            }
            Tok::Ident(label) => {
                label_key(label, t.start)?;
                self.parse_comparison(label)
            }
            _ => Err(self.unexpected(
                t,
                &format!("expected a label, `has(`, `all()`, `global()`, `!` or `(`{after}"),
            )),
        }
    }

    fn expect_close(&mut self, what: &str) -> PResult<()> {
        let t = self.next()?;
        if t.tok == Tok::RParen {
            Ok(())
        } else {
            Err(self.unexpected(t, &format!("expected `)` {what}")))
        }
    }

    /// Parses the operator and operand that follow a label.
    fn parse_comparison(&mut self, label: &str) -> PResult<Expr> {
        let op = self.next()?;
        let l = label.to_owned();
        Ok(match op.tok {
            Tok::Eq => Expr::Eq {
                label: l,
                value: self.expect_string("`==`")?,
            },
            Tok::Ne => Expr::Ne {
                label: l,
                value: self.expect_string("`!=`")?,
            },
            Tok::Ident("in") => Expr::In {
                label: l,
                values: self.parse_set("`in`")?,
            },
            Tok::Ident("notin") => Expr::NotIn {
                label: l,
                values: self.parse_set("`notin`")?,
            },
            Tok::Ident("not") => {
                self.expect_word("in", "`not`")?;
                Expr::NotIn {
                    label: l,
                    values: self.parse_set("`not in`")?,
                }
            }
            Tok::Ident("contains") => Expr::Contains {
                label: l,
                value: self.expect_string("`contains`")?,
            },
            Tok::Ident("startswith") => Expr::StartsWith {
                label: l,
                value: self.expect_string("`startswith`")?,
            },
            Tok::Ident("starts") => {
                self.expect_word("with", "`starts`")?;
                Expr::StartsWith {
                    label: l,
                    value: self.expect_string("`starts with`")?,
                }
            }
            Tok::Ident("endswith") => Expr::EndsWith {
                label: l,
                value: self.expect_string("`endswith`")?,
            },
            Tok::Ident("ends") => {
                self.expect_word("with", "`ends`")?;
                Expr::EndsWith {
                    label: l,
                    value: self.expect_string("`ends with`")?,
                }
            }
            _ => {
                return Err(self.unexpected(
                    op,
                    &format!(
                        "expected an operator (`==`, `!=`, `in`, `not in`, `contains`, \
                         `starts with` or `ends with`) after label `{label}`"
                    ),
                ));
            }
        })
    }

    fn expect_word(&mut self, word: &str, after: &str) -> PResult<()> {
        let t = self.next()?;
        if t.tok == Tok::Ident(word) {
            Ok(())
        } else {
            Err(self.unexpected(t, &format!("expected `{word}` after {after}")))
        }
    }

    fn expect_string(&mut self, after: &str) -> PResult<String> {
        let t = self.next()?;
        match t.tok {
            Tok::Str(s) => Ok(s.to_owned()),
            _ => Err(self.unexpected(t, &format!("expected a quoted string after {after}"))),
        }
    }

    /// Parses `{"a", "b"}`; returns the members sorted and de-duplicated.
    fn parse_set(&mut self, after: &str) -> PResult<Vec<String>> {
        let open = self.next()?;
        if open.tok != Tok::LBrace {
            return Err(self.unexpected(open, &format!("expected `{{` after {after}")));
        }
        let mut values = Vec::new();
        let mut t = self.next()?;
        if t.tok != Tok::RBrace {
            loop {
                let Tok::Str(s) = t.tok else {
                    let expected = if values.is_empty() {
                        "expected a quoted string or `}` in the set"
                    } else {
                        "expected a quoted string after `,` in the set"
                    };
                    return Err(self.unexpected(t, expected));
                };
                values.push(s.to_owned());
                let sep = self.next()?;
                match sep.tok {
                    Tok::Comma => t = self.next()?,
                    Tok::RBrace => break,
                    _ => {
                        return Err(self.unexpected(
                            sep,
                            &format!("expected `,` or `}}` after set member {}", self.describe(t)),
                        ));
                    }
                }
            }
        }
        values.sort_unstable();
        values.dedup();
        Ok(values)
    }
}
