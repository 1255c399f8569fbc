//! Backlog probes: whether input waits at a job's sources, read without running the job (a
//! suspended job's wake-up). Cheap reads only: a directory listing, never the data.
//!
//! - `filesystem` with a local path: visible files (not starting with `.` or `_`, as the
//!   source skips them) modified since the sources went idle.
//!
//! Other connectors cannot be probed yet (files on S3, queues): a job reading them is not
//! woken by input, only by a user.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weir_dataflow::plan::SourceSpec;

use crate::metadata::ids::UnixMillis;

/// Why the sources have input that came at or after `since`, if any has.
pub fn arrived_since(sources: &[SourceSpec], since: UnixMillis) -> Result<Option<String>, String> {
    let since = SystemTime::UNIX_EPOCH + Duration::from_millis(since.0);
    for source in sources.iter().filter(|s| s.connector == "filesystem") {
        let Some(path) = source.options.get("path") else { continue };
        if path.contains("://") && !path.starts_with("file://") {
            continue;
        }
        let root = PathBuf::from(path.strip_prefix("file://").unwrap_or(path));
        let count = new_files(&root, since).map_err(|e| format!("{}: {e}", root.display()))?;
        if count > 0 {
            let files = if count == 1 { "file" } else { "files" };
            return Ok(Some(format!("{count} new {files} in {path} (table '{}')", source.table)));
        }
    }
    Ok(None)
}

/// Visible files under `root` (or `root` itself) modified at or after `since`.
fn new_files(root: &Path, since: SystemTime) -> std::io::Result<u64> {
    let fresh = |meta: &std::fs::Metadata| meta.modified().is_ok_and(|at| at >= since);
    let meta = std::fs::metadata(root)?;
    if meta.is_file() {
        return Ok(u64::from(fresh(&meta)));
    }
    let mut count = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if fresh(&meta) {
                count += 1;
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::datatypes::Schema;

    use super::*;

    fn files_at(path: &Path) -> SourceSpec {
        SourceSpec {
            table: "events".into(),
            connector: "filesystem".into(),
            options: BTreeMap::from([("path".to_string(), path.display().to_string())]),
            physical_schema: Arc::new(Schema::empty()),
            projection: Vec::new(),
            idle_timeout: None,
        }
    }

    #[test]
    fn new_visible_files_since_the_idle_time_are_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.json"), "{}\n").unwrap();
        let after_old = UnixMillis(weir_dataflow::clock::unix_millis() + 1_000);
        let sources = [files_at(dir.path())];
        assert_eq!(arrived_since(&sources, after_old), Ok(None), "the old file was read before");

        std::fs::write(dir.path().join(".in-progress"), "{}\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/_hidden"), "{}\n").unwrap();
        let before = UnixMillis(weir_dataflow::clock::unix_millis().saturating_sub(60_000));
        let found = arrived_since(&sources, before).unwrap().expect("old.json is newer than a minute ago");
        assert!(found.starts_with("1 new file in"), "hidden files are not input: {found}");
        std::fs::write(dir.path().join("sub/new.json"), "{}\n").unwrap();
        let found = arrived_since(&sources, before).unwrap().expect("two files");
        assert!(found.starts_with("2 new files in") && found.contains("table 'events'"), "{found}");

        let missing = [files_at(&dir.path().join("nope"))];
        assert!(arrived_since(&missing, before).is_err());
    }
}
