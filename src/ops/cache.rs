//! The op cache: a private, per-user directory of built ops.
//!
//! ```text
//! <root>/                          DSRS_CACHE_DIR, else $XDG_CACHE_HOME/deepspeed_rs, else ~/.cache/deepspeed_rs
//!   compilers/<fingerprint>.json   memoized compiler identities (compiler.rs)
//!   ops-v1/<op>/<key>/             one committed build: the artifact, manifest.json, build.log
//!   ops-v1/<op>/<key>.lock         the per-key build lock (flock; released by the kernel when the holder dies)
//!   ops-v1/<op>/<key>.failed.log   the full log of the last failed build of that key
//!   ops-v1/<op>/.tmp-<key>-<pid>-<n>/  a build in progress (renamed to <key>/ when complete)
//! ```
//!
//! The root must be a directory owned by the current user and writable by nobody else
//! (the code loaded from it runs in-process); a directory that is not is refused with an
//! explanation, never silently used. Artifacts are built in a temporary directory and
//! renamed into place, so a key directory is either complete or absent; the manifest holds
//! the artifact's SHA-256, checked before every load.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The layout version, part of every op path.
pub const LAYOUT: &str = "ops-v1";

/// The manifest file name inside a key directory.
pub const MANIFEST: &str = "manifest.json";

/// The cache root, from the environment, not yet checked.
pub fn default_root() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DSRS_CACHE_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if d.is_relative() {
            return Err(Error::config(format!(
                "DSRS_CACHE_DIR=\"{}\" is a relative path; set it to an absolute directory",
                d.display()
            )));
        }
        return Ok(d);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        let x = PathBuf::from(x);
        if x.is_absolute() {
            return Ok(x.join("deepspeed_rs"));
        }
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("deepspeed_rs")),
        None => Err(Error::config(
            "no cache directory: set DSRS_CACHE_DIR (or XDG_CACHE_HOME or HOME)",
        )),
    }
}

/// The cache: a checked root directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Opens the cache at `root`, creating it (mode 0700) if needed, and refuses it when it
    /// is not private.
    pub fn open(root: &Path) -> Result<Cache> {
        Cache::open_with(root, true)
    }

    /// Opens the cache at `root` if it exists (checking it), without creating it.
    pub fn open_existing(root: &Path) -> Result<Option<Cache>> {
        if !root.exists() {
            return Ok(None);
        }
        Cache::open_with(root, false).map(Some)
    }

    fn open_with(root: &Path, create: bool) -> Result<Cache> {
        if create && !root.exists() {
            if let Some(parent) = root.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(root) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(root, e)),
            }
        }
        check_private(root)?;
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    /// Opens the cache at [`default_root`].
    pub fn open_default() -> Result<Cache> {
        Cache::open(&default_root()?)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where compiler identities are memoized.
    pub fn compilers_dir(&self) -> PathBuf {
        self.root.join("compilers")
    }

    /// The directory of one op's builds (created on demand).
    pub fn op_dir(&self, op: &str) -> PathBuf {
        self.root.join(LAYOUT).join(op)
    }

    /// The committed build of `op` with `key`.
    pub fn key_dir(&self, op: &str, key: &str) -> PathBuf {
        self.op_dir(op).join(key)
    }

    /// Creates the op's directory (0700).
    pub fn ensure_op_dir(&self, op: &str) -> Result<PathBuf> {
        let dir = self.op_dir(op);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// Every committed build, every stale temporary directory and every failure log.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let base = self.root.join(LAYOUT);
        let mut out = Vec::new();
        let Ok(ops) = fs::read_dir(&base) else {
            return Ok(out);
        };
        for op in ops.flatten() {
            let op_name = op.file_name().to_string_lossy().into_owned();
            let Ok(items) = fs::read_dir(op.path()) else {
                continue;
            };
            for item in items.flatten() {
                let name = item.file_name().to_string_lossy().into_owned();
                let path = item.path();
                let kind = if name.starts_with(".tmp-") {
                    EntryKind::Temporary {
                        pid: name
                            .split('-')
                            .nth(2)
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0),
                    }
                } else if name.ends_with(".lock") {
                    continue;
                } else if name.ends_with(".failed.log") {
                    EntryKind::FailedLog
                } else if path.is_dir() {
                    EntryKind::Build(Manifest::read(&path).map_err(|e| e.to_string()))
                } else {
                    continue;
                };
                out.push(Entry {
                    op: op_name.clone(),
                    name,
                    path,
                    kind,
                });
            }
        }
        out.sort_by(|a, b| (&a.op, &a.name).cmp(&(&b.op, &b.name)));
        Ok(out)
    }
}

/// One item in the cache.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The op's name.
    pub op: String,
    /// The file or directory name (the key, for builds).
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
}

/// What a cache [`Entry`] is.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a listing has a handful of entries
pub enum EntryKind {
    /// A committed build, with its manifest (or why it cannot be read).
    Build(std::result::Result<Manifest, String>),
    /// A build in progress, or left by a process that died.
    Temporary {
        /// The building process.
        pid: u32,
    },
    /// The log of a failed build.
    FailedLog,
}

/// Whether a process is alive (`kill(pid, 0)`).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Refuses a directory that others could write into, or that someone else owns.
pub fn check_private(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    let fix = format!(
        "compiled ops are loaded into this process from it, so it must be private: run `chmod 700 {}`, or set DSRS_CACHE_DIR to a directory only you can write",
        dir.display()
    );
    if !meta.is_dir() {
        return Err(Error::UnsafeCache(format!(
            "op cache {} is not a directory",
            dir.display()
        )));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Error::UnsafeCache(format!(
            "refusing op cache {}: it is owned by uid {}, not by this user (uid {me}); {fix}",
            dir.display(),
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 {
            "world-writable"
        } else {
            "group-writable"
        };
        return Err(Error::UnsafeCache(format!(
            "refusing op cache {}: it is {who} (mode {mode:04o}); {fix}",
            dir.display()
        )));
    }
    // A parent that others can write without the sticky bit lets them rename our directory away.
    if let Some(parent) = dir.parent()
        && let Ok(pm) = fs::metadata(parent)
    {
        let pmode = pm.permissions().mode() & 0o7777;
        if pmode & 0o022 != 0 && pmode & 0o1000 == 0 && pm.uid() != me {
            return Err(Error::UnsafeCache(format!(
                "refusing op cache {}: its parent {} is writable by others (mode {pmode:04o}) without the sticky bit, so they could replace the cache; set DSRS_CACHE_DIR to a directory in a private location",
                dir.display(),
                parent.display()
            )));
        }
    }
    Ok(())
}

/// The manifest of a committed build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Manifest format version (1).
    pub format: u32,
    /// The op's name.
    pub op: String,
    /// `cpu` or `cuda`.
    pub kind: String,
    /// The cache key.
    pub key: String,
    /// The artifact's file name in the key directory.
    pub artifact: String,
    /// The artifact's SHA-256, lowercase hex.
    pub sha256: String,
    /// The artifact's size in bytes.
    pub size: u64,
    /// The op ABI version the artifact was built for.
    pub op_abi: u32,
    /// The deepspeed_rs version that built it.
    pub built_by: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// Build time in milliseconds.
    pub build_ms: u64,
    /// The compiler (`g++ 12.2.0 (gnu)`, `nvrtc 12.9`).
    pub compiler: String,
    /// The target: `native:avx512`, `portable:scalar`, `sm_90`, `compute_80`.
    pub target: String,
    /// The command that built it.
    pub command: Vec<String>,
}

impl Manifest {
    /// Reads `<dir>/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let p = dir.join(MANIFEST);
        let text = fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            what: p.display().to_string(),
            source,
        })
    }

    /// Writes `<dir>/manifest.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(MANIFEST);
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        write_private(&p, &text)
    }

    /// Reads the artifact and checks its size and SHA-256 against the manifest; returns the
    /// verified bytes (what gets loaded).
    pub fn verify(&self, dir: &Path) -> Result<Vec<u8>> {
        let p = dir.join(&self.artifact);
        let mut f = File::open(&p).map_err(|e| Error::io(&p, e))?;
        let mut bytes = Vec::with_capacity(self.size as usize);
        f.read_to_end(&mut bytes).map_err(|e| Error::io(&p, e))?;
        if bytes.len() as u64 != self.size {
            return Err(Error::Format(format!(
                "{} is {} bytes but its manifest says {} (truncated or replaced)",
                p.display(),
                bytes.len(),
                self.size
            )));
        }
        let digest = sha256_hex(&bytes);
        if digest != self.sha256 {
            return Err(Error::Format(format!(
                "{} has SHA-256 {digest} but its manifest says {} (modified after it was built)",
                p.display(),
                self.sha256
            )));
        }
        Ok(bytes)
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file readable only by its owner.
pub fn write_private(p: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| Error::io(p, e))?;
    f.write_all(data).map_err(|e| Error::io(p, e))
}

/// An exclusive, cross-process lock on one cache key: `flock(2)` on `<key>.lock`. The kernel
/// releases it when the holder exits or is killed, so a crashed build never wedges the
/// cache. The file is opened close-on-exec, so compilers spawned by the holder do not
/// inherit (and outlive it with) the lock.
#[derive(Debug)]
pub struct KeyLock {
    file: File,
    path: PathBuf,
}

impl KeyLock {
    /// Takes the lock, waiting up to `timeout`. `on_wait` is called once, with the holder's
    /// pid when known, if the lock is busy.
    pub fn acquire(
        path: &Path,
        timeout: Duration,
        on_wait: impl FnOnce(Option<u32>),
    ) -> Result<KeyLock> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let start = Instant::now();
        let mut on_wait = Some(on_wait);
        loop {
            // SAFETY: fd is an open file descriptor we own.
            if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK)
                && err.raw_os_error() != Some(libc::EINTR)
            {
                return Err(Error::io(path, err));
            }
            if let Some(f) = on_wait.take() {
                let holder = fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                f(holder);
            }
            if start.elapsed() >= timeout {
                let holder = fs::read_to_string(path).unwrap_or_default();
                return Err(Error::LockTimeout(format!(
                    "timed out after {:.0} s waiting for the build lock {} (held by pid {}); raise DSRS_BUILD_LOCK_TIMEOUT or stop that process",
                    timeout.as_secs_f64(),
                    path.display(),
                    holder.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Record the holder for diagnostics (the lock itself is the flock, not this text).
        let _ = file.set_len(0);
        let _ = file.write_all(format!("{}\n", std::process::id()).as_bytes());
        Ok(KeyLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        // Closing the file releases the flock.
    }
}

/// A private temporary directory (mode 0700), removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory (it was renamed into place).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Makes a private scratch directory in the system temp dir.
pub fn scratch_dir(prefix: &str) -> Result<ScratchDir> {
    scratch_dir_in(&std::env::temp_dir(), &format!("dsrs-{prefix}"))
}

/// Makes a private scratch directory `<parent>/<prefix>-XXXXXX`.
pub fn scratch_dir_in(parent: &Path, prefix: &str) -> Result<ScratchDir> {
    use std::os::unix::ffi::OsStrExt;
    let template = parent.join(format!("{prefix}-XXXXXX"));
    let mut bytes = template.as_os_str().as_bytes().to_vec();
    bytes.push(0);
    // SAFETY: a NUL-terminated, writable template ending in XXXXXX.
    let r = unsafe { libc::mkdtemp(bytes.as_mut_ptr() as *mut libc::c_char) };
    if r.is_null() {
        return Err(Error::io(&template, std::io::Error::last_os_error()));
    }
    bytes.pop();
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
    Ok(ScratchDir { path, keep: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_pass_and_shared_ones_are_refused_with_the_fix() {
        let d = scratch_dir("cache-test").unwrap();
        let root = d.path().join("cache");
        let c = Cache::open(&root).unwrap();
        assert_eq!(
            fs::metadata(c.root()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Cache::open(&root).unwrap_err().to_string();
        assert!(
            e.contains("world-writable") && e.contains("chmod 700"),
            "{e}"
        );
        fs::set_permissions(&root, fs::Permissions::from_mode(0o770)).unwrap();
        let e = Cache::open(&root).unwrap_err().to_string();
        assert!(e.contains("group-writable"), "{e}");
    }

    #[test]
    fn a_held_lock_times_out_naming_the_holder() {
        let d = scratch_dir("lock-test").unwrap();
        let p = d.path().join("k.lock");
        let held = KeyLock::acquire(&p, Duration::from_secs(1), |_| {}).unwrap();
        let mut saw = None;
        let e = KeyLock::acquire(&p, Duration::from_millis(100), |pid| saw = pid).unwrap_err();
        assert_eq!(saw, Some(std::process::id()));
        assert!(e.to_string().contains("timed out"), "{e}");
        drop(held);
        KeyLock::acquire(&p, Duration::from_millis(100), |_| {}).unwrap();
    }

    #[test]
    fn verification_catches_truncation_and_tampering() {
        let d = scratch_dir("verify-test").unwrap();
        let data = b"not really a shared library, but bytes all the same".to_vec();
        fs::write(d.path().join("a.so"), &data).unwrap();
        let m = Manifest {
            format: 1,
            op: "x".into(),
            kind: "cpu".into(),
            key: "k".into(),
            artifact: "a.so".into(),
            sha256: sha256_hex(&data),
            size: data.len() as u64,
            op_abi: 1,
            built_by: "test".into(),
            created: 0,
            build_ms: 0,
            compiler: "c".into(),
            target: "t".into(),
            command: vec![],
        };
        m.write(d.path()).unwrap();
        assert_eq!(Manifest::read(d.path()).unwrap(), m);
        m.verify(d.path()).unwrap();
        let mut bad = data.clone();
        bad[3] ^= 1;
        fs::write(d.path().join("a.so"), &bad).unwrap();
        assert!(
            m.verify(d.path())
                .unwrap_err()
                .to_string()
                .contains("SHA-256")
        );
        fs::write(d.path().join("a.so"), &data[..10]).unwrap();
        assert!(
            m.verify(d.path())
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
    }
}
