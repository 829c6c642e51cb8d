//! The role task: opens and closes the node's role (the primary or the replica) in the
//! order the driver asks, so that the driver keeps answering election messages while a
//! role changes (closing a replica syncs it and waits for its thread; opening a primary
//! scans the WAL). Requests queued behind a change supersede each other: only the last
//! one is performed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};
use walship_wal::Lsn;

use super::driver::Input;
use super::plan::RoleCommand;
use super::{Inner, RoleSlot};
use crate::election::NodeId;
use crate::primary::Primary;
use crate::replica::{Applier, Replica};

/// A request to the role task.
pub(crate) enum RoleRequest {
    /// Take this role (superseded by a later request already queued).
    Set(RoleCommand),
    /// Close the role, then answer (shutdown, stop).
    CloseAndReply(oneshot::Sender<()>),
}

pub(crate) async fn run(
    inner: Arc<Inner>,
    endpoint: quinn::Endpoint,
    mut rx: mpsc::UnboundedReceiver<RoleRequest>,
) {
    while let Some(mut req) = rx.recv().await {
        while let Ok(next) = rx.try_recv() {
            if let RoleRequest::CloseAndReply(_) = req {
                break;
            }
            req = next;
        }
        match req {
            RoleRequest::CloseAndReply(reply) => {
                close(&inner).await;
                let _ = reply.send(());
            }
            RoleRequest::Set(RoleCommand::Close) => close(&inner).await,
            RoleRequest::Set(RoleCommand::Primary { epoch }) => {
                close(&inner).await;
                open_primary(&inner, &endpoint, epoch);
            }
            RoleRequest::Set(RoleCommand::Follow { epoch, primary }) => {
                let same = matches!(&*inner.lock_role(),
                    RoleSlot::Replica { primary: p, epoch: e, .. } if *p == primary && *e == epoch);
                if !same {
                    close(&inner).await;
                    open_replica(&inner, epoch, primary);
                }
            }
        }
    }
    close(&inner).await;
}

fn failed(inner: &Inner, reason: String) {
    let _ = inner.commands.send(Input::RoleFailed { reason });
}

fn open_primary(inner: &Inner, endpoint: &quinn::Endpoint, epoch: u64) {
    let config = match inner.config.primary_config(epoch) {
        Ok(mut c) => {
            c.metrics = Some(inner.metrics.role().clone());
            // A force-quorum campaign won: its forced configuration follows the epoch's
            // control record.
            c.forced_config = inner
                .forced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            c
        }
        Err(e) => return failed(inner, e.to_string()),
    };
    match Primary::open_on_endpoint(config, endpoint.clone()) {
        Ok(p) => {
            info!(
                epoch,
                durable = p.durable_lsn(),
                commit = p.commit_lsn(),
                "primary role serving"
            );
            *inner.lock_role() = RoleSlot::Primary(p);
        }
        Err(e) => {
            error!(epoch, error = %e, "cannot open the primary role");
            failed(
                inner,
                format!("opening the primary role of epoch {epoch}: {e}"),
            );
        }
    }
}

fn open_replica(inner: &Inner, epoch: u64, primary: NodeId) {
    let addr = inner
        .addresses
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&primary)
        .map(|m| m.addr);
    let Some(addr) = addr.or_else(|| inner.config.member(&primary).map(|m| m.addr)) else {
        // A primary neither the newest configuration in this node's log nor its node.toml
        // has an address for (it follows heartbeats from any member): it stays without a
        // role until a configuration record or an election tells it more.
        tracing::warn!(epoch, %primary, "no address known for the primary: not following it yet");
        return;
    };
    let config = match inner.config.replica_config_at(&primary, addr, epoch) {
        Ok(mut c) => {
            c.metrics = Some(inner.metrics.role().clone());
            c.base_config = Some(inner.config.base_configuration());
            c.incarnation = inner
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .incarnation;
            c
        }
        Err(e) => return failed(inner, e.to_string()),
    };
    let applier = inner
        .applier
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(applier) = applier else {
        return failed(
            inner,
            "the applier was not handed back by the previous role (a broken invariant)".into(),
        );
    };
    info!(epoch, %primary, "following the primary of the epoch");
    match Replica::open(config, ApplierBox(applier)) {
        Ok(replica) => {
            *inner.lock_role() = RoleSlot::Replica {
                replica,
                primary,
                epoch,
            };
        }
        Err(e) => {
            error!(epoch, error = %e, "cannot open the replica role");
            failed(inner, format!("opening the replica role: {e}"));
        }
    }
}

/// Closes the running role: a primary's waiters fail; a replica syncs and hands the
/// applier back.
async fn close(inner: &Inner) {
    let slot = std::mem::replace(&mut *inner.lock_role(), RoleSlot::Idle);
    match slot {
        RoleSlot::Idle => {}
        RoleSlot::Primary(p) => {
            if let Some(reason) = p.shutdown().await {
                error!(%reason, "the primary role stopped on a failure of its own storage");
                failed(inner, reason.to_string());
            }
        }
        RoleSlot::Replica { replica, .. } => {
            let (result, applier) = replica.shutdown_returning_applier().await;
            if let Some(a) = applier {
                *inner.applier.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
            }
            if let Err(e) = result {
                error!(error = %e, "the replica role stopped on a local error");
                failed(inner, e.to_string());
            }
        }
    }
}

/// The applier a role runs with: the node's, moved from role to role.
pub(crate) struct ApplierBox(Box<dyn Applier>);

impl Applier for ApplierBox {
    fn applied_lsn(&self) -> Lsn {
        self.0.applied_lsn()
    }

    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), crate::replica::ApplyError> {
        self.0.apply(lsn, payload)
    }

    fn apply_control(
        &mut self,
        lsn: Lsn,
        control: &walship_wal::control::ControlRecord,
    ) -> Result<(), crate::replica::ApplyError> {
        self.0.apply_control(lsn, control)
    }

    fn snapshot_sink(&mut self) -> Option<&mut dyn walship_snapshot::SnapshotSink> {
        self.0.snapshot_sink()
    }
}
