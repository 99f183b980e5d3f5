//! When written data is forced to disk: the one [`FsyncPolicy`] of the event log and the
//! space's write-ahead log, and how it is written on the command line.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When written data is forced to disk: one policy for the event log and the space's WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every commit, as soon as possible (no waiting between syncs).
    Always,
    /// Group commit: at most one fsync per interval, covering everything flushed.
    Every(Duration),
    /// Never fsync (the OS writes back when it likes). Fastest; a power loss may lose data.
    Never,
}

impl FsyncPolicy {
    /// Minimum time between two syncs, or `None` for [`FsyncPolicy::Never`].
    pub fn interval(&self) -> Option<Duration> {
        match self {
            FsyncPolicy::Always => Some(Duration::ZERO),
            FsyncPolicy::Every(d) => Some(*d),
            FsyncPolicy::Never => None,
        }
    }
}

impl Default for FsyncPolicy {
    /// `every 5ms`.
    fn default() -> Self {
        FsyncPolicy::Every(Duration::from_millis(5))
    }
}

/// Error parsing a [`FsyncPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync policy `{0}`: expected `always`, `never` or `every <duration>` (e.g. `every 5ms`)")]
pub struct ParseFsyncPolicyError(pub String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    /// Parses `always`, `never`, `every 5ms`, `every 1s`, `every 5` (milliseconds), and the
    /// same without `every` (`5ms`). An interval of zero is `always`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFsyncPolicyError(s.to_owned());
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        match lower.as_str() {
            "always" => return Ok(FsyncPolicy::Always),
            "never" => return Ok(FsyncPolicy::Never),
            _ => {}
        }
        let rest = lower
            .strip_prefix("every")
            .map(|r| r.trim_start_matches([' ', ':', '=']))
            .unwrap_or(&lower)
            .trim();
        if rest.is_empty() {
            return Err(err());
        }
        let d = match rest.parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => humantime::parse_duration(rest).map_err(|_| err())?,
        };
        if d.is_zero() {
            return Ok(FsyncPolicy::Always);
        }
        Ok(FsyncPolicy::Every(d))
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_policy() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!(" never ".parse(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "every 5ms".parse(),
            Ok(FsyncPolicy::Every(Duration::from_millis(5)))
        );
        assert_eq!(
            "every 1s".parse(),
            Ok(FsyncPolicy::Every(Duration::from_secs(1)))
        );
        assert_eq!(
            "every 20".parse(),
            Ok(FsyncPolicy::Every(Duration::from_millis(20)))
        );
        assert!("every".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
        assert!("every lots".parse::<FsyncPolicy>().is_err());
        // Both earlier parsers' forms: a bare duration, a colon, zero meaning always.
        assert_eq!(
            "5ms".parse(),
            Ok(FsyncPolicy::Every(Duration::from_millis(5)))
        );
        assert_eq!(
            "every:2s".parse(),
            Ok(FsyncPolicy::Every(Duration::from_secs(2)))
        );
        assert_eq!("2s".parse(), Ok(FsyncPolicy::Every(Duration::from_secs(2))));
        assert_eq!("every 0ms".parse(), Ok(FsyncPolicy::Always));
        assert_eq!(
            "EVERY 5ms".parse(),
            Ok(FsyncPolicy::Every(Duration::from_millis(5)))
        );
        let p = FsyncPolicy::Every(Duration::from_millis(5));
        assert_eq!(p.to_string().parse(), Ok(p));
        assert_eq!(FsyncPolicy::default(), p);
    }
}
