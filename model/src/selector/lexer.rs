//! Tokenizer for the selector language.
//!
//! The lexer knows no keywords: `in`, `has`, `all`, `starts` and friends are
//! ordinary [`Tok::Ident`] tokens, and the parser decides from their position
//! whether they are keywords or label names. Tokens are produced on demand, so
//! the first error in reading order is the one reported.

use super::parser::ParseError;

/// One token kind. Identifiers and strings borrow from the selector text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    /// A run of label-name characters: ASCII letters, digits, `_ . / -`.
    Ident(&'a str),
    /// A quoted string, without its quotes.
    Str(&'a str),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    /// `!`
    Bang,
    /// `&&`
    And,
    /// `||`
    Or,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// End of the selector text.
    Eof,
}

/// A token and the byte range it occupies in the selector text.
#[derive(Clone, Copy, Debug)]
pub(super) struct Token<'a> {
    pub(super) tok: Tok<'a>,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// Whether `b` may appear in a label name.
pub(super) fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

#[derive(Debug)]
pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    /// Produces the next token, skipping leading whitespace.
    pub(super) fn next_token(&mut self) -> Result<Token<'a>, ParseError> {
        let bytes = self.src.as_bytes();
        while bytes.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&b) = bytes.get(start) else {
            return Ok(Token {
                tok: Tok::Eof,
                start,
                end: start,
            });
        };
        let next = bytes.get(start + 1).copied();
        let (tok, len) = match b {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b',' => (Tok::Comma, 1),
            b'!' if next == Some(b'=') => (Tok::Ne, 2),
            b'!' => (Tok::Bang, 1),
            b'=' if next == Some(b'=') => (Tok::Eq, 2),
            b'&' if next == Some(b'&') => (Tok::And, 2),
            b'|' if next == Some(b'|') => (Tok::Or, 2),
            b'=' => return Err(self.bad_char(start, "; equality is written `==`")),
            b'&' => return Err(self.bad_char(start, "; conjunction is written `&&`")),
            b'|' => return Err(self.bad_char(start, "; disjunction is written `||`")),
            b'"' | b'\'' => {
                let body = start + 1;
                let Some(len) = bytes[body..].iter().position(|&c| c == b) else {
                    return Err(ParseError::new(
                        start,
                        format!("unterminated string: no closing `{}`", char::from(b)),
                    ));
                };
                (Tok::Str(&self.src[body..body + len]), len + 2)
            }
            c if is_label_byte(c) => {
                let len = bytes[start..]
                    .iter()
                    .position(|&c| !is_label_byte(c))
                    .unwrap_or(bytes.len() - start);
                (Tok::Ident(&self.src[start..start + len]), len)
            }
            _ => return Err(self.bad_char(start, "")),
        };
        self.pos = start + len;
        Ok(Token {
            tok,
            start,
            end: self.pos,
        })
    }

    fn bad_char(&self, at: usize, hint: &str) -> ParseError {
        let c = self.src[at..].chars().next().unwrap_or('\u{fffd}');
        ParseError::new(
            at,
            format!("unexpected character `{}`{hint}", c.escape_debug()),
        )
    }
}
