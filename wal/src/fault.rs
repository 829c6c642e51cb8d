//! [`FaultyStorage`]: a wrapper around any [`Storage`] whose syncs can be
//! made to fail with `EIO` while a node runs (tests and demos of the real
//! file system, where [`crate::sim::SimStorage`] cannot be used).
//!
//! Syncs fail with `EIO` (`sync_data` of a file, `sync_dir` of a directory)
//! and writes that would grow a file fail with `ENOSPC` (a full disk) where
//! armed; every other call goes to the inner storage unchanged. Unlike
//! [`crate::sim::SimStorage`] it cannot drop the page cache after a failed
//! sync; what it shows is that the caller treats the failure as fatal and
//! never retries.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::storage::{Mapping, Storage, StorageFile};

/// Which syncs fail, shared by a [`FaultyStorage`], its clones and its files.
#[derive(Clone, Debug, Default)]
pub struct StorageFaults {
    inner: Arc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Syncs of these paths fail: (path, whether everything under it fails too).
    failing: Mutex<Vec<(PathBuf, bool)>>,
    /// Files under these prefixes cannot grow (ENOSPC).
    full: Mutex<Vec<PathBuf>>,
    failed: AtomicU64,
    failed_writes: AtomicU64,
    /// Syncs under these prefixes wait until released (then the other faults apply).
    held: Mutex<Held>,
    held_changed: Condvar,
}

#[derive(Debug, Default)]
struct Held {
    prefixes: Vec<PathBuf>,
    /// Syncs waiting right now.
    waiting: usize,
}

impl StorageFaults {
    fn failing(&self) -> MutexGuard<'_, Vec<(PathBuf, bool)>> {
        self.inner.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every later sync of `path` or of anything under it fails with `EIO`
    /// (until [`StorageFaults::clear`]).
    pub fn fail_syncs_under(&self, path: impl Into<PathBuf>) {
        self.failing().push((path.into(), true));
    }

    /// Every later sync of exactly `path` (a file, or a directory's `sync_dir`) fails
    /// with `EIO` (until [`StorageFaults::clear`]).
    pub fn fail_syncs_of(&self, path: impl Into<PathBuf>) {
        self.failing().push((path.into(), false));
    }

    /// Every later sync fails with `EIO` (until [`StorageFaults::clear`]).
    pub fn fail_all_syncs(&self) {
        self.fail_syncs_under("/");
    }

    /// Every later write or `set_len` that would grow a file under `path` fails with
    /// `ENOSPC` and changes nothing, as on a full disk (until [`StorageFaults::clear`]).
    pub fn fill_disk_under(&self, path: impl Into<PathBuf>) {
        self.full().push(path.into());
    }

    fn full(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.inner.full.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every later sync of `path` or of anything under it waits (its thread blocks)
    /// until [`StorageFaults::release_held_syncs`]; then it fails or succeeds as the
    /// other faults armed at that moment say. Lets a test put a sync "in flight" for as
    /// long as it needs, deterministically.
    pub fn hold_syncs_under(&self, path: impl Into<PathBuf>) {
        self.held().prefixes.push(path.into());
    }

    /// Lets every held sync go on (and later syncs no longer wait).
    pub fn release_held_syncs(&self) {
        self.held().prefixes.clear();
        self.inner.held_changed.notify_all();
    }

    /// Blocks until at least `n` syncs are held at once.
    pub fn wait_held_syncs(&self, n: usize) {
        let mut g = self.held();
        while g.waiting < n {
            g = self
                .inner
                .held_changed
                .wait(g)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn hold(&self, path: &Path) {
        let mut g = self.held();
        if !g.prefixes.iter().any(|p| path.starts_with(p)) {
            return;
        }
        g.waiting += 1;
        self.inner.held_changed.notify_all();
        tracing::warn!(path = %path.display(), "fault injection: sync held");
        while g.prefixes.iter().any(|p| path.starts_with(p)) {
            g = self
                .inner
                .held_changed
                .wait(g)
                .unwrap_or_else(|p| p.into_inner());
        }
        g.waiting -= 1;
    }

    /// Disarms every fault (held syncs are released).
    pub fn clear(&self) {
        self.release_held_syncs();
        self.failing().clear();
        self.full().clear();
    }

    fn check_grow(&self, path: &Path, current_len: u64, new_end: u64) -> io::Result<()> {
        if new_end > current_len && self.full().iter().any(|p| path.starts_with(p)) {
            self.inner.failed_writes.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(path = %path.display(), "fault injection: write fails with ENOSPC");
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    /// Syncs that failed because of these faults.
    pub fn failed_syncs(&self) -> u64 {
        self.inner.failed.load(Ordering::Acquire)
    }

    /// Writes and `set_len` calls refused with `ENOSPC` because of these faults.
    pub fn failed_writes(&self) -> u64 {
        self.inner.failed_writes.load(Ordering::Acquire)
    }

    fn check(&self, path: &Path) -> io::Result<()> {
        let fails = self.failing().iter().any(|(p, under)| {
            if *under {
                path.starts_with(p)
            } else {
                path == p
            }
        });
        if fails {
            self.inner.failed.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(path = %path.display(), "fault injection: sync fails with EIO");
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

/// A [`Storage`] that forwards to `S` and fails the syncs its
/// [`StorageFaults`] name. Clones share the faults.
#[derive(Clone, Debug, Default)]
pub struct FaultyStorage<S> {
    inner: S,
    faults: StorageFaults,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner` with no fault armed.
    pub fn new(inner: S) -> FaultyStorage<S> {
        FaultyStorage {
            inner,
            faults: StorageFaults::default(),
        }
    }

    /// The faults (arm them while the storage is in use).
    pub fn faults(&self) -> &StorageFaults {
        &self.faults
    }
}

/// An open file of a [`FaultyStorage`].
#[derive(Debug)]
pub struct FaultyFile<F> {
    inner: F,
    path: PathBuf,
    faults: StorageFaults,
}

impl<F: StorageFile> StorageFile for FaultyFile<F> {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        self.faults.check_grow(&self.path, self.inner.len()?, end)?;
        self.inner.write_at(offset, buf)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check_grow(&self.path, self.inner.len()?, len)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.hold(&self.path);
        self.faults.check(&self.path)?;
        self.inner.sync_data()
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    type File = FaultyFile<S::File>;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Self::File> {
        Ok(FaultyFile {
            inner: self.inner.open(path, create)?,
            path: path.to_path_buf(),
            faults: self.faults.clone(),
        })
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.hold(dir);
        self.faults.check(dir)?;
        self.inner.sync_dir(dir)
    }
    fn map(&self, path: &Path) -> io::Result<Mapping> {
        self.inner.map(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    #[test]
    fn only_syncs_under_the_armed_prefix_fail_and_are_counted() -> io::Result<()> {
        let s = FaultyStorage::new(SimStorage::new(1));
        s.create_dir_all(Path::new("/a/b"))?;
        s.create_dir_all(Path::new("/c"))?;
        let f = s.open(Path::new("/a/b/f"), true)?;
        f.write_at(0, b"x")?;
        s.faults().fail_syncs_under("/a");
        assert_eq!(
            f.sync_data().map_err(|e| e.raw_os_error()),
            Err(Some(libc::EIO))
        );
        assert_eq!(
            s.sync_dir(Path::new("/a/b")).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EIO))
        );
        s.sync_dir(Path::new("/c"))?;
        assert_eq!(s.faults().failed_syncs(), 2);
        s.faults().clear();
        s.faults().fail_syncs_of("/a");
        assert!(s.sync_dir(Path::new("/a")).is_err());
        s.sync_dir(Path::new("/a/b"))?;
        f.sync_data()?;
        s.faults().clear();
        f.sync_data()?;
        s.clone().faults().fail_all_syncs();
        assert!(
            s.sync_dir(Path::new("/c")).is_err(),
            "clones share the faults"
        );
        Ok(())
    }

    #[test]
    fn a_held_sync_waits_for_release_then_meets_the_faults_armed_then() -> io::Result<()> {
        let s = FaultyStorage::new(SimStorage::new(3));
        s.create_dir_all(Path::new("/a"))?;
        let f = s.open(Path::new("/a/f"), true)?;
        f.write_at(0, b"x")?;
        s.faults().hold_syncs_under("/a");
        let faults = s.faults().clone();
        let t = std::thread::spawn(move || f.sync_data().map_err(|e| e.raw_os_error()));
        s.faults().wait_held_syncs(1);
        assert_eq!(s.faults().failed_syncs(), 0);
        faults.fail_syncs_under("/a");
        faults.release_held_syncs();
        let r = t
            .join()
            .map_err(|_| io::Error::other("sync thread panicked"))?;
        assert_eq!(r, Err(Some(libc::EIO)));
        assert_eq!(s.faults().failed_syncs(), 1);
        s.faults().clear();
        s.sync_dir(Path::new("/a"))?;
        Ok(())
    }

    #[test]
    fn a_full_disk_refuses_growth_but_not_overwrites_or_shrinking() -> io::Result<()> {
        let s = FaultyStorage::new(SimStorage::new(2));
        s.create_dir_all(Path::new("/a"))?;
        let f = s.open(Path::new("/a/f"), true)?;
        f.write_at(0, b"abcd")?;
        s.faults().fill_disk_under("/a");
        assert_eq!(
            f.write_at(4, b"e").map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOSPC))
        );
        assert_eq!(
            f.set_len(10).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOSPC))
        );
        f.write_at(0, b"x")?;
        f.set_len(2)?;
        assert_eq!(f.len()?, 2);
        assert_eq!(s.faults().failed_writes(), 2);
        assert_eq!(s.faults().failed_syncs(), 0);
        Ok(())
    }
}
