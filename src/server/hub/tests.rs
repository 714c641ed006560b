//! The hub's unit tests: members as probes on outboxes, fan-out and
//! held notices as the text protocol renders them, and sockets that watch
//! whether anything is written under the hub's lock.

use super::*;
use crate::event::Format;
use crate::server::outbox::Drain;
use kicks::{LOAD_WINDOW, MAX_KICKED_PER_WINDOW, MAX_QUIET_PER_SPELL};
use std::collections::BTreeSet;
use std::time::Instant;

/// A member as a test sees it: its id and the text lines it was sent.
struct Probe {
    id: MemberId,
    outbox: Arc<Outbox>,
}

impl Probe {
    fn join(hub: &Hub, room: &str) -> Probe {
        let outbox = Outbox::new(1 << 20);
        let (id, _) = hub
            .connect(outbox.clone(), |_| Outgoing::Raw("hi\n".into()))
            .unwrap();
        hub.join(id, room, ack).unwrap();
        let probe = Probe { id, outbox };
        assert_eq!(probe.lines(), vec!["hi", "joined"]);
        probe
    }

    /// Lines queued so far, rendered as the text protocol would.
    fn lines(&self) -> Vec<String> {
        self.outbox
            .drain_now()
            .iter()
            .map(|o| {
                let b = o.bytes(Format::Text, crate::proto::text::render);
                String::from_utf8_lossy(&b).trim_end().to_string()
            })
            .collect()
    }
}

fn ack(_: &Seated<'_>) -> Outgoing {
    Outgoing::Raw("joined\n".into())
}

/// A socket that, on every write, looks whether the hub's lock is
/// free: a fan-out must write only once it has released it.
struct LockWatch {
    hub: std::sync::OnceLock<Arc<Hub>>,
    written: Mutex<Vec<u8>>,
    under_lock: std::sync::atomic::AtomicUsize,
}

impl crate::server::outbox::Direct for LockWatch {
    fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        if let Some(hub) = self.hub.get() {
            if hub.state.try_lock().is_err() {
                self.under_lock
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let mut out = self.written.lock().unwrap();
        bufs.iter().for_each(|b| out.extend_from_slice(b));
        Ok(bufs.iter().map(|b| b.len()).sum())
    }
}

fn watched(hub: &Arc<Hub>, room: &str) -> (Arc<LockWatch>, MemberId) {
    let watch = Arc::new(LockWatch {
        hub: std::sync::OnceLock::new(),
        written: Mutex::new(Vec::new()),
        under_lock: Default::default(),
    });
    let _ = watch.hub.set(hub.clone());
    let encoding = crate::server::outbox::Encoding {
        format: Format::Text,
        encode: crate::proto::text::render,
    };
    let outbox = Outbox::with_direct(1 << 20, watch.clone(), encoding);
    let (id, _) = hub.connect(outbox.clone(), greet).unwrap();
    hub.join(id, room, ack).unwrap();
    // Play the writer task for the greeting and the join (queued with
    // a wake, not a kick); asking again says that batch is written, so
    // the connection is idle and the next fan-out kicks it.
    assert_eq!(outbox.drain_now().len(), 2);
    assert!(outbox.drain_now().is_empty());
    (watch, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_summary_to_thousands_is_written_a_slice_at_a_time_by_a_task_of_its_own() {
    let hub = Arc::new(Hub::default());
    let members: Vec<_> = (0..kicks::SLICED_KICKS)
        .map(|_| watched(&hub, "huge"))
        .collect();
    hub.tell_held();
    // Play every writer task for the room's own joins (asking twice
    // says the batch is written), so that all are idle; start afresh.
    most_queued(&hub);
    most_queued(&hub);
    for (watch, _) in &members {
        watch.written.lock().unwrap().clear();
    }
    let (_late, _) = watched(&hub, "huge");
    // The join is held; telling it kicks every member at once.
    hub.tell_held();
    let written = |members: &[(Arc<LockWatch>, MemberId)]| {
        members
            .iter()
            .filter(|(w, _)| !w.written.lock().unwrap().is_empty())
            .count()
    };
    assert_eq!(written(&members), 0, "not written by the caller");
    // One turn of the runtime writes one slice, then lets others run.
    tokio::task::yield_now().await;
    let first = written(&members);
    assert!(first > 0 && first < members.len(), "{first}");
    for _ in 0..members.len() {
        if written(&members) == members.len() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(written(&members), members.len());
    for (watch, _) in &members {
        assert_eq!(
            watch.under_lock.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        let line = watch.written.lock().unwrap().clone();
        assert!(String::from_utf8_lossy(&line).ends_with(" joined huge\n"));
    }
}

/// The most items any member has queued for its writer task.
fn most_queued(hub: &Hub) -> Option<usize> {
    let st = hub.lock();
    st.members
        .values()
        .map(|m| m.outbox.drain_now().len())
        .max()
}

#[test]
fn direct_fanout_zero_turns_kicks_off() {
    let hub = Arc::new(Hub::new(HubLimits {
        direct_fanout: 0,
        ..HubLimits::default()
    }));
    let (watch, _) = watched(&hub, "dev");
    let speaker = Probe::join(&hub, "dev");
    watch.written.lock().unwrap().clear();
    hub.say(speaker.id, "dev", "hello", false).unwrap();
    hub.private(speaker.id, "guest1", "psst").unwrap();
    assert!(watch.written.lock().unwrap().is_empty());
    // The speaker's join, the line and the private message.
    assert_eq!(most_queued(&hub), Some(3));
}

#[test]
fn heavy_traffic_is_left_to_the_writer_tasks() {
    let start = Instant::now();
    let mut load = Load::default();
    // Everyday chat: a line at a time into a room of 100.
    for _ in 0..MAX_KICKED_PER_WINDOW / 100 {
        assert!(load.direct_after(100, start));
    }
    // One line more within the same window is too many.
    assert!(!load.direct_after(1, start + LOAD_WINDOW / 2));
    // A new window starts light again.
    assert!(load.direct_after(100, start + LOAD_WINDOW));
}

#[test]
fn a_busy_window_wakes_writer_tasks_instead_of_writing() {
    let hub = Arc::new(Hub::default());
    let (watch, _) = watched(&hub, "dev");
    let speaker = Probe::join(&hub, "dev");
    let lines = vec![
        ChatLine {
            text: "x".into(),
            action: false,
        };
        MAX_KICKED_PER_WINDOW + 1
    ];
    watch.written.lock().unwrap().clear();
    // Far over the window's traffic in one go: written by no kick.
    hub.say_many(speaker.id, "dev", &lines).unwrap();
    assert!(watch.written.lock().unwrap().is_empty());
    // Left queued for the member's writer task.
    assert_eq!(most_queued(&hub), Some(1));
}

#[test]
fn fan_outs_write_to_sockets_only_after_the_lock_is_released() {
    let hub = Arc::new(Hub::default());
    let (watch, _) = watched(&hub, "dev");
    let speaker = Probe::join(&hub, "dev");
    hub.say(speaker.id, "dev", "hello", false).unwrap();
    hub.private(speaker.id, "guest1", "psst").ok();
    let written = String::from_utf8(watch.written.lock().unwrap().clone()).unwrap();
    assert!(
        written.contains("hello"),
        "the line was written directly: {written:?}"
    );
    assert_eq!(
        watch.under_lock.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[test]
fn quiet_traffic_is_told_over_a_spell() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
    let mut load = Load::default();
    // A line into a room of 500 now and then: quiet.
    load.direct_after(499, t0);
    assert!(load.is_quiet());
    load.direct_after(499, ms(3));
    load.direct_after(499, ms(6));
    assert!(load.is_quiet());
    // A fourth within the same spell: busier, though each window is light.
    load.direct_after(499, ms(9));
    assert!(load.is_light());
    assert!(!load.is_quiet());
    // The next spell remembers the busy one.
    load.direct_after(499, ms(10));
    assert!(!load.is_quiet());
    // One quiet spell later, quiet again; after a silence, too.
    load.direct_after(499, ms(20));
    assert!(load.is_quiet());
    load.direct_after(MAX_QUIET_PER_SPELL, ms(30));
    assert!(!load.is_quiet());
    load.direct_after(1, ms(100));
    assert!(load.is_quiet());
}

/// A room bigger than `direct_fanout`, every member's socket watched and
/// idle, and someone to speak in it; the hub's traffic counts start afresh.
async fn big_watched_room(hub: &Arc<Hub>, members: usize) -> (Vec<Arc<LockWatch>>, Probe) {
    let watches: Vec<_> = (0..members).map(|_| watched(hub, "big").0).collect();
    let speaker = Probe::join(hub, "big");
    // Tell the held joins (kicked in parts: let the other parts' tasks
    // run), and play every writer task for what is left.
    hub.tell_held();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    most_queued(hub);
    most_queued(hub);
    for watch in &watches {
        watch.written.lock().unwrap().clear();
    }
    hub.lock().load = Load::default();
    (watches, speaker)
}

fn heard(watches: &[Arc<LockWatch>], line: &str) -> usize {
    watches
        .iter()
        .filter(|w| String::from_utf8_lossy(&w.written.lock().unwrap()).contains(line))
        .count()
}

#[tokio::test(flavor = "current_thread")]
async fn a_big_rooms_fan_out_under_quiet_traffic_is_written_in_parts() {
    let hub = Arc::new(Hub::default());
    let per = HubLimits::default().direct_fanout;
    let (watches, speaker) = big_watched_room(&hub, 2 * per + 1).await;
    hub.say(speaker.id, "big", "to all", false).unwrap();
    // The speaker's task wrote one part itself; the others are tasks of
    // their own, for whichever worker is free.
    assert_eq!(heard(&watches, "to all"), per);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(heard(&watches, "to all"), watches.len());
    assert_eq!(most_queued(&hub), Some(0), "nothing left for writer tasks");
    for watch in &watches {
        assert_eq!(
            watch.under_lock.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_big_rooms_fan_out_under_busier_traffic_wakes_writer_tasks() {
    let hub = Arc::new(Hub::default());
    let (watches, speaker) = big_watched_room(&hub, HubLimits::default().direct_fanout + 1).await;
    // Two light windows in this spell, busier than quiet together.
    let now = Instant::now();
    {
        let mut st = hub.lock();
        st.load
            .direct_after(MAX_QUIET_PER_SPELL / 2 + 1, now - 3 * LOAD_WINDOW);
        st.load.direct_after(MAX_QUIET_PER_SPELL / 2 + 1, now);
        assert!(st.load.is_light() && !st.load.is_quiet());
    }
    hub.say(speaker.id, "big", "to all", false).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(heard(&watches, "to all"), 0, "written by a kick");
    // Left queued, for each member's writer task.
    let st = hub.lock();
    let queued = st
        .members
        .iter()
        .filter(|(id, m)| **id != speaker.id && !m.outbox.drain_now().is_empty())
        .count();
    assert_eq!(queued, watches.len());
}

fn greet(_: &Nick) -> Outgoing {
    Outgoing::Raw("hi\n".into())
}

fn with_store(store_private: bool) -> (Hub, Arc<crate::store::MemoryStore>) {
    let store = crate::store::memory(crate::store::Retention::KEEP_ALL);
    let hub = Hub::with_history(
        HubLimits::default(),
        Some(History {
            store: store.clone(),
            replay: 10,
            store_private,
        }),
    );
    (hub, store)
}

/// A store whose reads wait at a gate, to show what the hub does while
/// a read is under way.
struct GatedStore {
    inner: Arc<crate::store::MemoryStore>,
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    gate: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Store for GatedStore {
    fn append(&self, msg: StoredMessage) -> Receipt {
        self.inner.append(msg)
    }
    fn last_seq(&self, room_key: &str) -> Result<u64, crate::store::StoreError> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self
            .gate
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(10));
        self.inner.last_seq(room_key)
    }
    fn page(
        &self,
        room_key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, crate::store::StoreError> {
        self.inner.page(room_key, before, limit)
    }
    fn close(&self) {}
    fn stats(&self) -> crate::store::StoreStats {
        self.inner.stats()
    }
}

#[test]
fn a_store_read_for_a_new_room_does_not_hold_the_lock() {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (open, gate) = std::sync::mpsc::channel();
    let store = Arc::new(GatedStore {
        inner: crate::store::memory(crate::store::Retention::KEEP_ALL),
        entered: Mutex::new(entered_tx),
        gate: Mutex::new(gate),
    });
    let hub = Arc::new(Hub::with_history(
        HubLimits::default(),
        Some(History {
            store,
            replay: 10,
            store_private: false,
        }),
    ));
    let (a, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
    let (b, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
    let joiner = {
        let hub = hub.clone();
        std::thread::spawn(move || hub.join(a, "quiet", ack).map(|j| j.room))
    };
    // The joiner is inside the store read, the gate still shut.
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    let (done_tx, done) = std::sync::mpsc::channel();
    {
        let hub = hub.clone();
        std::thread::spawn(move || {
            let _ = done_tx.send(hub.rooms().len());
            let _ = done_tx.send(hub.rename(b, "bob").is_ok() as usize);
        });
    }
    assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(0));
    assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(1));
    open.send(()).unwrap();
    assert_eq!(joiner.join().unwrap().unwrap().as_str(), "quiet");
}

#[test]
fn a_read_made_stale_by_a_room_living_and_dying_is_read_again() {
    let (hub, store) = with_store(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Read while the room is not live...
    let seed = rt.block_on(hub.prepare_join("dev"));
    assert!(seed.is_some());
    // ...then the room lives (three messages) and empties meanwhile.
    let (b, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
    hub.join(b, "dev", ack).unwrap();
    for text in ["one", "two", "three"] {
        hub.say(b, "dev", text, false).unwrap();
    }
    hub.part(b, "dev").unwrap();
    assert_eq!(store.last_seq("dev").unwrap(), 3);
    let (a, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
    hub.join_seeded(a, "dev", seed, ack).unwrap();
    let posted = hub.say(a, "dev", "four", false).unwrap();
    assert_eq!(posted.seq, 4, "numbering went back");
    // A live room needs no read at all.
    assert!(!hub.needs_prepare("dev"));
    assert!(rt.block_on(hub.prepare_join("dev")).is_none());
}

#[test]
fn retired_rooms_tell_which_reads_still_hold() {
    let mut retired = Retired::default();
    assert!(retired.unchanged_since("a", 0));
    retired.push("a");
    retired.push("b");
    assert!(!retired.unchanged_since("a", 0));
    assert!(retired.unchanged_since("a", 1));
    assert!(!retired.unchanged_since("b", 1));
    assert!(retired.unchanged_since("c", 0));
    for _ in 0..RETIRED_KEPT {
        retired.push("x");
    }
    // Too old to check: read again.
    assert!(!retired.unchanged_since("c", 0));
    assert!(retired.unchanged_since("c", retired.count - 1));
}

#[test]
fn private_messages_are_stored_only_when_asked() {
    for store_private in [false, true] {
        let (hub, store) = with_store(store_private);
        let (a, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
        let (_, b) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
        hub.private(a, b.as_str(), "between us").unwrap();
        hub.private(a, b.as_str(), "again").unwrap();
        let kept = store.page(PRIVATE_KEY, None, 10).unwrap();
        if store_private {
            assert_eq!(kept.len(), 2);
            assert_eq!((kept[0].seq, kept[1].seq), (1, 2));
            assert_eq!(kept[0].nick, "guest1");
            assert_eq!(kept[0].room_name, "guest2");
            assert_eq!(kept[1].text, "again");
        } else {
            assert!(kept.is_empty(), "{kept:?}");
        }
    }
}

#[test]
fn rooms_are_numbered_on_from_the_store_and_replay_what_it_holds() {
    let (hub, store) = with_store(false);
    for seq in 1..=3 {
        store
            .append(StoredMessage {
                room: "dev".into(),
                room_name: "Dev".into(),
                seq,
                ts_ms: seq,
                nick: "old".into(),
                text: format!("stored {seq}"),
                action: false,
            })
            .wait()
            .unwrap();
    }
    let outbox = Outbox::new(1 << 20);
    let (id, _) = hub.connect(outbox.clone(), greet).unwrap();
    hub.join(id, "dev", ack).unwrap();
    let probe = Probe { id, outbox };
    let lines: Vec<String> = probe
        .lines()
        .iter()
        .flat_map(|item| item.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert_eq!(lines[..2], ["hi", "joined"]);
    assert_eq!(
        lines[2],
        "* history of Dev: last 3 messages (times are UTC)"
    );
    assert!(lines[3].ends_with("] old> stored 1"), "{lines:?}");
    let posted = hub.say(id, "dev", "new", false).unwrap();
    assert_eq!(posted.seq, 4);
    assert_eq!(posted.room.as_str(), "Dev");
    assert!(posted.stored.is_some());
    assert_eq!(store.last_seq("dev").unwrap(), 4);
}

#[test]
fn guests_get_unique_nicks() {
    let hub = Hub::default();
    let (_, a) = hub.connect(Outbox::new(100), greet).unwrap();
    let (b_id, _) = hub.connect(Outbox::new(100), greet).unwrap();
    hub.rename(b_id, "guest3").unwrap();
    let (_, c) = hub.connect(Outbox::new(100), greet).unwrap();
    assert_eq!(a.as_str(), "guest1");
    assert_eq!(c.as_str(), "guest4");
}

#[test]
fn message_reaches_room_but_not_sender_or_other_rooms() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "lobby");
    let b = Probe::join(&hub, "lobby");
    let c = Probe::join(&hub, "other");
    a.lines();
    b.lines();
    let posted = hub.say(a.id, "lobby", "hello", false).unwrap();
    assert_eq!(posted.seq, 1);
    assert_eq!(b.lines(), vec!["guest1> hello"]);
    assert!(a.lines().is_empty());
    assert!(c.lines().is_empty());
}

#[test]
fn join_leave_and_rename_notices() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "lobby");
    let b = Probe::join(&hub, "lobby");
    assert_eq!(a.lines(), vec!["* guest2 joined lobby"]);
    hub.rename(b.id, "bob").unwrap();
    assert_eq!(a.lines(), vec!["* guest2 is now known as bob"]);
    assert_eq!(b.lines(), vec!["* guest2 is now known as bob"]);
    hub.part(b.id, "lobby").unwrap();
    assert_eq!(a.lines(), vec!["* bob left lobby"]);
    hub.join(b.id, "lobby", ack).unwrap();
    hub.disconnect(b.id, LeaveReason::Quit(Some("bye".into())));
    assert_eq!(a.lines(), vec!["* bob joined lobby", "* bob quit (bye)"]);
    assert_eq!(hub.who("lobby").unwrap().1.len(), 1);
}

#[test]
fn nick_rules() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "lobby");
    let b = Probe::join(&hub, "lobby");
    hub.rename(a.id, "Alice").unwrap();
    assert_eq!(
        hub.rename(b.id, "alice"),
        Err(HubError::NickInUse("alice".into()))
    );
    assert!(matches!(
        hub.rename(b.id, "server"),
        Err(HubError::InvalidName(NameError::Reserved(_)))
    ));
    // Changing only the case of one's own nick is allowed.
    assert_eq!(hub.rename(a.id, "ALICE").unwrap().as_str(), "ALICE");
}

#[test]
fn who_stays_in_nick_order_through_renames_and_leaves() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "lobby");
    let b = Probe::join(&hub, "lobby");
    let c = Probe::join(&hub, "lobby");
    hub.rename(a.id, "bob").unwrap();
    hub.rename(b.id, "Alice").unwrap();
    hub.rename(c.id, "carol").unwrap();
    let who = |hub: &Hub| -> Vec<String> {
        let (_, nicks) = hub.who("lobby").unwrap();
        nicks.iter().map(|n| n.to_string()).collect()
    };
    assert_eq!(who(&hub), vec!["Alice", "bob", "carol"]);
    hub.rename(b.id, "zed").unwrap();
    hub.rename(a.id, "BOB").unwrap();
    assert_eq!(who(&hub), vec!["BOB", "carol", "zed"]);
    hub.part(c.id, "lobby").unwrap();
    assert_eq!(who(&hub), vec!["BOB", "zed"]);
    // Fan-out follows the roster: the renamed members still get traffic.
    a.lines();
    b.lines();
    hub.say(a.id, "lobby", "hi", false).unwrap();
    assert_eq!(b.lines(), vec!["BOB> hi"]);
}

/// A room of exactly [`BIG_ROOM`] members, all told everything so far.
fn big_room(hub: &Hub) -> Vec<Probe> {
    let probes: Vec<Probe> = (0..BIG_ROOM).map(|_| Probe::join(hub, "big")).collect();
    for p in &probes {
        p.lines();
    }
    probes
}

#[test]
fn big_rooms_tell_held_notices_together_before_their_subjects_speak() {
    let hub = Hub::default();
    let probes = big_room(&hub);
    let x = Probe::join(&hub, "big");
    let y = Probe::join(&hub, "big");
    hub.part(probes[1].id, "big").unwrap();
    assert!(probes[0].lines().is_empty(), "held, not yet told");
    // Chat from someone the notices are not about does not wait for
    // them, nor cut them short.
    hub.say(probes[2].id, "big", "hello", false).unwrap();
    assert_eq!(probes[0].lines(), vec!["guest3> hello"]);
    assert_eq!(x.lines(), vec!["guest3> hello"]);
    // A joiner who speaks is seen joining first.
    hub.say(y.id, "big", "hi all", false).unwrap();
    let (xn, yn) = (BIG_ROOM + 1, BIG_ROOM + 2);
    // Told as a summary, one line per kind of change.
    assert_eq!(
        probes[0].lines(),
        vec![
            format!("* 2 joined big: guest{xn}, guest{yn}\n* 1 left big: guest2"),
            format!("guest{yn}> hi all"),
        ]
    );
    // Each joiner is told only what happened after it was seated.
    assert_eq!(
        x.lines(),
        vec![
            format!("* 1 joined big: guest{yn}\n* 1 left big: guest2"),
            format!("guest{yn}> hi all"),
        ]
    );
    // A single change reads as it always does.
    assert_eq!(y.lines(), vec!["guest3> hello", "* guest2 left big"]);
    // The one who left is told nothing more.
    assert!(probes[1].lines().is_empty());
}

#[test]
fn held_notices_are_told_when_due_and_before_a_rename() {
    let hub = Hub::default();
    let probes = big_room(&hub);
    let x = Probe::join(&hub, "big");
    hub.tell_held();
    let xn = BIG_ROOM + 1;
    assert_eq!(probes[0].lines(), vec![format!("* guest{xn} joined big")]);
    hub.part(x.id, "big").unwrap();
    hub.rename(probes[3].id, "dora").unwrap();
    assert_eq!(
        probes[0].lines(),
        vec![
            format!("* guest{xn} left big"),
            "* guest4 is now known as dora".to_string(),
        ]
    );
}

#[test]
fn bigger_rooms_hold_their_notices_longer_and_are_told_when_due() {
    assert_eq!(notice_delay(40), NOTICE_DELAY);
    assert_eq!(notice_delay(2_000), Duration::from_millis(200));
    assert_eq!(notice_delay(1_000_000), MAX_NOTICE_DELAY);
    let hub = Hub::default();
    let probes = big_room(&hub);
    let small = Probe::join(&hub, "small");
    let x = Probe::join(&hub, "big");
    let now = Instant::now();
    // Nothing is due yet; the big room is due after 50 ms.
    let next = hub.tell_due(now).expect("a room holds notices");
    assert!(
        next > now && next <= now + notice_delay(BIG_ROOM + 1),
        "{next:?}"
    );
    assert!(probes[0].lines().is_empty());
    assert!(small.lines().is_empty());
    assert_eq!(hub.tell_due(next), None);
    assert_eq!(
        probes[0].lines(),
        vec![format!("* guest{} joined big", BIG_ROOM + 2)]
    );
    drop(x);
}

#[test]
fn a_wave_of_joins_costs_each_member_a_few_queue_entries() {
    let hub = Hub::default();
    let probes = big_room(&hub);
    let wave: Vec<Probe> = (0..1000).map(|_| Probe::join(&hub, "big")).collect();
    hub.tell_held();
    let lines: Vec<String> = probes[0].lines();
    // One summary line per MAX_HELD notices, not one line per join.
    assert_eq!(lines.len(), 1000usize.div_ceil(MAX_HELD));
    assert!(lines.iter().all(|l| l.lines().count() == 1), "{lines:?}");
    let told: usize = lines
        .iter()
        .map(|l| {
            let n = l.strip_prefix("* ").and_then(|l| l.split_once(' '));
            n.and_then(|(n, _)| n.parse::<usize>().ok()).unwrap_or(0)
        })
        .sum();
    assert_eq!(told, 1000);
    // A joiner of the wave is told of those after it, the last of
    // nobody.
    let last = wave.last().map(|p| p.lines());
    assert_eq!(last, Some(Vec::new()));
    let first = wave[0].lines();
    assert!(first[0].starts_with(&format!("* {} joined big: ", MAX_HELD - 1)));
}

/// Follows one member's view of a room's roster through what it is
/// told: joins, leaves and crowds, alone or bundled; and checks that
/// every message it is told comes from someone it knows is there.
fn follow(roster: &mut BTreeSet<String>, items: &[Outgoing]) {
    let mut one = |event: &Event| match event {
        Event::Message { from, .. } => {
            assert!(
                roster.contains(&from.key()),
                "{from} heard before seen joining"
            )
        }
        Event::Joined { nick, .. } => assert!(roster.insert(nick.key()), "{nick} twice"),
        Event::Left { nick, .. } => assert!(roster.remove(&nick.key()), "{nick} absent"),
        Event::Crowd {
            joined,
            left,
            disconnected,
            ..
        } => {
            for nick in left.iter().chain(disconnected) {
                assert!(roster.remove(&nick.key()), "{nick} absent");
            }
            for nick in joined {
                assert!(roster.insert(nick.key()), "{nick} twice");
            }
        }
        _ => {}
    };
    for item in items {
        match item {
            Outgoing::Event(env) => one(&env.event),
            Outgoing::Bundle(bundle) => bundle.envelopes().iter().for_each(|e| one(&e.event)),
            Outgoing::Raw(_) => {}
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Whoever joins, leaves or is dropped, and whenever held notices
    /// are told, every member of a big room who applies what it was
    /// told to the list it got on joining knows who is there.
    #[test]
    fn members_who_follow_the_notices_know_the_roster(
        ops in proptest::collection::vec((0u8..5, 0usize..1000), 0..80)
    ) {
        let hub = Hub::default();
        let who = |hub: &Hub| -> BTreeSet<String> {
            hub.who("big").map(|(_, n)| n.iter().map(Nick::key).collect()).unwrap_or_default()
        };
        let mut inside: Vec<(MemberId, Arc<Outbox>, BTreeSet<String>)> = big_room(&hub)
            .into_iter()
            .map(|p| (p.id, p.outbox, who(&hub)))
            .collect();
        for (op, pick) in ops {
            match op {
                0 => {
                    let outbox = Outbox::new(1 << 20);
                    let (id, _) = hub.connect(outbox.clone(), |_| Outgoing::Raw("hi\n".into())).unwrap();
                    let mut roster = BTreeSet::new();
                    hub.join(id, "big", |seated| {
                        roster = seated.members().iter().map(Nick::key).collect();
                        ack(seated)
                    })
                    .unwrap();
                    outbox.drain_now();
                    inside.push((id, outbox, roster));
                }
                3 => {
                    let (id, _, _) = &inside[pick % inside.len()];
                    hub.say(*id, "big", "hi", false).unwrap();
                }
                1 | 2 if inside.len() > 1 => {
                    let (id, _, _) = inside.swap_remove(pick % inside.len());
                    if op == 1 {
                        hub.part(id, "big").unwrap();
                    } else {
                        hub.disconnect(id, LeaveReason::Dropped("gone".into()));
                    }
                }
                _ => hub.tell_held(),
            }
        }
        hub.tell_held();
        let now = who(&hub);
        for (_, outbox, roster) in &mut inside {
            follow(roster, &outbox.drain_now());
            proptest::prop_assert_eq!(&*roster, &now);
        }
    }
}

#[test]
fn a_wave_of_leaves_is_held_until_due_and_told_once() {
    let hub = Hub::default();
    let stay = Probe::join(&hub, "big");
    let wave: Vec<Probe> = (0..1000).map(|_| Probe::join(&hub, "big")).collect();
    hub.tell_held();
    stay.lines();
    for p in &wave {
        hub.part(p.id, "big").unwrap();
    }
    // Nobody joined meanwhile: past MAX_HELD, still held.
    assert!(stay.lines().is_empty());
    hub.tell_held();
    let lines = stay.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("* 1000 left big: "), "{lines:?}");
}

#[test]
fn member_in_several_rooms() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "one");
    hub.join(a.id, "two", ack).unwrap();
    let b = Probe::join(&hub, "one");
    let c = Probe::join(&hub, "two");
    hub.say(a.id, "two", "x", false).unwrap();
    assert!(b.lines().is_empty());
    assert_eq!(c.lines(), vec!["guest1> x"]);
    assert_eq!(
        hub.join(a.id, "ONE", ack).unwrap_err(),
        HubError::AlreadyInRoom("one".into())
    );
    let rooms: Vec<_> = hub
        .rooms()
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    assert_eq!(rooms, vec![("one".into(), 2), ("two".into(), 2)]);
}

#[test]
fn room_limit_per_member() {
    let hub = Hub::new(HubLimits {
        max_rooms_per_member: 2,
        ..HubLimits::default()
    });
    let a = Probe::join(&hub, "one");
    hub.join(a.id, "two", ack).unwrap();
    assert_eq!(hub.join(a.id, "three", ack), Err(HubError::TooManyRooms(2)));
    // Switching rooms frees one, so it works even at the limit.
    hub.switch(a.id, "two", "three", ack).unwrap();
    let names: Vec<_> = hub
        .rooms()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names, vec!["one", "three"]);
}

#[test]
fn private_message_only_to_target() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "lobby");
    let b = Probe::join(&hub, "lobby");
    let c = Probe::join(&hub, "lobby");
    a.lines();
    b.lines();
    c.lines();
    hub.private(a.id, "GUEST2", "psst").unwrap();
    assert_eq!(b.lines(), vec!["[private] guest1> psst"]);
    assert!(c.lines().is_empty());
    assert_eq!(
        hub.private(a.id, "nobody", "x"),
        Err(HubError::NoSuchNick("nobody".into()))
    );
}

#[test]
fn sequence_numbers_are_per_room_and_dense() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "r1");
    hub.join(a.id, "r2", ack).unwrap();
    let seqs: Vec<u64> = (0..3)
        .map(|_| hub.say(a.id, "r1", "m", false).unwrap().seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(hub.say(a.id, "r2", "m", false).unwrap().seq, 1);
    assert_eq!(
        hub.say(a.id, "r3", "m", false).err(),
        Some(HubError::NotInRoom("r3".into()))
    );
}

fn chat(lines: &[(&str, bool)]) -> Vec<ChatLine> {
    lines
        .iter()
        .map(|(t, action)| ChatLine {
            text: (*t).into(),
            action: *action,
        })
        .collect()
}

#[test]
fn a_batch_is_sequenced_line_by_line_and_delivered_as_one() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "lobby");
    let b = Probe::join(&hub, "lobby");
    a.lines();
    b.lines();
    hub.say(a.id, "lobby", "first", false).unwrap();
    let posted = hub
        .say_many(a.id, "lobby", &chat(&[("two", false), ("waves", true)]))
        .unwrap();
    let seqs: Vec<u64> = posted.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
    // One queue entry (one write) for the two lines, after the first.
    assert_eq!(
        b.lines(),
        vec!["guest1> first", "guest1> two\n* guest1 waves"]
    );
    assert!(a.lines().is_empty());
    assert_eq!(
        hub.say_many(a.id, "elsewhere", &chat(&[("x", false)]))
            .err(),
        Some(HubError::NotInRoom("elsewhere".into()))
    );
}

#[test]
fn every_line_of_a_batch_is_stored() {
    let store = crate::store::memory(crate::store::Retention::default());
    let hub = Hub::with_history(
        HubLimits::default(),
        Some(History {
            store: store.clone(),
            replay: 10,
            store_private: false,
        }),
    );
    let (a, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
    hub.join(a, "lobby", ack).unwrap();
    hub.say_many(a, "lobby", &chat(&[("one", false), ("two", false)]))
        .unwrap();
    hub.say(a, "lobby", "three", false).unwrap();
    let stored: Vec<(u64, String)> = store
        .page("lobby", None, 10)
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.text))
        .collect();
    assert_eq!(
        stored,
        vec![(1, "one".into()), (2, "two".into()), (3, "three".into())]
    );
}

#[tokio::test]
async fn slow_member_is_evicted_and_room_told() {
    let hub = Hub::default();
    let fast = Probe::join(&hub, "lobby");
    let slow_box = Outbox::new(300);
    let (slow, _) = hub.connect(slow_box.clone(), greet).unwrap();
    hub.join(slow, "lobby", ack).unwrap();
    fast.lines();
    for _ in 0..10 {
        hub.say(
            fast.id,
            "lobby",
            "0123456789012345678901234567890123456789",
            false,
        )
        .unwrap();
    }
    assert!(slow_box.is_aborted());
    let mut batch = Vec::new();
    assert_eq!(slow_box.drain(&mut batch).await, Drain::Abort);
    assert_eq!(
        fast.lines(),
        vec!["* guest2 was disconnected (send queue full: client too slow)"]
    );
    assert_eq!(hub.member_count(), 1);
    assert!(hub.nick(slow).is_err());
}

#[tokio::test]
async fn shutdown_notifies_and_closes_everyone() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "lobby");
    a.lines();
    hub.shutdown("server shutting down");
    let mut batch = Vec::new();
    assert_eq!(a.outbox.drain(&mut batch).await, Drain::Finish);
    assert_eq!(batch.len(), 1);
    assert_eq!(
        hub.connect(Outbox::new(10), greet).unwrap_err(),
        HubError::ShuttingDown
    );
}

#[test]
fn empty_rooms_disappear() {
    let hub = Hub::default();
    let a = Probe::join(&hub, "temp");
    hub.part(a.id, "temp").unwrap();
    assert!(hub.rooms().is_empty());
    assert_eq!(
        hub.who("temp").unwrap_err(),
        HubError::NoSuchRoom("temp".into())
    );
}
