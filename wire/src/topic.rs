//! Topics and subscription filters.
//!
//! A [`Topic`] is a validated event address made of dot-separated tokens
//! (`sensors.kitchen.temp`). A [`Filter`] selects topics:
//!
//! | filter              | matches                                   | does not match            |
//! |---------------------|-------------------------------------------|---------------------------|
//! | `a.b.c`             | `a.b.c`                                   | `a.b`, `a.b.c.d`, `a.bc`  |
//! | `a.*.c`             | `a.x.c` (`*` is exactly one token)        | `a.c`, `a.x.y.c`          |
//! | `a.>`               | `a.b`, `a.b.c` (`>` is one or more tokens)| `a`                       |
//! | `>`                 | every topic not starting with `$`         | `$sys.stats`              |
//! | `$sys.>`            | `$sys.stats`                              | `sys.stats`               |
//! | `re:^sensors\.`     | `sensors.kitchen.temp`                    | `x.sensors.y`             |
//!
//! # Rules
//!
//! * Topics and token filters are non-empty, at most [`MAX_TOPIC_LEN`] bytes, contain no
//!   whitespace or control characters and no empty tokens (`a..b`, `.a`, `a.` are invalid).
//!   A topic token must not contain `*` or `>`; in a filter, `*` and `>` must be whole
//!   tokens and `>` must be the last one.
//! * Topics whose first character is `$` are the broker's own (`$sys.stats`). A token filter
//!   matches a `$`-topic only if the filter's first token starts with `$` (so `>` and
//!   `*.stats` never see `$sys.stats`, while `$sys.>` does).
//! * A regex filter `re:<pattern>` is matched against the whole topic string with
//!   [`regex::Regex::is_match`] semantics, **as written**: it is not anchored, so
//!   `re:kitchen` matches `sensors.kitchen.temp`; anchor with `^` and `$` yourself.
//!   A regex filter matches `$`-topics only if its pattern starts with `^\$` or `\$`
//!   (i.e. it explicitly names the `$`); otherwise `$`-topics are skipped even if the
//!   pattern would match them.
//!
//! # ZeroMQ prefixes
//!
//! libzmq's SUB filtering is a byte-prefix match, so subscribing to `tx` also delivers
//! `tx_trytes`. [`Filter::literal_prefix`] gives the longest safe prefix for the SUB
//! socket; the client then applies [`Filter::matches`] to every message so the user only
//! ever sees exact token semantics.
//!
//! ```
//! use agora_wire::topic::{Filter, Topic};
//!
//! let f = Filter::new("sensors.*.temp").unwrap();
//! assert!(f.matches("sensors.kitchen.temp"));
//! assert!(!f.matches("sensors.kitchen.humidity"));
//! assert_eq!(f.literal_prefix(), "sensors.");
//! assert!(Topic::new("a..b").is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use regex::{Regex, RegexBuilder};

/// Maximum length of a topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Maximum length of a filter string (including the `re:` prefix of regex filters), in bytes.
pub const MAX_FILTER_LEN: usize = 1024;

/// Prefix that marks a regex filter.
pub const REGEX_PREFIX: &str = "re:";

/// Size limit handed to the regex compiler, so a hostile pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a topic is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is the empty string.
    #[error("empty topic")]
    Empty,
    /// The topic is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Length of the rejected topic in bytes.
        len: usize,
        /// The limit ([`MAX_TOPIC_LEN`]).
        max: usize,
    },
    /// The topic bytes are not valid UTF-8.
    #[error("topic is not valid UTF-8")]
    NotUtf8,
    /// A token is empty (`a..b`, `.a`, `a.`). `position` is 1-based.
    #[error("empty token at position {position} in topic `{topic}`")]
    EmptyToken {
        /// 1-based index of the empty token.
        position: usize,
        /// The rejected topic.
        topic: String,
    },
    /// The topic contains whitespace or a control character.
    #[error("invalid character {ch:?} at byte {index} in topic `{topic}`")]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Byte index of the character.
        index: usize,
        /// The rejected topic.
        topic: String,
    },
    /// A token contains a wildcard character (`*` or `>`), which only filters may use.
    #[error(
        "wildcard `{ch}` in token {position} of topic `{topic}`: topics cannot contain `*` or `>`"
    )]
    Wildcard {
        /// The wildcard character.
        ch: char,
        /// 1-based index of the token.
        position: usize,
        /// The rejected topic.
        topic: String,
    },
}

/// Why a filter is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter is the empty string.
    #[error("empty filter")]
    Empty,
    /// The filter is longer than allowed ([`MAX_TOPIC_LEN`] for token filters,
    /// [`MAX_FILTER_LEN`] for regex filters).
    #[error("filter is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Length of the rejected filter in bytes.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// A token is empty. `position` is 1-based.
    #[error("empty token at position {position} in filter `{filter}`")]
    EmptyToken {
        /// 1-based index of the empty token.
        position: usize,
        /// The rejected filter.
        filter: String,
    },
    /// `>` appears somewhere other than the last token.
    #[error("`>` must be the last token (found at position {position} in filter `{filter}`)")]
    TailNotLast {
        /// 1-based index of the misplaced `>`.
        position: usize,
        /// The rejected filter.
        filter: String,
    },
    /// `*` or `>` is part of a longer token (`a*`, `b>c`).
    #[error("`{ch}` must be a whole token (token {position} `{token}` in filter `{filter}`)")]
    PartialWildcard {
        /// The wildcard character.
        ch: char,
        /// 1-based index of the token.
        position: usize,
        /// The offending token.
        token: String,
        /// The rejected filter.
        filter: String,
    },
    /// The filter contains whitespace or a control character.
    #[error("invalid character {ch:?} at byte {index} in filter `{filter}`")]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Byte index of the character.
        index: usize,
        /// The rejected filter.
        filter: String,
    },
    /// `re:` with nothing after it.
    #[error("empty regex in filter `{filter}`")]
    EmptyRegex {
        /// The rejected filter.
        filter: String,
    },
    /// The regex does not compile.
    #[error("invalid regex in filter `{filter}`: {message}")]
    InvalidRegex {
        /// The rejected filter.
        filter: String,
        /// The regex compiler's message.
        message: String,
    },
}

/// Checks that `bytes` form a valid topic and returns it as `&str` without allocating.
///
/// This is the broker's hot-path check; [`Topic::new`] uses it too. On error the message
/// (which does allocate) says what is wrong.
pub fn validate_topic(bytes: &[u8]) -> Result<&str, TopicError> {
    if bytes.is_empty() {
        return Err(TopicError::Empty);
    }
    if bytes.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong {
            len: bytes.len(),
            max: MAX_TOPIC_LEN,
        });
    }
    let s = std::str::from_utf8(bytes).map_err(|_| TopicError::NotUtf8)?;
    // Fast path: plain ASCII scan, token bookkeeping inline.
    let mut position = 1usize;
    let mut token_len = 0usize;
    for (index, &b) in bytes.iter().enumerate() {
        match b {
            b'.' => {
                if token_len == 0 {
                    return Err(empty_token(s, position));
                }
                position += 1;
                token_len = 0;
            }
            b'*' | b'>' => {
                return Err(TopicError::Wildcard {
                    ch: b as char,
                    position,
                    topic: s.to_owned(),
                })
            }
            0x21..=0x7e => token_len += 1,
            0x80.. => {
                // Part of a multi-byte UTF-8 character: check it only when it starts.
                if b & 0xC0 != 0x80 {
                    // Leading byte: decode the char to reject Unicode whitespace/controls.
                    if let Some(ch) = s[index..].chars().next() {
                        if ch.is_whitespace() || ch.is_control() {
                            return Err(TopicError::InvalidChar {
                                ch,
                                index,
                                topic: s.to_owned(),
                            });
                        }
                    }
                }
                token_len += 1;
            }
            _ => {
                return Err(TopicError::InvalidChar {
                    ch: b as char,
                    index,
                    topic: s.to_owned(),
                })
            }
        }
    }
    if token_len == 0 {
        return Err(empty_token(s, position));
    }
    Ok(s)
}

fn empty_token(topic: &str, position: usize) -> TopicError {
    TopicError::EmptyToken {
        position,
        topic: topic.to_owned(),
    }
}

/// A validated topic: dot-separated, non-empty tokens, at most [`MAX_TOPIC_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Validates and wraps a topic string.
    pub fn new(topic: impl Into<String>) -> Result<Topic, TopicError> {
        let s = topic.into();
        validate_topic(s.as_bytes())?;
        Ok(Topic(s))
    }

    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the broker's own topics (first character `$`).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The topic's tokens, in order.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// Unwraps the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::new(s)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Topic {
    type Error = TopicError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Topic::new(s)
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Topic::new(s)
    }
}

/// One precompiled token of a token filter.
#[derive(Debug, Clone)]
enum Token {
    /// Must equal the topic's token. Stored as a byte range into the filter string.
    Literal { start: usize, end: usize },
    /// `*`: any single token.
    One,
}

#[derive(Debug, Clone)]
enum Kind {
    Tokens {
        tokens: Vec<Token>,
        /// The filter ends with `>` (one or more further tokens).
        tail: bool,
        /// The first token starts with `$`, so the filter may match `$`-topics.
        dollar: bool,
    },
    Regex {
        re: Regex,
        /// The pattern starts with `^\$` or `\$`, so it may match `$`-topics.
        dollar: bool,
    },
}

/// A validated, precompiled subscription filter (literal, `*`, `>` or `re:<regex>`).
///
/// See the [module docs](self) for the exact semantics.
#[derive(Debug, Clone)]
pub struct Filter {
    text: String,
    kind: Kind,
    prefix_len: usize,
}

impl Filter {
    /// Parses and precompiles a filter.
    pub fn new(filter: &str) -> Result<Filter, FilterError> {
        if filter.is_empty() {
            return Err(FilterError::Empty);
        }
        if let Some(pattern) = filter.strip_prefix(REGEX_PREFIX) {
            return Self::new_regex(filter, pattern);
        }
        if filter.len() > MAX_TOPIC_LEN {
            return Err(FilterError::TooLong {
                len: filter.len(),
                max: MAX_TOPIC_LEN,
            });
        }
        if let Some((index, ch)) = filter
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || c.is_control())
        {
            return Err(FilterError::InvalidChar {
                ch,
                index,
                filter: filter.to_owned(),
            });
        }
        let mut tokens = Vec::new();
        let mut tail = false;
        let mut start = 0usize;
        let count = filter.split('.').count();
        for (i, tok) in filter.split('.').enumerate() {
            let position = i + 1;
            let end = start + tok.len();
            if tok.is_empty() {
                return Err(FilterError::EmptyToken {
                    position,
                    filter: filter.to_owned(),
                });
            }
            match tok {
                "*" => tokens.push(Token::One),
                ">" => {
                    if position != count {
                        return Err(FilterError::TailNotLast {
                            position,
                            filter: filter.to_owned(),
                        });
                    }
                    tail = true;
                }
                _ => {
                    if let Some(ch) = tok.chars().find(|c| *c == '*' || *c == '>') {
                        return Err(FilterError::PartialWildcard {
                            ch,
                            position,
                            token: tok.to_owned(),
                            filter: filter.to_owned(),
                        });
                    }
                    tokens.push(Token::Literal { start, end });
                }
            }
            start = end + 1;
        }
        // Literal prefix: leading literal tokens; keep the trailing dot if a wildcard follows.
        let mut prefix_len = 0usize;
        let mut all_literal = true;
        for tok in &tokens {
            match tok {
                Token::Literal { end, .. } => prefix_len = *end,
                Token::One => {
                    all_literal = false;
                    break;
                }
            }
        }
        if (!all_literal || tail) && prefix_len > 0 {
            prefix_len += 1; // include the dot before the first wildcard
        }
        let dollar = filter.starts_with('$');
        Ok(Filter {
            text: filter.to_owned(),
            kind: Kind::Tokens {
                tokens,
                tail,
                dollar,
            },
            prefix_len,
        })
    }

    fn new_regex(filter: &str, pattern: &str) -> Result<Filter, FilterError> {
        if filter.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong {
                len: filter.len(),
                max: MAX_FILTER_LEN,
            });
        }
        if pattern.is_empty() {
            return Err(FilterError::EmptyRegex {
                filter: filter.to_owned(),
            });
        }
        let re = RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| FilterError::InvalidRegex {
                filter: filter.to_owned(),
                message: crate::text::regex_error_line(&e),
            })?;
        let dollar = pattern.starts_with("^\\$") || pattern.starts_with("\\$");
        Ok(Filter {
            text: filter.to_owned(),
            kind: Kind::Regex { re, dollar },
            prefix_len: 0,
        })
    }

    /// True if `topic` is selected by this filter. Never allocates.
    ///
    /// `topic` is assumed to be a valid topic (see [`validate_topic`]); for other input the
    /// answer is well defined (no panic) but unspecified.
    pub fn matches(&self, topic: &str) -> bool {
        let system = topic.starts_with('$');
        match &self.kind {
            Kind::Regex { re, dollar } => (!system || *dollar) && re.is_match(topic),
            Kind::Tokens {
                tokens,
                tail,
                dollar,
            } => {
                if system && !*dollar {
                    return false;
                }
                let mut parts = topic.split('.');
                for tok in tokens {
                    let Some(part) = parts.next() else {
                        return false;
                    };
                    if let Token::Literal { start, end } = tok {
                        if self.text.get(*start..*end) != Some(part) {
                            return false;
                        }
                    }
                }
                if *tail {
                    parts.next().is_some()
                } else {
                    parts.next().is_none()
                }
            }
        }
    }

    /// The longest prefix of literal tokens, for the ZeroMQ SUB subscription.
    ///
    /// Includes the trailing dot when wildcard tokens follow: `sensors.*.temp` gives
    /// `sensors.`, `a.b` gives `a.b`, `>` and regex filters give the empty string (subscribe
    /// to everything and filter client side), `$sys.>` gives `$sys.`.
    pub fn literal_prefix(&self) -> &str {
        self.text.get(..self.prefix_len).unwrap_or("")
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for a filter with no wildcards and no regex: it matches exactly one topic.
    pub fn is_literal(&self) -> bool {
        match &self.kind {
            Kind::Tokens { tokens, tail, .. } => {
                !*tail && tokens.iter().all(|t| matches!(t, Token::Literal { .. }))
            }
            Kind::Regex { .. } => false,
        }
    }

    /// True for a `re:` filter.
    pub fn is_regex(&self) -> bool {
        matches!(self.kind, Kind::Regex { .. })
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Filter {}

impl std::hash::Hash for Filter {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::new(s)
    }
}

impl TryFrom<&str> for Filter {
    type Error = FilterError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Filter::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (filter, topic, expected)
    const CASES: &[(&str, &str, bool)] = &[
        // literals
        ("a", "a", true),
        ("a", "b", false),
        ("a.b.c", "a.b.c", true),
        ("a.b.c", "a.b", false),
        ("a.b", "a.b.c", false),
        ("a.b", "a.bc", false),
        ("a.bc", "a.b", false),
        ("tx", "tx", true),
        ("tx", "tx_trytes", false),
        ("tx", "tx.trytes", false),
        ("tx.>", "tx_trytes.a", false),
        ("sensors", "sensors.kitchen", false),
        // `*`: exactly one token
        ("*", "a", true),
        ("*", "a.b", false),
        ("a.*", "a.b", true),
        ("a.*", "a", false),
        ("a.*", "a.b.c", false),
        ("a.*.c", "a.x.c", true),
        ("a.*.c", "a.c", false),
        ("a.*.c", "a.x.y.c", false),
        ("*.*", "a.b", true),
        ("*.b", "a.b", true),
        ("*.b", "a.c", false),
        ("sensors.*.temp", "sensors.kitchen.temp", true),
        ("sensors.*.temp", "sensors.kitchen.humidity", false),
        // `>`: one or more trailing tokens
        ("a.>", "a.b", true),
        ("a.>", "a.b.c", true),
        ("a.>", "a", false),
        ("a.>", "ab.c", false),
        ("a.>", "b.a.c", false),
        (">", "a", true),
        (">", "a.b.c.d", true),
        ("*.>", "a", false),
        ("*.>", "a.b", true),
        ("a.*.>", "a.b.c", true),
        ("a.*.>", "a.b", false),
        // `$` topics
        ("$sys.>", "$sys.stats", true),
        ("$sys.>", "$sys", false),
        ("$sys.stats", "$sys.stats", true),
        ("$sys.*", "$sys.stats", true),
        ("$sys.>", "sys.stats", false),
        (">", "$sys.stats", false),
        ("*", "$sys", false),
        ("*.stats", "$sys.stats", false),
        ("*.>", "$sys.stats", false),
        ("$space.>", "$space.out.job", true),
        ("$space.>", "$sys.stats", false),
        // regex (unanchored as written, `$` only when named)
        (
            "re:^sensors\\.(kitchen|hall)\\.",
            "sensors.kitchen.temp",
            true,
        ),
        (
            "re:^sensors\\.(kitchen|hall)\\.",
            "sensors.cellar.temp",
            false,
        ),
        ("re:kitchen", "sensors.kitchen.temp", true),
        ("re:^kitchen", "sensors.kitchen.temp", false),
        ("re:^tx$", "tx", true),
        ("re:^tx$", "tx_trytes", false),
        ("re:tx", "tx_trytes", true),
        ("re:.*", "a.b", true),
        ("re:.*", "$sys.stats", false),
        ("re:stats", "$sys.stats", false),
        ("re:^\\$sys\\.", "$sys.stats", true),
        ("re:\\$sys", "$sys.stats", true),
        ("re:^a\\.[0-9]+$", "a.42", true),
        ("re:^a\\.[0-9]+$", "a.42x", false),
    ];

    #[test]
    fn table() {
        assert!(CASES.len() >= 40);
        for (filter, topic, expected) in CASES {
            assert!(
                validate_topic(topic.as_bytes()).is_ok(),
                "test topic `{topic}` must be valid"
            );
            let f = Filter::new(filter).unwrap_or_else(|e| panic!("filter `{filter}`: {e}"));
            assert_eq!(
                f.matches(topic),
                *expected,
                "filter `{filter}` vs topic `{topic}`"
            );
        }
    }

    #[test]
    fn topic_validation() {
        let ok = [
            "a",
            "a.b.c",
            "$sys.stats",
            "sensors.kitchen.temp",
            "x-y_z.1:2",
            "ünï.cödé",
            "a.$b",
        ];
        for t in ok {
            assert!(Topic::new(t).is_ok(), "{t}");
            assert_eq!(validate_topic(t.as_bytes()), Ok(t));
        }
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert!(matches!(
            Topic::new("a..b"),
            Err(TopicError::EmptyToken { position: 2, .. })
        ));
        assert!(matches!(
            Topic::new(".a"),
            Err(TopicError::EmptyToken { position: 1, .. })
        ));
        assert!(matches!(
            Topic::new("a."),
            Err(TopicError::EmptyToken { position: 2, .. })
        ));
        assert!(matches!(
            Topic::new("."),
            Err(TopicError::EmptyToken { position: 1, .. })
        ));
        assert!(matches!(
            Topic::new("a b"),
            Err(TopicError::InvalidChar {
                ch: ' ',
                index: 1,
                ..
            })
        ));
        assert!(matches!(
            Topic::new("a\tb"),
            Err(TopicError::InvalidChar { ch: '\t', .. })
        ));
        assert!(matches!(
            Topic::new("a\u{0}"),
            Err(TopicError::InvalidChar { .. })
        ));
        assert!(matches!(
            Topic::new("a\u{a0}b"),
            Err(TopicError::InvalidChar { ch: '\u{a0}', .. })
        ));
        assert!(matches!(
            Topic::new("a\u{2028}"),
            Err(TopicError::InvalidChar { .. })
        ));
        assert!(matches!(
            Topic::new("a.*"),
            Err(TopicError::Wildcard {
                ch: '*',
                position: 2,
                ..
            })
        ));
        assert!(matches!(
            Topic::new(">"),
            Err(TopicError::Wildcard {
                ch: '>',
                position: 1,
                ..
            })
        ));
        assert!(matches!(
            Topic::new("a.b>c"),
            Err(TopicError::Wildcard { ch: '>', .. })
        ));
        assert_eq!(validate_topic(b"a.\xff"), Err(TopicError::NotUtf8));
        // Length limit is exact.
        let max = "x".repeat(MAX_TOPIC_LEN);
        assert!(Topic::new(max.clone()).is_ok());
        assert_eq!(
            Topic::new(format!("{max}y")),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1,
                max: MAX_TOPIC_LEN
            })
        );
        // Messages say what is wrong.
        let e = Topic::new("a..b").unwrap_err().to_string();
        assert_eq!(e, "empty token at position 2 in topic `a..b`");
    }

    #[test]
    fn topic_api() {
        let t: Topic = "$sys.stats".parse().unwrap();
        assert!(t.is_system());
        assert_eq!(t.to_string(), "$sys.stats");
        assert_eq!(t.tokens().collect::<Vec<_>>(), ["$sys", "stats"]);
        assert!(!Topic::new("a.b").unwrap().is_system());
        assert_eq!(Topic::try_from("a").unwrap().into_string(), "a");
    }

    #[test]
    fn filter_validation() {
        assert_eq!(Filter::new("").unwrap_err(), FilterError::Empty);
        let e = Filter::new("a..b").unwrap_err();
        assert!(matches!(e, FilterError::EmptyToken { position: 2, .. }));
        assert_eq!(e.to_string(), "empty token at position 2 in filter `a..b`");
        assert!(matches!(
            Filter::new(".a"),
            Err(FilterError::EmptyToken { position: 1, .. })
        ));
        assert!(matches!(
            Filter::new("a."),
            Err(FilterError::EmptyToken { position: 2, .. })
        ));
        let e = Filter::new("a.>.b").unwrap_err();
        assert!(matches!(e, FilterError::TailNotLast { position: 2, .. }));
        assert!(e.to_string().contains("`>` must be the last token"));
        assert!(matches!(
            Filter::new(">.a"),
            Err(FilterError::TailNotLast { position: 1, .. })
        ));
        assert!(matches!(
            Filter::new("a*"),
            Err(FilterError::PartialWildcard {
                ch: '*',
                position: 1,
                ..
            })
        ));
        assert!(matches!(
            Filter::new("a.b>"),
            Err(FilterError::PartialWildcard {
                ch: '>',
                position: 2,
                ..
            })
        ));
        assert!(matches!(
            Filter::new("a b"),
            Err(FilterError::InvalidChar { ch: ' ', .. })
        ));
        assert!(matches!(
            Filter::new(&"x".repeat(MAX_TOPIC_LEN + 1)),
            Err(FilterError::TooLong { .. })
        ));
        assert!(matches!(
            Filter::new("re:"),
            Err(FilterError::EmptyRegex { .. })
        ));
        let e = Filter::new("re:(unclosed").unwrap_err();
        assert!(matches!(e, FilterError::InvalidRegex { .. }));
        assert!(e
            .to_string()
            .starts_with("invalid regex in filter `re:(unclosed`"));
        let long = format!("re:{}", "a".repeat(MAX_FILTER_LEN));
        assert!(matches!(
            Filter::new(&long),
            Err(FilterError::TooLong { .. })
        ));
        // A pattern that would compile to a huge automaton is rejected, not a panic/OOM.
        assert!(matches!(
            Filter::new("re:(\\w{100}){100}"),
            Err(FilterError::InvalidRegex { .. })
        ));
    }

    #[test]
    fn literal_prefix() {
        let cases = [
            ("sensors.*.temp", "sensors."),
            ("a.b", "a.b"),
            ("a", "a"),
            ("tx", "tx"),
            ("a.b.>", "a.b."),
            ("a.*", "a."),
            ("*", ""),
            ("*.b", ""),
            (">", ""),
            ("re:^a\\.b", ""),
            ("$sys.>", "$sys."),
            ("$sys.stats", "$sys.stats"),
        ];
        for (f, p) in cases {
            let filter = Filter::new(f).unwrap();
            assert_eq!(filter.literal_prefix(), p, "{f}");
            // Every topic the filter matches starts with its prefix.
            for (cf, topic, expected) in CASES {
                if *cf == f && *expected {
                    assert!(topic.starts_with(p), "{f} / {topic}");
                }
            }
        }
    }

    #[test]
    fn filter_api() {
        let f: Filter = "a.*".parse().unwrap();
        assert_eq!(f.to_string(), "a.*");
        assert_eq!(f.as_str(), "a.*");
        assert!(!f.is_literal());
        assert!(!f.is_regex());
        assert!(Filter::new("a.b").unwrap().is_literal());
        assert!(!Filter::new("a.>").unwrap().is_literal());
        assert!(Filter::new("re:x").unwrap().is_regex());
        assert_eq!(Filter::new("a.b").unwrap(), Filter::new("a.b").unwrap());
    }
}
