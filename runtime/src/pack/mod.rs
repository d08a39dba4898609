//! Bytes on disk: the blob containers of a base and of a class module, the manifest of a device directory, a packed directory read and checked file by file, read-only mappings of blob files, the
//! crash-safe replacement of a file that every write here goes through, and the lock that keeps
//! writers of one directory one at a time.

pub mod atomic;
pub mod base_blob;
pub mod dir_lock;
pub mod manifest;
pub mod mapped;
pub mod module_blob;
pub mod packed_dir;
pub(crate) mod parts;
pub mod regular;

pub use atomic::{DurableFs, OsFs};
pub use dir_lock::DirLock;
pub use module_blob::{Golden, ModuleBlob};
pub use packed_dir::PackedDir;
