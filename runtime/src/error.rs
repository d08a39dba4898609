//! The runtime's typed errors: one variant per thing that went wrong, each saying what happened
//! and, for anything read from disk, which file. Every variant is something a user, an operator
//! or a corrupted file can cause; none of them is a panic. A variant never repeats the error it
//! wraps in its own text and also hands it out as a source, so `{:#}` chains print each fact once.

use std::path::PathBuf;

use classmod_blob::BlobError;

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a program acting on an [`Error`] does about it, in the manner of embedded-hal's
/// `ErrorKind`: the decision sits beside the variants ([`Error::kind`]) instead of being
/// re-derived by every device program that matches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The machine failed for now (a full disk, memory, an interrupted or busy call): the same
    /// request can succeed later; retry it.
    Transient,
    /// Another operation must end first (an update waiting for its commit): wait, then retry.
    Busy,
    /// What was asked is already so (the module is installed): nothing to do.
    AlreadyDone,
    /// The input itself is bad (corrupt, forged, of another model, a downgrade, out of range):
    /// refuse it; trying it again changes nothing.
    Refused,
    /// This build or this device cannot do it (a newer format, a GPU it lacks, a precision,
    /// layers not yet run, the memory budget): not the input's fault, and not passing either.
    Unsupported,
    /// The file system or the machine failed in a way that does not pass by itself
    /// (permissions, a missing file, an I/O error): the operator's to fix, not the input's.
    Environment,
    /// A bug: an API misused or an engine failing inside. Report it.
    Internal,
}

impl ErrorKind {
    /// The kind of an I/O error: [`ErrorKind::Transient`] for what passes (a full disk or quota,
    /// no memory, an interrupted, would-block, timed-out or busy call), else
    /// [`ErrorKind::Environment`].
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind::*;
        match e.kind() {
            StorageFull | QuotaExceeded | Interrupted | WouldBlock | TimedOut | ResourceBusy | OutOfMemory => {
                ErrorKind::Transient
            }
            _ => ErrorKind::Environment,
        }
    }
}

/// Everything that can go wrong loading, running, serving or updating modules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- Files and containers ---
    /// A file could not be read, written, mapped or renamed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },

    /// A path to read is not a regular file (a directory, FIFO, device, or a refused symlink).
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },

    /// A file to read is larger than anything of its kind may be.
    #[error("{}: {bytes} bytes, more than the {max} this reader takes", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        bytes: u64,
        /// The bound.
        max: u64,
    },

    /// A model or module file is not valid safetensors.
    #[error("not a safetensors file: {reason}")]
    NotSafetensors {
        /// What the safetensors parser said.
        reason: String,
    },

    /// A safetensors file lacks one of classmod's metadata keys.
    #[error("not a classmod model: metadata key `{key}` is missing (run `classmod import` on PyTorch exports)")]
    MissingMetadata {
        /// The key.
        key: &'static str,
    },

    /// A metadata entry (of a model, module, blob or manifest) does not parse or is out of range.
    #[error("metadata `{key}` is invalid: {reason}")]
    BadMetadata {
        /// Which entry.
        key: &'static str,
        /// Why.
        reason: String,
    },

    /// A container of another format version than this build reads.
    #[error("{}{format} of format version {found}: this build reads version {supported}", file.as_ref().map_or_else(String::new, |f| format!("{}: ", f.display())))]
    UnsupportedVersion {
        /// Which format: "classmod model file", "manifest".
        format: &'static str,
        /// The file, where the reader knows it.
        file: Option<PathBuf>,
        /// The file's version.
        found: String,
        /// The version this build reads.
        supported: u32,
    },

    /// A module of a kind this build cannot run (a newer device's module on an older one).
    #[error("module kind `{kind}` is not one this build runs (it runs: {known})")]
    UnknownModuleKind {
        /// The kind the module names.
        kind: String,
        /// The kinds this build runs.
        known: &'static str,
    },

    /// A blob that does not parse or verify (layout, hash, signature), in memory.
    #[error(transparent)]
    Blob(#[from] BlobError),

    /// A blob file that does not parse or verify.
    #[error("{}: {error}", path.display())]
    BadBlob {
        /// The file.
        path: PathBuf,
        /// Which rule of the format it breaks.
        error: BlobError,
    },

    /// A blob of the other kind (a base where a module was expected, or the reverse).
    #[error("a {found} blob where a {expected} blob was expected")]
    WrongBlobKind {
        /// The kind wanted.
        expected: &'static str,
        /// The kind found.
        found: &'static str,
    },

    /// A blob header's key does not match the contents it describes.
    #[error("the blob header's {key} key does not match its contents")]
    HeaderKeyMismatch {
        /// `base` or `input`.
        key: &'static str,
    },

    /// A key or hash in text that is not 64 hex digits.
    #[error("`{text}` is not a key of 64 hex digits")]
    BadKey {
        /// The text.
        text: String,
    },

    // --- Model ---
    /// A tensor the architecture needs is absent.
    #[error("tensor `{name}` is missing (expected shape {expected:?})")]
    MissingTensor {
        /// Its name.
        name: String,
        /// Its expected shape (empty when any shape would do).
        expected: Vec<usize>,
    },

    /// A tensor the architecture does not have.
    #[error("unexpected tensor `{name}` (shape {shape:?}) is not part of {arch}")]
    UnexpectedTensor {
        /// Its name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The architecture.
        arch: String,
    },

    /// A tensor stored flat with the wrong number of values (its shape is the metadata's).
    #[error("tensor `{name}` holds {found} values; its shape {expected:?} wants {}", expected.iter().product::<usize>())]
    TensorLength {
        /// Its name.
        name: String,
        /// The shape the metadata gives it.
        expected: Vec<usize>,
        /// The values found.
        found: usize,
    },

    /// A tensor of the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// Its name.
        name: String,
        /// The shape wanted.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },

    /// A tensor of the wrong element type.
    #[error("tensor `{name}` has dtype {found}, expected {expected}")]
    TensorDtype {
        /// Its name.
        name: String,
        /// The type wanted.
        expected: &'static str,
        /// The type found.
        found: String,
    },

    /// A weight that is NaN or infinite.
    #[error("tensor `{name}` holds a non-finite value")]
    NonFinite {
        /// The tensor.
        name: String,
    },

    /// A batch norm's running variance below zero: its scale would be NaN, and the model would
    /// classify at chance with no other sign.
    #[error("tensor `{name}` holds a negative variance ({value})")]
    NegativeVariance {
        /// The tensor.
        name: String,
        /// The first negative value.
        value: f32,
    },

    /// An architecture this runtime cannot build (depth, widths, shortcuts, class count).
    #[error("invalid architecture: {reason}")]
    InvalidArchitecture {
        /// What is out of range.
        reason: String,
    },

    /// An API called in a way its documentation rules out (a caller's bug, not bad input).
    #[error("misuse: {what}")]
    Misuse {
        /// What was asked.
        what: String,
    },

    /// A trunk asked for more stages than the network has (a caller's argument out of range).
    #[error("a trunk of {stages} stages was asked of a network of {network_stages} stages")]
    TrunkOutOfRange {
        /// Stages asked for.
        stages: usize,
        /// Stages the network has.
        network_stages: usize,
    },

    /// A trunk asked for as many blocks of a stage as it has, or more (or of a stage the network
    /// lacks): a trunk covering a whole stage ends after that stage instead.
    #[error("a trunk of {blocks} blocks of stage {stage} was asked of a stage of {stage_blocks} blocks")]
    TrunkBlocksOutOfRange {
        /// The stage (1-based).
        stage: usize,
        /// Blocks asked for.
        blocks: usize,
        /// Blocks the stage has (0: the network has no such stage).
        stage_blocks: usize,
    },

    /// An input spec out of range (channels, size, normalisation).
    #[error("invalid input spec: {reason}")]
    InvalidInputSpec {
        /// What is out of range.
        reason: String,
    },

    /// A model whose parts disagree (input spec against network, class names against outputs).
    #[error("inconsistent model: {reason}")]
    InconsistentModel {
        /// Which parts disagree.
        reason: String,
    },

    /// A batch of another shape than the network takes.
    #[error("input has shape {found:?}, the model expects [batch, {c}, {h}, {w}]", c = expected.0, h = expected.1, w = expected.2)]
    InputShape {
        /// (channels, height, width) the model takes.
        expected: (usize, usize, usize),
        /// What was given.
        found: Vec<usize>,
    },

    /// A [`crate::host::ReluHook`] returned an activation of another shape.
    #[error("a ReLU hook changed the shape of site {site}")]
    HookChangedShape {
        /// The site.
        site: usize,
    },

    // --- Modules ---
    /// A module that cannot run on the base it names (masks, class index, head width, input).
    #[error("module `{class}` does not fit its base: {reason}")]
    ModuleDoesNotFit {
        /// The module's class.
        class: String,
        /// What does not fit.
        reason: String,
    },

    /// A stored node mask of the wrong length or with bits past its last node.
    #[error("mask of site `{site}`: {reason}")]
    BadMask {
        /// The site.
        site: String,
        /// What is wrong.
        reason: String,
    },

    /// Golden self-test vectors that are not whole images, or not one score per image.
    #[error("golden self-test vectors: {reason}")]
    BadGolden {
        /// What is wrong.
        reason: String,
    },

    /// The golden self-test did not reproduce a packed score.
    #[error("golden self-test failed: image {image} scores {found}, the blob says {expected}")]
    GoldenMismatch {
        /// The golden image.
        image: usize,
        /// The score recorded when packing.
        expected: f32,
        /// The score computed now.
        found: f32,
    },

    /// A module self-tested against another base than the one it names.
    #[error("module `{class}` names another base model")]
    WrongBase {
        /// The module's class.
        class: String,
    },

    // --- Serving and updates ---
    /// A classification with nothing loaded.
    #[error("no classes are loaded")]
    NoClassesLoaded,

    /// A class the directory has no module for (or that is not loaded, for `unload`).
    #[error("no module for class `{0}`")]
    UnknownClass(String),

    /// A base model the manifest does not list.
    #[error("base {key} is not in the manifest")]
    BaseNotInManifest {
        /// Its key.
        key: crate::ModelKey,
    },

    /// A blob whose content hash is not the one the manifest records for it.
    #[error("{}: content hash differs from the manifest's", path.display())]
    ManifestHashMismatch {
        /// The file.
        path: PathBuf,
    },

    /// A module blob whose class or base differ from its manifest entry.
    #[error("{}: class or base differ from the manifest's", path.display())]
    ManifestEntryMismatch {
        /// The file.
        path: PathBuf,
    },

    /// An update whose base model the device does not have (send the base first).
    #[error("module `{class}` needs a base this device does not have")]
    MissingBase {
        /// The module's class.
        class: String,
    },

    /// An update whose class is not the named output of its base.
    #[error("class `{class}` is not output {index} of its base model")]
    ClassNotInBase {
        /// The module's class.
        class: String,
        /// The output index it claims.
        index: u32,
    },

    /// An update identical to the module already installed.
    #[error("class `{class}` already runs this module")]
    AlreadyInstalled {
        /// The class.
        class: String,
    },
    /// An update older than the newest release of its class the device has committed.
    #[error("class `{class}`: version {version} is older than version {highest}, the newest this device has committed (a downgrade)")]
    Downgrade {
        /// The class.
        class: String,
        /// The update's version.
        version: u64,
        /// The newest committed version of the class.
        highest: u64,
    },

    /// A change while an update installed as one transaction (a Mender artifact) waits to be
    /// committed or rolled back: what that rollback restores must stay as it is.
    #[error("update `{id}` is installed and not yet committed or rolled back: no other update until it is")]
    UpdatePending {
        /// The pending update's name.
        id: String,
    },

    /// Another process holds the directory's writer lock (an update installing, a rollback),
    /// and this runtime does not wait for writers ([`crate::LockWait::Never`]: a serving device).
    #[error("{}: another process is changing this directory{held_by}: the change waits until it is done", dir.display())]
    DirectoryBusy {
        /// The device directory.
        dir: PathBuf,
        /// Who holds it, as ` (held by PID NAME)`, or empty when the lock table cannot say.
        held_by: String,
    },

    /// The device directory's own manifest cannot be read while a change starts (missing for a
    /// moment, replaced by garbage): the device's fault, not the update's, and retried.
    #[error("the device directory's manifest cannot be read now: {0}")]
    DeviceManifest(Box<Error>),

    /// An update under the name of the pending one, with other contents: not the same update
    /// delivered again, and not to be reported installed.
    #[error("update `{id}` is installed and pending, with other contents than these: not installed again (a new update needs a new name, after this one is committed or rolled back)")]
    PendingContentsDiffer {
        /// The pending update's name.
        id: String,
    },

    /// Two modules of one class in one update.
    #[error("the update carries two modules of class `{class}`")]
    DuplicateClass {
        /// The class.
        class: String,
    },

    /// A rollback with no unconfirmed update to go back from.
    #[error("class `{class}` has no update to roll back")]
    NothingToRollBack {
        /// The class.
        class: String,
    },

    /// Loading would exceed the board's memory budget.
    #[error("memory budget exceeded: the loaded set would need {need} bytes, the board allows {budget}")]
    BudgetExceeded {
        /// Bytes the new set needs.
        need: u64,
        /// Bytes the board allows.
        budget: u64,
    },

    /// A class whose images have another shape than the served classes'.
    #[error("class `{class}` takes {}x{}x{} images, the served classes {}x{}x{}", found.0, found.1, found.2, served.0, served.1, served.2)]
    IncompatibleInput {
        /// The class.
        class: String,
        /// Its (channels, height, width).
        found: (usize, usize, usize),
        /// The served classes' (channels, height, width).
        served: (usize, usize, usize),
    },

    /// A compute device that cannot be used (no CUDA in this build, no GPU, no driver).
    #[error("cannot use {device}: {reason}")]
    DeviceUnavailable {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },

    /// A precision the device cannot compute in (the CPU path computes in f32 only).
    #[error("cannot compute in {precision} on {device}: {reason}")]
    PrecisionUnsupported {
        /// The precision asked for.
        precision: crate::Precision,
        /// The device.
        device: String,
        /// Why, and what would do.
        reason: String,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// What to do about it ([`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            Io { error, .. } => ErrorKind::of_io(error),
            UpdatePending { .. } | DirectoryBusy { .. } => ErrorKind::Busy,
            DeviceManifest(_) => ErrorKind::Environment,
            PendingContentsDiffer { .. } => ErrorKind::Refused,
            AlreadyInstalled { .. } => ErrorKind::AlreadyDone,
            UnsupportedVersion { .. }
            | UnknownModuleKind { .. }
            | BudgetExceeded { .. }
            | DeviceUnavailable { .. }
            | PrecisionUnsupported { .. } => ErrorKind::Unsupported,
            Misuse { .. }
            | TrunkOutOfRange { .. }
            | TrunkBlocksOutOfRange { .. }
            | HookChangedShape { .. }
            | Candle(_) => ErrorKind::Internal,
            NotRegularFile { .. }
            | FileTooLarge { .. }
            | NotSafetensors { .. }
            | MissingMetadata { .. }
            | BadMetadata { .. }
            | Blob(_)
            | BadBlob { .. }
            | WrongBlobKind { .. }
            | HeaderKeyMismatch { .. }
            | BadKey { .. }
            | MissingTensor { .. }
            | UnexpectedTensor { .. }
            | TensorShape { .. }
            | TensorLength { .. }
            | TensorDtype { .. }
            | NonFinite { .. }
            | NegativeVariance { .. }
            | InvalidArchitecture { .. }
            | InvalidInputSpec { .. }
            | InconsistentModel { .. }
            | InputShape { .. }
            | ModuleDoesNotFit { .. }
            | BadMask { .. }
            | BadGolden { .. }
            | GoldenMismatch { .. }
            | WrongBase { .. }
            | NoClassesLoaded
            | UnknownClass(_)
            | BaseNotInManifest { .. }
            | ManifestHashMismatch { .. }
            | ManifestEntryMismatch { .. }
            | MissingBase { .. }
            | ClassNotInBase { .. }
            | Downgrade { .. }
            | DuplicateClass { .. }
            | NothingToRollBack { .. }
            | IncompatibleInput { .. } => ErrorKind::Refused,
        }
    }

    /// The same error naming `path` as its file, where it names none yet.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Error::UnsupportedVersion { format, file: None, found, supported } => {
                Error::UnsupportedVersion { format, file: Some(path.to_path_buf()), found, supported }
            }
            other => other,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io { path: path.into(), error }
    }

    /// A blob error of the file at `path`.
    pub fn blob_file(path: impl Into<PathBuf>, error: BlobError) -> Self {
        Error::BadBlob { path: path.into(), error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{:#}` of an anyhow chain prints every source after the message: the text of a wrapped
    /// error must not appear twice.
    #[test]
    fn wrapped_errors_are_printed_once() {
        let e = Error::io("/x/y", std::io::Error::from(std::io::ErrorKind::NotFound));
        let chained = format!("{:#}", anyhow_like(&e));
        assert_eq!(chained.matches("not found").count(), 1, "{chained}");
        let b = Error::blob_file("/x/b.blob", BlobError::Unsigned);
        let chained = format!("{:#}", anyhow_like(&b));
        assert!(chained.contains("/x/b.blob"), "{chained}");
        assert_eq!(chained.matches(&BlobError::Unsigned.to_string()).count(), 1, "{chained}");
    }

    /// Each kind's decision: what passes is retried, what waits waits, what is done is done,
    /// and the input is refused only for its own faults.
    #[test]
    fn each_error_says_what_to_do_about_it() {
        use std::io::ErrorKind as Io;
        let io = |k: Io| Error::io("/x", std::io::Error::from(k));
        assert_eq!(io(Io::StorageFull).kind(), ErrorKind::Transient);
        assert_eq!(io(Io::OutOfMemory).kind(), ErrorKind::Transient);
        assert_eq!(io(Io::PermissionDenied).kind(), ErrorKind::Environment);
        assert_eq!(io(Io::NotFound).kind(), ErrorKind::Environment);
        assert_eq!(Error::UpdatePending { id: "a".into() }.kind(), ErrorKind::Busy);
        assert_eq!(Error::DirectoryBusy { dir: "d".into(), held_by: String::new() }.kind(), ErrorKind::Busy);
        assert_eq!(Error::AlreadyInstalled { class: "cat".into() }.kind(), ErrorKind::AlreadyDone);
        assert_eq!(Error::blob_file("/b", BlobError::Unsigned).kind(), ErrorKind::Refused);
        assert_eq!(Error::Downgrade { class: "cat".into(), version: 1, highest: 2 }.kind(), ErrorKind::Refused);
        let budget = Error::BudgetExceeded { need: 2, budget: 1 };
        assert_eq!(budget.kind(), ErrorKind::Unsupported);
        assert_eq!(Error::Misuse { what: "x".into() }.kind(), ErrorKind::Internal);
    }

    /// The message followed by each source, as anyhow's alternate form prints a chain.
    fn anyhow_like(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut next = e.source();
        while let Some(src) = next {
            s.push_str(": ");
            s.push_str(&src.to_string());
            next = src.source();
        }
        s
    }
}
