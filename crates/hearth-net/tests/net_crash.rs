//! A controller killed (SIGKILL) at any step of making VM networks leaves
//! nothing behind once the reconciler has run: a child process attaches
//! networks in a loop against a store file and is killed after a range of
//! delays, each landing at some step; then the parent reconciles and finds
//! the lab as it was.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{can_run, Lab};
use hearth_net::{netns, NetHost, Network, NicPolicy, Orphans, TransitPool};
use hearth_store::SqliteStore;
use hearth_types::VmId;

const CHILD: &str = "HEARTH_NET_CRASH_CHILD";

#[tokio::test]
async fn a_controller_killed_while_attaching_leaves_nothing_after_a_reconcile() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hearth.db");
    let lab = Lab::with_store(Arc::new(SqliteStore::open(&db).unwrap()));
    lab.network.host().prepare().await.unwrap();
    let links = lab.host_links();
    for delay_ms in [5, 12, 20, 35, 50, 80, 120, 200] {
        let mut child = spawn_child(&lab, &db);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let mut orphans = Orphans::new(Duration::ZERO);
        let report = lab
            .network
            .reconcile(&mut orphans, |_| false)
            .await
            .unwrap();
        println!("killed after {delay_ms} ms: {report:?}");
        assert_eq!(
            lab.namespaces(),
            Vec::<String>::new(),
            "after {delay_ms} ms"
        );
        assert_eq!(lab.host_links(), links, "after {delay_ms} ms");
        assert_eq!(lab.network.held().await.unwrap(), vec![]);
    }
}

fn spawn_child(lab: &Lab, db: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["attach_forever", "--exact", "--nocapture"])
        .env(
            CHILD,
            format!("{}|{}|{}", lab.prefix, lab.host_ns, db.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The child's part: nothing unless started by the test above.
#[tokio::test]
async fn attach_forever() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.split('|');
    let (prefix, host_ns, db) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let host = NetHost::new(
        prefix.parse().unwrap(),
        TransitPool::default(),
        netns::open(host_ns).unwrap(),
    );
    let store = Arc::new(SqliteStore::open(&PathBuf::from(db)).unwrap());
    let network = Network::new(host, store);
    let mut nics = Vec::new();
    for n in 0.. {
        let vm: VmId = format!("vm-{n:012}").parse().unwrap();
        nics.push(network.attach(&vm, &NicPolicy::default()).await.unwrap());
    }
}
