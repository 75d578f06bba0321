//! Write-then-rename: a file appears under its final name only once it is complete and on disk.

use std::fs::File;
use std::path::Path;

use super::error::CacheError;

/// Writes `path` through a temporary file in the same directory (`.<name>.XXXXXX.tmp`), fsyncs it, renames
/// it over `path` and fsyncs the directory. If `write` fails, the temporary file is removed and `path` is
/// left as it was. Returns the size of the written file in bytes.
/// Writes `bytes` to `path` atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<u64, CacheError> {
    write_atomic(path, |file| {
        use std::io::Write;
        file.write_all(bytes).map_err(|e| CacheError::io(path, e))
    })
}

pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), CacheError>,
) -> Result<u64, CacheError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile's default is 0600; cache files get the usual 0666 minus the umask like any other file.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| CacheError::io(dir, e))?;
    write(tmp.as_file_mut())?;
    let file = tmp.as_file();
    file.sync_all().map_err(|e| CacheError::io(tmp.path(), e))?;
    let size = file
        .metadata()
        .map_err(|e| CacheError::io(tmp.path(), e))?
        .len();
    tmp.persist(path)
        .map_err(|e| CacheError::io(path, e.error))?;
    sync_dir(dir)?;
    Ok(size)
}

/// Makes the rename durable. Directories cannot be opened for syncing on Windows; there it is a no-op.
fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CacheError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
