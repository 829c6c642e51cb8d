//! All WAL, snapshot and state-file I/O goes through [`Storage`], so the
//! fault-injection simulator ([`crate::sim`]) can replace the real file system.
//!
//! The trait has the fewest methods the formats need, and each method states
//! what is durable after it returns.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::{Deref, Range};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A file system: the real one ([`FsStorage`]) or a simulated one.
pub trait Storage: Clone + Send + Sync + 'static {
    /// An open file.
    type File: StorageFile;
    /// Creates `dir` and its missing parents (durable only after `sync_dir` of each new entry's parent).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Open read+write. `create = true` creates the file if missing (the new
    /// entry is durable only after `sync_dir(parent)`).
    fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// File names (not paths) in `dir`, sorted; missing dir -> `io::ErrorKind::NotFound`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Atomic replace; durable only after `sync_dir` of both parents.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (durable only after `sync_dir(parent)`).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it (durable only after `sync_dir(parent)`).
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// After it returns, creations/renames/removals of entries of `dir` survive power loss.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Read-only view of the file's contents at the time of the call (mmap on [`FsStorage`]).
    fn map(&self, path: &Path) -> io::Result<Mapping>;
}

/// An open file of a [`Storage`]. Positional I/O only: no shared cursor.
pub trait StorageFile: Send + Sync + 'static {
    /// Writes all of `buf` at `offset`. Not durable until `sync_data` returns.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Current length (including unsynced writes).
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty (provided: `len() == 0`).
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros). Not durable until `sync_data` returns.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: after it returns every byte written before it, and the file
    /// length, survive power loss.
    /// An error is FATAL for the caller: never retry (the page cache may have dropped the pages).
    fn sync_data(&self) -> io::Result<()>;
}

enum MappingInner {
    Empty,
    Mmap(memmap2::Mmap),
    Bytes(Arc<[u8]>),
}

impl MappingInner {
    fn bytes(&self) -> &[u8] {
        match self {
            MappingInner::Empty => &[],
            MappingInner::Mmap(m) => m,
            MappingInner::Bytes(b) => b,
        }
    }
}

/// Cheap-to-clone read-only bytes (mmap on [`FsStorage`], a shared copy in
/// simulation). Derefs to `[u8]`; [`Mapping::slice`] gives a cheap sub-view.
#[derive(Clone)]
pub struct Mapping {
    inner: Arc<MappingInner>,
    start: usize,
    end: usize,
}

impl Mapping {
    /// A mapping of zero bytes.
    pub fn empty() -> Mapping {
        Mapping {
            inner: Arc::new(MappingInner::Empty),
            start: 0,
            end: 0,
        }
    }

    /// A mapping over shared bytes (used by simulated storages).
    pub fn from_arc(bytes: Arc<[u8]>) -> Mapping {
        let end = bytes.len();
        Mapping {
            inner: Arc::new(MappingInner::Bytes(bytes)),
            start: 0,
            end,
        }
    }

    /// A mapping over a copy of `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Mapping {
        Mapping::from_arc(Arc::from(bytes))
    }

    fn from_mmap(m: memmap2::Mmap) -> Mapping {
        let end = m.len();
        Mapping {
            inner: Arc::new(MappingInner::Mmap(m)),
            start: 0,
            end,
        }
    }

    /// A cheap sub-view of `range` (relative to this mapping). Panics if out of bounds,
    /// like slicing.
    pub fn slice(&self, range: Range<usize>) -> Mapping {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "Mapping::slice {:?} out of bounds of length {}",
            range,
            self.len()
        );
        Mapping {
            inner: Arc::clone(&self.inner),
            start: self.start + range.start,
            end: self.start + range.end,
        }
    }
}

impl Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.inner.bytes()[self.start..self.end]
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len()).finish()
    }
}

/// The real file system: `std::fs` for writes, `memmap2` for reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStorage;

/// An open file of [`FsStorage`].
#[derive(Debug)]
pub struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Storage for FsStorage {
    type File = FsFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(FsFile { file })
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(raw) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("non-UTF-8 file name {raw:?} in {}", dir.display()),
                    ))
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // fsync on a directory fd makes its entries (creations, renames, removals) durable.
        File::open(dir)?.sync_all()
    }

    fn map(&self, path: &Path) -> io::Result<Mapping> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            // mmap of length 0 is an error on Linux; an empty file is an empty view.
            return Ok(Mapping::empty());
        }
        // SAFETY: the mapping is read-only and the WAL never shrinks a file
        // under bytes a mapping is used for: files grow by appends past the
        // mapped length; the torn-tail cut happens in `Wal::open` before any
        // reader exists; after a failed write the file is cut back only to the
        // end of the last record (readers never read past it, and a partially
        // covered page stays mapped); truncate_tail/reset_to replace files by
        // rename or unlink (the old inode lives on for existing mappings)
        // instead of shrinking them in place. Other writers of these
        // directories are excluded by the node directory lock (`state::DirLock`).
        // Snapshot and state files are written to a temporary name and renamed.
        let mmap = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Mapping::from_mmap(mmap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("walship-storage")
            .tempdir_in(std::env::temp_dir())
            .expect("tempdir")
    }

    #[test]
    fn fs_write_read_len_set_len_sync_round_trip() -> io::Result<()> {
        let d = tmp();
        let s = FsStorage;
        let p = d.path().join("f");
        assert!(!s.exists(&p)?);
        let f = s.open(&p, true)?;
        s.sync_dir(d.path())?;
        f.write_at(0, b"hello world")?;
        f.write_at(6, b"WORLD")?;
        f.sync_data()?;
        assert_eq!(f.len()?, 11);
        let mut buf = [0u8; 5];
        f.read_exact_at(6, &mut buf)?;
        assert_eq!(&buf, b"WORLD");
        f.set_len(5)?;
        assert_eq!(f.len()?, 5);
        let err = f.read_exact_at(3, &mut buf).expect_err("read past end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(s.exists(&p)?);
        Ok(())
    }

    #[test]
    fn fs_open_missing_without_create_is_not_found() {
        let d = tmp();
        let err = FsStorage
            .open(&d.path().join("nope"), false)
            .expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn fs_list_is_sorted_and_missing_dir_is_not_found() -> io::Result<()> {
        let d = tmp();
        let s = FsStorage;
        for n in ["b", "c", "a"] {
            s.open(&d.path().join(n), true)?;
        }
        assert_eq!(s.list(d.path())?, vec!["a", "b", "c"]);
        let err = s.list(&d.path().join("missing")).expect_err("missing dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        Ok(())
    }

    #[test]
    fn fs_rename_remove_and_dirs() -> io::Result<()> {
        let d = tmp();
        let s = FsStorage;
        let sub = d.path().join("x/y");
        s.create_dir_all(&sub)?;
        let a = sub.join("a");
        let b = sub.join("b");
        s.open(&a, true)?.write_at(0, b"1")?;
        s.open(&b, true)?.write_at(0, b"22")?;
        s.rename(&a, &b)?;
        s.sync_dir(&sub)?;
        assert_eq!(&*s.map(&b)?, b"1");
        assert!(!s.exists(&a)?);
        s.remove_file(&b)?;
        assert!(!s.exists(&b)?);
        s.remove_dir_all(&d.path().join("x"))?;
        assert!(!s.exists(&d.path().join("x"))?);
        Ok(())
    }

    #[test]
    fn fs_map_sees_contents_at_call_time_and_empty_file_maps_empty() -> io::Result<()> {
        let d = tmp();
        let s = FsStorage;
        let p = d.path().join("m");
        let f = s.open(&p, true)?;
        assert_eq!(s.map(&p)?.len(), 0);
        f.write_at(0, b"abcdef")?;
        let m = s.map(&p)?;
        f.write_at(6, b"ghi")?;
        assert_eq!(&*m, b"abcdef");
        let sub = m.slice(2..4);
        assert_eq!(&*sub, b"cd");
        assert_eq!(&*sub.slice(1..2), b"d");
        assert_eq!(&*s.map(&p)?, b"abcdefghi");
        Ok(())
    }

    #[test]
    fn mapping_from_vec_and_empty() {
        let m = Mapping::from_vec(b"xyz".to_vec());
        assert_eq!(&*m, b"xyz");
        assert_eq!(m.slice(1..3).as_ref(), b"yz");
        assert!(Mapping::empty().is_empty());
    }
}
