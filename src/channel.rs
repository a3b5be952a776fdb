//! Channels: names, who may join them, and why a subscription is refused.
//!
//! A connection joins channels (`subscribe` messages or `channels=` at connect); an event
//! published with `"channel"` reaches that channel's subscribers on every instance. Who may
//! join comes from the user's token alone: its `channels` claim lists exact names and prefix
//! patterns (`team:*`), and `user:<sub>` is always allowed.

use serde::Serialize;

/// Longest channel name, in characters (all ASCII, so bytes too).
pub const MAX_NAME: usize = 200;

/// Why a subscription was refused: the `error` of the error frame, and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    Forbidden,
    InvalidChannel,
    TooManyChannels,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Forbidden, Refusal::InvalidChannel, Refusal::TooManyChannels];

    pub fn code(self) -> &'static str {
        match self {
            Refusal::Forbidden => "forbidden",
            Refusal::InvalidChannel => "invalid_channel",
            Refusal::TooManyChannels => "too_many_channels",
        }
    }

    pub fn message(self, max_channels: usize) -> String {
        match self {
            Refusal::Forbidden => "the token does not allow this channel".into(),
            Refusal::InvalidChannel => format!("channel names are 1 to {MAX_NAME} characters of A-Z a-z 0-9 : _ - . @"),
            Refusal::TooManyChannels => format!("at most {max_channels} channels per connection"),
        }
    }
}

/// 1 to 200 characters of `A-Z a-z 0-9 : _ - . @`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-' | b'.' | b'@'))
}

/// Whether a user with these grants (the token's `channels` claim) may join `name`.
pub fn allowed(user: &str, grants: &[String], name: &str) -> bool {
    if name.strip_prefix("user:") == Some(user) {
        return true;
    }
    grants.iter().any(|g| match g.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => g == name,
    })
}

/// Checks a subscription request.
pub fn check(user: &str, grants: &[String], name: &str) -> Result<(), Refusal> {
    if !valid_name(name) {
        return Err(Refusal::InvalidChannel);
    }
    if !allowed(user, grants, name) {
        return Err(Refusal::Forbidden);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("project:42"));
        assert!(valid_name("a.b-c_d@e:F9"));
        assert!(valid_name(&"x".repeat(200)));
        for bad in ["", "a b", "a/b", "é", "a*", "{a}", &"x".repeat(201)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn grants() {
        let g = vec!["team:*".to_string(), "news".to_string()];
        assert_eq!(check("alice", &g, "user:alice"), Ok(()));
        assert_eq!(check("alice", &g, "user:bob"), Err(Refusal::Forbidden));
        assert_eq!(check("alice", &g, "team:1"), Ok(()));
        assert_eq!(check("alice", &g, "team:x:y"), Ok(()));
        assert_eq!(check("alice", &g, "news"), Ok(()));
        assert_eq!(check("alice", &g, "news:1"), Err(Refusal::Forbidden));
        assert_eq!(check("alice", &g, "teams"), Err(Refusal::Forbidden));
        assert_eq!(check("alice", &[], "team:1"), Err(Refusal::Forbidden));
        assert_eq!(check("alice", &["*".into()], "anything"), Ok(()));
        assert_eq!(check("alice", &g, "bad name"), Err(Refusal::InvalidChannel));
    }
}
