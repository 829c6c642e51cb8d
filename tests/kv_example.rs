//! Runs `examples/kv.rs` (the embedding example: a key-value store on three `Node`s) as a
//! test, so it stays true: every acknowledged write is on the primary elected after the
//! old one crashed, and on the member the primary role was then handed back to, each
//! applied once and in lsn order.

#[path = "../examples/kv.rs"]
mod kv;

use std::collections::{BTreeMap, BTreeSet};

/// Asserts that `store` (member `who`) holds every acknowledged write at its lsn, each
/// applied once and in order, and that every acknowledged key has its value.
fn assert_holds_every_acknowledged_write(who: &str, store: &kv::Store, acked: &[kv::Ack]) {
    let lsns: Vec<u64> = store.history.iter().map(|(lsn, _)| *lsn).collect();
    let contiguous: Vec<u64> = (1..=lsns.len() as u64).collect();
    assert_eq!(lsns, contiguous, "{who}: applied out of order or twice");
    assert!(store.applied >= acked.iter().map(|a| a.lsn).max().unwrap_or(0));

    let mut applied_ops = BTreeSet::new();
    for (lsn, a) in &store.history {
        if let kv::Applied::Op(op) = a {
            assert!(
                applied_ops.insert(format!("{op:?}")),
                "{who}: {op:?} applied twice (again at lsn {lsn})"
            );
        }
    }
    let mut expected = BTreeMap::new();
    let mut by_lsn: Vec<&kv::Ack> = acked.iter().collect();
    by_lsn.sort_by_key(|a| a.lsn);
    for a in by_lsn {
        let at = store.history.iter().find(|(lsn, _)| *lsn == a.lsn);
        assert_eq!(
            at.map(|(_, x)| x),
            Some(&kv::Applied::Op(a.op.clone())),
            "{who}: acknowledged lsn {} ({:?}) not applied there",
            a.lsn,
            a.op
        );
        match &a.op {
            kv::Op::Put { key, value } => expected.insert(key.clone(), value.clone()),
            kv::Op::Delete { key } => expected.remove(key),
        };
    }
    for (key, value) in &expected {
        assert_eq!(
            store.map.get(key),
            Some(value),
            "{who}: acknowledged key {key} missing or wrong"
        );
    }
    assert_eq!(store.map, expected, "{who}: keys nobody acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_store_on_nodes_keeps_every_acknowledged_key_through_failover_and_switchover() {
    let out = match kv::run().await {
        Ok(out) => out,
        Err(e) => panic!("kv example failed: {e}"),
    };
    // Writes before the crash, after it, and after the switchover.
    let vias: BTreeSet<&str> = out.acked.iter().map(|a| a.via.as_str()).collect();
    assert!(out.acked.len() >= 14, "{} writes", out.acked.len());
    assert!(
        vias.len() >= 2,
        "one primary acknowledged everything: {vias:?}"
    );

    let (new_primary, store) = &out.after_failover;
    let written_by_then: Vec<kv::Ack> = out
        .acked
        .iter()
        .filter(|a| a.lsn <= store.applied)
        .cloned()
        .collect();
    assert_eq!(
        written_by_then.len(),
        out.acked.len() - 5,
        "everything but the 5 writes after the switchover"
    );
    assert_holds_every_acknowledged_write(new_primary, store, &written_by_then);

    let (back, store) = &out.after_switchover;
    assert_ne!(back, new_primary);
    assert_holds_every_acknowledged_write(back, store, &out.acked);
    for (id, store) in &out.members_at_end {
        assert_holds_every_acknowledged_write(id, store, &out.acked);
    }
    eprintln!(
        "{} writes acknowledged; switchover write pause {} ms",
        out.acked.len(),
        out.switchover_pause.as_millis()
    );
}
