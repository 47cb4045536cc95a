//! The sessions tables through the `SessionStore` trait, on a real file:
//! one live session per tenant, user and provider; compare-and-set moves
//! with their events; listing by tenant; egress connections in order.

use hearth_store::{
    SessionChange, SessionFilter, SessionRecord, SessionStore, SqliteStore, StoreError,
};
use hearth_types::session::EgressConnection;
use hearth_types::{SessionId, SessionState, Timestamp};
use tempfile::TempDir;

fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hearth.db")).unwrap();
    (dir, store)
}

fn session(tenant: &str, user: &str, provider: &str) -> SessionRecord {
    let now = Timestamp::from_millis(1_000);
    SessionRecord {
        id: SessionId::generate(),
        tenant: tenant.parse().unwrap(),
        user: user.parse().unwrap(),
        provider: provider.parse().unwrap(),
        state: SessionState::Starting,
        vm: None,
        created_at: now,
        updated_at: now,
        expires_at: Timestamp::from_millis(601_000),
        message: None,
        diagnosis: None,
        credential_version: None,
    }
}

#[tokio::test]
async fn a_second_live_session_of_a_user_and_provider_is_refused() {
    let (_dir, store) = store();
    let first = session("team-a", "alice", "codex");
    store.insert_session(&first).await.unwrap();
    let err = store
        .insert_session(&session("team-a", "alice", "codex"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what } if what.contains("alice") && what.contains("codex")),
        "{err}"
    );
    // Another provider, user or tenant is another session.
    for other in [
        session("team-a", "alice", "claude"),
        session("team-a", "bob", "codex"),
        session("team-b", "alice", "codex"),
    ] {
        store.insert_session(&other).await.unwrap();
    }
    // Once the first has ended, the user may start again.
    let change = SessionChange::to(
        SessionState::Cancelled,
        Timestamp::from_millis(2_000),
        "cancelled",
    );
    store
        .change_session(&first.id, SessionState::Starting, &change)
        .await
        .unwrap();
    store
        .insert_session(&session("team-a", "alice", "codex"))
        .await
        .unwrap();
}

#[tokio::test]
async fn changes_are_compare_and_set_and_leave_events() {
    let (_dir, store) = store();
    let s = session("team-a", "alice", "codex");
    store.insert_session(&s).await.unwrap();
    let mut change = SessionChange::to(
        SessionState::WaitingForUser,
        Timestamp::from_millis(3_000),
        "the login page is up",
    );
    change.vm = Some("vm-0123456789ab".parse().unwrap());
    let after = store
        .change_session(&s.id, SessionState::Starting, &change)
        .await
        .unwrap();
    assert_eq!(after.state, SessionState::WaitingForUser);
    assert_eq!(after.vm, change.vm);
    assert_eq!(after.updated_at, Timestamp::from_millis(3_000));
    // A second mover that read `starting` loses.
    let late = SessionChange::to(
        SessionState::Expired,
        Timestamp::from_millis(4_000),
        "expired",
    );
    let err = store
        .change_session(&s.id, SessionState::Starting, &late)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Changed { .. }), "{err}");
    let mut captured = SessionChange::to(
        SessionState::Captured,
        Timestamp::from_millis(5_000),
        "sealed",
    );
    captured.credential_version = Some(1);
    let after = store
        .change_session(&s.id, SessionState::WaitingForUser, &captured)
        .await
        .unwrap();
    assert_eq!((after.vm, after.credential_version), (change.vm, Some(1)));
    store
        .add_session_event(&s.id, Timestamp::from_millis(6_000), "VM destroyed")
        .await
        .unwrap();
    let events = store.session_events(&s.id).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.seq, e.state, e.message.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, SessionState::Starting, "session started"),
            (2, SessionState::WaitingForUser, "the login page is up"),
            (3, SessionState::Captured, "sealed"),
            (4, SessionState::Captured, "VM destroyed"),
        ]
    );
}

#[tokio::test]
async fn lists_by_tenant_and_liveness_and_keeps_egress_in_order() {
    let (_dir, store) = store();
    let a = session("team-a", "alice", "codex");
    let b = session("team-b", "bob", "codex");
    store.insert_session(&a).await.unwrap();
    store.insert_session(&b).await.unwrap();
    let only_a = SessionFilter {
        tenant: Some("team-a".parse().unwrap()),
        live_only: false,
    };
    let listed = store.list_sessions(&only_a).await.unwrap();
    assert_eq!(listed.iter().map(|s| &s.id).collect::<Vec<_>>(), [&a.id]);
    assert_eq!(
        store
            .list_sessions(&SessionFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    let end = SessionChange::to(SessionState::Failed, Timestamp::from_millis(2_000), "broke");
    store
        .change_session(&b.id, SessionState::Starting, &end)
        .await
        .unwrap();
    let live = SessionFilter {
        tenant: None,
        live_only: true,
    };
    let listed = store.list_sessions(&live).await.unwrap();
    assert_eq!(listed.iter().map(|s| &s.id).collect::<Vec<_>>(), [&a.id]);

    for (host, outcome) in [("auth.example.com", "allowed"), ("evil.test", "denied")] {
        let connection = EgressConnection {
            at: Timestamp::from_millis(7_000),
            kind: Some("tunnel".into()),
            host: Some(host.into()),
            port: Some(443),
            outcome: outcome.into(),
            reason: (outcome == "denied").then(|| "not in the allowed domains".into()),
            bytes_up: 10,
            bytes_down: 20,
        };
        store
            .add_egress_connection(&a.id, &connection)
            .await
            .unwrap();
    }
    let seen = store.egress_connections(&a.id).await.unwrap();
    let hosts: Vec<_> = seen
        .iter()
        .map(|c| (c.host.as_deref().unwrap(), c.outcome.as_str()))
        .collect();
    assert_eq!(
        hosts,
        [("auth.example.com", "allowed"), ("evil.test", "denied")]
    );
    assert!(store.egress_connections(&b.id).await.unwrap().is_empty());
}
