//! Blocking work (a WAL recovery scan, snapshot file reads) called from code that may run on a
//! tokio worker thread. Shared by walship-primary and walship-replica, which both drive quinn
//! (this crate's endpoints) on tokio.

/// Runs `f`, which blocks (file I/O), without stalling the tokio worker that calls it.
///
/// On a worker of a multi-thread runtime (or in its `block_on`), `block_in_place` first hands
/// the worker's queued tasks to another thread, so the rest of the runtime keeps running while
/// `f` blocks. The runtime handle stays entered inside `f`, so `f` may still spawn tasks and
/// bind quinn endpoints. Elsewhere (no runtime; a current-thread runtime, where no other thread
/// could take the tasks) `f` runs inline, as a plain call would.
pub fn run_off_worker<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(move || {
                // block_in_place leaves the runtime context; re-enter the handle (not the
                // executor) so spawning and I/O registration work as before.
                let _entered = handle.enter();
                f()
            })
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::run_off_worker;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A hang detector, not a timing assertion: the wait ends as soon as the sender runs.
    const HANG: Duration = Duration::from_secs(60);

    #[test]
    fn blocking_on_the_only_worker_lets_the_runtime_run_other_tasks() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let got = rt.block_on(async {
            // The task runs on the only worker and blocks there until another task, which
            // needs a worker, has sent. Inline blocking would never let that task run.
            tokio::spawn(async {
                let (tx, rx) = mpsc::channel::<u32>();
                let sender = tokio::spawn(async move { tx.send(7).expect("send") });
                let got = run_off_worker(|| rx.recv_timeout(HANG));
                sender.await.expect("sender task");
                got
            })
            .await
            .expect("task")
        });
        assert_eq!(
            got,
            Ok(7),
            "the other task never ran while the worker blocked"
        );
    }

    #[test]
    fn the_closure_can_still_spawn_on_the_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let v = rt.block_on(async {
            let handle = run_off_worker(|| tokio::spawn(async { 5 }));
            handle.await.expect("spawned task")
        });
        assert_eq!(v, 5);
        // Outside any runtime and on a current-thread runtime it is a plain call.
        assert_eq!(run_off_worker(|| 3), 3);
        let ct = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_eq!(ct.block_on(async { run_off_worker(|| 4) }), 4);
    }
}
