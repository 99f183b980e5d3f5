//! The text syntax for tuples and templates, and the `Display` impls that print it.
//!
//! ```text
//! ("job", 42, -7, 3.5, 1e3, "x\n", true, false, null, [1, 2, [3]], h'00ff')   a tuple
//! ("job", ?int, _, 1..10, 0.5..=1.5, /^job-\d+$/, [?str, _])                   a template
//! ```
//!
//! The full grammar is in `docs/TEMPLATES.md`. Printing any [`Value`], [`Tuple`], [`Field`]
//! or [`Template`] with `{}` gives text that parses back to an equal item, so the CLI can
//! show what it stores in the same syntax people type.
//!
//! Errors are [`ParseError`]s that know where they happened; [`ParseError::render`] prints
//! the offending line with a caret under the column:
//!
//! ```text
//! ("job", ?integer)
//!         ^ unknown type `?integer`; expected one of ?int ?float ?str ?bytes ?bool ?array
//! ```

use std::fmt::{self, Write as _};
use std::ops::Bound;
use std::str::FromStr;

use crate::template::{compile_regex, validate_range, Field, Kind, Number, Template};
use crate::value::{ModelError, Tuple, Value};

/// How deeply arrays / nested templates may nest in text (guards the parser's stack).
pub const MAX_DEPTH: usize = 64;

/// A syntax error in a tuple or template literal, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ParseError {
    /// Byte offset of the error in the input.
    pub offset: usize,
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column (in characters) of the error within its line.
    pub column: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl ParseError {
    fn new(input: &str, offset: usize, message: impl Into<String>) -> ParseError {
        let offset = offset.min(input.len());
        let before = input.get(..offset).unwrap_or(input);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        ParseError {
            offset,
            line,
            column,
            message: message.into(),
        }
    }

    fn describe(&self) -> String {
        if self.line > 1 {
            format!(
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        } else {
            format!("column {}: {}", self.column, self.message)
        }
    }

    /// The input line holding the error, and under it a caret at the column followed by the
    /// message:
    ///
    /// ```text
    /// ("job", ?integer)
    ///         ^ unknown type `?integer`; expected one of ?int ?float ?str ?bytes ?bool ?array
    /// ```
    ///
    /// Of a long line only [`RENDER_CONTEXT`] characters either side of the column are shown,
    /// with `…` where it was cut.
    pub fn render(&self, input: &str) -> String {
        let line: Vec<char> = input
            .lines()
            .nth(self.line - 1)
            .unwrap_or("")
            .chars()
            .collect();
        let column = self.column.saturating_sub(1).min(line.len());
        let from = column.saturating_sub(RENDER_CONTEXT);
        let to = (column + RENDER_CONTEXT).min(line.len());
        let (mut shown, mut pad) = (String::new(), String::new());
        if from > 0 {
            shown.push('…');
            pad.push(' ');
        }
        // Tabs keep their width by being copied into the padding.
        for &c in &line[from..column] {
            shown.push(c);
            pad.push(if c == '\t' { '\t' } else { ' ' });
        }
        shown.extend(&line[column..to]);
        if to < line.len() {
            shown.push('…');
        }
        format!("{shown}\n{pad}^ {}", self.message)
    }
}

/// Characters of the input shown either side of an error's column by
/// [`ParseError::render`].
pub const RENDER_CONTEXT: usize = 40;

/// Parses a tuple literal: `("job", 42, [1, 2], h'00ff')`.
pub fn parse_tuple(input: &str) -> Result<Tuple, ParseError> {
    let mut p = Parser::new(input, false);
    let vals = p.top_level(|p| p.value())?;
    Ok(Tuple(vals))
}

/// Parses a template literal: `("job", ?int, _, 1..10, /^a/, [?str, _])`.
pub fn parse_template(input: &str) -> Result<Template, ParseError> {
    let mut p = Parser::new(input, true);
    let fields = p.top_level(|p| p.field())?;
    Ok(Template(fields))
}

/// Parses one value: `42`, `"x"`, `[1, 2]`, `h'00ff'`, `null`.
pub fn parse_value(input: &str) -> Result<Value, ParseError> {
    let mut p = Parser::new(input, false);
    p.ws();
    let v = p.value()?;
    p.ws();
    p.end()?;
    Ok(v)
}

impl FromStr for Tuple {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Tuple, ParseError> {
        parse_tuple(s)
    }
}

impl FromStr for Template {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Template, ParseError> {
        parse_template(s)
    }
}

impl FromStr for Value {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Value, ParseError> {
        parse_value(s)
    }
}

const KINDS_HINT: &str = "expected one of ?int ?float ?str ?bytes ?bool ?array";

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    template: bool,
    depth: usize,
}

/// A number as lexed, before it becomes a value or a range bound.
enum Num {
    Int(i128),
    Float(f64),
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, template: bool) -> Self {
        Parser {
            src,
            pos: 0,
            template,
            depth: 0,
        }
    }

    fn err(&self, at: usize, msg: impl Into<String>) -> ParseError {
        ParseError::new(self.src, at, msg)
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn end(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.err(self.pos, "unexpected trailing input")),
        }
    }

    fn what(&self) -> &'static str {
        if self.template {
            "template"
        } else {
            "tuple"
        }
    }

    fn top_level<T>(
        &mut self,
        item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        self.ws();
        let open = self.pos;
        if !self.eat('(') {
            let msg = match self.peek() {
                None => format!(
                    "empty input: expected a {} like `(\"job\", 42)`",
                    self.what()
                ),
                Some(_) => format!("expected `(` to start a {}", self.what()),
            };
            return Err(self.err(self.pos, msg));
        }
        let items = self.seq(open, ')', item)?;
        self.ws();
        match self.peek() {
            None => Ok(items),
            Some(_) => Err(self.err(
                self.pos,
                format!("unexpected input after the {}'s closing `)`", self.what()),
            )),
        }
    }

    /// Items separated by commas up to `close`; the opener is already consumed at `open`.
    fn seq<T>(
        &mut self,
        open: usize,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(open, format!("nested more than {MAX_DEPTH} levels deep")));
        }
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.eat(close) {
                break;
            }
            if self.peek().is_none() {
                return Err(self.unclosed(open, close));
            }
            items.push(item(self)?);
            self.ws();
            if self.eat(',') {
                continue;
            }
            if self.eat(close) {
                break;
            }
            return Err(match self.peek() {
                None => self.unclosed(open, close),
                Some(c) => self.err(
                    self.pos,
                    format!("unexpected `{c}`: expected `,` or `{close}`"),
                ),
            });
        }
        self.depth -= 1;
        Ok(items)
    }

    fn unclosed(&self, open: usize, close: char) -> ParseError {
        let opener = ParseError::new(self.src, open, "");
        self.err(
            self.pos,
            format!(
                "input ended: expected `{close}` to close the one opened at column {}",
                opener.column
            ),
        )
    }

    fn template_only(&self, at: usize, what: &str) -> ParseError {
        self.err(
            at,
            format!(
                "{what} is template syntax; a tuple literal holds only values \
                 (strings, numbers, true, false, null, [arrays], h'bytes')"
            ),
        )
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        match self.peek() {
            Some('"') => self.string().map(Value::Text),
            Some('h') if self.peek2() == Some('\'') => self.bytes().map(Value::Bytes),
            Some(c @ ('[' | '(')) => {
                self.bump();
                let close = if c == '[' { ']' } else { ')' };
                let items = self.seq(start, close, |p| p.value())?;
                Ok(Value::Array(items))
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let num = self.number()?;
                if self.rest().starts_with("..") || self.rest().starts_with("<..") {
                    return Err(self.template_only(start, "a range"));
                }
                self.num_value(start, num)
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let word = self.word();
                match word {
                    "null" => Ok(Value::Null),
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "nan" => Ok(Value::Float(f64::NAN)),
                    "inf" => Ok(Value::Float(f64::INFINITY)),
                    "_" => Err(self.template_only(start, "the wildcard `_`")),
                    w => Err(self.err(
                        start,
                        format!(
                            "unknown word `{w}`: expected a value (\"text\", a number, \
                             true, false, null, [array], h'bytes')"
                        ),
                    )),
                }
            }
            Some('?') => {
                self.bump();
                let w = self.word();
                Err(self.template_only(start, &format!("the formal `?{w}`")))
            }
            Some('/') => Err(self.template_only(start, "a regex `/.../`")),
            Some('.') if self.rest().starts_with("..") => Err(self.template_only(start, "a range")),
            Some(c) => Err(self.err(start, format!("unexpected `{c}`: expected a value"))),
            None => Err(self.err(start, "input ended: expected a value")),
        }
    }

    fn field(&mut self) -> Result<Field, ParseError> {
        let start = self.pos;
        match self.peek() {
            Some('_')
                if !self
                    .peek2()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_') =>
            {
                self.bump();
                Ok(Field::Any)
            }
            Some('?') => {
                self.bump();
                let w = self.word();
                match Kind::from_name(w) {
                    Some(k) => Ok(Field::Formal(k)),
                    None if w.is_empty() => {
                        Err(self.err(start, format!("`?` needs a type; {KINDS_HINT}")))
                    }
                    None => Err(self.err(start, format!("unknown type `?{w}`; {KINDS_HINT}"))),
                }
            }
            Some('/') => self.regex(),
            Some(c @ ('[' | '(')) => {
                self.bump();
                let close = if c == '[' { ']' } else { ')' };
                let fields = self.seq(start, close, |p| p.field())?;
                Ok(Field::nested(Template(fields)))
            }
            Some('.') if self.rest().starts_with("..") => self.range(start, Bound::Unbounded),
            Some(_) if self.at_number() => {
                let num = self.number()?;
                if self.rest().starts_with("<..") {
                    self.pos += 1;
                    let lo = Bound::Excluded(to_number(num));
                    self.range(start, lo)
                } else if self.rest().starts_with("..") {
                    self.range(start, Bound::Included(to_number(num)))
                } else {
                    self.num_value(start, num).map(Field::Actual)
                }
            }
            _ => self.value().map(Field::Actual),
        }
    }

    /// After the lower bound: `..`, `..=hi`, `..hi`.
    fn range(&mut self, start: usize, lo: Bound<Number>) -> Result<Field, ParseError> {
        // The caller checked that `..` comes next.
        self.pos += 2;
        let inclusive = self.eat('=');
        let hi = if self.at_number() {
            let n = to_number(self.number()?);
            if inclusive {
                Bound::Included(n)
            } else {
                Bound::Excluded(n)
            }
        } else if inclusive {
            return Err(self.err(self.pos, "`..=` needs an upper bound"));
        } else {
            Bound::Unbounded
        };
        if self.rest().starts_with("..") {
            return Err(self.err(self.pos, "a range has one `..`"));
        }
        validate_range(&lo, &hi).map_err(|e| match e {
            ModelError::InvalidRange(m) => self.err(start, m),
            other => self.err(start, other.to_string()),
        })?;
        Ok(Field::Range { lo, hi })
    }

    fn regex(&mut self) -> Result<Field, ParseError> {
        let start = self.pos;
        self.bump();
        let mut pat = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.err(start, "unterminated regex: expected a closing `/`"));
                }
                Some('/') => break,
                Some('\\') => match self.bump() {
                    Some('/') => pat.push('/'),
                    Some(c) => {
                        pat.push('\\');
                        pat.push(c);
                    }
                    None => {
                        return Err(self.err(start, "unterminated regex: expected a closing `/`"));
                    }
                },
                Some(c) => pat.push(c),
            }
        }
        compile_regex(&pat).map(Field::Regex).map_err(|e| {
            let msg = match e {
                ModelError::InvalidRegex { message, .. } => format!("invalid regex: {message}"),
                other => other.to_string(),
            };
            self.err(start, msg)
        })
    }

    /// Whether a number starts here: `-`, a digit, or the word `inf`.
    fn at_number(&self) -> bool {
        let r = self.rest();
        r.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            || r.starts_with("inf")
                && !r[3..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    }

    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        self.src.get(start..self.pos).unwrap_or("")
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Num, ParseError> {
        let start = self.pos;
        let neg = self.eat('-');
        if self.rest().starts_with("inf") {
            self.pos += 3;
            if self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                return Err(self.err(start, "expected a number"));
            }
            return Ok(Num::Float(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }));
        }
        if self.digits() == 0 {
            return Err(self.err(self.pos, "expected digits"));
        }
        let mut float = false;
        if self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            self.digits();
            float = true;
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.pos += 1;
            if !self.eat('+') {
                self.eat('-');
            }
            if self.digits() == 0 {
                return Err(self.err(self.pos, "expected digits in the exponent"));
            }
            float = true;
        }
        if self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return Err(self.err(self.pos, "unexpected character in a number"));
        }
        let text = self.src.get(start..self.pos).unwrap_or("");
        if float {
            text.parse::<f64>()
                .map(Num::Float)
                .map_err(|e| self.err(start, format!("bad float `{text}`: {e}")))
        } else {
            text.parse::<i128>()
                .map(Num::Int)
                .map_err(|_| self.err(start, "integer out of range (must fit i64 or u64)"))
        }
    }

    fn num_value(&self, start: usize, n: Num) -> Result<Value, ParseError> {
        match n {
            Num::Float(f) => Ok(Value::Float(f)),
            Num::Int(i) => Value::from_i128(i)
                .ok_or_else(|| self.err(start, "integer out of range (must fit i64 or u64)")),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(self.err(start, "unterminated string: expected a closing `\"`")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('0') => out.push('\0'),
                    Some('u') => out.push(self.unicode_escape(at)?),
                    Some(c) => {
                        return Err(self.err(
                            at,
                            format!(
                                "unknown escape `\\{c}`; use \\\" \\\\ \\n \\r \\t \\0 or \\u{{..}}"
                            ),
                        ))
                    }
                    None => {
                        return Err(self.err(start, "unterminated string: expected a closing `\"`"))
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn unicode_escape(&mut self, at: usize) -> Result<char, ParseError> {
        let bad = |p: &Self| {
            p.err(
                at,
                "bad unicode escape: expected `\\u{XXXX}` (1-6 hex digits)",
            )
        };
        if !self.eat('{') {
            return Err(bad(self));
        }
        let hs = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.pos += 1;
        }
        let hex = self.src.get(hs..self.pos).unwrap_or("");
        if hex.is_empty() || hex.len() > 6 || !self.eat('}') {
            return Err(bad(self));
        }
        u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.err(at, format!("`\\u{{{hex}}}` is not a unicode scalar value")))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, ParseError> {
        let start = self.pos;
        self.pos += 2; // h'
        let mut out = Vec::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(self.err(start, "unterminated bytes: expected a closing `'`")),
                Some('\'') => return Ok(out),
                Some(c) => {
                    let hi = c.to_digit(16);
                    let lo = self.bump();
                    match (hi, lo.and_then(|c| c.to_digit(16))) {
                        (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                        (None, _) => {
                            return Err(self.err(at, format!("`{c}` is not a hex digit")));
                        }
                        (Some(_), None) if lo == Some('\'') || lo.is_none() => {
                            return Err(self.err(at, "odd number of hex digits in bytes"));
                        }
                        (Some(_), None) => {
                            return Err(self.err(at + 1, "not a hex digit"));
                        }
                    }
                }
            }
        }
    }
}

fn to_number(n: Num) -> Number {
    match n {
        Num::Int(i) => Number::Int(i),
        Num::Float(f) => Number::Float(f),
    }
}

fn write_float(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    if x.is_nan() {
        f.write_str("nan")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        // `{:?}` always shows a float as one (`1.0`, `1e20`) and round-trips exactly.
        write!(f, "{x:?}")
    }
}

fn write_text(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            '\0' => f.write_str("\\0")?,
            c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

fn write_list<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    open: char,
    items: &[T],
    close: char,
) -> fmt::Result {
    f.write_char(open)?;
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{it}")?;
    }
    f.write_char(close)
}

impl fmt::Display for Value {
    /// The text syntax: `42`, `3.5`, `"x\n"`, `h'00ff'`, `[1, 2]`, `null`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write_float(f, *x),
            Value::Text(s) => write_text(f, s),
            Value::Bytes(b) => {
                f.write_str("h'")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_char('\'')
            }
            Value::Array(items) => write_list(f, '[', items, ']'),
        }
    }
}

impl fmt::Display for Tuple {
    /// The text syntax: `("job", 42)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, '(', &self.0, ')')
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => write_float(f, *x),
        }
    }
}

impl fmt::Display for Field {
    /// The text syntax: `42`, `?int`, `_`, `1..=10`, `/^a/`, `[?str, _]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Actual(v) => write!(f, "{v}"),
            Field::Formal(k) => write!(f, "{k}"),
            Field::Any => f.write_char('_'),
            Field::Range { lo, hi } => {
                match lo {
                    Bound::Included(n) => write!(f, "{n}")?,
                    Bound::Excluded(n) => write!(f, "{n}<")?,
                    Bound::Unbounded => {}
                }
                f.write_str("..")?;
                match hi {
                    Bound::Included(n) => write!(f, "={n}"),
                    Bound::Excluded(n) => write!(f, "{n}"),
                    Bound::Unbounded => Ok(()),
                }
            }
            Field::Regex(r) => {
                f.write_char('/')?;
                let mut chars = r.as_str().chars();
                while let Some(c) = chars.next() {
                    match c {
                        '/' => f.write_str("\\/")?,
                        '\\' => match chars.next() {
                            // `\/` and `/` mean the same to the regex engine.
                            Some('/') => f.write_str("\\/")?,
                            Some(n) => {
                                f.write_char('\\')?;
                                f.write_char(n)?;
                            }
                            None => f.write_char('\\')?,
                        },
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('/')
            }
            Field::Nested(t) => write_list(f, '[', &t.0, ']'),
        }
    }
}

impl fmt::Display for Template {
    /// The text syntax: `("job", ?int, _)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, '(', &self.0, ')')
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use Value as V;

    fn tup(s: &str) -> Tuple {
        match parse_tuple(s) {
            Ok(t) => t,
            Err(e) => panic!("{s}: {}", e.render(s)),
        }
    }

    fn tpl(s: &str) -> Template {
        match parse_template(s) {
            Ok(t) => t,
            Err(e) => panic!("{s}: {}", e.render(s)),
        }
    }

    #[test]
    fn parses_the_issue_tuple() {
        let t = tup(r#"("job", 42, -7, 3.5, 1e3, "x\n", true, false, null, [1, 2, [3]], h'00ff')"#);
        assert_eq!(
            t.0,
            vec![
                V::from("job"),
                V::Int(42),
                V::Int(-7),
                V::Float(3.5),
                V::Float(1000.0),
                V::from("x\n"),
                V::Bool(true),
                V::Bool(false),
                V::Null,
                V::Array(vec![V::Int(1), V::Int(2), V::Array(vec![V::Int(3)])]),
                V::Bytes(vec![0, 0xff]),
            ]
        );
    }

    #[test]
    fn tuple_details() {
        assert_eq!(tup("()").0, vec![]);
        assert_eq!(tup("  ( 1 , ) ").0, vec![V::Int(1)]);
        assert_eq!(tup("(18446744073709551615)").0, vec![V::UInt(u64::MAX)]);
        assert_eq!(tup("(-9223372036854775808)").0, vec![V::Int(i64::MIN)]);
        assert_eq!(tup("(1.0)").0, vec![V::Float(1.0)]);
        assert!(matches!(tup("(1.0)").0[0], V::Float(_)));
        assert!(matches!(tup("(1)").0[0], V::Int(_)));
        assert_eq!(
            tup("(-1.5e-3, 2E2)").0,
            vec![V::Float(-0.0015), V::Float(200.0)]
        );
        assert_eq!(tup("(h'')").0, vec![V::Bytes(vec![])]);
        assert_eq!(
            tup("(h'DEADbeef')").0,
            vec![V::Bytes(vec![0xde, 0xad, 0xbe, 0xef])]
        );
        assert_eq!(
            tup("((1, 2))").0,
            vec![V::Array(vec![V::Int(1), V::Int(2)])]
        );
        assert_eq!(
            tup(r#"("\"\\\/\t\r\0\u{1F600}é")"#).0,
            vec![V::from("\"\\/\t\r\0\u{1F600}é")]
        );
        assert_eq!(
            tup("(nan, inf, -inf)").0,
            vec![
                V::Float(f64::NAN),
                V::Float(f64::INFINITY),
                V::Float(f64::NEG_INFINITY)
            ]
        );
        assert_eq!(tup("(\n  \"a\",\n  1\n)").0, vec![V::from("a"), V::Int(1)]);
    }

    #[test]
    fn templates() {
        let t =
            tpl(r#"("job", ?int, _, 1..10, 1..=10, ..5, 3.., 0.5..1.5, /^job-\d+$/, [?int, _])"#);
        assert_eq!(t.0.len(), 10);
        assert_eq!(t.0[0], Field::Actual(V::from("job")));
        assert_eq!(t.0[1], Field::Formal(Kind::Int));
        assert_eq!(t.0[2], Field::Any);
        let rng = |lo, hi| Field::Range { lo, hi };
        use Bound::*;
        assert_eq!(
            t.0[3],
            rng(Included(Number::Int(1)), Excluded(Number::Int(10)))
        );
        assert_eq!(
            t.0[4],
            rng(Included(Number::Int(1)), Included(Number::Int(10)))
        );
        assert_eq!(t.0[5], rng(Unbounded, Excluded(Number::Int(5))));
        assert_eq!(t.0[6], rng(Included(Number::Int(3)), Unbounded));
        assert_eq!(
            t.0[7],
            rng(Included(Number::Float(0.5)), Excluded(Number::Float(1.5)))
        );
        assert!(matches!(&t.0[8], Field::Regex(r) if r.as_str() == r"^job-\d+$"));
        assert_eq!(
            t.0[9],
            Field::Nested(Template(vec![Field::Formal(Kind::Int), Field::Any]))
        );
        assert_eq!(
            tpl("(-5..-1)").0[0],
            rng(Included(Number::Int(-5)), Excluded(Number::Int(-1)))
        );
        assert_eq!(
            tpl("(1<..=2)").0[0],
            rng(Excluded(Number::Int(1)), Included(Number::Int(2)))
        );
        assert_eq!(tpl("(..=5)").0[0], rng(Unbounded, Included(Number::Int(5))));
        assert_eq!(tpl("(..)").0[0], rng(Unbounded, Unbounded));
        assert_eq!(
            tpl("(-inf..0)").0[0],
            rng(
                Included(Number::Float(f64::NEG_INFINITY)),
                Excluded(Number::Int(0))
            )
        );
        assert_eq!(tpl("(?str, ?float, ?bytes, ?bool, ?array)").len(), 5);
        // An all-actual nested list is the actual array (so it indexes like one).
        assert_eq!(
            tpl("([1, 2])").0[0],
            Field::Actual(V::Array(vec![V::Int(1), V::Int(2)]))
        );
        assert_eq!(
            tpl("((?int))").0[0],
            Field::Nested(Template(vec![Field::Formal(Kind::Int)]))
        );
        // Regex with an escaped slash.
        assert!(matches!(&tpl(r"(/a\/b/)").0[0], Field::Regex(r) if r.as_str() == "a/b"));
        assert!(matches!(&tpl(r"(/\d\\/)").0[0], Field::Regex(r) if r.as_str() == r"\d\\"));
        // `_` alone vs words.
        assert_eq!(tpl("(_, null)").0, vec![Field::Any, Field::Actual(V::Null)]);
    }

    #[test]
    fn template_text_matches() {
        let t = tpl(r#"("job", ?int, _)"#);
        assert!(t.matches(&tup(r#"("job", 1, null)"#)));
        assert!(!t.matches(&tup(r#"("job", 1.0, null)"#)));
        assert!(!t.matches(&tup(r#"("job", 1)"#)));
        let t = tpl(r"(/^job-\d+$/, 1..=10, [?str, _])");
        assert!(t.matches(&tup(r#"("job-12", 10, ["a", h'00'])"#)));
        assert!(!t.matches(&tup(r#"("job-12", 11, ["a", h'00'])"#)));
        assert!(!t.matches(&tup(r#"("job-12", 10, ["a"])"#)));
    }

    fn err_of(r: Result<impl fmt::Debug, ParseError>) -> ParseError {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn caret_rendering() {
        let input = r#"("job", ?integer)"#;
        let e = err_of(parse_template(input));
        assert_eq!(e.offset, 8);
        assert_eq!(e.column, 9);
        assert_eq!(
            e.render(input),
            "(\"job\", ?integer)\n        ^ unknown type `?integer`; expected one of ?int \
             ?float ?str ?bytes ?bool ?array"
        );
        assert_eq!(e.to_string(), format!("column 9: {}", e.message));
        // Columns count characters, not bytes.
        let input = r#"("é", ?x)"#;
        let e = err_of(parse_template(input));
        assert_eq!(e.column, 7);
        assert_eq!(e.offset, 7);
        assert_eq!(e.render(input).lines().nth(1).unwrap().find('^'), Some(6));
        // Multi-line input: the line of the error.
        let input = "(1,\n  2,\n  ?nope)";
        let e = err_of(parse_template(input));
        assert_eq!((e.line, e.column), (3, 3));
        assert_eq!(e.render(input), "  ?nope)\n  ^ unknown type `?nope`; expected one of ?int ?float ?str ?bytes ?bool ?array");
        assert!(e.to_string().starts_with("line 3, column 3:"));
        // A long line is shown around the column only.
        let before = format!("({}", "1, ".repeat(10_000));
        let input = format!("{before}?nope)");
        let e = err_of(parse_template(&input));
        let shown = e.render(&input);
        let (line, caret) = shown.split_once('\n').unwrap();
        assert_eq!(
            line,
            format!("…{}?nope)", &before[before.len() - RENDER_CONTEXT..])
        );
        assert_eq!(caret.find('^'), Some(1 + RENDER_CONTEXT));
        // Cut on both sides.
        let input = format!("({} ?x {})", "1, ".repeat(100), ", 2".repeat(100));
        let e = err_of(parse_template(&input));
        let shown = e.render(&input);
        let line = shown.lines().next().unwrap();
        assert!(line.starts_with('…') && line.ends_with('…'), "{line}");
        assert_eq!(line.chars().count(), 2 * RENDER_CONTEXT + 2);
    }

    fn error_at(input: &str, template: bool) -> (usize, String) {
        let e = if template {
            err_of(parse_template(input))
        } else {
            err_of(parse_tuple(input))
        };
        (e.column, e.message)
    }

    #[test]
    fn error_cases() {
        let cases: &[(&str, bool, usize, &str)] = &[
            ("", false, 1, "empty input"),
            ("1, 2", false, 1, "expected `(`"),
            ("(1, 2) x", false, 8, "after the tuple's closing"),
            ("(1, 2))", false, 7, "after the tuple's closing"),
            ("(1, 2", false, 6, "input ended"),
            ("(1 2)", false, 4, "expected `,` or `)`"),
            ("(1, 2]", false, 6, "expected `,` or `)`"),
            ("([1, 2)", false, 7, "expected `,` or `]`"),
            ("(\"abc)", false, 2, "unterminated string"),
            ("(\"a\\q\")", false, 4, "unknown escape"),
            ("(\"\\u{110000}\")", false, 3, "not a unicode scalar"),
            ("(h'0')", false, 4, "odd number"),
            ("(h'0g')", false, 5, "not a hex digit"),
            ("(h'00", false, 2, "unterminated bytes"),
            ("(99999999999999999999)", false, 2, "out of range"),
            ("(-9223372036854775809)", false, 2, "out of range"),
            ("(1e)", false, 4, "exponent"),
            ("(12abc)", false, 4, "unexpected character"),
            ("(nul)", false, 2, "unknown word `nul`"),
            ("(-)", false, 3, "expected digits"),
            // template-only syntax in a tuple literal
            ("(\"job\", ?int)", false, 9, "template syntax"),
            ("(_)", false, 2, "template syntax"),
            ("(1..10)", false, 2, "template syntax"),
            ("(..10)", false, 2, "template syntax"),
            ("(/a/)", false, 2, "template syntax"),
            ("([1, ?str])", false, 6, "template syntax"),
            // template errors
            ("(?)", true, 2, "needs a type"),
            ("(/(/)", true, 2, "invalid regex"),
            ("(/abc)", true, 2, "unterminated regex"),
            ("(10..1)", true, 2, "reversed range"),
            ("(1..1)", true, 2, "empty range"),
            ("(1.5..=1)", true, 2, "reversed range"),
            ("(1..=)", true, 6, "needs an upper bound"),
            ("(1..2..3)", true, 6, "one `..`"),
            ("(nan..1)", true, 5, "expected `,`"),
            ("(?int, ?int", true, 12, "input ended"),
        ];
        for (input, template, col, msg) in cases {
            let (c, m) = error_at(input, *template);
            assert!(m.contains(msg), "{input}: message {m:?} lacks {msg:?}");
            assert_eq!(c, *col, "{input}: column of {m:?}");
        }
    }

    #[test]
    fn depth_is_limited() {
        let deep = format!(
            "({}{})",
            "[".repeat(MAX_DEPTH + 5),
            "]".repeat(MAX_DEPTH + 5)
        );
        assert!(err_of(parse_tuple(&deep))
            .message
            .contains("nested more than"));
        assert!(err_of(parse_template(&deep))
            .message
            .contains("nested more than"));
        let ok = format!(
            "({}{})",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert!(parse_tuple(&ok).is_ok());
    }

    #[test]
    fn display_examples() {
        let t = tup(r#"("job", 42, -7, 3.5, 1e3, "x\n", true, false, null, [1, 2, [3]], h'00ff')"#);
        assert_eq!(
            t.to_string(),
            r#"("job", 42, -7, 3.5, 1000.0, "x\n", true, false, null, [1, 2, [3]], h'00ff')"#
        );
        let s = r#"("job", ?int, _, 1..10, 1..=10, ..5, 3.., 0.5..1.5, 1<..=2, /^job-\d+$/, [?int, _])"#;
        assert_eq!(tpl(s).to_string(), s);
        assert_eq!(tpl(r"(/a\/b/)").to_string(), r"(/a\/b/)");
        assert_eq!(V::Float(1e300).to_string(), "1e300");
        assert_eq!(V::from("\u{7}").to_string(), r#""\u{7}""#);
    }

    /// A small deterministic generator for property tests (no external crates).
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    pub(crate) fn random_value(r: &mut Rng, depth: u32) -> Value {
        let pick = r.below(if depth > 3 { 8 } else { 9 });
        match pick {
            0 => V::Null,
            1 => V::Bool(r.below(2) == 1),
            2 => V::Int(match r.below(4) {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => r.below(100) as i64 - 50,
                _ => r.next() as i64,
            }),
            3 => V::from(u64::MAX - r.below(1000)),
            4 => V::Float(match r.below(6) {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                3 => -0.0,
                4 => (r.below(2000) as f64 - 1000.0) / 8.0,
                _ => f64::from_bits(r.next()),
            }),
            5 => {
                let alphabet = [
                    'a', 'Z', '"', '\\', '\n', '\t', '\u{1}', 'é', '😀', ' ', '/', '\0',
                ];
                let n = r.below(8);
                V::Text(
                    (0..n)
                        .map(|_| alphabet[r.below(alphabet.len() as u64) as usize])
                        .collect(),
                )
            }
            6 => V::Bytes((0..r.below(6)).map(|_| r.next() as u8).collect()),
            7 => V::Text(String::new()),
            _ => V::Array(
                (0..r.below(4))
                    .map(|_| random_value(r, depth + 1))
                    .collect(),
            ),
        }
    }

    #[test]
    fn tuple_display_parse_round_trip() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let t = Tuple((0..r.below(6)).map(|_| random_value(&mut r, 0)).collect());
            let text = t.to_string();
            let back = match parse_tuple(&text) {
                Ok(b) => b,
                Err(e) => panic!("{}", e.render(&text)),
            };
            assert_eq!(back, t, "{text}");
            // Exact variants too (Eq treats Int(5) == UInt(5)).
            assert_eq!(
                format!("{back:?}").replace("NaN", "nan"),
                format!("{t:?}").replace("NaN", "nan")
            );
        }
    }

    fn random_field(r: &mut Rng, depth: u32) -> Field {
        match r.below(if depth > 2 { 6 } else { 7 }) {
            0 => Field::Actual(random_value(r, depth + 1)),
            1 => Field::Formal(Kind::ALL[r.below(6) as usize]),
            2 => Field::Any,
            3 => {
                let a = r.below(100) as i128 - 50;
                let b = a + 1 + r.below(10) as i128;
                let lo = match r.below(3) {
                    0 => Bound::Included(Number::Int(a)),
                    1 => Bound::Excluded(Number::Float(a as f64 + 0.25)),
                    _ => Bound::Unbounded,
                };
                let hi = match r.below(3) {
                    0 => Bound::Included(Number::Int(b)),
                    1 => Bound::Excluded(Number::Float(b as f64 + 0.5)),
                    _ => Bound::Unbounded,
                };
                Field::range(lo, hi).expect("generated ranges are valid")
            }
            4 => {
                let pats = [r"^job-\d+$", "a/b", r"\\", r"x\/?y", "", "é+"];
                let p = pats[r.below(pats.len() as u64) as usize];
                Field::regex(p).expect("valid pattern")
            }
            5 => Field::Actual(V::Int(r.below(10) as i64)),
            _ => {
                let mut fields: Vec<Field> = (0..r.below(3))
                    .map(|_| random_field(r, depth + 1))
                    .collect();
                fields.push(Field::Any);
                Field::Nested(Template(fields))
            }
        }
    }

    #[test]
    fn template_display_parse_round_trip() {
        let mut r = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..2000 {
            let t = Template((0..r.below(5)).map(|_| random_field(&mut r, 0)).collect());
            let text = t.to_string();
            let back = match parse_template(&text) {
                Ok(b) => b,
                Err(e) => panic!("{}", e.render(&text)),
            };
            // Regexes may print `\/` for `/`; compare by text form and behaviour.
            assert_eq!(back.to_string(), text);
            assert_eq!(back.len(), t.len());
        }
    }

    #[test]
    fn value_from_str() {
        assert_eq!("42".parse::<Value>(), Ok(V::Int(42)));
        assert_eq!(
            " [1, \"a\"] ".parse::<Value>(),
            Ok(V::Array(vec![V::Int(1), V::from("a")]))
        );
        assert!("1 2".parse::<Value>().is_err());
        assert_eq!("(1)".parse::<Tuple>(), Ok(Tuple(vec![V::Int(1)])));
        assert_eq!(
            "(?int)".parse::<Template>(),
            Ok(Template(vec![Field::Formal(Kind::Int)]))
        );
    }

    #[test]
    fn mutated_inputs_never_panic_and_round_trip() {
        let seeds = [
            r#"("job", 42, -7, 3.5, 1e3, "x\n", true, null, [1, [3]], h'00ff')"#,
            r#"("job", ?int, _, 1..10, 1<..=2, ..5, /^a\/b$/, [?str, (_, 1)])"#,
        ];
        let alphabet: Vec<char> = "()[],.=<>?_/\\\"'h-+e0123456789 \nabinfé".chars().collect();
        let mut r = Rng(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..4000 {
            let seed = seeds[r.below(2) as usize];
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..1 + r.below(3) {
                let at = r.below(chars.len() as u64 + 1) as usize;
                match r.below(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ => chars.insert(at, alphabet[r.below(alphabet.len() as u64) as usize]),
                }
            }
            let input: String = chars.into_iter().collect();
            match parse_tuple(&input) {
                Ok(t) => assert_eq!(parse_tuple(&t.to_string()).as_ref(), Ok(&t), "{input}"),
                Err(e) => {
                    assert!(e.offset <= input.len());
                    let _ = e.render(&input);
                }
            }
            match parse_template(&input) {
                Ok(t) => {
                    let text = t.to_string();
                    let back = parse_template(&text).map(|b| b.to_string());
                    assert_eq!(back.as_deref(), Ok(text.as_str()), "{input}");
                }
                Err(e) => {
                    assert!(e.offset <= input.len());
                    let _ = e.render(&input);
                }
            }
        }
    }
}
