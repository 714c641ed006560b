//! The one place a request meets the hub.
//!
//! Both protocols parse their input into a [`Request`] (see
//! [`crate::proto::request`]); [`Dispatcher::dispatch`] runs it against the
//! hub and answers with a format-neutral [`Reply`], which the text and JSON
//! sessions only encode. What a request means (which checks it passes, which
//! hub method it calls) is decided here and nowhere else.
//!
//! Not here: framing, the text protocol's local commands (`/help`, usage
//! errors, its one current room), JSON's request ids, acks and pings, and
//! writing anything: replies are returned, and room traffic goes through
//! the hub to the outboxes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use futures::future::BoxFuture;

use crate::event::{ChatLine, LeaveReason};
use crate::names::{Nick, RoomName};
use crate::proto::json::{truncate, BanInfo};
use crate::proto::request::Request;
use crate::proto::sanitize;
use crate::server::access::MAX_ATTEMPTS;
use crate::server::bans::{self, Ban, Cidr};
use crate::server::hub::{HistoryPage, Hub, HubError, Joined, MemberId, Posted, Seated};
use crate::server::outbox::Outgoing;

use super::link::Link;
use crate::server::cluster::members;

/// A request's answer, in no wire format.
#[derive(Debug)]
pub(super) enum Reply {
    /// Where each posted line was placed (one per line of the `Say`).
    Posted(Vec<Posted>),
    /// A private message was delivered.
    Sent,
    Joined(Joined),
    Parted,
    /// The nick was changed (the rooms are told by the hub).
    Renamed,
    Rooms(Vec<(RoomName, usize)>),
    Who(RoomName, Vec<Nick>),
    History(HistoryPage),
    Pong(String),
    /// Nothing to answer.
    Nothing,
    /// The client asked to leave; the session says goodbye and leaves.
    Quit(Option<Arc<str>>),
    /// The session's turn to leave has come (`leave_rate`): it leaves now,
    /// for this reason. Made by the session itself, never by a request.
    Going(LeaveReason),
    /// Done; the text says what happened (operator actions).
    Done(String),
    /// The bans in force.
    Bans(Vec<Ban>),
    /// The session must end: the text says why (too many wrong tokens).
    Close(String),
    Failed(Failure),
}

/// Why a request was refused. The text is shown to users as-is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    Hub(HubError),
    /// Chat text with nothing in it.
    EmptyText,
    /// Chat text over the limit, in bytes.
    TooLong(usize),
    /// A wrong (or no) operator token.
    AuthFailed(String),
    /// An argument that cannot be used; the text says why.
    Invalid(String),
    /// The cluster could not be reached; nothing happened.
    Unavailable(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Hub(e) => e.fmt(f),
            Failure::EmptyText => f.write_str("empty message"),
            Failure::TooLong(max) => write!(f, "message longer than {max} bytes"),
            Failure::AuthFailed(why) | Failure::Invalid(why) | Failure::Unavailable(why) => {
                f.write_str(why)
            }
        }
    }
}

impl From<HubError> for Failure {
    fn from(e: HubError) -> Self {
        Failure::Hub(e)
    }
}

impl<T: Into<Reply>> From<Result<T, HubError>> for Reply {
    fn from(result: Result<T, HubError>) -> Self {
        match result {
            Ok(reply) => reply.into(),
            Err(e) => Reply::Failed(Failure::Hub(e)),
        }
    }
}

impl From<Joined> for Reply {
    fn from(joined: Joined) -> Self {
        Reply::Joined(joined)
    }
}

/// What the rooms are told when a session ends on a [`Reply::Close`].
pub(super) const CLOSED_FOR: &str = "too many wrong operator tokens";

/// A ban as both protocols show it.
pub(super) fn ban_info(ban: &Ban) -> BanInfo {
    BanInfo {
        target: ban.target.to_string(),
        reason: ban.reason.clone(),
        until: ban.until_ms,
        by: ban.by.clone(),
    }
}

/// When a reply is ready.
pub(super) enum Outcome {
    Now(Reply),
    /// Finish before the next request is run: later requests depend on it
    /// (a join that first reads the room from the store).
    Wait(BoxFuture<'static, Reply>),
    /// Answer in order when ready; later requests need not wait (a history
    /// page).
    Later(BoxFuture<'static, Reply>),
}

/// Runs one member's requests against the hub. Made for each request from
/// the session's own fields, so it costs nothing to keep.
pub(super) struct Dispatcher<'a> {
    pub(super) id: MemberId,
    pub(super) hub: &'a Arc<Hub>,
    /// Longest chat text accepted, in bytes.
    max_text: usize,
    /// The protocol's confirmation of a join, queued by the hub before any
    /// traffic of the room can reach the joiner.
    confirm: fn(&Seated<'_>) -> Outgoing,
    /// The cluster, when this node is part of one: chat and nicks go
    /// through it.
    link: Option<&'a Arc<Link>>,
}

impl<'a> Dispatcher<'a> {
    pub(super) fn new(
        id: MemberId,
        hub: &'a Arc<Hub>,
        max_text: usize,
        confirm: fn(&Seated<'_>) -> Outgoing,
        link: Option<&'a Arc<Link>>,
    ) -> Dispatcher<'a> {
        Dispatcher {
            id,
            hub,
            max_text,
            confirm,
            link,
        }
    }

    pub(super) fn dispatch(&self, request: Request) -> Outcome {
        let reply = match request {
            Request::Say { room, mut lines } => {
                if let Err(e) = self.clean_lines(&mut lines) {
                    return Outcome::Now(Reply::Failed(e));
                }
                if let Some(link) = self.link {
                    return self.say_in_cluster(link, &room, lines);
                }
                match lines.as_slice() {
                    [] => Reply::Posted(Vec::new()),
                    [one] => self
                        .hub
                        .say(self.id, &room, &one.text, one.action)
                        .map(|p| Reply::Posted(vec![p]))
                        .into(),
                    many => self
                        .hub
                        .say_many(self.id, &room, many)
                        .map(Reply::Posted)
                        .into(),
                }
            }
            Request::Msg { to, text } => match self.clean_text(&text) {
                Ok(text) => match self.link {
                    Some(link) if !self.hub.is_here(&to) => {
                        return self.private_in_cluster(link, to, text)
                    }
                    _ => self
                        .hub
                        .private(self.id, &to, &text)
                        .map(|_| Reply::Sent)
                        .into(),
                },
                Err(e) => Reply::Failed(e),
            },
            Request::Join { room, leaving } => {
                if let Some(link) = self.link {
                    return self.join_in_cluster(link, room, leaving);
                }
                if self.hub.needs_prepare(&room) {
                    let (hub, id, confirm) = (self.hub.clone(), self.id, self.confirm);
                    return Outcome::Wait(Box::pin(async move {
                        let seed = hub.prepare_join(&room).await;
                        match leaving {
                            Some(old) => hub.switch_seeded(id, &old, &room, seed, confirm),
                            None => hub.join_seeded(id, &room, seed, confirm),
                        }
                        .into()
                    }));
                }
                match leaving {
                    Some(old) => self.hub.switch(self.id, &old, &room, self.confirm),
                    None => self.hub.join(self.id, &room, self.confirm),
                }
                .into()
            }
            Request::Part { room } => self.hub.part(self.id, &room).map(|()| Reply::Parted).into(),
            Request::Nick { nick } => match self.link {
                Some(link) => return self.rename_in_cluster(link, nick),
                None => self
                    .hub
                    .rename(self.id, &nick)
                    .map(|_| Reply::Renamed)
                    .into(),
            },
            Request::Rooms => match self.link {
                Some(link) => {
                    let link = link.clone();
                    return Outcome::Wait(Box::pin(async move {
                        match members::rooms(&link.cluster).await {
                            Ok(rooms) => Reply::Rooms(rooms),
                            Err(e) => Reply::Failed(Failure::Unavailable(format!(
                                "cannot list the rooms: {e}"
                            ))),
                        }
                    }));
                }
                None => Reply::Rooms(self.hub.rooms()),
            },
            Request::Who { room } => match self.link {
                Some(link) => return self.who_in_cluster(link, room),
                None => self
                    .hub
                    .who(&room)
                    .map(|(room, members)| Reply::Who(room, members))
                    .into(),
            },
            Request::History {
                room,
                before,
                limit,
            } => {
                let (hub, id) = (self.hub.clone(), self.id);
                return Outcome::Later(Box::pin(async move {
                    hub.read_history(id, &room, before, limit)
                        .await
                        .map(Reply::History)
                        .into()
                }));
            }
            Request::Ping { token } => Reply::Pong(token),
            Request::Pong => Reply::Nothing,
            Request::Quit { reason } => {
                let reason = reason
                    .map(|r| truncate(&sanitize::clean(&r), self.max_text).to_string())
                    .filter(|r| !r.trim().is_empty());
                Reply::Quit(reason.map(Into::into))
            }
            Request::Oper { token } => self.oper(&token.0),
            Request::Kick { nick, reason } => {
                let reason = self.reason(reason);
                self.hub
                    .kick(self.id, &nick, reason.as_deref())
                    .map(|nick| Reply::Done(format!("{nick} was kicked")))
                    .into()
            }
            Request::Ban {
                target,
                duration,
                reason,
            } => self.ban(&target, duration, self.reason(reason)),
            Request::Unban { target } => self.unban(&target),
            Request::Bans => match self.hub.check_operator(self.id) {
                Ok(_) => Reply::Bans(self.hub.bans().list()),
                Err(e) => Reply::Failed(Failure::Hub(e)),
            },
        };
        Outcome::Now(reply)
    }

    /// Chat in a cluster: placed in the room's order by Redis, one line
    /// after another; the node's reader then tells the members here, and
    /// the other nodes' readers theirs. Nothing is told until Redis has
    /// placed the line, so a line that fails reaches no one.
    fn say_in_cluster(&self, link: &Arc<Link>, room: &str, lines: Vec<ChatLine>) -> Outcome {
        let (from, room) = match self.hub.speaker_of(self.id, room) {
            Ok(found) => found,
            Err(e) => return Outcome::Now(Reply::Failed(Failure::Hub(e))),
        };
        let (link, id) = (link.clone(), self.id);
        Outcome::Wait(Box::pin(async move {
            let mut posted = Vec::with_capacity(lines.len());
            for line in &lines {
                match link
                    .cluster
                    .append(&room, &from, &line.text, line.action, id)
                    .await
                {
                    Ok(placed) => posted.push(Posted {
                        room: room.clone(),
                        seq: placed.seq,
                        ts_ms: placed.ts_ms,
                        stored: None,
                    }),
                    Err(e) => {
                        return Reply::Failed(Failure::Unavailable(format!(
                            "the message was not sent: {e}"
                        )))
                    }
                }
            }
            Reply::Posted(posted)
        }))
    }

    /// A private message to a nick not on this node: to the node that
    /// holds it, through that node's inbox.
    fn private_in_cluster(&self, link: &Arc<Link>, to: String, text: String) -> Outcome {
        let from = match self.hub.nick(self.id) {
            Ok(from) => from,
            Err(e) => return Outcome::Now(Reply::Failed(Failure::Hub(e))),
        };
        let link = link.clone();
        Outcome::Wait(Box::pin(async move {
            match link.cluster.send_private(&from, &to, &text).await {
                Ok(true) => Reply::Sent,
                Ok(false) => Reply::Failed(Failure::Hub(HubError::NoSuchNick(to))),
                Err(e) => Reply::Failed(Failure::Unavailable(format!(
                    "the message was not sent: {e}"
                ))),
            }
        }))
    }

    /// A join on a cluster node: as anywhere, but the joiner's confirmation
    /// lists the room's members on every node.
    fn join_in_cluster(&self, link: &Arc<Link>, room: String, leaving: Option<String>) -> Outcome {
        let (hub, id, confirm, link) = (self.hub.clone(), self.id, self.confirm, link.clone());
        Outcome::Wait(Box::pin(async move {
            // A room new here starts its mirror of the other nodes'
            // members from Redis; a live one keeps its own. Best effort:
            // without the list, the room lists this node's members until
            // others join.
            let seed = hub.prepare_join(&room).await;
            let seed = match seed {
                Some(seed) => {
                    match members::elsewhere(&link.cluster, &crate::names::key_of(&room)).await {
                        Ok((others, from)) => Some(seed.with_remote(from, others)),
                        Err(_) => Some(seed),
                    }
                }
                None => None,
            };
            match leaving {
                Some(old) => hub.switch_seeded(id, &old, &room, seed, confirm),
                None => hub.join_seeded(id, &room, seed, confirm),
            }
            .into()
        }))
    }

    /// The members of a room on every node of the cluster.
    fn who_in_cluster(&self, link: &Arc<Link>, room: String) -> Outcome {
        let (hub, link) = (self.hub.clone(), link.clone());
        Outcome::Wait(Box::pin(async move {
            // A room live here has its members on other nodes mirrored in
            // the hub, in step with the notices its members were told.
            if let Ok((name, nicks)) = hub.who(&room) {
                return Reply::Who(name, nicks);
            }
            let name = match hub.room_name(&room) {
                Some(name) => name,
                None => match RoomName::parse(&room) {
                    Ok(name) => name,
                    Err(e) => return Reply::Failed(Failure::Hub(e.into())),
                },
            };
            match members::who(&link.cluster, &name.key()).await {
                Ok(nicks) if nicks.is_empty() => {
                    Reply::Failed(Failure::Hub(HubError::NoSuchRoom(room)))
                }
                Ok(nicks) => Reply::Who(name, nicks),
                Err(e) => Reply::Failed(Failure::Unavailable(format!(
                    "cannot list the room's members: {e}"
                ))),
            }
        }))
    }

    /// A nick change in a cluster: the new nick is claimed in Redis first,
    /// then taken here; the old one is released once the new one is held.
    fn rename_in_cluster(&self, link: &Arc<Link>, wanted: String) -> Outcome {
        let (hub, link, id) = (self.hub.clone(), link.clone(), self.id);
        Outcome::Wait(Box::pin(async move {
            let new = match Nick::parse(&wanted) {
                Ok(nick) => nick,
                Err(e) => return Reply::Failed(Failure::Hub(e.into())),
            };
            let old = match hub.nick(id) {
                Ok(old) => old,
                Err(e) => return Reply::Failed(Failure::Hub(e)),
            };
            let same_key = old.key() == new.key();
            if !same_key {
                match link.cluster.claim(&new, &link.owner).await {
                    Ok(true) => {}
                    Ok(false) => return Reply::Failed(Failure::Hub(HubError::NickInUse(wanted))),
                    Err(e) => {
                        return Reply::Failed(Failure::Unavailable(format!(
                            "the nick was not changed: {e}"
                        )))
                    }
                }
            }
            match hub.rename(id, &wanted) {
                Ok(_) => {
                    if !same_key {
                        link.release(old);
                    }
                    Reply::Renamed
                }
                Err(e) => {
                    if !same_key {
                        link.release(new);
                    }
                    Reply::Failed(Failure::Hub(e))
                }
            }
        }))
    }

    /// A reason as others will read it: sanitised, bounded, not blank.
    fn reason(&self, reason: Option<String>) -> Option<String> {
        reason
            .map(|r| truncate(&sanitize::clean(&r), self.max_text).to_string())
            .filter(|r| !r.trim().is_empty())
    }

    /// Checks an operator token, with the password's rules: three wrong
    /// ones end the session.
    fn oper(&self, token: &str) -> Reply {
        let Some(secret) = &self.hub.access().admin_token else {
            return Reply::Failed(Failure::AuthFailed("this server has no operators".into()));
        };
        if secret.matches(token) {
            return match self.hub.grant_operator(self.id) {
                Ok(_) => Reply::Done("you are now an operator; /help lists what you can do".into()),
                Err(e) => Reply::Failed(Failure::Hub(e)),
            };
        }
        match self.hub.operator_refused(self.id) {
            Ok(n) if n >= MAX_ATTEMPTS => Reply::Close("wrong operator token; disconnected".into()),
            Ok(n) => Reply::Failed(Failure::AuthFailed(format!(
                "wrong operator token (attempt {n} of {MAX_ATTEMPTS})"
            ))),
            Err(e) => Reply::Failed(Failure::Hub(e)),
        }
    }

    /// Bans a nick's address, an address or a block, and kicks whoever
    /// connects from it now. The ban is kept (perhaps on disk) outside the
    /// hub's lock.
    fn ban(&self, target: &str, duration: Option<Duration>, reason: Option<String>) -> Reply {
        let operator = match self.hub.check_operator(self.id) {
            Ok(nick) => nick,
            Err(e) => return Reply::Failed(Failure::Hub(e)),
        };
        if duration.is_some_and(|d| d.is_zero()) {
            return Reply::Failed(Failure::Invalid(
                "the duration must read like 10m, 2h or 7d".into(),
            ));
        }
        let cidr = match target.parse::<Cidr>() {
            Ok(cidr) => cidr,
            Err(not_an_address) => match self.hub.address_of(self.id, target) {
                Ok(Some(ip)) => Cidr::host(ip),
                Ok(None) => {
                    return Reply::Failed(Failure::Invalid(format!(
                        "{target} has no address to ban"
                    )))
                }
                Err(HubError::NoSuchNick(_)) => {
                    return Reply::Failed(Failure::Invalid(format!(
                        "no one called {target} is connected, and {not_an_address}"
                    )))
                }
                Err(e) => return Reply::Failed(Failure::Hub(e)),
            },
        };
        let now = bans::now_ms();
        let until_ms = duration.map(|d| now.saturating_add(d.as_millis() as u64));
        let ban = Ban {
            target: cidr,
            reason: reason.clone(),
            until_ms,
            by: operator.to_string(),
            since_ms: now,
        };
        let told = ban.message();
        self.hub.bans().add(ban);
        let kicked = match self
            .hub
            .kick_where(self.id, |ip| cidr.contains(ip), Some(&told))
        {
            Ok(kicked) => kicked,
            Err(e) => return Reply::Failed(Failure::Hub(e)),
        };
        info!(
            operator = %operator,
            action = "ban",
            target = %cidr,
            until_ms,
            reason = reason.as_deref().unwrap_or(""),
            kicked = kicked.len(),
            "banned"
        );
        let who: Vec<&str> = kicked.iter().map(|n| n.as_str()).collect();
        let kicked = if who.is_empty() {
            "no one was connected from there".to_string()
        } else {
            format!("kicked: {}", who.join(", "))
        };
        Reply::Done(format!("{cidr} {told}; {kicked}"))
    }

    fn unban(&self, target: &str) -> Reply {
        let operator = match self.hub.check_operator(self.id) {
            Ok(nick) => nick,
            Err(e) => return Reply::Failed(Failure::Hub(e)),
        };
        let cidr = match target.parse::<Cidr>() {
            Ok(cidr) => cidr,
            Err(e) => return Reply::Failed(Failure::Invalid(e)),
        };
        if !self.hub.bans().remove(&cidr) {
            return Reply::Failed(Failure::Invalid(format!(
                "{cidr} is not banned; /bans lists the bans"
            )));
        }
        info!(operator = %operator, action = "unban", target = %cidr, "unbanned");
        Reply::Done(format!("{cidr} is no longer banned"))
    }

    /// Sanitises chat text and enforces the length limit.
    fn clean_text(&self, text: &str) -> Result<String, Failure> {
        let text = sanitize::clean(text);
        if text.trim().is_empty() {
            return Err(Failure::EmptyText);
        }
        if text.len() > self.max_text {
            return Err(Failure::TooLong(self.max_text));
        }
        Ok(text.into_owned())
    }

    /// [`Dispatcher::clean_text`] on every line, in place; text that is
    /// already clean (every text-protocol line) is not copied.
    fn clean_lines(&self, lines: &mut [ChatLine]) -> Result<(), Failure> {
        for line in lines {
            let cleaned = sanitize::clean(&line.text);
            if cleaned.trim().is_empty() {
                return Err(Failure::EmptyText);
            }
            if cleaned.len() > self.max_text {
                return Err(Failure::TooLong(self.max_text));
            }
            if let std::borrow::Cow::Owned(text) = cleaned {
                line.text = text.into();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Format;
    use crate::server::hub::{History, HubLimits};
    use crate::server::outbox::Outbox;

    fn confirm(_: &Seated<'_>) -> Outgoing {
        Outgoing::Raw("joined\n".into())
    }

    fn hub_with_history() -> Arc<Hub> {
        Arc::new(Hub::with_history(
            HubLimits::default(),
            Some(History {
                store: crate::store::memory(crate::store::Retention::KEEP_ALL),
                replay: 5,
                store_private: false,
            }),
        ))
    }

    /// Everything queued for a member, as text lines.
    fn drained(outbox: &Outbox) -> String {
        outbox
            .drain_now()
            .iter()
            .map(|o| {
                let b = o.bytes(Format::Text, crate::proto::text::render);
                String::from_utf8_lossy(&b).into_owned()
            })
            .collect()
    }

    async fn finish(outcome: Outcome) -> Reply {
        match outcome {
            Outcome::Now(reply) => reply,
            Outcome::Wait(reply) | Outcome::Later(reply) => reply.await,
        }
    }

    #[tokio::test]
    async fn requests_run_against_the_hub_with_text_checked_once_for_both_protocols() {
        let hub = hub_with_history();
        let (a_box, b_box) = (Outbox::new(1 << 20), Outbox::new(1 << 20));
        let (a, _) = hub
            .connect(a_box.clone(), |_| Outgoing::Raw("hi\n".into()))
            .unwrap();
        let (b, _) = hub
            .connect(b_box.clone(), |_| Outgoing::Raw("hi\n".into()))
            .unwrap();
        let alice = Dispatcher::new(a, &hub, 16, confirm, None);
        let bob = Dispatcher::new(b, &hub, 16, confirm, None);
        let join = |room: &str| Request::Join {
            room: room.into(),
            leaving: None,
        };
        // The room is not live and history is on: the join reads the store
        // first, so it must finish before the next request.
        match alice.dispatch(join("dev")) {
            Outcome::Wait(reply) => assert!(matches!(reply.await, Reply::Joined(_))),
            _ => panic!("joining a room that is not live waits for the store"),
        }
        assert!(matches!(
            finish(alice.dispatch(join("dev"))).await,
            Reply::Failed(Failure::Hub(HubError::AlreadyInRoom(_)))
        ));
        assert!(matches!(
            finish(bob.dispatch(join("dev"))).await,
            Reply::Joined(_)
        ));
        drained(&a_box);
        drained(&b_box);

        let say = |text: &str| Request::Say {
            room: "dev".into(),
            lines: vec![ChatLine {
                text: text.into(),
                action: false,
            }],
        };
        match alice.dispatch(say("\u{1b}[2Jhi")) {
            Outcome::Now(Reply::Posted(posted)) => assert_eq!(posted[0].seq, 1),
            _ => panic!("a post answers at once"),
        }
        let seen = drained(&b_box);
        assert!(seen.contains("hi") && !seen.contains('\u{1b}'), "{seen:?}");
        assert!(matches!(
            finish(alice.dispatch(say("   "))).await,
            Reply::Failed(Failure::EmptyText)
        ));
        assert!(matches!(
            finish(alice.dispatch(say(&"x".repeat(17)))).await,
            Reply::Failed(Failure::TooLong(16))
        ));
        assert!(
            drained(&b_box).is_empty(),
            "a refused line reached the room"
        );

        let history = Request::History {
            room: "dev".into(),
            before: None,
            limit: 10,
        };
        match alice.dispatch(history) {
            Outcome::Later(reply) => match reply.await {
                Reply::History(page) => assert_eq!(page.messages.len(), 1),
                other => panic!("{other:?}"),
            },
            _ => panic!("a history read answers later"),
        }
        match finish(alice.dispatch(Request::Quit {
            reason: Some("  ".into()),
        }))
        .await
        {
            Reply::Quit(reason) => assert_eq!(reason, None),
            other => panic!("{other:?}"),
        }
    }
}
