//! tracing-subscriber set-up: text or JSON lines on stderr, filtered by `RUST_LOG`
//! (default `info`). Request URIs are never logged, so tokens in `?token=` stay out of logs.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Ignore the error of a second init (tests and benches may call it twice).
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// A string from outside (a token's `sub`, a path parameter) for a text log line: control
/// characters (newlines, ANSI escapes) are written escaped, so a client cannot forge a line or
/// recolour a terminal; anything else prints as it is. (JSON logs escape on their own.)
pub fn escaped(s: &str) -> Escaped<'_> {
    Escaped(s)
}

pub struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::escaped("alice").to_string(), "alice");
        assert_eq!(super::escaped("a\nINFO forged\u{1b}[31m").to_string(), "a\\nINFO forged\\u{1b}[31m");
        assert_eq!(super::escaped("é ü").to_string(), "é ü");
    }
}
