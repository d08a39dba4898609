//! Writes the seed corpora: real blobs (bases, mask and compact modules of the runtime's tiny test
//! models) and manifests, so that mutation starts from valid files. `seed_corpus DIR` fills
//! `DIR/blob_parse`, `DIR/inbox_entry` and `DIR/manifest_parse`, and real PNG and JPEG files
//! (gray and RGB, the input's size and others) into `DIR/image_file`.

use classmod_runtime::testing::{compact_fixture, fixture};

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    for target in ["blob_parse", "inbox_entry", "manifest_parse", "image_file"] {
        std::fs::create_dir_all(out.join(target)).unwrap();
    }
    let mut n = 0;
    for f in [fixture(None), compact_fixture()] {
        for e in std::fs::read_dir(&f.dir).unwrap() {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let targets: &[&str] =
                if path.extension().is_some_and(|x| x == "json") { &["manifest_parse"] } else { &["blob_parse", "inbox_entry"] };
            for t in targets {
                std::fs::write(out.join(t).join(format!("seed-{n}")), &bytes).unwrap();
                n += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&f.dir);
    }
    for (i, (w, h)) in [(32u32, 32u32), (8, 8), (40, 24), (1, 1)].into_iter().enumerate() {
        let rgb = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, (x ^ y) as u8]));
        let gray = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 3 + y) as u8]));
        let dir = out.join("image_file");
        rgb.save(dir.join(format!("rgb-{i}.png"))).unwrap();
        rgb.save(dir.join(format!("rgb-{i}.jpg"))).unwrap();
        gray.save(dir.join(format!("gray-{i}.png"))).unwrap();
        n += 3;
    }
    println!("{n} seeds written under {}", out.display());
}
