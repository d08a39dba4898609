//! Bytes on disk: the blob containers of a base and of a class module, the manifest of a device directory, read-only mappings of blob files, and the
//! crash-safe replacement of a file that every write here goes through.

pub mod atomic;
pub mod base_blob;
pub mod manifest;
pub mod mapped;
pub mod module_blob;
pub(crate) mod parts;
pub mod regular;

pub use atomic::{DurableFs, OsFs};
pub use module_blob::{Golden, ModuleBlob};
