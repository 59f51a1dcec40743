//! Tests of [`WatchHub`]: routing, bounded buffers, late registrations, promotion.

use std::collections::HashMap;

use raftkv_core::kv::KeyValue;
use raftkv_core::watch::EventType;

use super::*;

fn put(key: &str, rev: Revision) -> Event {
    Event {
        kind: EventType::Put,
        kv: KeyValue {
            key: key.into(),
            mod_revision: rev,
            create_revision: rev,
            version: 1,
            value: b"v".to_vec(),
            lease: 0,
        },
        prev_kv: None,
    }
}

fn register(hub: &WatchHub, session: u64, req: WatchRequest) -> Registration {
    let range = KeyRange::from_request(&req).unwrap();
    hub.register(session, range, req).unwrap()
}

fn drain(rx: &mut UnboundedReceiver<SinkItem>) -> Vec<SinkItem> {
    let mut out = Vec::new();
    while let Ok(item) = rx.try_recv() {
        out.push(item);
    }
    out
}

#[test]
fn events_go_to_the_synced_watchers_that_cover_them() {
    let hub = WatchHub::new(1);
    let (session, mut rx) = hub.open_session().unwrap();
    let a = register(&hub, session, WatchRequest::key("a"));
    let p = register(&hub, session, WatchRequest::prefix("b").with_no_put(true));
    let interest = hub.interest();
    assert!(interest.matches(b"a") && interest.matches(b"bz") && !interest.matches(b"c"));
    hub.publish(
        2,
        3,
        vec![put("a", 2), put("bz", 3), put("c", 3)],
        interest.generation,
    );
    let items = drain(&mut rx);
    assert_eq!(items.len(), 1, "{items:?}");
    let SinkItem::Events {
        watcher, revision, ..
    } = &items[0]
    else {
        panic!("{items:?}")
    };
    assert_eq!((*watcher, *revision), (a.id, 3));
    assert_eq!(hub.published(), 3);
    assert!(hub.request_progress(p.id, false));
    assert!(matches!(
        drain(&mut rx)[..],
        [SinkItem::Progress { revision: 3, .. }]
    ));
}

#[test]
fn a_full_buffer_or_a_late_registration_makes_a_watcher_replay() {
    let hub = WatchHub::new(1);
    hub.configure(WatchConfig {
        buffered_events: 2,
        ..WatchConfig::default()
    });
    let (session, mut rx) = hub.open_session().unwrap();
    let a = register(&hub, session, WatchRequest::key("a"));
    let generation = hub.interest().generation;
    // One batch always fits, even past the limit.
    hub.publish(2, 4, vec![put("a", 2), put("a", 3), put("a", 4)], generation);
    hub.publish(5, 5, vec![put("a", 5)], generation);
    let items = drain(&mut rx);
    assert!(
        matches!(
            items[..],
            [SinkItem::Events { .. }, SinkItem::CatchUp { from: 5, .. }]
        ),
        "{items:?}"
    );
    assert_eq!(hub.unsynced_watchers(), 1);
    assert!(!hub.promote(a.id, 5), "not caught up yet");
    assert!(hub.request_progress(a.id, true), "answered once promoted");
    assert!(hub.promote(a.id, 6));
    assert!(matches!(
        drain(&mut rx)[..],
        [SinkItem::Progress { revision: 5, .. }]
    ));

    // Registered after the interest snapshot the apply used: replayed.
    let stale = hub.interest().generation;
    let b = register(&hub, session, WatchRequest::key("b"));
    assert_eq!(b.catch_up_from, None);
    hub.publish(6, 6, Vec::new(), stale);
    assert!(matches!(drain(&mut rx)[..], [SinkItem::CatchUp { from: 6, .. }]));

    // A start in the past starts unsynced.
    let c = register(&hub, session, WatchRequest::key("c").with_start_revision(3));
    assert_eq!((c.revision, c.catch_up_from), (6, Some(3)));
    hub.unregister(c.id);
    hub.close();
    assert!(rx.try_recv().is_err());
    assert!(hub.open_session().is_none());
}

#[test]
fn watchers_of_one_range_share_its_events_and_filters_and_starts_still_apply() {
    let hub = WatchHub::new(1);
    let (session, mut rx) = hub.open_session().unwrap();
    let same: Vec<_> = (0..3)
        .map(|_| register(&hub, session, WatchRequest::prefix("p")).id)
        .collect();
    let no_put = register(&hub, session, WatchRequest::prefix("p").with_no_put(true)).id;
    let later = register(&hub, session, WatchRequest::prefix("p").with_start_revision(4)).id;
    let single = register(&hub, session, WatchRequest::key("p2")).id;
    let generation = hub.interest().generation;
    let mut delete = put("p2", 4);
    delete.kind = EventType::Delete;
    hub.publish(
        2,
        4,
        vec![put("p1", 2), put("q", 3), delete, put("p3", 4)],
        generation,
    );
    let mut got: HashMap<u64, Vec<(Revision, Vec<u8>)>> = HashMap::new();
    let mut shared = Vec::new();
    for item in drain(&mut rx) {
        let SinkItem::Events {
            watcher,
            events,
            revision,
            ..
        } = item
        else {
            panic!("{item:?}")
        };
        assert_eq!(revision, 4);
        if same.contains(&watcher) {
            shared.push(Arc::as_ptr(&events[0]));
        }
        let list = events.iter().map(|e| (e.revision(), e.kv.key.clone())).collect();
        assert!(got.insert(watcher, list).is_none(), "one item per watcher");
    }
    let all = vec![(2, b"p1".to_vec()), (4, b"p2".to_vec()), (4, b"p3".to_vec())];
    for id in &same {
        assert_eq!(got[id], all);
    }
    assert!(shared.windows(2).all(|w| w[0] == w[1]), "one Arc per event");
    assert_eq!(got[&no_put], vec![(4, b"p2".to_vec())]);
    assert_eq!(got[&later], vec![(4, b"p2".to_vec()), (4, b"p3".to_vec())]);
    assert_eq!(got[&single], vec![(4, b"p2".to_vec())]);
    assert_eq!(got.len(), 6);
}
