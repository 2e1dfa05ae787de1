//! Configuration errors that point at the place in the file: file, line, column, key and what
//! was expected, e.g. `peercam.toml:12:9: [video] width = 641: expected an even number from
//! 160 to 3840`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, no permission, not UTF-8).
    #[error("cannot read config file {}: {source}{}", path.display(), read_hint(source))]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS (or the UTF-8 check) said.
        source: std::io::Error,
    },
    /// The file was read but its contents are wrong; the details say where and why.
    #[error("{0}")]
    Invalid(Box<Invalid>),
}

/// What to do about a file that cannot be read, when there is something to say: the
/// packaged config holds the password, so it is readable by root and the `peercam-config`
/// group only (0640), and a user running `peercam check-config` is refused.
fn read_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            ": run the command with sudo (the packaged /etc/peercam files hold passwords \
             and are readable by root and the peercam-config group only; sudo adduser $USER \
             peercam-config, then log in again, lets you read them)"
        }
        _ => "",
    }
}

/// A problem at one place in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// File name as given to the parser (a path, or a label for in-memory text).
    pub file: String,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// The key concerned, as `[table] key` (or a top-level name), when one is known.
    pub key: Option<String>,
    /// The complete description after the location, naming the key and what was expected.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl ConfigError {
    /// The located problem, if the error is about the contents of a file.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            ConfigError::Invalid(invalid) => Some(invalid),
            ConfigError::Read { .. } => None,
        }
    }
}

/// The text being parsed and its name, used to turn byte spans into located errors.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub text: &'a str,
    pub file: &'a str,
}

/// Longest piece of the offending value quoted back in a message.
const MAX_QUOTED_VALUE: usize = 60;

impl<'a> Source<'a> {
    /// An error at byte `span` with a full message (already naming the key).
    pub fn error(&self, span: Range<usize>, key: Option<String>, message: String) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid(Box::new(Invalid {
            file: self.file.to_owned(),
            line,
            column,
            key,
            message,
        }))
    }

    /// A value error: `{key} = {value as written}: {expected}`.
    pub fn bad_value(&self, span: Range<usize>, key: &str, expected: &str) -> ConfigError {
        let written = self.quote(span.clone());
        self.error(
            span,
            Some(key.to_owned()),
            format!("{key} = {written}: {expected}"),
        )
    }

    /// The value as written in the file (shortened when long).
    pub fn quote(&self, span: Range<usize>) -> String {
        let written = self.text.get(span).unwrap_or("").trim();
        let mut quoted: String = written.chars().take(MAX_QUOTED_VALUE).collect();
        if quoted.len() < written.len() {
            quoted.push_str("...");
        }
        // Multi-line values (arrays, inline tables) read better on one line.
        quoted.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_file_says_to_use_sudo() {
        let denied = ConfigError::Read {
            path: PathBuf::from("/etc/peercam/peercam.toml"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            denied.to_string(),
            "cannot read config file /etc/peercam/peercam.toml: permission denied: run the \
             command with sudo (the packaged /etc/peercam files hold passwords and are \
             readable by root and the peercam-config group only; sudo adduser $USER \
             peercam-config, then log in again, lets you read them)"
        );
        let missing = ConfigError::Read {
            path: PathBuf::from("/nowhere.toml"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            missing.to_string(),
            "cannot read config file /nowhere.toml: entity not found"
        );
    }

    #[test]
    fn line_column_counts_from_one_in_characters() {
        let text = "a = 1\n[vidéo]\nwidth = 3\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        let width = text.find("width").expect("width in text");
        assert_eq!(line_column(text, width), (3, 1));
        let bracket = text.find(']').expect("] in text");
        // "é" is two bytes but one column.
        assert_eq!(line_column(text, bracket), (2, 7));
        assert_eq!(line_column(text, text.len() + 10), (4, 1));
    }

    #[test]
    fn bad_value_quotes_the_value_on_one_line() {
        let text = "[video]\ncodecs = [\n  \"h265\",\n]\n";
        let src = Source {
            text,
            file: "x.toml",
        };
        let start = text.find("[\n").expect("array start");
        let end = text.rfind(']').expect("end") + 1;
        let err = src.bad_value(start..end, "[video] codecs", "expected h264 or av1");
        assert_eq!(
            err.to_string(),
            "x.toml:2:10: [video] codecs = [ \"h265\", ]: expected h264 or av1"
        );
        assert_eq!(
            err.invalid().and_then(|i| i.key.clone()).as_deref(),
            Some("[video] codecs")
        );
    }
}
