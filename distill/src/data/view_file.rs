//! The file behind a [`ViewTable`](super::ViewTable): every view of every image of a cache as one dense
//! row-major `[N, K+1, D]` matrix in the cache's own dtype (f32 or f16), memory-mapped read-only, so the
//! OS page cache, not the heap, holds the data (DomainNet: 586k images × 9 views × 2048 values).
//!
//! It is built once from the Parquet parts and kept as `<cache>/distill/views-<M>-<P>.bin`, where `M`
//! digests the manifest and the size and modification time of every part (what determines the values)
//! and `P` the image order (the teacher cache's path list: a student cache gets one file per teacher
//! order). A file appears under its name only complete and fsynced (write to `.views-….tmp`, rename), so
//! a name is never reused for other content and a mapped file never changes under a run. Building a
//! file removes the cache's files of other manifests (stale). Layout: a [`HEADER_BYTES`] header (magic,
//! then the length and text of a JSON [`Header`], zero-padded) and the values, native byte order.
//! Where `<cache>/distill` cannot be written, the table is built in an unnamed temporary file instead.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::{ensure, Context, Result};
use half::f16;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vl2v::cache::{EmbeddingDtype, Manifest};

/// Subdirectory of a cache holding distill's derived files.
pub const DIR: &str = "distill";
/// Bytes before the values: a page, so that the mapped values are aligned for f32 and f16.
pub const HEADER_BYTES: usize = 4096;
const MAGIC: &[u8; 8] = b"VL2VVIEW";
/// Tables up to this size are read ahead whole when mapped for [`Reads::Sampled`].
const WILL_NEED_BYTES: usize = 2 << 30;
/// The page size assumed for access advice.
const PAGE_BYTES: usize = 4096;
/// The lock file serialising builds in `<cache>/distill` (parallel runs on one cache build a table once).
pub const LOCK_FILE: &str = ".lock";
/// Values written per `pwrite` at most (consecutive rows are coalesced).
const FLUSH_BYTES: usize = 4 << 20;

/// The shape and dtype of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub images: usize,
    /// Views per image, including view 0.
    pub views: usize,
    pub dim: usize,
    pub dtype: EmbeddingDtype,
}

impl Layout {
    fn row_bytes(&self) -> usize {
        self.dim * self.dtype.size()
    }

    fn value_bytes(&self) -> usize {
        self.images * self.views * self.row_bytes()
    }
}

/// What a file's header records; a file is reused only when every field matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    format: u32,
    layout: Layout,
    little_endian: bool,
    manifest: String,
    paths: String,
}

/// The digests that name a table's file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    manifest: String,
    paths: String,
}

impl Key {
    /// Digests the manifest with the size and modification time of each part (a part missing here gets
    /// zeros: reading it fails later with the reader's own message) and the image order `paths`.
    pub fn new(dir: &Path, manifest: &Manifest, paths: &[String]) -> Result<Self> {
        let mut h = Sha256::new();
        h.update(b"vl2v view file 1\0");
        h.update(serde_json::to_vec(manifest)?);
        for part in &manifest.parts {
            let (size, mtime) = std::fs::metadata(dir.join(part))
                .map(|m| {
                    let t = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                    (m.len(), t.map_or(0, |t| t.as_nanos()))
                })
                .unwrap_or((0, 0));
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
            h.update(size.to_le_bytes());
            h.update(mtime.to_le_bytes());
        }
        let mut p = Sha256::new();
        for path in paths {
            p.update((path.len() as u64).to_le_bytes());
            p.update(path.as_bytes());
        }
        let short = |d: &[u8]| {
            d[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        Ok(Key {
            manifest: short(&h.finalize()),
            paths: short(&p.finalize()),
        })
    }

    pub fn file_name(&self) -> String {
        format!("views-{}-{}.bin", self.manifest, self.paths)
    }

    fn header(&self, layout: Layout) -> Header {
        Header {
            format: 1,
            layout,
            little_endian: cfg!(target_endian = "little"),
            manifest: self.manifest.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// The path of the file of `key` in the cache `dir`.
pub fn file_path(dir: &Path, key: &Key) -> PathBuf {
    dir.join(DIR).join(key.file_name())
}

/// How a run reads a table, which decides what the kernel is told about the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Minibatches of every view of the training images (a run that trains from the cache): nearly every
    /// page is touched, so a table up to [`WILL_NEED_BYTES`] is read ahead whole (a cold start costs one
    /// sequential read); rows of a larger one are fetched as minibatches touch them, without read-ahead,
    /// which would only evict useful pages.
    Sampled,
    /// View 0 of the evaluated images alone (zero-shot, or a run whose teacher is online): nothing is read
    /// ahead whole. Where one image's views span two pages or more, view-0 rows are fetched alone (random
    /// access); otherwise the kernel's default read-around serves the neighbouring rows too.
    View0,
}

/// A table's values, mapped read-only.
#[derive(Debug)]
pub struct Mapped {
    map: Mmap,
    layout: Layout,
}

/// The values of a mapped table, `[N, K+1, D]` row-major.
pub enum Values<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl Mapped {
    fn new(file: &File, layout: Layout) -> Result<Self> {
        // SAFETY: the file is never written once it is complete: named files are replaced by rename
        // (a new inode), never rewritten, and an unnamed one is private to this process.
        let map = unsafe { Mmap::map(file) }.context("cannot map the view table")?;
        ensure!(
            map.len() == HEADER_BYTES + layout.value_bytes(),
            "the view table maps {} bytes, expected {}",
            map.len(),
            HEADER_BYTES + layout.value_bytes()
        );
        Ok(Mapped { map, layout })
    }

    /// Tells the kernel how `reads` will touch the table (see [`Reads`]); advice only, so failures are
    /// ignored.
    pub fn advise(&self, reads: Reads) {
        #[cfg(unix)]
        if let Some(advice) = advice(reads, self.layout, self.map.len()) {
            let _ = self.map.advise(advice);
        }
        #[cfg(not(unix))]
        let _ = reads;
    }

    pub fn values(&self) -> Values<'_> {
        let n = self.layout.images * self.layout.views * self.layout.dim;
        let ptr = self.map[HEADER_BYTES..].as_ptr();
        // SAFETY: the length was checked in `new`; the map starts on a page boundary and the values a page
        // after it, so they are aligned for both types; every bit pattern is a valid f32 and f16.
        unsafe {
            match self.layout.dtype {
                EmbeddingDtype::F32 => {
                    Values::F32(std::slice::from_raw_parts(ptr.cast::<f32>(), n))
                }
                EmbeddingDtype::F16 => {
                    Values::F16(std::slice::from_raw_parts(ptr.cast::<f16>(), n))
                }
            }
        }
    }
}

/// The advice for a table of `layout` mapped as `bytes` bytes that is read as `reads` says; `None`: the
/// kernel's default (read-around near each fault).
#[cfg(unix)]
fn advice(reads: Reads, layout: Layout, bytes: usize) -> Option<memmap2::Advice> {
    let image_bytes = layout.views * layout.row_bytes();
    match reads {
        Reads::Sampled if bytes <= WILL_NEED_BYTES => Some(memmap2::Advice::WillNeed),
        Reads::Sampled => Some(memmap2::Advice::Random),
        Reads::View0 if image_bytes >= 2 * PAGE_BYTES => Some(memmap2::Advice::Random),
        Reads::View0 => None,
    }
}

/// Maps the file of `key` if it exists and its header and size match `layout`; `None` means build it.
pub fn open(dir: &Path, key: &Key, layout: Layout) -> Option<Arc<Mapped>> {
    let mut file = File::open(file_path(dir, key)).ok()?;
    let mut head = vec![0u8; HEADER_BYTES];
    file.read_exact(&mut head).ok()?;
    if &head[..8] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    let header: Header = serde_json::from_slice(head.get(12..12 + len)?).ok()?;
    if header != key.header(layout) {
        return None;
    }
    Mapped::new(&file, layout).ok().map(Arc::new)
}

/// Waits for any other run building a table of the cache `dir` and holds its build lock until the returned
/// file is dropped; `None` where the lock cannot be had (the build goes on unlocked).
pub fn lock_builds(dir: &Path) -> Option<File> {
    let sub = dir.join(DIR);
    std::fs::create_dir_all(&sub).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(sub.join(LOCK_FILE))
        .ok()?;
    match file.try_lock() {
        Ok(()) => Some(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "waiting for another run to finish building a view table in {}",
                sub.display()
            );
            file.lock().ok().map(|()| file)
        }
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// Every named table built by this process (tests count them).
#[cfg(test)]
pub static BUILT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Where a table being built goes.
enum Dest {
    Named {
        tmp: tempfile::NamedTempFile,
        target: PathBuf,
    },
    Unnamed(File),
}

/// Builds a table's file row by row; `finish` makes it visible under its name and maps it. Dropping an
/// unfinished writer removes the temporary file.
pub struct Writer {
    dest: Dest,
    layout: Layout,
    key: Key,
    /// First row of `buf`; `buf` holds the converted values of consecutive rows.
    pending: usize,
    buf: Vec<u8>,
}

impl Writer {
    /// A writer for `layout` in `<dir>/distill`, or in an unnamed temporary file where that cannot be
    /// written (said on stderr; `what` names the cache).
    pub fn create(dir: &Path, key: &Key, layout: Layout, what: &str) -> Result<Self> {
        let target = file_path(dir, key);
        let named = target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let prefix = format!(".{}.", key.file_name());
                let mut builder = tempfile::Builder::new();
                builder.prefix(&prefix).suffix(".tmp");
                #[cfg(unix)]
                builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
                builder.tempfile_in(dir.join(DIR))
            });
        let gib = (HEADER_BYTES + layout.value_bytes()) as f64 / f64::from(1u32 << 30);
        let dest = match named {
            Ok(tmp) => {
                eprintln!(
                    "building {} ({} images × {} views × {} {}, {gib:.2} GiB; later runs reuse it)",
                    target.display(),
                    layout.images,
                    layout.views,
                    layout.dim,
                    dtype_name(layout.dtype)
                );
                Dest::Named { tmp, target }
            }
            Err(e) => {
                eprintln!(
                    "cannot write {} ({e}): the {what} view table ({gib:.2} GiB) goes to a temporary file \
                     instead and is rebuilt on every run",
                    target.display()
                );
                let file = tempfile::tempfile().context(
                    "cannot create a temporary file for the view table (set TMPDIR to a roomier disk)",
                )?;
                Dest::Unnamed(file)
            }
        };
        let w = Writer {
            dest,
            layout,
            key: key.clone(),
            pending: 0,
            buf: Vec::with_capacity(FLUSH_BYTES + layout.row_bytes()),
        };
        let file = w.file();
        file.set_len((HEADER_BYTES + layout.value_bytes()) as u64)
            .with_context(|| w.describe("cannot size"))?;
        let json = serde_json::to_vec(&key.header(layout))?;
        let mut head = Vec::with_capacity(HEADER_BYTES);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(json.len() as u32).to_le_bytes());
        head.extend_from_slice(&json);
        ensure!(head.len() <= HEADER_BYTES, "view table header too long");
        w.write_at(&head, 0)?;
        Ok(w)
    }

    fn file(&self) -> &File {
        match &self.dest {
            Dest::Named { tmp, .. } => tmp.as_file(),
            Dest::Unnamed(file) => file,
        }
    }

    fn write_at(&self, bytes: &[u8], at: usize) -> Result<()> {
        let mut file = self.file();
        file.seek(SeekFrom::Start(at as u64))
            .and_then(|_| file.write_all(bytes))
            .with_context(|| self.describe("cannot write"))
    }

    fn describe(&self, doing: &str) -> String {
        match &self.dest {
            Dest::Named { tmp, .. } => format!("{doing} {}", tmp.path().display()),
            Dest::Unnamed(_) => format!("{doing} the temporary view table"),
        }
    }

    /// Stores `values` (`dim` of them) as row `row` (= image × views + view), in the table's dtype.
    pub fn put(&mut self, row: usize, values: &[f32]) -> Result<()> {
        let row_bytes = self.layout.row_bytes();
        if row != self.pending + self.buf.len() / row_bytes || self.buf.len() >= FLUSH_BYTES {
            self.flush()?;
            self.pending = row;
        }
        match self.layout.dtype {
            EmbeddingDtype::F32 => values
                .iter()
                .for_each(|x| self.buf.extend_from_slice(&x.to_ne_bytes())),
            EmbeddingDtype::F16 => values
                .iter()
                .for_each(|&x| self.buf.extend_from_slice(&f16::from_f32(x).to_ne_bytes())),
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let at = HEADER_BYTES + self.pending * self.layout.row_bytes();
            self.write_at(&self.buf, at)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is pending, then (named file) fsyncs it, renames it into place, removes the cache's
    /// files of other manifests, and maps it.
    pub fn finish(mut self) -> Result<Arc<Mapped>> {
        self.flush()?;
        let Writer {
            dest, layout, key, ..
        } = self;
        let file = match dest {
            Dest::Unnamed(file) => file,
            Dest::Named { tmp, target } => {
                tmp.as_file()
                    .sync_all()
                    .with_context(|| format!("cannot sync {}", tmp.path().display()))?;
                let file = tmp
                    .persist(&target)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                let dir = target.parent().unwrap_or(Path::new("."));
                // Makes the rename durable; directories cannot be opened for syncing on Windows.
                #[cfg(unix)]
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("cannot sync {}", dir.display()))?;
                remove_stale(dir, &key);
                #[cfg(test)]
                BUILT.lock().unwrap().push(target);
                file
            }
        };
        Ok(Arc::new(Mapped::new(&file, layout)?))
    }
}

fn dtype_name(dtype: EmbeddingDtype) -> &'static str {
    match dtype {
        EmbeddingDtype::F32 => "f32",
        EmbeddingDtype::F16 => "f16",
    }
}

/// Removes the tables of other manifests of this cache (the cache changed since they were built). Runs
/// still mapping one keep their pages until they end.
fn remove_stale(dir: &Path, key: &Key) {
    let current = format!("views-{}-", key.manifest);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("views-") && name.ends_with(".bin") && !name.starts_with(&current) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use memmap2::Advice;

    #[test]
    fn advice_follows_how_the_table_is_read() {
        let layout = |views, dim| Layout {
            images: 1000,
            views,
            dim,
            dtype: EmbeddingDtype::F16,
        };
        let gib = 1usize << 30;
        // Training reads every view: small tables are read ahead whole, larger ones not at all.
        assert_eq!(
            advice(Reads::Sampled, layout(9, 512), gib),
            Some(Advice::WillNeed)
        );
        assert_eq!(
            advice(Reads::Sampled, layout(2, 512), 2 * gib),
            Some(Advice::WillNeed)
        );
        assert_eq!(
            advice(Reads::Sampled, layout(2, 512), 2 * gib + 1),
            Some(Advice::Random)
        );
        // Evaluation reads view 0: 9 views of 512 f16 values span 9 KiB, so view-0 rows are fetched alone;
        // 2 views span 2 KiB, where read-around fetches rows evaluation reads too.
        assert_eq!(
            advice(Reads::View0, layout(9, 512), 1000),
            Some(Advice::Random)
        );
        assert_eq!(
            advice(Reads::View0, layout(4, 1024), 1000),
            Some(Advice::Random)
        );
        assert_eq!(advice(Reads::View0, layout(2, 512), 1000), None);
        assert_eq!(advice(Reads::View0, layout(2, 768), 1000), None);
    }
}
