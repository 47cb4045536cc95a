//! Capture watches against a scripted agent: sent after the welcome and
//! again after a reconnect, their sets handed to the owner, stopped when
//! the owner leaves, refused for an agent too old.

use hearth_agent_proto::CapturedFile;
use hearth_types::guest::{CaptureFile, CaptureSpec};

use super::*;

fn auth_spec() -> CaptureSpec {
    CaptureSpec {
        files: vec![CaptureFile {
            path: "/home/u/.codex/auth.json".into(),
            required_keys: vec!["/tokens/access_token".into()],
        }],
        stable_ms: 500,
    }
}

fn captured(id: u64, contents: &[u8]) -> GuestMessage {
    GuestMessage::Captured {
        id,
        files: vec![CapturedFile {
            path: "/home/u/.codex/auth.json".into(),
            mode: 0o600,
            data: encode_data(contents),
        }],
    }
}

/// The next host message that is not the host's clock.
fn next(s: &mut UnixStream) -> HostMessage {
    loop {
        match read_host(s) {
            HostMessage::Time { .. } => {}
            other => return other,
        }
    }
}

async fn contents(events: &mut mpsc::UnboundedReceiver<CaptureEvent>) -> Vec<u8> {
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s");
    match event {
        Some(CaptureEvent::Captured(set)) => set.files[0].contents.to_vec(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_watch_is_asked_again_after_a_reconnect_and_stopped_when_dropped() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let mut events = rig.link.watch_capture(auth_spec()).unwrap();
    let agent = tokio::task::spawn_blocking(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let HostMessage::CaptureWatch { id, spec } = next(&mut s) else {
            panic!("not a capture_watch")
        };
        assert_eq!(spec, auth_spec());
        write_frame(&mut s, &captured(id, b"first")).unwrap();
        drop(s);
        let (mut s, _) = agent_accepts(&listener, "i");
        let again = next(&mut s);
        assert_eq!(again, HostMessage::CaptureWatch { id, spec });
        write_frame(&mut s, &captured(id, b"second")).unwrap();
        (s, id)
    });
    assert_eq!(contents(&mut events).await, b"first");
    assert_eq!(contents(&mut events).await, b"second");
    let (mut s, id) = agent.await.unwrap();
    drop(events);
    let stop = script(move || next(&mut s)).await;
    assert_eq!(stop, HostMessage::CaptureStop { id });
}

#[tokio::test]
async fn a_watch_dropped_while_the_agent_is_away_is_stopped_at_its_return() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let events = rig.link.watch_capture(auth_spec()).unwrap();
    let (first, id) = script({
        let listener = listener.try_clone().unwrap();
        move || {
            let (mut s, _) = agent_accepts(&listener, "i");
            let HostMessage::CaptureWatch { id, .. } = next(&mut s) else {
                panic!("not a capture_watch")
            };
            (s, id)
        }
    })
    .await;
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), async {
        while rig.link.connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the link saw the hang-up");
    drop(events);
    let (got, then) = script(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let got = next(&mut s);
        write_frame(&mut s, &captured(id, b"late")).unwrap();
        (got, next(&mut s))
    })
    .await;
    assert_eq!(got, HostMessage::CaptureStop { id });
    // A set for it all the same (sent before the stop arrived): stopped
    // again, and dropped.
    assert_eq!(then, HostMessage::CaptureStop { id });
}

#[tokio::test]
async fn an_agent_too_old_gets_no_watch_and_the_owner_hears_why() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let mut early = rig.link.watch_capture(auth_spec()).unwrap();
    let agent = tokio::task::spawn_blocking(move || {
        let (mut s, _) = agent_speaking(&listener, "i", 4);
        // Nothing of protocol 5 comes: the next message is the file read.
        let next = next(&mut s);
        assert!(matches!(next, HostMessage::FileRead { .. }), "{next:?}");
        s
    });
    let early = tokio::time::timeout(Duration::from_secs(10), early.recv()).await;
    let Ok(Some(CaptureEvent::Failed(why))) = early else {
        panic!("no failure: {early:?}")
    };
    assert!(
        why.contains("protocol 4") && why.contains("credential capture"),
        "{why}"
    );
    assert_eq!(rig.link.protocol(), Some(4));
    let e = rig.link.watch_capture(auth_spec()).unwrap_err();
    assert_eq!(e, LinkError::AgentTooOld { protocol: 4 });
    assert!(e.to_string().contains("hearth image build --force"), "{e}");
    let _file = rig.link.read_file("/x".into(), 1).unwrap();
    let _s = agent.await.unwrap();
}

#[tokio::test]
async fn a_bad_spec_fails_at_once_and_bad_data_fails_without_content() {
    let rig = rig().await;
    let mut bad = rig
        .link
        .watch_capture(CaptureSpec {
            files: vec![],
            stable_ms: 0,
        })
        .unwrap();
    let Some(CaptureEvent::Failed(why)) = bad.recv().await else {
        panic!("no failure")
    };
    assert!(why.contains("files:"), "{why}");

    let listener = rig.listener.try_clone().unwrap();
    let mut events = rig.link.watch_capture(auth_spec()).unwrap();
    let _s = script(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let HostMessage::CaptureWatch { id, .. } = next(&mut s) else {
            panic!("not a capture_watch")
        };
        let mut msg = captured(id, b"x");
        if let GuestMessage::Captured { files, .. } = &mut msg {
            files[0].data = "sk-live-secret*".into();
        }
        write_frame(&mut s, &msg).unwrap();
        let failed = GuestMessage::CaptureFailed {
            id,
            message: "too big".into(),
        };
        write_frame(&mut s, &failed).unwrap();
        s
    })
    .await;
    let not_base64 = events.recv().await.unwrap();
    assert_eq!(
        not_base64,
        CaptureEvent::Failed("the agent sent a capture that is not base64".into())
    );
    assert_eq!(
        events.recv().await,
        Some(CaptureEvent::Failed("too big".into()))
    );
}

#[tokio::test]
async fn the_owner_hears_the_end_when_the_link_stops() {
    let rig = rig().await;
    let listener = rig.listener.try_clone().unwrap();
    let mut events = rig.link.watch_capture(auth_spec()).unwrap();
    let _s = script(move || {
        let (mut s, _) = agent_accepts(&listener, "i");
        let HostMessage::CaptureWatch { .. } = next(&mut s) else {
            panic!("not a capture_watch")
        };
        s
    })
    .await;
    rig.link.stop();
    let end = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(end, Ok(None), "the receiver ends with the link");
}
