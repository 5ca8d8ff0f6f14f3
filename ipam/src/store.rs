//! The on-disk lease store, byte-compatible with the reference plugin's data directory
//! (the reference plugin's layout):
//!
//! ```text
//! <dataDir>/<network>/lock                 empty; flock(LOCK_EX) serialises every writer
//! <dataDir>/<network>/<ip>                 "<containerID>\r\n<ifname>" (no newline), mode 0600
//! <dataDir>/<network>/last_reserved_ip.<n> last address handed out from range set n
//! ```
//!
//! A lease appears atomically: its content is written to an unnamed `O_TMPFILE` in the same
//! directory and then given its name with `linkat(2)`, which fails with `EEXIST` exactly like the
//! reference's `O_CREAT|O_EXCL`. No reader (ours or the reference) can ever see an empty or partial
//! lease, and a `kill -9` leaves nothing behind. On file systems without `O_TMPFILE` a named temp
//! file `.host-local-tmp.*` is used instead: its name never parses as an address, so neither the
//! reference nor our GC/duplicate checks take it for a lease, and since temp files are only ever
//! created under the lock, any temp file seen while holding the lock belongs to a dead writer and
//! is swept. `last_reserved_ip.*` is replaced with `rename(2)` for the same reason.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::Error;
use crate::index::{self, IndexedLease, Listing, INDEX_FILE};

/// Name of the lock file inside the network directory.
pub const LOCK_FILE: &str = "lock";
/// Prefix of the per-range-set round-robin cursor files.
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Prefix of our temp files; never a valid address, never `lock`/`last_reserved_ip.*`.
pub const TEMP_PREFIX: &str = ".host-local-tmp.";
/// Separator between container ID and ifname in a lease (the reference's `LineBreak`).
pub const LINE_BREAK: &str = "\r\n";

/// What a directory entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A lease: the name parses as an address.
    Lease(IpAddr),
    /// `lock`, `last_reserved_ip.*` or our owner index: allocator state, never a lease.
    State,
    /// One of our temp files.
    Temp,
    /// Anything else (left alone).
    Other,
}

/// Classify a file name the way the reference does (a lease is a file named by an address).
pub fn classify(name: &str) -> EntryKind {
    if name == LOCK_FILE || name == INDEX_FILE || name.starts_with(LAST_RESERVED_PREFIX) {
        EntryKind::State
    } else if name.starts_with(TEMP_PREFIX) {
        EntryKind::Temp
    } else if let Ok(ip) = name.parse::<IpAddr>() {
        EntryKind::Lease(ip)
    } else {
        EntryKind::Other
    }
}

/// Who holds a lease, parsed from its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// `<cid>\r\n<ifname>`.
    Attachment {
        /// Container ID.
        cid: String,
        /// Interface name.
        ifname: String,
    },
    /// Legacy lease holding only the container ID.
    Legacy(String),
    /// Empty content (a reference writer killed between create and write).
    Nobody,
}

impl Owner {
    /// Parse lease content; surrounding whitespace is ignored like the reference's TrimSpace.
    pub fn parse(content: &str) -> Owner {
        let t = content.trim();
        if t.is_empty() {
            return Owner::Nobody;
        }
        match t.split_once(LINE_BREAK) {
            Some((cid, ifname)) => Owner::Attachment {
                cid: cid.to_string(),
                ifname: ifname.to_string(),
            },
            None => Owner::Legacy(t.to_string()),
        }
    }
}

/// Lease content for an attachment.
pub fn lease_content(cid: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", cid.trim())
}

/// An open network directory.
pub struct Store {
    dir: PathBuf,
    /// The directory itself, for `openat` reads of lease files (no path walk, no statx).
    dirfd: File,
    lock: File,
}

/// Holds `flock(LOCK_EX)` on the lock file until dropped.
pub struct LockGuard<'a> {
    file: &'a File,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the fd is valid for the guard's lifetime (borrowed from the Store).
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn cstring(p: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        Error::io(
            "invalid path",
            p,
            std::io::Error::from(ErrorKind::InvalidInput),
        )
    })
}

static TEMP_SEQ: AtomicU32 = AtomicU32::new(0);

/// Inode, size, mtime and ctime to the nanosecond: what changes when a file or directory does.
fn file_stamp(m: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}:{}:{}.{}:{}.{}",
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// Whether the file system of `fd` has multigrain timestamps: Linux 6.13 or later, and tmpfs,
/// ext4, xfs or btrfs (the file systems that opted in).
fn multigrain_fs(fd: libc::c_int) -> bool {
    const TMPFS: i64 = 0x0102_1994;
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    static KERNEL_OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let kernel_ok = *KERNEL_OK.get_or_init(|| {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (6, 13)
    });
    if !kernel_ok {
        return false;
    }
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and a writable statfs.
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    matches!(magic, TMPFS | EXT4 | XFS | BTRFS)
}

impl Store {
    /// Open the network directory, creating it (0755) and its lock file like the reference does.
    pub fn open(dir: PathBuf) -> Result<Store, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| Error::io("create", &dir, e))?;
        Self::open_lock(dir)
    }

    /// Open the network directory only if it exists (DEL/CHECK/GC/STATUS create nothing).
    pub fn open_existing(dir: PathBuf) -> Result<Option<Store>, Error> {
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Self::open_lock(dir).map(Some),
            Ok(_) => Err(Error::io(
                "open",
                &dir,
                std::io::Error::from(ErrorKind::NotADirectory),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", &dir, e)),
        }
    }

    fn open_lock(dir: PathBuf) -> Result<Store, Error> {
        let path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let dirfd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(|e| Error::io("open", &dir, e))?;
        Ok(Store { dir, dirfd, lock })
    }

    /// The network directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Take the exclusive lock (shared with the reference plugin, cni#118).
    pub fn lock(&self) -> Result<LockGuard<'_>, Error> {
        loop {
            // SAFETY: valid open fd owned by self.
            let rc = unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(LockGuard { file: &self.lock });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(Error::io("flock", self.dir.join(LOCK_FILE), e));
            }
        }
    }

    /// Every entry of the directory, sorted by name (the reference walks in lexical order, so
    /// "first match" messages agree). Call with the lock held when the answer must be exact.
    pub fn entries(&self) -> Result<Vec<(String, EntryKind)>, Error> {
        let rd = fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("read", &self.dir, e))?;
            // Non-UTF-8 names are neither leases nor ours.
            let Ok(name) = ent.file_name().into_string() else {
                continue;
            };
            let kind = classify(&name);
            out.push((name, kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The leases (address and file name) currently in the directory.
    pub fn leases(&self) -> Result<Vec<(IpAddr, String)>, Error> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|(n, k)| match k {
                EntryKind::Lease(ip) => Some((ip, n)),
                _ => None,
            })
            .collect())
    }

    /// Content of a lease file, or None if it vanished or is unreadable.
    pub fn read(&self, name: &str) -> Option<String> {
        // ADD and DEL read every lease of the network (as the reference does), so this is the
        // hot path: openat + read + close, three syscalls per lease.
        let name_c = CString::new(name).ok()?;
        // SAFETY: valid directory fd and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dirfd.as_raw_fd(),
                name_c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd was just opened and is owned by nobody else; File closes it on drop.
        let mut f = unsafe { <File as std::os::unix::io::FromRawFd>::from_raw_fd(fd) };
        // A regular file's read returns less than asked only at end of file, so one read
        // settles every normal lease (container IDs are at most a few hundred bytes).
        let mut small = [0u8; 512];
        let n = std::io::Read::read(&mut f, &mut small).ok()?;
        if n < small.len() {
            return Some(String::from_utf8_lossy(&small[..n]).into_owned());
        }
        let mut buf = small.to_vec();
        std::io::Read::read_to_end(&mut f, &mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Remove temp files of dead writers. Only call with the lock held: live writers create
    /// temp files only while holding it.
    pub fn sweep_temps(&self, entries: &[(String, EntryKind)]) {
        for (name, kind) in entries {
            if *kind == EntryKind::Temp {
                let _ = fs::remove_file(self.dir.join(name));
            }
        }
    }

    /// Leases held by (cid, ifname) or, legacy, by cid alone (duplicate check of ADD). The
    /// listing names the candidates; each is re-read so a stale index never refuses an ADD.
    pub fn get_by_id(&self, listing: &Listing, cid: &str, ifname: &str) -> Vec<IpAddr> {
        let want = lease_content(cid, ifname);
        let legacy = cid.trim();
        listing
            .held_by(&want)
            .chain(listing.held_by(legacy))
            .filter(|l| {
                self.read(&l.name)
                    .is_some_and(|c| c.trim() == want || c.trim() == legacy)
            })
            .map(|l| l.ip)
            .collect()
    }

    /// Every lease with its owner, read through the owner index (see [`crate::index`]): one
    /// directory listing, plus one read per lease the index does not know. Temp files of dead
    /// writers are swept on the way. Lock must be held.
    pub fn listing(&self) -> Result<Listing, Error> {
        let (text, index_stamp) = self.read_index();
        let cached = text.map(|t| index::decode(&t)).unwrap_or_default();
        if self.seal_holds(&index_stamp) {
            return Ok(Listing {
                leases: cached,
                dirty: false,
                files_read: 0,
                sealed: true,
            });
        }
        let rd = fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        let mut listing = Listing::default();
        let mut known = 0usize;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("read", &self.dir, e))?;
            let Ok(name) = ent.file_name().into_string() else {
                continue;
            };
            let ip = match classify(&name) {
                EntryKind::Lease(ip) => ip,
                EntryKind::Temp => {
                    let _ = fs::remove_file(self.dir.join(&name));
                    continue;
                }
                EntryKind::State | EntryKind::Other => continue,
            };
            let ino = std::os::unix::fs::DirEntryExt::ino(&ent);
            let content = match index::find(&cached, &name) {
                Some(l) if l.ino == ino => {
                    known += 1;
                    l.content.clone()
                }
                _ => {
                    listing.files_read += 1;
                    // Vanished since the listing: not a lease any more.
                    let Some(c) = self.read(&name) else { continue };
                    c
                }
            };
            listing.leases.push(IndexedLease {
                ip,
                name,
                ino,
                content,
            });
        }
        listing.leases.sort_by(|a, b| a.name.cmp(&b.name));
        listing.dirty = listing.files_read > 0 || known != cached.len();
        Ok(listing)
    }

    /// Whether the directory and the index provably did not change since our last sealed call
    /// (see [`Store::seal`]), so the index alone is the listing.
    fn seal_holds(&self, index_stamp: &str) -> bool {
        let Some(stamp) = self.dir_stamp(index_stamp) else {
            return false;
        };
        // A seal is about 140 bytes; anything longer is not ours and fails the comparison.
        let mut buf = [0u8; 512];
        // SAFETY: valid fd and a writable buffer of the given length.
        let n =
            unsafe { libc::pread(self.lock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n)
            .ok()
            .and_then(|n| buf.get(..n))
            .is_some_and(|seal| seal == stamp.as_bytes())
    }

    /// The directory's change stamp (mtime and ctime to the nanosecond), only where a change
    /// after we read it is guaranteed to produce a different stamp: multigrain timestamps
    /// (Linux 6.13+) on tmpfs, ext4, xfs and btrfs. Elsewhere timestamps are as coarse as a
    /// clock tick, a foreign writer could go unnoticed, and `None` makes callers list.
    fn dir_stamp(&self, index_stamp: &str) -> Option<String> {
        if index_stamp.is_empty() || !multigrain_fs(self.dirfd.as_raw_fd()) {
            return None;
        }
        let m = self.dirfd.metadata().ok()?;
        Some(format!(
            "rcni-seal dir {} index {index_stamp}",
            file_stamp(&m)
        ))
    }

    /// Whether this directory's file system gives multigrain timestamps (sealed listings).
    pub fn multigrain(&self) -> bool {
        multigrain_fs(self.dirfd.as_raw_fd())
    }

    /// The owner index's text and its own stamp (so an in-place edit of the index is noticed
    /// too); empty stamp when there is no index.
    fn read_index(&self) -> (Option<String>, String) {
        let Ok(name) = CString::new(INDEX_FILE) else {
            return (None, String::new());
        };
        // SAFETY: valid directory fd and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dirfd.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return (None, String::new());
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let mut f = unsafe { <File as std::os::unix::io::FromRawFd>::from_raw_fd(fd) };
        let stamp = f.metadata().map(|m| file_stamp(&m)).unwrap_or_default();
        let mut text = String::new();
        match std::io::Read::read_to_string(&mut f, &mut text) {
            Ok(_) => (Some(text), stamp),
            Err(_) => (None, String::new()),
        }
    }

    /// After a call changed the directory and the index matches it, record the directory's
    /// stamp in the lock file (whose content the reference never reads; writing it does not
    /// change the directory). The next call trusts the index without listing the directory
    /// if the stamp is unchanged: any lease created, replaced or removed by anyone since then
    /// (the reference, a killed writer, an admin) changed it. Lock must be held. Best effort.
    pub fn seal(&self, listing: &Listing) {
        let stamp = if listing.dirty {
            None
        } else {
            let index_stamp = fs::metadata(self.dir.join(INDEX_FILE))
                .map(|m| file_stamp(&m))
                .unwrap_or_default();
            self.dir_stamp(&index_stamp)
        };
        let bytes = stamp.unwrap_or_default();
        // SAFETY: valid fd; the buffer outlives the calls.
        unsafe {
            libc::pwrite(self.lock.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0);
            libc::ftruncate(self.lock.as_raw_fd(), bytes.len() as libc::off_t);
        }
    }

    /// Rewrite the owner index when the listing changed. Best effort: a stale or missing index
    /// only costs reads on the next call. Lock must be held. Returns whether the index on disk
    /// now matches the listing.
    pub fn save_listing(&self, listing: &Listing) -> bool {
        if !listing.dirty {
            return true;
        }
        match self.replace_file(INDEX_FILE, listing.encode().as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("host-local: owner index: {e}");
                false
            }
        }
    }

    /// Replace `name` in the directory with `content` atomically (temp file + rename), so no
    /// reader ever sees it partial. Lock must be held.
    fn replace_file(&self, name: &str, content: &[u8]) -> Result<(), Error> {
        let target = self.dir.join(name);
        let tmp = self.temp_path();
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&tmp)?;
            f.write_all(content)?;
            fs::rename(&tmp, &target)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("write", &target, e)
        })
    }

    /// Write the index if needed, then seal: the end of every call that changed leases. A
    /// failed index write leaves the old index in place, which must not be vouched for.
    pub fn save_and_seal(&self, listing: &mut Listing) {
        listing.dirty = !self.save_listing(listing);
        self.seal(listing);
    }

    /// A writer for new leases of (cid, ifname); call [`LeaseWriter::claim`] per candidate.
    pub fn writer(&self, cid: &str, ifname: &str) -> Result<LeaseWriter<'_>, Error> {
        LeaseWriter::new(self, lease_content(cid, ifname))
    }

    /// The round-robin cursor of range set `idx`, if readable.
    pub fn last_reserved(&self, idx: usize) -> Option<IpAddr> {
        let s = fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{idx}"))).ok()?;
        s.trim().parse().ok()
    }

    /// Replace the cursor of range set `idx` atomically (temp + rename). Lock must be held.
    pub fn set_last_reserved(&self, idx: usize, ip: IpAddr) -> Result<(), Error> {
        self.replace_file(
            &format!("{LAST_RESERVED_PREFIX}{idx}"),
            ip.to_string().as_bytes(),
        )
    }

    fn temp_path(&self) -> PathBuf {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{TEMP_PREFIX}{}.{seq}", std::process::id()))
    }

    /// Remove the lease of `ip` if it still holds exactly `content` (rollback). Lock must be held.
    pub fn remove_if_owned(&self, ip: IpAddr, content: &str) -> Result<bool, Error> {
        let name = ip.to_string();
        if self.read(&name).is_some_and(|c| c.trim() == content) {
            let path = self.dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io("remove", path, e)),
            }
        }
        Ok(false)
    }

    /// DEL: remove every lease of (cid, ifname); if there is none, every legacy lease of cid.
    /// The listing names the candidates; `remove_matching` re-reads each before removing it.
    /// Keeps going past failures and reports them at the end. Lock must be held.
    pub fn release_by_id(&self, cid: &str, ifname: &str) -> Result<Vec<IpAddr>, Error> {
        let mut listing = self.listing()?;
        let want = lease_content(cid, ifname);
        let legacy = cid.trim();
        let candidates = |content: &str| -> Vec<(IpAddr, String)> {
            listing
                .held_by(content)
                .map(|l| (l.ip, l.name.clone()))
                .collect()
        };
        let (exact, old) = (candidates(&want), candidates(legacy));
        let mut outcome = self.remove_matching(&exact, |c| c == want);
        if matches!(&outcome, Ok(r) if r.is_empty()) {
            outcome = self.remove_matching(&old, |c| c == legacy);
        }
        for (_, name) in exact.iter().chain(&old) {
            if !self.dir.join(name).exists() {
                listing.remove(name);
            }
        }
        if outcome.is_ok() {
            self.save_and_seal(&mut listing);
        } else {
            self.save_listing(&listing);
        }
        outcome
    }

    fn remove_matching(
        &self,
        leases: &[(IpAddr, String)],
        matches: impl Fn(&str) -> bool,
    ) -> Result<Vec<IpAddr>, Error> {
        let mut released = Vec::new();
        let mut failed = Vec::new();
        for (ip, name) in leases {
            if !self.read(name).is_some_and(|c| matches(c.trim())) {
                continue;
            }
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => released.push(*ip),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => failed.push(format!("remove {}: {e}", path.display())),
            }
        }
        if failed.is_empty() {
            Ok(released)
        } else {
            Err(Error::Gc(failed))
        }
    }

    /// CHECK: does (cid, ifname), or legacy cid, hold any lease?
    pub fn find_by_id(&self, cid: &str, ifname: &str) -> Result<bool, Error> {
        let listing = self.listing()?;
        Ok(!self.get_by_id(&listing, cid, ifname).is_empty())
    }

    /// GC (spec 1.1): remove every lease not owned by one of `valid` (cid, ifname) pairs.
    /// Legacy leases survive when any valid attachment has their container ID; empty leases
    /// have no owner. Temp files of dead writers are removed; `lock` and `last_reserved_ip.*`
    /// are kept (plugins#1047). Lock must be held.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<Vec<IpAddr>, Error> {
        let entries = self.entries()?;
        self.sweep_temps(&entries);
        let pairs: HashSet<(&str, &str)> =
            valid.iter().map(|(c, i)| (c.trim(), i.as_str())).collect();
        let cids: HashSet<&str> = valid.iter().map(|(c, _)| c.trim()).collect();
        let leases: Vec<(IpAddr, String)> = entries
            .into_iter()
            .filter_map(|(name, kind)| match kind {
                EntryKind::Lease(ip) => Some((ip, name)),
                _ => None,
            })
            .collect();
        self.remove_matching(&leases, |content| match Owner::parse(content) {
            Owner::Attachment { cid, ifname } => !pairs.contains(&(cid.as_str(), ifname.as_str())),
            Owner::Legacy(cid) => !cids.contains(cid.as_str()),
            Owner::Nobody => true,
        })
    }
}

/// Writes one lease content once and links it under candidate names until one is free.
pub struct LeaseWriter<'a> {
    store: &'a Store,
    content: String,
    tmp: TempLease,
}

enum TempLease {
    /// Unnamed `O_TMPFILE`; linked into place by fd.
    Anonymous(File),
    /// Named temp file (file systems without O_TMPFILE); removed on drop.
    Named(PathBuf),
}

impl<'a> LeaseWriter<'a> {
    fn new(store: &'a Store, content: String) -> Result<LeaseWriter<'a>, Error> {
        let tmp = match Self::anonymous(&store.dir, &content) {
            Ok(f) => TempLease::Anonymous(f),
            Err(e) if Self::tmpfile_unsupported(&e) => {
                TempLease::Named(Self::named(store, &content)?)
            }
            Err(e) => return Err(Error::io("create lease in", &store.dir, e)),
        };
        Ok(LeaseWriter {
            store,
            content,
            tmp,
        })
    }

    /// Force the named-temp-file path (tests of the fallback).
    #[doc(hidden)]
    pub fn new_named(store: &'a Store, cid: &str, ifname: &str) -> Result<LeaseWriter<'a>, Error> {
        let content = lease_content(cid, ifname);
        let path = Self::named(store, &content)?;
        Ok(LeaseWriter {
            store,
            content,
            tmp: TempLease::Named(path),
        })
    }

    fn tmpfile_unsupported(e: &std::io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
        )
    }

    fn anonymous(dir: &Path, content: &str) -> std::io::Result<File> {
        let mut f = OpenOptions::new()
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir)?;
        f.write_all(content.as_bytes())?;
        Ok(f)
    }

    fn named(store: &Store, content: &str) -> Result<PathBuf, Error> {
        let path = store.temp_path();
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)?;
            f.write_all(content.as_bytes())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&path);
            Error::io("write", &path, e)
        })?;
        Ok(path)
    }

    /// The content every lease of this writer gets.
    pub fn content(&self) -> &str {
        &self.content
    }

    /// Inode number of the leases this writer links (all are hard links of one file).
    pub fn inode(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        match &self.tmp {
            TempLease::Anonymous(f) => f.metadata().ok().map(|m| m.ino()),
            TempLease::Named(p) => fs::metadata(p).ok().map(|m| m.ino()),
        }
    }

    /// Try to create the lease for `ip`: Ok(false) when the name is taken (`EEXIST`).
    pub fn claim(&self, ip: IpAddr) -> Result<bool, Error> {
        let target = self.store.dir.join(ip.to_string());
        let target_c = cstring(&target)?;
        let res = match &self.tmp {
            TempLease::Anonymous(f) => link_fd(f, &target_c),
            TempLease::Named(p) => {
                let src = cstring(p)?;
                // SAFETY: both are valid NUL-terminated paths for the duration of the call.
                let rc = unsafe { libc::link(src.as_ptr(), target_c.as_ptr()) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        };
        match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("create", target, e)),
        }
    }
}

/// Give an `O_TMPFILE` its name. `AT_EMPTY_PATH` needs CAP_DAC_READ_SEARCH; without it the
/// kernel says ENOENT and the `/proc/self/fd` form (needs /proc) does the same job.
fn link_fd(f: &File, target: &CString) -> std::io::Result<()> {
    let empty = c"";
    // SAFETY: valid fd, valid NUL-terminated strings; AT_EMPTY_PATH links the fd itself.
    let rc = unsafe {
        libc::linkat(
            f.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EPERM)) {
        return Err(e);
    }
    let proc_path = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated strings; AT_SYMLINK_FOLLOW resolves the magic link.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for LeaseWriter<'_> {
    fn drop(&mut self) {
        if let TempLease::Named(p) = &self.tmp {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_and_state_files_are_never_leases() {
        assert_eq!(classify(".host-local-tmp.123.4"), EntryKind::Temp);
        assert_eq!(classify("lock"), EntryKind::State);
        assert_eq!(classify("last_reserved_ip.0"), EntryKind::State);
        assert_eq!(
            classify("fd00::2"),
            EntryKind::Lease("fd00::2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])))
        );
        assert_eq!(classify("README"), EntryKind::Other);
    }

    #[test]
    fn owners_parse_like_the_reference_trims() {
        assert_eq!(
            Owner::parse("c1\r\neth0"),
            Owner::Attachment {
                cid: "c1".into(),
                ifname: "eth0".into()
            }
        );
        assert_eq!(Owner::parse(" legacy\n"), Owner::Legacy("legacy".into()));
        assert_eq!(Owner::parse(""), Owner::Nobody);
        assert_eq!(lease_content(" c1 ", "eth0"), "c1\r\neth0");
    }
}
