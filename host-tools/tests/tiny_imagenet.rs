//! Tiny ImageNet as ../shared holds it (`data/tiny-imagenet-200.tar.gz`, read in place): the
//! classes are the 200 wnids with training images, named after words.txt; the test split is
//! val/, labelled by val_annotations.txt. Reference: the dataset's own description (200 classes,
//! 500 training and 50 validation images each, 64x64 RGB) and its files, checked by hand with
//! `tar`: the first wnid is n01443537 (`goldfish, Carassius auratus` in words.txt), val_0.JPEG is
//! labelled n03444034 (`go-kart`).

mod common;

use std::time::Instant;

use classmod_host::dataset::{self, ImageShape, Split};

const RGB64: ImageShape = ImageShape::new(3, 64, 64);

#[test]
fn the_validation_split_is_the_test_split_with_200_named_classes() {
    let Some(shared) = common::shared() else { return };
    let archive = shared.join("data/tiny-imagenet-200.tar.gz");
    assert_eq!(dataset::native_shape(&archive, Split::Test).unwrap(), RGB64);
    assert_eq!(dataset::native_shape(&archive, Split::Train).unwrap(), RGB64);
    let t0 = Instant::now();
    let test = dataset::load(&archive, Split::Test, RGB64, None).unwrap();
    eprintln!("{} validation images read in {:.1} s", test.len(), t0.elapsed().as_secs_f64());
    assert_eq!(test.class_names.len(), 200);
    assert_eq!(test.class_names[0], "goldfish (n01443537)");
    assert!(test.class_names.iter().any(|n| n == "go-kart (n03444034)"));
    assert_eq!(test.len(), 10_000);
    let mut per_class = vec![0; 200];
    for &l in &test.labels {
        per_class[l as usize] += 1;
    }
    assert!(per_class.iter().all(|&n| n == 50), "50 validation images a class: {per_class:?}");
    assert_eq!(test.pixels.len(), 10_000 * 3 * 64 * 64);

    // A model's class order wins; a class it lacks is refused.
    let mut names = test.class_names.clone();
    names.reverse();
    let sample = dataset::load_sample(&archive, Split::Test, RGB64, Some(&names), Some(400), 1).unwrap();
    assert_eq!(sample.class_names, names);
    assert_eq!(sample.len(), 400);
    names.pop();
    assert!(matches!(
        dataset::load(&archive, Split::Test, RGB64, Some(&names)),
        Err(dataset::DatasetError::ClassMismatch { .. })
    ));
}

#[test]
fn the_train_split_is_500_images_of_each_class() {
    let Some(shared) = common::shared() else { return };
    let archive = shared.join("data/tiny-imagenet-200.tar.gz");
    let t0 = Instant::now();
    let train = dataset::load(&archive, Split::Train, ImageShape::new(3, 32, 32), None).unwrap();
    eprintln!("{} training images read (resized to 32x32) in {:.1} s", train.len(), t0.elapsed().as_secs_f64());
    assert_eq!(train.class_names.len(), 200);
    assert_eq!(train.class_names[0], "goldfish (n01443537)");
    let mut per_class = vec![0; 200];
    for &l in &train.labels {
        per_class[l as usize] += 1;
    }
    assert!(per_class.iter().all(|&n| n == 500), "500 training images a class");
}
