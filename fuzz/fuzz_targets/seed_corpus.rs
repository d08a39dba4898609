//! Writes the seed corpora: real blobs (bases, mask and compact modules of the runtime's tiny test
//! models) and manifests, so that mutation starts from valid files. `seed_corpus DIR` fills
//! `DIR/blob_parse`, `DIR/inbox_entry` and `DIR/manifest_parse`.

use classmod_runtime::testing::{compact_fixture, fixture};

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    for target in ["blob_parse", "inbox_entry", "manifest_parse"] {
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
    println!("{n} seeds written under {}", out.display());
}
