//! Error texts shared by every layer: one line each, for people.

/// What a CBOR decoding error says, for people: ciborium's `Display` is its `Debug`
/// (`Semantic(None, "missing field ...")`).
pub fn cbor_error_message<E: std::fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    match e {
        ciborium::de::Error::Io(e) => format!("truncated or unreadable: {e:?}"),
        ciborium::de::Error::Syntax(at) => format!("invalid CBOR at byte {at}"),
        ciborium::de::Error::Semantic(Some(at), msg) => format!("at byte {at}: {msg}"),
        ciborium::de::Error::Semantic(None, msg) => msg.clone(),
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".to_owned(),
    }
}

/// The regex crate's errors draw the pattern with a caret over several lines; keep the last
/// line (what is wrong), so an error message stays one line.
pub fn regex_error_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("invalid regex")
        .trim_start_matches("error: ")
        .to_string()
}

/// An error and its causes in one line, `outer: cause: root`, each said once: many errors
/// quote their cause in their own message (`cannot bind ... : Address already in use`) and
/// also return it as `source()`, and printing the chain as it is (`{:#}`) said it twice.
/// What both binaries print.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !line.contains(&said) {
            line.push_str(": ");
            line.push_str(&said);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind request socket to tcp://127.0.0.1:7400: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start the broker")]
    struct Start(#[source] Bind);

    #[test]
    fn error_line_says_each_cause_once() {
        let e = Start(Bind {
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use"),
        });
        assert_eq!(
            error_line(&e),
            "cannot start the broker: cannot bind request socket to tcp://127.0.0.1:7400: \
             Address already in use"
        );
        // A cause the message does not quote is kept.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot write")]
        struct Write(#[source] std::io::Error);
        let e = Write(std::io::Error::other("disk on fire"));
        assert_eq!(error_line(&e), "cannot write: disk on fire");
    }

    #[test]
    // The invalid pattern is the point: its error is what is tested.
    #[allow(clippy::invalid_regex)]
    fn regex_errors_are_one_line() {
        let e = regex::Regex::new("(unclosed").unwrap_err();
        let line = regex_error_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("unclosed"), "{line}");
    }
}
