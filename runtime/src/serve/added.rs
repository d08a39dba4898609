//! The classes updates added that the device serves (`Manifest::added_classes`): recorded by an
//! atomic manifest write so that a restart serves them again.

use crate::pack::atomic::DurableFs;
use crate::serve::ModuleRuntime;
use crate::{Error, Result};

impl ModuleRuntime {
    /// Records that `class` (which has a module here) is served since an update added it. Already
    /// recorded: nothing is written.
    pub fn note_added_class(&self, fs: &mut dyn DurableFs, class: &str) -> Result<()> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        if manifest.module(class).is_none() {
            return Err(Error::UnknownClass(class.to_string()));
        }
        if manifest.added_classes.iter().any(|c| c == class) {
            return Ok(());
        }
        let mut next = manifest.clone();
        next.added_classes.push(class.to_string());
        next.write_with(fs, self.dir())?;
        *manifest = next;
        self.note_seen();
        Ok(())
    }

    /// Forgets the classes updates added (their modules stay): the device serves what it is
    /// started with. Returns the classes forgotten; none: nothing is written.
    pub fn forget_added_classes(&self, fs: &mut dyn DurableFs) -> Result<Vec<String>> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        if manifest.added_classes.is_empty() {
            return Ok(Vec::new());
        }
        let mut next = manifest.clone();
        let forgotten = std::mem::take(&mut next.added_classes);
        next.write_with(fs, self.dir())?;
        *manifest = next;
        self.note_seen();
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use crate::pack::atomic::OsFs;
    use crate::pack::manifest::Manifest;
    use crate::serve::ModuleRuntime;
    use crate::testing::*;

    #[test]
    fn added_classes_are_recorded_once_and_forgotten() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.note_added_class(&mut OsFs, "c").unwrap();
        rt.note_added_class(&mut OsFs, "c").unwrap();
        assert!(rt.note_added_class(&mut OsFs, "nope").is_err());
        assert_eq!(Manifest::read(&f.dir).unwrap().added_classes, ["c"]);
        drop(rt);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        assert_eq!(rt.manifest().added_classes, ["c"]);
        assert_eq!(rt.forget_added_classes(&mut OsFs).unwrap(), ["c"]);
        assert!(rt.forget_added_classes(&mut OsFs).unwrap().is_empty());
        assert!(Manifest::read(&f.dir).unwrap().added_classes.is_empty());
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}
