//! Files that must survive a crash or a power cut whole: the drone's state file, the outbox's
//! events and counter, the locker's cell state.
//!
//! [`write_atomic`] writes to `<name>.tmp` next to the file, fsyncs it, renames it over the file
//! and fsyncs the directory, so a crash leaves the old content or the new one, never a mix. The
//! temporary name is fixed (tests jam it with a directory to stand for a full disk).
//!
//! The fsyncs take milliseconds on an SD card and much longer on a failing one, so async code
//! calls [`write_atomic_async`] (on tokio's blocking pool) or, where the caller is synchronous
//! code running on a runtime worker, [`write_atomic_blocking`] (which tells a multi-thread
//! runtime to move its other tasks to another thread first).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A write that failed, with the file and the step it failed at.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}: {source}")]
pub struct WriteError {
    /// The file the failing step touched (the temporary file, the target or its directory).
    pub path: PathBuf,
    /// What was being done: "creating", "writing", "syncing", "renaming to", ...
    pub step: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    fn at<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self {
            path: path.to_owned(),
            step,
            source,
        }
    }
}

/// The temporary file [`write_atomic`] writes before renaming it over `path`.
pub fn temporary_path(path: &Path) -> PathBuf {
    path.with_extension("tmp")
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new, never a mix:
/// temporary file, fsync, rename, fsync of the directory. Blocks: see the module's note.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temporary_path(path);
    let written = (|| {
        let mut f = File::create(&tmp).map_err(WriteError::at("creating", &tmp))?;
        f.write_all(bytes)
            .map_err(WriteError::at("writing", &tmp))?;
        f.sync_all().map_err(WriteError::at("syncing", &tmp))?;
        std::fs::rename(&tmp, path).map_err(WriteError::at("renaming to", path))
    })();
    if written.is_err() {
        // A half-written temporary file only takes space a full disk does not have.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable once the directory is: without this a power cut can bring back the
    // old file. A directory that cannot be opened or synced (some filesystems refuse) leaves the
    // rename as durable as that filesystem makes it; the data itself is already synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`write_atomic`] for synchronous code that may run on a tokio worker (under a lock that
/// cannot be held across an `.await`). On a multi-thread runtime the worker's other tasks move
/// to another thread while this one waits for the disk; elsewhere (no runtime, a current-thread
/// runtime, which cannot hand its tasks over) it simply blocks.
pub fn write_atomic_blocking(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| write_atomic(path, bytes))
        }
        _ => write_atomic(path, bytes),
    }
}

/// [`write_atomic`] on tokio's blocking pool, for async code.
pub async fn write_atomic_async(path: PathBuf, bytes: Vec<u8>) -> Result<(), WriteError> {
    let target = path.clone();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .unwrap_or_else(|e| {
            Err(WriteError {
                path: target,
                step: "writing (the blocking task failed)",
                source: std::io::Error::other(e),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!temporary_path(&p).exists());
    }

    #[test]
    fn a_failed_write_names_the_file_and_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"old").unwrap();
        // the temporary name taken by a directory: the write fails where a full disk fails it
        std::fs::create_dir(temporary_path(&p)).unwrap();
        let e = write_atomic(&p, b"new").unwrap_err();
        assert_eq!(e.path, temporary_path(&p));
        assert!(e.to_string().contains("state.tmp"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_async_and_in_place_forms_write_from_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        write_atomic_async(a.clone(), b"a".to_vec()).await.unwrap();
        let b = dir.path().join("b.json");
        write_atomic_blocking(&b, b"b").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"a");
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
    }

    #[tokio::test]
    async fn the_in_place_form_works_on_a_current_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        write_atomic_blocking(&p, b"c").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"c");
    }
}
