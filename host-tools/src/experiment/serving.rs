//! What serving class modules costs on a device, beside the monolithic base model measured in the
//! same process and the same minute: opening, verifying and mapping one module blob; loading k
//! modules from a cold start; swapping one module while k are served; classification latency and
//! resident memory against the number of loaded classes.
//!
//! Method. Everything runs through `ModuleRuntime`, the device's own code, on a packed directory.
//! Times are medians of repeated runs (wall clock; this machine is shared, so compare the rows of
//! one run, not runs of different days). Memory is measured before any classification so that
//! freed activations cannot hide growth: classes are loaded one by one into one runtime, and the
//! runtime's account of its resident tensors and the process's resident set size (Linux
//! `/proc/self/statm`, read after the allocator's free memory is handed back) are read after each;
//! the base model is then loaded on its own beside them.

use crate::HostError;
use std::path::Path;
use std::time::Instant;

use classmod_blob::VerifyingKey;
use classmod_runtime::host::{ResNet, Tensor};
use classmod_runtime::io::MappedFile;
use classmod_runtime::Device;
use classmod_runtime::{ModuleRuntime, PackedDir, ServingConfig};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::dataset::ImageSet;
use crate::plot::{line_chart, Series};

#[derive(Debug, Clone, Serialize)]
pub struct ServingOptions {
    /// Batch sizes whose latency is measured.
    pub batches: Vec<usize>,
    /// Timed classifications per (k, batch); the median is reported.
    pub iters: usize,
    /// Cold starts (open, load 1..=k) timed; the median per k is reported.
    pub cold_starts: usize,
    /// The numbers of loaded classes whose latency is timed; `None`: [`default_timed`]. Memory
    /// and cold loads are measured at every k (cheap); latency costs `iters` classifications
    /// per k and batch, which 200 classes would multiply by 200.
    pub timed: Option<Vec<usize>>,
}

/// Up to [`TIME_EVERY_K_UP_TO`] classes, every k is timed; beyond, the k of a device that needs a
/// few of many classes: 1, 2, 5, 10, 20, 50, 100, ... and all of them.
pub const TIME_EVERY_K_UP_TO: usize = 20;

/// The numbers of loaded classes timed when none are asked for, out of `classes`.
pub fn default_timed(classes: usize) -> Vec<usize> {
    if classes <= TIME_EVERY_K_UP_TO {
        return (1..=classes).collect();
    }
    let mut ks: Vec<usize> =
        (0..).map(|e| 10usize.pow(e)).take_while(|&d| d < classes).flat_map(|d| [d, 2 * d, 5 * d]).collect();
    ks.retain(|&k| k < classes);
    ks.push(classes);
    ks
}

impl ServingOptions {
    /// The numbers of loaded classes to time out of `classes`, ascending, each at most `classes`.
    fn timed_ks(&self, classes: usize) -> Vec<usize> {
        let mut ks = self.timed.clone().unwrap_or_else(|| default_timed(classes));
        ks.retain(|&k| (1..=classes).contains(&k));
        ks.sort_unstable();
        ks.dedup();
        ks
    }
}

/// One number of loaded classes.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedRow {
    pub k: usize,
    /// Opening the directory and loading the first k classes (the base included), median.
    pub cold_load_ms: f64,
    /// Tensors the runtime holds: the base once plus every module.
    pub resident_bytes: u64,
    /// Process resident-set growth since the runtime was opened (None off Linux).
    pub rss_growth_bytes: Option<u64>,
    /// Median latency of one classification, per batch size of `batches` (empty where this k
    /// was not timed: see [`ServingOptions::timed`]).
    pub latency_ms: Vec<f64>,
    /// The base model's median latency on the same batches, timed alternately with them.
    pub base_latency_ms: Vec<f64>,
    /// Per batch size, the median over the timed pairs of this row's latency over the base's
    /// forward timed right after it: adjacent timings share the machine's state, so the ratio
    /// is steadier than a ratio of the two medians on a shared machine.
    pub ratio_to_base: Vec<f64>,
}

/// The monolithic base model on the same images.
#[derive(Debug, Clone, Serialize)]
pub struct BaseRow {
    /// Opening, verifying, mapping and decoding the base blob, median.
    pub load_ms: f64,
    pub resident_bytes: u64,
    pub rss_growth_bytes: Option<u64>,
    /// Median latency of one forward plus arg-max, per batch size, over all rows' timings.
    pub latency_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServingReport {
    /// Where the modules came from.
    pub dir: String,
    pub classes: Vec<String>,
    /// The kinds of the modules served (`mask`, `compact`, or both joined by `+`).
    pub kind: String,
    pub options: ServingOptions,
    pub threads: usize,
    pub signed: bool,
    pub base_blob_bytes: u64,
    pub module_blob_bytes: Vec<u64>,
    /// Mapping one module blob and verifying its layout, hash and signature, median.
    pub open_verify_map_ms: f64,
    /// Replacing one module (map, verify, decode, golden self-test, snapshot swap) while all
    /// classes are served, median.
    pub swap_ms: f64,
    pub base: BaseRow,
    pub rows: Vec<LoadedRow>,
    /// Latency of 1 and of 10 loaded classes over the base's on the same batches, timed
    /// alternately (the row's own baseline), at batch 64 (or the largest batch measured);
    /// `None` when fewer classes were served.
    pub ratio_k1: Option<f64>,
    pub ratio_k10: Option<f64>,
}

/// Row `k`'s latency over its own baseline at batch 64, or the largest batch measured.
fn ratio(rows: &[LoadedRow], batches: &[usize], k: usize) -> Option<f64> {
    let j = batches.iter().position(|&b| b == 64).or_else(|| (0..batches.len()).max_by_key(|&j| batches[j]))?;
    let row = rows.iter().find(|r| r.k == k)?;
    row.ratio_to_base.get(j).copied()
}

/// One timing of `f`, milliseconds.
fn time_ms(f: &mut impl FnMut() -> Result<(), HostError>) -> Result<f64, HostError> {
    let t0 = Instant::now();
    f()?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

/// Median of `n` timings of `f`, milliseconds.
fn median_ms(n: usize, mut f: impl FnMut() -> Result<(), HostError>) -> Result<f64, HostError> {
    Ok(median((0..n.max(1)).map(|_| time_ms(&mut f)).collect::<Result<_, _>>()?))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The process's resident set size, bytes (Linux).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Hands the allocator's free memory back to the system, so that the resident set grows with what
/// is allocated next instead of reusing what earlier work (decomposition, decoding) freed.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident-set growth since `since`, after the free heap is handed back: what stays allocated, not
/// the high-water mark of work already done (a golden self-test's activations).
fn growth(since: Option<u64>) -> Option<u64> {
    release_free_heap();
    Some(rss_bytes()?.saturating_sub(since?))
}

/// `n` images of `test` (cycled), raw pixels.
fn batch_pixels(test: &ImageSet, n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| test.image(i % test.len()).iter().copied()).collect()
}

/// Measures serving from the packed directory `dir` (every class it has, in manifest order) on
/// images of `test`. `key`: the device key, when the blobs are signed.
pub fn measure(
    dir: &Path,
    key: Option<VerifyingKey>,
    test: &ImageSet,
    o: &ServingOptions,
    progress: &ProgressBar,
) -> Result<ServingReport, HostError> {
    let config = ServingConfig::new(Device::Cpu).with_key(key);
    let open = || ModuleRuntime::open(dir, config.clone());
    let rt = open()?;
    let manifest = rt.manifest();
    let classes = rt.available();
    let timed = o.timed_ks(classes.len());
    let base_entry = manifest.bases.first().ok_or_else(|| HostError::NoBaseInManifest { dir: dir.to_path_buf() })?;
    progress.set_length((classes.len() + timed.len() * o.batches.len() + o.cold_starts * classes.len()) as u64);

    // The base as a monolithic model: its network and its weights' bytes.
    let packed = PackedDir::open(dir, config.key)?;
    let load_base = || -> Result<(ResNet, u64), HostError> {
        let model = packed.base(&base_entry.key, &Device::Cpu)?;
        let net = ResNet::new(&model, &Device::Cpu)?;
        let bytes = net.resident_bytes();
        Ok((net, bytes))
    };
    let spec = load_base()?.0.input_spec().clone();
    let to_tensor = |px: &[u8], x: &mut Vec<f32>| -> Result<Tensor, HostError> {
        x.resize(px.len(), 0.0);
        spec.normalize_into(px, x);
        Ok(Tensor::from_slice(x, (px.len() / spec.image_len(), spec.channels, spec.height, spec.width), &Device::Cpu)?)
    };
    // One-time costs (the thread pool, the allocator's arenas) are paid before memory is
    // measured, by a forward of the base that is then dropped; neither side is charged for them.
    let mut x = Vec::new();
    {
        let (warm, _) = load_base()?;
        warm.forward(&to_tensor(&batch_pixels(test, 8), &mut x)?)?;
    }

    // Memory first, before any classification (see the module comment).
    release_free_heap();
    let rss0 = rss_bytes();
    let mut rows = Vec::new();
    for (i, class) in classes.iter().enumerate() {
        rt.load(class)?;
        let snap = rt.snapshot();
        rows.push(LoadedRow {
            k: i + 1,
            cold_load_ms: f64::NAN,
            resident_bytes: snap.resident_bytes(),
            rss_growth_bytes: growth(rss0),
            latency_ms: vec![],
            base_latency_ms: vec![],
            ratio_to_base: vec![],
        });
        progress.inc(1);
    }
    let kind = {
        let all = rt.snapshot();
        let mut kinds: Vec<&str> = all.modules().iter().map(|m| m.kind_name()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds.join("+")
    };
    release_free_heap();
    let base_rss0 = rss_bytes();
    let (net, base_resident) = load_base()?;
    let base_rss = growth(base_rss0);

    // Cold starts: a fresh runtime loading the classes one by one, the elapsed time after each.
    let mut cold: Vec<Vec<f64>> = vec![Vec::new(); classes.len()];
    for _ in 0..o.cold_starts {
        let t0 = Instant::now();
        let fresh = open()?;
        for (i, class) in classes.iter().enumerate() {
            fresh.load(class)?;
            cold[i].push(t0.elapsed().as_secs_f64() * 1e3);
            progress.inc(1);
        }
    }
    for (row, times) in rows.iter_mut().zip(cold) {
        row.cold_load_ms = median(times);
    }
    let base_load_ms = median_ms(o.cold_starts, || load_base().map(drop))?;

    let module_file = dir.join(&manifest.modules[0].file);
    let open_verify_map_ms = median_ms(50, || {
        let map = MappedFile::open(&module_file)?;
        Ok(map.blob(config.key.as_ref()).map(drop)?)
    })?;
    let swap_ms = median_ms(o.iters, || Ok(rt.replace(&manifest.modules[0], &module_file).map(drop)?))?;

    // Latency against k: unload from the end so the runtime serves the first k classes. Each
    // timed classification alternates with a timed forward of the base on the same batch, so each
    // row has its own same-minute baseline on this shared machine.
    let inputs: Vec<Vec<u8>> = o.batches.iter().map(|&b| batch_pixels(test, b)).collect();
    let mut base_all: Vec<Vec<f64>> = vec![Vec::new(); inputs.len()];
    for k in (1..=classes.len()).rev() {
        let row = &mut rows[k - 1];
        if !timed.contains(&k) {
            rt.unload(&classes[k - 1])?;
            continue;
        }
        for (j, px) in inputs.iter().enumerate() {
            let mut base_forward = || -> Result<(), HostError> {
                net.forward(&to_tensor(px, &mut x)?)?.argmax(1)?.to_vec1::<u32>()?;
                Ok(())
            };
            let mut classify = || Ok(rt.classify(px).map(drop)?);
            classify()?; // warm-up
            base_forward()?;
            let (mut ours, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..o.iters.max(1) {
                let (t, b) = (time_ms(&mut classify)?, time_ms(&mut base_forward)?);
                ours.push(t);
                base.push(b);
                ratios.push(t / b);
            }
            base_all[j].extend(&base);
            row.latency_ms.push(median(ours));
            row.base_latency_ms.push(median(base));
            row.ratio_to_base.push(median(ratios));
            progress.inc(1);
        }
        rt.unload(&classes[k - 1])?;
    }
    let base_latency = base_all.into_iter().map(median).collect();

    let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    Ok(ServingReport {
        dir: dir.display().to_string(),
        classes,
        kind,
        options: o.clone(),
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        signed: config.key.is_some(),
        base_blob_bytes: size(&base_entry.file),
        module_blob_bytes: manifest.modules.iter().map(|m| size(&m.file)).collect(),
        open_verify_map_ms,
        swap_ms,
        base: BaseRow {
            load_ms: base_load_ms,
            resident_bytes: base_resident,
            rss_growth_bytes: base_rss,
            latency_ms: base_latency,
        },
        ratio_k1: ratio(&rows, &o.batches, 1),
        ratio_k10: ratio(&rows, &o.batches, 10),
        rows,
    })
}

fn kib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.0}", b as f64 / 1024.0))
}

pub fn markdown(r: &ServingReport) -> String {
    let mean_module = r.module_blob_bytes.iter().sum::<u64>() as f64 / r.module_blob_bytes.len().max(1) as f64;
    let mut s = format!(
        "# Serving {} class modules against the monolithic base\n\n\
         {} classes of {} ({} blobs), {} threads; times are medians ({} runs per latency, {} cold starts).\n\n\
         | what | ms |\n|---|---:|\n\
         | open + verify ({}) + map one module blob | {:.3} |\n\
         | open + verify + map + decode the base blob | {:.1} |\n\
         | swap one module while {} are served (map, verify, decode, golden self-test, snapshot swap) | {:.1} |\n\n\
         Blob sizes: base {:.0} KiB, module {:.1} KiB on average.\n\n",
        r.kind,
        r.classes.len(),
        r.dir,
        if r.signed { "signed" } else { "unsigned" },
        r.threads,
        r.options.iters,
        r.options.cold_starts,
        if r.signed { "hash and signature" } else { "hash" },
        r.open_verify_map_ms,
        r.base.load_ms,
        r.classes.len(),
        r.swap_ms,
        r.base_blob_bytes as f64 / 1024.0,
        mean_module / 1024.0,
    );
    s.push_str(
        "Latency: one classification of a batch (normalisation to arg-max), median; `x base` is the \
         median, over the timed pairs, of its latency over the base model's forward on the same batch \
         timed right after it.\n\n",
    );
    s.push_str("| loaded classes | cold load (ms) | resident (KiB) | RSS growth (KiB) |");
    for b in &r.options.batches {
        s.push_str(&format!(" batch {b} (ms) | x base |"));
    }
    s.push_str("\n|---|---:|---:|---:|");
    for _ in &r.options.batches {
        s.push_str("---:|---:|");
    }
    s.push('\n');
    s.push_str(&format!(
        "| base model (all {} classes) | {:.1} | {} | {} |",
        r.classes.len(),
        r.base.load_ms,
        kib(Some(r.base.resident_bytes)),
        kib(r.base.rss_growth_bytes)
    ));
    for l in &r.base.latency_ms {
        s.push_str(&format!(" {l:.2} | 1.00 |"));
    }
    s.push('\n');
    // With many classes only the timed rows are tabled (the JSON has every k's memory).
    let tabled = |row: &&LoadedRow| r.rows.len() <= TIME_EVERY_K_UP_TO || !row.latency_ms.is_empty();
    for row in r.rows.iter().filter(tabled) {
        s.push_str(&format!(
            "| {} | {:.1} | {} | {} |",
            row.k,
            row.cold_load_ms,
            kib(Some(row.resident_bytes)),
            kib(row.rss_growth_bytes)
        ));
        for (l, x) in row.latency_ms.iter().zip(&row.ratio_to_base) {
            s.push_str(&format!(" {l:.2} | {x:.2} |"));
        }
        if row.latency_ms.is_empty() {
            s.push_str(&" - | - |".repeat(r.options.batches.len()));
        }
        s.push('\n');
    }
    s
}

/// Latency (as a multiple of the base's, per batch size) and resident memory against the number
/// of loaded classes.
pub fn charts(r: &ServingReport) -> (String, String) {
    let latency: Vec<Series> = r
        .options
        .batches
        .iter()
        .enumerate()
        .map(|(j, b)| Series { name: format!("batch {b}"), points: ratio_points(&r.rows, j) })
        .collect();
    let mut memory = vec![Series {
        name: "runtime's tensors".into(),
        points: r.rows.iter().map(|row| (row.k as f64, mib(row.resident_bytes))).collect(),
    }];
    if r.rows.iter().all(|row| row.rss_growth_bytes.is_some()) {
        memory.push(Series {
            name: "process RSS growth".into(),
            points: r.rows.iter().map(|row| (row.k as f64, mib(row.rss_growth_bytes.unwrap_or(0)))).collect(),
        });
    }
    (latency_chart(&latency), memory_chart(&memory, r.base.resident_bytes))
}

/// (k, latency over the base's at batch index `j`) of the timed rows.
fn ratio_points(rows: &[LoadedRow], j: usize) -> Vec<(f64, f64)> {
    rows.iter().filter_map(|row| Some((row.k as f64, *row.ratio_to_base.get(j)?))).collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Latency over the base's against loaded classes, the base as the reference line.
fn latency_chart(series: &[Series]) -> String {
    line_chart(
        "Classification latency against loaded classes",
        "loaded classes",
        "latency / base model's",
        series,
        &[("base model".into(), 1.0)],
    )
}

/// Resident MiB against loaded classes, the base's weights (`base_bytes`) as the reference line.
fn memory_chart(series: &[Series], base_bytes: u64) -> String {
    line_chart(
        "Resident memory against loaded classes",
        "loaded classes",
        "MiB",
        series,
        &[("base model's weights".into(), mib(base_bytes))],
    )
}

/// Report `r`'s row of `k` loaded classes, if it served that many.
fn row_of(r: &ServingReport, k: usize) -> Option<&LoadedRow> {
    r.rows.iter().find(|row| row.k == k)
}

/// A name per report for tables and legends: its modules' kind, numbered when two share one.
fn labels(reports: &[ServingReport]) -> Vec<String> {
    reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if reports.iter().filter(|o| o.kind == r.kind).count() > 1 {
                format!("{} ({})", r.kind, i + 1)
            } else {
                r.kind.clone()
            }
        })
        .collect()
}

/// Several packed directories of one base measured in turn (e.g. its mask and its compact
/// modules): latency over the base's and resident memory against the number of loaded classes,
/// one column per directory, after each report's own tables.
pub fn compared_markdown(reports: &[ServingReport]) -> String {
    let labels = labels(reports);
    let Some(first) = reports.first() else { return String::new() };
    let mut s = format!(
        "# Serving the base, {} against k loaded classes\n\n\
         Each column's `x base` is its own same-minute ratio to the base model's forward (see each report below); \
         resident is the runtime's tensors, the base's included.\n\n| loaded classes |",
        labels.join(" and ")
    );
    for b in &first.options.batches {
        for l in &labels {
            s.push_str(&format!(" {l}, batch {b} (x base) |"));
        }
    }
    for l in &labels {
        s.push_str(&format!(" {l} resident (KiB) |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(first.options.batches.len() * reports.len() + reports.len()));
    s.push_str("\n| base model |");
    s.push_str(&" 1.00 |".repeat(first.options.batches.len() * reports.len()));
    for r in reports {
        s.push_str(&format!(" {} |", kib(Some(r.base.resident_bytes))));
    }
    s.push('\n');
    let most = reports.iter().map(|r| r.rows.len()).max().unwrap_or(0);
    let timed = |k: usize| reports.iter().any(|r| row_of(r, k).is_some_and(|row| !row.latency_ms.is_empty()));
    for k in (1..=most).filter(|&k| most <= TIME_EVERY_K_UP_TO || timed(k)) {
        s.push_str(&format!("| {k} |"));
        for j in 0..first.options.batches.len() {
            for r in reports {
                let x = row_of(r, k).and_then(|row| row.ratio_to_base.get(j).copied());
                s.push_str(&x.map_or(" - |".into(), |x| format!(" {x:.2} |")));
            }
        }
        for r in reports {
            s.push_str(&format!(" {} |", kib(row_of(r, k).map(|row| row.resident_bytes))));
        }
        s.push('\n');
    }
    for r in reports {
        s.push('\n');
        s.push_str(&markdown(r));
    }
    s
}

/// [`charts`] of several reports on common axes: a latency line per report and batch size, a
/// memory line per report, the base model as the reference.
pub fn compared_charts(reports: &[ServingReport]) -> (String, String) {
    let labels = labels(reports);
    let mut latency = Vec::new();
    for (r, l) in reports.iter().zip(&labels) {
        for (j, b) in r.options.batches.iter().enumerate() {
            latency.push(Series { name: format!("{l}, batch {b}"), points: ratio_points(&r.rows, j) });
        }
    }
    let memory: Vec<Series> = reports
        .iter()
        .zip(&labels)
        .map(|(r, l)| Series {
            name: format!("{l}: runtime's tensors"),
            points: r.rows.iter().map(|row| (row.k as f64, mib(row.resident_bytes))).collect(),
        })
        .collect();
    let base = reports.first().map_or(0, |r| r.base.resident_bytes);
    (latency_chart(&latency), memory_chart(&memory, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_k_is_timed_up_to_twenty_classes_and_a_few_beyond() {
        assert_eq!(default_timed(10), (1..=10).collect::<Vec<_>>());
        assert_eq!(default_timed(20), (1..=20).collect::<Vec<_>>());
        assert_eq!(default_timed(21), vec![1, 2, 5, 10, 20, 21]);
        assert_eq!(default_timed(200), vec![1, 2, 5, 10, 20, 50, 100, 200]);
        let o = ServingOptions { batches: vec![1], iters: 1, cold_starts: 1, timed: Some(vec![200, 0, 5, 5, 1, 300]) };
        assert_eq!(o.timed_ks(200), vec![1, 5, 200], "out-of-range ks dropped, sorted, once each");
    }

    fn row(k: usize, timed: bool) -> LoadedRow {
        let v = |x: f64| if timed { vec![x, 2.0 * x] } else { vec![] };
        LoadedRow {
            k,
            cold_load_ms: k as f64,
            resident_bytes: 1024 * k as u64,
            rss_growth_bytes: Some(2048 * k as u64),
            latency_ms: v(k as f64),
            base_latency_ms: v(10.0),
            ratio_to_base: v(0.5),
        }
    }

    #[test]
    fn a_report_of_many_classes_tables_and_plots_only_its_timed_rows() {
        let classes = 200;
        let timed = default_timed(classes);
        let o = ServingOptions { batches: vec![1, 64], iters: 1, cold_starts: 1, timed: None };
        let report = ServingReport {
            dir: "d".into(),
            classes: (0..classes).map(|c| format!("c{c}")).collect(),
            kind: "compact".into(),
            options: o,
            threads: 2,
            signed: false,
            base_blob_bytes: 1,
            module_blob_bytes: vec![1; classes],
            open_verify_map_ms: 1.0,
            swap_ms: 1.0,
            base: BaseRow { load_ms: 1.0, resident_bytes: 1, rss_growth_bytes: None, latency_ms: vec![10.0, 20.0] },
            rows: (1..=classes).map(|k| row(k, timed.contains(&k))).collect(),
            ratio_k1: None,
            ratio_k10: None,
        };
        let md = markdown(&report);
        assert!(md.contains("\n| 5 | 5.0 | 5 | 10 | 5.00 | 0.50 | 10.00 | 1.00 |"), "{md}");
        assert!(md.contains("\n| 200 |") && !md.contains("\n| 3 |"), "{md}");
        let (latency, memory) = charts(&report);
        assert!(latency.contains("<svg") && memory.contains("<svg"));
        let compared = compared_markdown(&[report.clone(), report]);
        assert!(compared.contains("\n| 20 |") && !compared.contains("\n| 21 |"), "{compared}");
    }
}
