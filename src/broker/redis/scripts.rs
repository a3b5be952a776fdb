//! The Lua scripts the Redis broker runs (the `.lua` files beside this one), with typed
//! arguments and replies. Each runs with EVALSHA and is loaded again if Redis lost it.

use fred::prelude::*;
use fred::types::scripts::Script;

use super::keys::Route;
use super::wire::{stream_entries, Entry};
use crate::history::StreamId;
use crate::idempotency::IdemKey;

/// The scripts that append take their ids from `clock.lua`, prepended.
const PUBLISH: &str = concat!(include_str!("clock.lua"), include_str!("publish.lua"));
const MARK: &str = concat!(include_str!("clock.lua"), include_str!("mark.lua"));
const CHECK: &str = include_str!("check.lua");
const REPLAY: &str = include_str!("replay.lua");

pub struct Scripts {
    publish: Script,
    mark: Script,
    check: Script,
    replay: Script,
    /// `MAXLEN ~` of every stream.
    max_len: i64,
    /// Entries older than this are trimmed (ms; 0 = no age limit).
    max_age_ms: i64,
    idempotency_window_ms: i64,
}

/// One event to append.
pub struct Append<'a> {
    pub route: &'a Route,
    /// The frame without its opening `{"id":"<id>",` (see [`crate::event::Event::frame_tail`]).
    pub frame_tail: &'a str,
    pub eid: &'a str,
    /// The users as a JSON list; `None` for a broadcast or a channel event.
    pub users: Option<&'a str>,
    /// Accepted while Redis was away and delivered locally already.
    pub held: bool,
    /// An earlier append of this event may have happened (its reply was lost): look for it
    /// first.
    pub lookup: Lookup,
    pub key: Option<&'a IdemKey>,
}

/// Whether the publish script first looks for the event among the newest entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    No,
    /// An append whose reply was lost may have happened.
    Yes,
    /// The same, for an event this instance's clients already have under its ULID: if it is
    /// in the stream, a note after it tells resumes that (see `publish.lua`).
    YesDeliveredLocally,
}

/// What the publish script did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    New(StreamId),
    /// The event itself was in the stream already (a [`Lookup`] found it).
    Found(String),
    /// The idempotency key was there already, with this id.
    Duplicate(String),
    /// The idempotency key was used with another body.
    Conflict,
}

/// Where a stream stands (see `check.lua`).
#[derive(Debug)]
pub struct Check {
    pub epoch: String,
    pub newest: Option<StreamId>,
    pub cursor_present: bool,
    pub max_deleted: StreamId,
}

/// One page of one stream's part of a resume (see `replay.lua`).
pub struct ReplayPart {
    /// `since` is an entry of the stream (first page only).
    pub since_present: bool,
    pub max_deleted: StreamId,
    /// An entry of the page was held during an outage, or is a note or a loss marker.
    pub unsure: bool,
    pub entries: Vec<(StreamId, Result<Entry, super::wire::DecodeError>)>,
}

fn parse_error(what: &str, got: impl std::fmt::Debug) -> Error {
    Error::new(ErrorKind::Parse, format!("unexpected {what} script reply {got:?}"))
}

fn id_of(v: &Value) -> Option<StreamId> {
    v.as_str()?.parse().ok()
}

/// A token for a new epoch; only used if the dataset has none.
fn new_epoch() -> String {
    ulid::Ulid::new().to_string()
}

impl Scripts {
    pub fn new(max_len: usize, max_age: std::time::Duration, idempotency_window: std::time::Duration) -> Scripts {
        Scripts {
            publish: Script::from_lua(PUBLISH),
            mark: Script::from_lua(MARK),
            check: Script::from_lua(CHECK),
            replay: Script::from_lua(REPLAY),
            // `MAXLEN ~` trims whole stream nodes (100 entries by default): below that it
            // would trim nothing anyway.
            max_len: max_len.max(100) as i64,
            max_age_ms: max_age.as_millis() as i64,
            idempotency_window_ms: idempotency_window.as_millis() as i64,
        }
    }

    pub async fn append(&self, client: &Client, a: Append<'_>) -> Result<Appended, Error> {
        let r = a.route;
        let idem_key = a.key.map_or_else(|| r.stream.clone(), |k| format!("{}{}", r.idem_prefix, k.scoped));
        let args: Vec<Value> = vec![
            r.topic.as_str().into(),
            (if r.sharded { "SPUBLISH" } else { "PUBLISH" }).into(),
            self.max_len.into(),
            self.max_age_ms.into(),
            a.key.map_or("", |k| k.fingerprint.as_str()).into(),
            self.idempotency_window_ms.into(),
            a.eid.into(),
            (if a.held { "1" } else { "0" }).into(),
            (match a.lookup {
                Lookup::No => "0",
                Lookup::Yes => "1",
                Lookup::YesDeliveredLocally => "2",
            })
            .into(),
            a.users.unwrap_or("").into(),
            a.frame_tail.into(),
            new_epoch().into(),
        ];
        let keys = vec![r.stream.as_str(), idem_key.as_str(), r.clock.as_str(), r.epoch.as_str()];
        let reply: Vec<String> = self.publish.evalsha_with_reload(client, keys, args).await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("new"), Some(id)) => Ok(Appended::New(id.parse().map_err(|()| parse_error("publish", &reply))?)),
            (Some("found"), Some(id)) => Ok(Appended::Found(id.clone())),
            (Some("dup"), Some(id)) => Ok(Appended::Duplicate(id.clone())),
            (Some("conflict"), _) => Ok(Appended::Conflict),
            _ => Err(parse_error("publish", reply)),
        }
    }

    /// Appends a loss marker (see `mark.lua`); `floor`: the newest id known to have been given.
    pub async fn mark(&self, client: &Client, r: &Route, reason: &str, floor: StreamId) -> Result<StreamId, Error> {
        let args: Vec<Value> = vec![
            r.topic.as_str().into(),
            (if r.sharded { "SPUBLISH" } else { "PUBLISH" }).into(),
            reason.into(),
            floor.to_string().into(),
            self.max_len.into(),
            new_epoch().into(),
        ];
        let keys = vec![r.stream.as_str(), r.clock.as_str(), r.epoch.as_str()];
        let id: String = self.mark.evalsha_with_reload(client, keys, args).await?;
        id.parse().map_err(|()| parse_error("mark", id))
    }

    pub async fn check(&self, client: &Client, r: &Route, cursor: Option<StreamId>) -> Result<Check, Error> {
        let args: Vec<Value> = vec![cursor.map(|c| c.to_string()).unwrap_or_default().into(), new_epoch().into()];
        let reply: Vec<Value> =
            self.check.evalsha_with_reload(client, vec![r.stream.as_str(), r.epoch.as_str()], args).await?;
        match reply.as_slice() {
            [epoch, newest, present, deleted] => Ok(Check {
                epoch: epoch.as_string().ok_or_else(|| parse_error("check", &reply))?,
                newest: id_of(newest),
                cursor_present: present.as_i64() == Some(1),
                max_deleted: id_of(deleted).unwrap_or(StreamId::ZERO),
            }),
            _ => Err(parse_error("check", reply)),
        }
    }

    /// One page of a resume: the entries after `from` (`since` itself for the first page), at
    /// most `page` of them.
    pub async fn replay(
        &self,
        client: &Client,
        r: &Route,
        since: StreamId,
        from: StreamId,
        page: usize,
    ) -> Result<ReplayPart, Error> {
        let args: Vec<Value> = vec![since.to_string().into(), from.to_string().into(), (page as i64).into()];
        let mut reply: Vec<Value> = self.replay.evalsha_with_reload(client, vec![r.stream.as_str()], args).await?;
        if reply.len() != 4 {
            return Err(parse_error("replay", reply));
        }
        let entries = stream_entries(reply.pop().unwrap_or(Value::Null));
        Ok(ReplayPart {
            since_present: reply[0].as_i64() == Some(1),
            max_deleted: id_of(&reply[1]).unwrap_or(StreamId::ZERO),
            unsure: reply[2].as_i64() == Some(1),
            entries,
        })
    }
}
