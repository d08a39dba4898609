//! The label order: the model's class names when it has real ones, else sorted folder names or
//! the numeric labels of IDX / CIFAR binary files.

use std::path::Path;

use super::DatasetError;

/// What the model says about its classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ModelClasses {
    /// No model, or no names.
    Unknown,
    /// `class0`, `class1`, ... of an unnamed import: only the count means something.
    Generic(usize),
    /// Real names: they fix the label order.
    Named(Vec<String>),
}

impl ModelClasses {
    pub(super) fn new(names: Option<&[String]>) -> ModelClasses {
        match names {
            None | Some([]) => ModelClasses::Unknown,
            Some(names) if is_generic(names) => ModelClasses::Generic(names.len()),
            Some(names) => ModelClasses::Named(names.to_vec()),
        }
    }
}

/// Exactly `class0`, `class1`, ..., `class{n-1}`.
fn is_generic(names: &[String]) -> bool {
    names.iter().enumerate().all(|(i, n)| *n == format!("class{i}"))
}

/// Class names and labels for a dataset whose classes are named folders.
///
/// `found`: the class folder names that hold images, sorted and unique. Returns the class names
/// of the set and, for each of `found`, its label.
pub(super) fn resolve_named(
    path: &Path,
    found: &[String],
    model: &ModelClasses,
) -> Result<(Vec<String>, Vec<u32>), DatasetError> {
    match model {
        ModelClasses::Unknown => Ok((found.to_vec(), (0..found.len() as u32).collect())),
        ModelClasses::Generic(n) => {
            if found.len() > *n {
                return Err(DatasetError::ClassMismatch {
                    path: path.to_path_buf(),
                    reason: format!("the dataset has {} classes, the model only {n}", found.len()),
                });
            }
            Ok((found.to_vec(), (0..found.len() as u32).collect()))
        }
        ModelClasses::Named(names) => {
            let mut labels = Vec::with_capacity(found.len());
            let mut unknown = Vec::new();
            for class in found {
                match names.iter().position(|n| n == class) {
                    Some(i) => labels.push(i as u32),
                    None => unknown.push(class.as_str()),
                }
            }
            if !unknown.is_empty() {
                return Err(DatasetError::ClassMismatch {
                    path: path.to_path_buf(),
                    reason: format!(
                        "dataset classes not among the model's: {} (the model's classes: {})",
                        unknown.join(", "),
                        names.join(", ")
                    ),
                });
            }
            Ok((names.clone(), labels))
        }
    }
}

/// Class names for a dataset with numeric labels.
///
/// `natural`: the dataset's own names (`0`, `1`, ... or CIFAR-10's `batches.meta.txt`), used
/// unless the model has real names. `max_label`: the largest label present (None: no images).
pub(super) fn resolve_numeric(
    path: &Path,
    natural: Vec<String>,
    max_label: Option<u32>,
    model: &ModelClasses,
) -> Result<Vec<String>, DatasetError> {
    let model_len = match model {
        ModelClasses::Unknown => return Ok(natural),
        ModelClasses::Generic(n) => *n,
        ModelClasses::Named(names) => names.len(),
    };
    if let Some(max) = max_label {
        if max as usize >= model_len {
            return Err(DatasetError::ClassMismatch {
                path: path.to_path_buf(),
                reason: format!(
                    "the dataset has label {max}, the model only {model_len} classes (labels 0..{model_len})"
                ),
            });
        }
    }
    Ok(match model {
        ModelClasses::Named(names) => names.clone(),
        _ => natural,
    })
}

/// `0`, `1`, ..., `n-1`.
pub(super) fn numeric_names(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn model_classes_kinds() {
        assert_eq!(ModelClasses::new(None), ModelClasses::Unknown);
        assert_eq!(ModelClasses::new(Some(&[])), ModelClasses::Unknown);
        assert_eq!(ModelClasses::new(Some(&s(&["class0", "class1"]))), ModelClasses::Generic(2));
        // Out of order or with gaps is not generic.
        assert_eq!(ModelClasses::new(Some(&s(&["class1", "class0"]))), ModelClasses::Named(s(&["class1", "class0"])));
        assert_eq!(ModelClasses::new(Some(&s(&["cat"]))), ModelClasses::Named(s(&["cat"])));
    }

    #[test]
    fn named_resolution() {
        let p = Path::new("d");
        let found = s(&["cat", "dog"]);
        assert_eq!(resolve_named(p, &found, &ModelClasses::Unknown).unwrap(), (found.clone(), vec![0, 1]));
        assert_eq!(resolve_named(p, &found, &ModelClasses::Generic(3)).unwrap(), (found.clone(), vec![0, 1]));
        assert!(matches!(resolve_named(p, &found, &ModelClasses::Generic(1)), Err(DatasetError::ClassMismatch { .. })));
        let model = ModelClasses::Named(s(&["dog", "bird", "cat"]));
        assert_eq!(resolve_named(p, &found, &model).unwrap(), (s(&["dog", "bird", "cat"]), vec![2, 0]));
        let err = resolve_named(p, &s(&["cat", "emu", "yak"]), &model).unwrap_err();
        match err {
            DatasetError::ClassMismatch { reason, .. } => assert!(reason.contains("emu, yak"), "{reason}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn numeric_resolution() {
        let p = Path::new("d");
        let nat = numeric_names(3);
        assert_eq!(resolve_numeric(p, nat.clone(), Some(2), &ModelClasses::Unknown).unwrap(), nat);
        assert_eq!(resolve_numeric(p, nat.clone(), Some(2), &ModelClasses::Generic(3)).unwrap(), nat);
        assert!(matches!(
            resolve_numeric(p, nat.clone(), Some(3), &ModelClasses::Generic(3)),
            Err(DatasetError::ClassMismatch { .. })
        ));
        let model = ModelClasses::Named(s(&["a", "b", "c"]));
        assert_eq!(resolve_numeric(p, nat.clone(), Some(2), &model).unwrap(), s(&["a", "b", "c"]));
        assert!(matches!(resolve_numeric(p, nat, Some(5), &model), Err(DatasetError::ClassMismatch { .. })));
    }
}
