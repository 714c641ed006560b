//! Helpers for the view's unit tests: a connected view in the lobby, and
//! feeding it server messages.

use super::*;

pub(super) fn clock() -> u64 {
    1_000_000
}

pub(super) fn view() -> ChatView {
    let mut v = ChatView::new("127.0.0.1:1234", false);
    v.set_clock(clock);
    v.apply(Update::Status(Status::Connected {
        server: "127.0.0.1:1234".into(),
        tls: false,
    }));
    v.apply(Update::Msg(ServerMsg::Welcome {
        proto: "rchat".into(),
        version: 1,
        nick: "alice".into(),
        max_text: 1024,
        ping_interval: 30,
    }));
    v.apply(Update::Msg(ServerMsg::RoomState {
        room: "lobby".into(),
        members: vec!["bob".into(), "alice".into()],
    }));
    v
}

pub(super) fn msg(v: &mut ChatView, m: ServerMsg) {
    v.apply(Update::Msg(m));
}

pub(super) fn last(v: &ChatView) -> &Line {
    v.lines().last().unwrap()
}
