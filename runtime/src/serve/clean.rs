//! Removing what a power cut can leave in a module directory: temp files and blob files the
//! manifest does not name.

use crate::pack::atomic::DurableFs;
use crate::serve::ModuleRuntime;
use crate::Error;
use crate::Result;

impl ModuleRuntime {
    /// Removes what a power cut can leave behind: temp files and blob files the manifest does not
    /// name (staged updates that never committed, rollback copies already confirmed).
    pub fn clean(&self, fs: &mut dyn DurableFs) -> Result<Vec<String>> {
        // Under the writer lock: another writer's temp and staged files are its work in progress.
        let w = self.writer()?;
        let manifest = &w.manifest;
        let named: std::collections::HashSet<&str> = manifest.files().collect();
        let mut removed = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let e = e.map_err(|e| Error::io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = (name.starts_with('.') && name.contains(".tmp"))
                || (name.ends_with(".blob") && !named.contains(name.as_str()));
            if stale && e.path().is_file() {
                fs.remove(&e.path()).map_err(|err| Error::io(e.path(), err))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }
}
