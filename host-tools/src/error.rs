//! The host tools' own failures, beside the runtime's ([`classmod_runtime::Error`], wrapped):
//! what importing, training, decomposing and the experiments can run into that is not a fault
//! of a model or module file.

use std::path::PathBuf;

/// `Result` with the host tools' [`HostError`].
pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// Something the host tools cannot do with what they were given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A model, module or blob error, or a file error of the runtime.
    #[error(transparent)]
    Runtime(#[from] classmod_runtime::Error),

    /// The training engine's: values that do not fit a network, a minibatch that does not fit.
    #[error(transparent)]
    Train(#[from] classmod_train::TrainError),

    /// A dataset that cannot be read.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),

    /// `--class-names` of another length than the dataset's classes.
    #[error("--class-names gives {given} names, {} has {found} classes", dataset.display())]
    ClassNamesCount {
        /// Names given.
        given: usize,
        /// The dataset.
        dataset: PathBuf,
        /// Its classes.
        found: usize,
    },

    /// A class index beyond the model's outputs.
    #[error("class index {index} is out of range: the model has {classes} classes")]
    ClassOutOfRange {
        /// The index asked for.
        index: usize,
        /// The model's number of classes.
        classes: usize,
    },

    /// A class that no training image is classified as with confidence (no positives).
    #[error("class `{class}`: the model classifies none of the {scanned} scanned training images as this class")]
    NoPositives {
        /// The class.
        class: String,
        /// How many images were scanned.
        scanned: usize,
    },

    /// A packed directory whose manifest lists no base model.
    #[error("{}: the manifest names no base model", dir.display())]
    NoBaseInManifest {
        /// The directory.
        dir: PathBuf,
    },

    /// A composition evaluated without the base's figures to compare against.
    #[error("the evaluation has no base figures to compare with")]
    NoBaseFigures,

    /// `experiment replace` or a transplant given models of other classes or input specs.
    #[error("replace and transplant need two models with the same classes and input spec")]
    ModelsDiffer,

    /// Modules given as a model's own that are not one per class of it, in class order, on it.
    #[error("the modules given are not one for every class of {model}, in class order, on its weights")]
    ModulesNotOfModel {
        /// The model's name.
        model: String,
    },

    /// Training on an empty set.
    #[error("no training images")]
    NoTrainingImages,

    /// A tensor the architecture needs that the given tensors lack (an import of a model of
    /// another architecture, a network being trained without one of its parameters).
    #[error("tensor `{name}` is missing")]
    MissingTensor {
        /// Its canonical name.
        name: String,
    },

    /// A class without training images to fit a head on.
    #[error("no training images of class `{class}` to recalibrate with")]
    NoImagesOfClass {
        /// The class.
        class: String,
    },

    /// The loss became NaN or infinite.
    #[error("training diverged at step {step} (loss {loss}); lower --lr")]
    Diverged {
        /// The step.
        step: usize,
        /// The loss.
        loss: f64,
    },

    /// The peer engines of `classmod bench --peers` could not be set up or measured.
    #[error(transparent)]
    Peers(#[from] crate::bench::peers::PeerError),

    /// Options that cannot go together.
    #[error("{what}")]
    Options {
        /// Which, and why.
        what: String,
    },

    /// A resume file that cannot be read, or is not of the run asked to go on.
    #[error("{}: {reason}", path.display())]
    ResumeFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// PyTorch tensors that describe no CIFAR ResNet this build knows, or not the one asked for.
    #[error("cannot import: {reason}")]
    Import {
        /// What does not fit.
        reason: String,
    },
}

impl HostError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        HostError::Runtime(classmod_runtime::Error::io(path, error))
    }
}

impl From<candle_core::Error> for HostError {
    fn from(e: candle_core::Error) -> Self {
        HostError::Runtime(e.into())
    }
}
