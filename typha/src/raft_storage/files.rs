//! The storage's large values as files of their own, beside sled: the
//! snapshot's data and the log entries too large to keep inline.
//!
//! sled 0.34 keeps a value above about 128 KiB as a blob file and leaves
//! blob files behind when their value is replaced or removed (and rewrites a
//! tree node's large values whole when the node changes), so the data
//! directory grew by the state's size at every snapshot and by every large
//! entry. Here each large value is one file, written whole to a temporary
//! name, fsynced and renamed (so a file under its final name is complete),
//! and removed once sled durably no longer refers to it.
//!
//! It refuses to do anything but whole-file writes, reads and removals in
//! its own directory: names are made here, from an index and a term.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

/// Where an I/O call on a storage file failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The directory of the large values.
#[derive(Debug)]
pub(super) struct Files {
    dir: PathBuf,
}

/// The file of the entry at `index` and `term`.
pub(super) fn entry_name(index: u64, term: u64) -> String {
    format!("entry-{index:020}-{term:020}")
}

/// The index and term of an [`entry_name`].
pub(super) fn parse_entry_name(name: &str) -> Option<(u64, u64)> {
    let (index, term) = name.strip_prefix("entry-")?.split_once('-')?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// The file of the snapshot's data at `index` and `term`.
pub(super) fn snapshot_name(index: u64, term: u64) -> String {
    format!("snapshot-{index:020}-{term:020}")
}

const TEMPORARY: &str = ".tmp";

impl Files {
    /// Opens (creating it if needed) the directory.
    pub(super) fn open(dir: PathBuf) -> Result<Files, FileError> {
        std::fs::create_dir_all(&dir).map_err(|source| FileError {
            action: "cannot create",
            path: dir.clone(),
            source,
        })?;
        Ok(Files { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` whole: to a temporary file, fsynced, renamed, and the
    /// directory fsynced. Once it returns the file is durable and complete.
    pub(super) fn write(&self, name: &str, bytes: &[u8]) -> Result<(), FileError> {
        let path = self.path(name);
        let temporary = self.path(&format!("{name}{TEMPORARY}"));
        let fail = |action, path: &Path| {
            let path = path.to_owned();
            move |source| FileError {
                action,
                path,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(fail("cannot create", &temporary))?;
        file.write_all(bytes)
            .map_err(fail("cannot write", &temporary))?;
        file.sync_all().map_err(fail("cannot fsync", &temporary))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(fail("cannot rename to", &path))?;
        self.sync_dir()
    }

    /// fsyncs the directory, making renames and removals in it durable.
    pub(super) fn sync_dir(&self) -> Result<(), FileError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| FileError {
                action: "cannot fsync",
                path: self.dir.clone(),
                source,
            })
    }

    /// The whole of `name`.
    pub(super) fn read(&self, name: &str) -> Result<Vec<u8>, FileError> {
        let path = self.path(name);
        std::fs::read(&path).map_err(|source| FileError {
            action: "cannot read",
            path,
            source,
        })
    }

    /// Whether `name` exists.
    pub(super) fn exists(&self, name: &str) -> bool {
        self.path(name).is_file()
    }

    /// Removes `name`; one already gone is not an error.
    pub(super) fn remove(&self, name: &str) -> Result<(), FileError> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(FileError {
                action: "cannot remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Removes every file but those `keep` accepts (temporary files of a
    /// write a crash interrupted, values sled no longer refers to); returns
    /// how many it removed.
    pub(super) fn sweep(&self, keep: impl Fn(&str) -> bool) -> Result<usize, FileError> {
        let listing = std::fs::read_dir(&self.dir).map_err(|source| FileError {
            action: "cannot list",
            path: self.dir.clone(),
            source,
        })?;
        let mut removed = 0;
        for item in listing {
            let item = item.map_err(|source| FileError {
                action: "cannot list",
                path: self.dir.clone(),
                source,
            })?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if !keep(&name) {
                self.remove(&name)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.sync_dir()?;
        }
        Ok(removed)
    }
}
