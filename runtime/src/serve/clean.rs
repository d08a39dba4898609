//! Removing what a power cut can leave in a module directory: temp files and blob files of the
//! directory's own naming that the manifest does not name (an operator's other files stay).

use crate::pack::atomic::DurableFs;
use crate::serve::ModuleRuntime;
use crate::Error;
use crate::Result;

impl ModuleRuntime {
    /// Removes what a power cut can leave behind: temp files and blob files named as this
    /// directory's writers name them (`class-NNN-*.blob`, `base-*.blob`) that the manifest does
    /// not name (staged updates that never committed, rollback copies already confirmed). Other
    /// files are an operator's, and stay.
    pub fn clean(&self, fs: &mut dyn DurableFs) -> Result<Vec<String>> {
        // Under the writer lock: another writer's temp and staged files are its work in progress.
        let w = self.writer()?;
        let manifest = &w.manifest;
        let named: std::collections::HashSet<&str> = manifest.files().collect();
        let mut removed = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let e = e.map_err(|e| Error::io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Only what a writer of this directory makes: its temp files, and blobs named as it
            // names them (`class-NNN-*`, `base-*`). Anything else is an operator's: left alone.
            let ours = name.starts_with("class-") || name.starts_with("base-");
            let stale = (name.starts_with('.') && name.contains(".tmp"))
                || (ours && name.ends_with(".blob") && !named.contains(name.as_str()));
            if stale && e.path().is_file() {
                fs.remove(&e.path()).map_err(|err| Error::io(e.path(), err))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use crate::pack::atomic::OsFs;
    use crate::serve::ModuleRuntime;
    use crate::testing::*;

    /// Issue 36, item 9: an operator's files in the device directory were removed as "a crash
    /// left behind". Only this directory's own leftovers go: temp files and blobs named as its
    /// writers name them that no manifest names.
    #[test]
    fn only_the_directorys_own_leftovers_are_removed() {
        let f = fixture(None);
        for name in [
            "notes.blob",
            "backup-2026.blob",
            "README.txt",
            "class-009-x-0123456789abcdef.blob",
            ".manifest.json.tmp-99",
        ] {
            std::fs::write(f.dir.join(name), b"x").unwrap();
        }
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        let mut removed = rt.clean(&mut OsFs).unwrap();
        removed.sort();
        assert_eq!(removed, [".manifest.json.tmp-99", "class-009-x-0123456789abcdef.blob"]);
        for kept in ["notes.blob", "backup-2026.blob", "README.txt"] {
            assert!(f.dir.join(kept).exists(), "{kept}");
        }
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}
