//! The compact modules' trade-off: trunk depth T x branch width W against composed accuracy and
//! what a class costs (multiply-accumulates and parameters beyond the shared trunk). Each
//! setting decomposes every class (`decompose_compact`, the same options but T and W) and
//! composes all of them on the same test images beside the base.

use std::path::Path;
use std::time::Instant;

use classmod_runtime::host::{ModelFile, ModuleGroup, ResNet};
use classmod_runtime::{MinScore, Rule};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::compose_eval::{self, ComposeError, Composition, Reference};
use crate::dataset::ImageSet;
use crate::decompose::compact::{decompose_compact, CompactOptions};
use crate::plot::{line_chart, Series};
use crate::HostError;

/// The settings measured when none are given: both trunks, three widths.
pub const SETTINGS: [(usize, usize); 6] = [(1, 8), (1, 16), (1, 32), (2, 8), (2, 16), (2, 32)];

/// The accuracy a setting may give up and still count as "at the base" (the targets).
pub const TOP1_MARGIN: f64 = 0.005;
pub const TOP5_MARGIN: f64 = 0.003;

#[derive(Debug, Clone, Serialize)]
pub struct CompactPoint {
    pub trunk_stages: usize,
    pub width: usize,
    pub blocks: usize,
    /// Mean fractions of the base a module adds beyond the trunk (parameters, MACs per image),
    /// and the trunk's share of the base's MACs.
    pub params_fraction: f64,
    pub macs_fraction: f64,
    pub trunk_macs_fraction: f64,
    pub top1: f64,
    pub top5: f64,
    pub base_top1: f64,
    pub base_top5: f64,
    pub decompose_seconds: f64,
    pub eval_seconds: f64,
}

impl CompactPoint {
    /// MACs of serving `k` classes, as a fraction of the base's (the trunk once, k branches).
    pub fn cost_of(&self, k: usize) -> f64 {
        self.trunk_macs_fraction + k as f64 * self.macs_fraction
    }

    fn at_the_base(&self) -> bool {
        self.top1 >= self.base_top1 - TOP1_MARGIN && self.top5 >= self.base_top5 - TOP5_MARGIN
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CompactTradeoffReport {
    pub model: String,
    pub train_images: usize,
    pub test_images: usize,
    pub options: CompactOptions,
    /// The most of the base's parameters one module may add for the knee ([`max_params_fraction`]).
    pub max_params_fraction: f64,
    pub points: Vec<CompactPoint>,
}

/// Runs the sweep over `settings` (`(trunk stages, width)`); `test` labels are in the model's
/// class order. `progress` shows each decomposition's own progress, and a line per setting
/// when it is scored.
pub fn run(
    model: &ModelFile,
    train: &ImageSet,
    test: &ImageSet,
    opts: &CompactOptions,
    settings: &[(usize, usize)],
    progress: &ProgressBar,
) -> Result<CompactTradeoffReport, ComposeError> {
    let base = ResNet::new(model, &classmod_runtime::Device::Cpu)?;
    let mut points = Vec::new();
    for &(trunk_stages, width) in settings {
        let o = CompactOptions { trunk_stages, width, ..opts.clone() };
        let t0 = Instant::now();
        let d = decompose_compact(model, train, &o, progress)?;
        let decompose_seconds = t0.elapsed().as_secs_f64();
        let group = ModuleGroup::new(base.clone(), d.modules.clone())?;
        let composition = Composition::of_one_base(group, "(in memory)".into());
        let r = compose_eval::evaluate(
            &composition,
            test,
            Rule::Max,
            MinScore::Off,
            Reference::RestrictedBase,
            64,
            &ProgressBar::hidden(),
        )?;
        let base = r.base.as_ref().ok_or(HostError::NoBaseFigures)?;
        progress.println(format!(
            "T = {trunk_stages}, W = {width}: composed top-1 {:.2} % (base {:.2} %), {:.0} s",
            100.0 * r.composed.top1,
            100.0 * base.top1,
            decompose_seconds
        ));
        points.push(CompactPoint {
            trunk_stages,
            width,
            blocks: o.blocks,
            params_fraction: d.params_fraction(),
            macs_fraction: d.macs_fraction(),
            trunk_macs_fraction: d.trunk_macs_fraction(),
            top1: r.composed.top1,
            top5: r.composed.top5,
            base_top1: base.top1,
            base_top5: base.top5,
            decompose_seconds,
            eval_seconds: r.composed.seconds,
        });
    }
    Ok(CompactTradeoffReport {
        model: base.architecture().name(),
        train_images: train.len(),
        test_images: test.len(),
        options: opts.clone(),
        max_params_fraction: max_params_fraction(&model.meta.arch.network()),
        points,
    })
}

/// The most of the base's parameters one module may add for the knee: the product's size target
/// (MODA's modules of a ResNet-18 are 8.1 %), 6 % of a shallow base such as ResNet-20 and 4 % of a
/// deeper one such as ResNet-56 (whose trunk is the larger share of it). A wider branch on a
/// shallow trunk can be cheaper for two classes and still lose: its module is a sixth of the model
/// and ten classes cost more than the base (ResNet-20, T=1, W=32: 15.8 %, 1.25x;
/// `results/compact-tradeoff-resnet20/`).
pub const MAX_PARAMS_FRACTION: f64 = 0.06;
/// [`MAX_PARAMS_FRACTION`] for a base that is not `is_shallow`.
pub const DEEP_MAX_PARAMS_FRACTION: f64 = 0.04;

/// The size target of a module of a base network `net`.
pub fn max_params_fraction(net: &classmod_runtime::host::Network) -> f64 {
    if crate::decompose::compact::is_shallow(net) {
        MAX_PARAMS_FRACTION
    } else {
        DEEP_MAX_PARAMS_FRACTION
    }
}

/// The knee: of the settings within the margins of the base's accuracy whose module adds at most
/// `max_params` of the base's parameters, the one whose two classes cost least (the trunk plus
/// two branches; ties to fewer parameters). `None` when no setting qualifies.
pub fn knee_within(r: &CompactTradeoffReport, max_params: f64) -> Option<&CompactPoint> {
    r.points
        .iter()
        .filter(|p| p.at_the_base() && p.params_fraction <= max_params)
        .min_by(|a, b| a.cost_of(2).total_cmp(&b.cost_of(2)).then(a.params_fraction.total_cmp(&b.params_fraction)))
}

/// [`knee_within`] the report's size target.
pub fn knee(r: &CompactTradeoffReport) -> Option<&CompactPoint> {
    knee_within(r, r.max_params_fraction)
}

/// The Markdown table of a sweep.
pub fn markdown(r: &CompactTradeoffReport) -> String {
    let o = &r.options;
    let mut s = format!(
        "# Compact modules' trade-off: {} ({} training images, {} test images)\n\n\
         Each row decomposes every class ({} blocks, {} epochs, batch {}, lr {}) and composes all of them \
         (rule max) beside the base restricted to the same classes on the same images. \"Per class\" is what a module \
         adds beyond the shared trunk; \"1 / 2 / 10 classes\" the MACs of serving that many, trunk included, as a share \
         of the base's.\n\n\
         | T | W | params / class | MACs / class | trunk MACs | 1 class | 2 classes | 10 classes | top-1 | top-5 | base top-1 | base top-5 | decompose s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        r.model, r.train_images, r.test_images, o.blocks, o.epochs, o.batch, o.lr
    );
    let pct = |v: f64| format!("{:.2} %", 100.0 * v);
    for p in &r.points {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            p.trunk_stages,
            p.width,
            pct(p.params_fraction),
            pct(p.macs_fraction),
            pct(p.trunk_macs_fraction),
            pct(p.cost_of(1)),
            pct(p.cost_of(2)),
            pct(p.cost_of(10)),
            pct(p.top1),
            pct(p.top5),
            pct(p.base_top1),
            pct(p.base_top5),
            p.decompose_seconds
        ));
    }
    match knee(r) {
        Some(k) => s.push_str(&format!(
            "\nKnee: T = {}, W = {}: the cheapest two classes ({} of the base's MACs) among the settings within {:.1} \
             points top-1 and {:.1} top-5 of the base whose module adds at most {} of its parameters.\n",
            k.trunk_stages,
            k.width,
            pct(k.cost_of(2)),
            100.0 * TOP1_MARGIN,
            100.0 * TOP5_MARGIN,
            pct(r.max_params_fraction)
        )),
        None => s.push_str(&format!(
            "\nNo setting is within {:.1} points top-1 and {:.1} top-5 of the base with modules of at most {} of its \
             parameters.\n",
            100.0 * TOP1_MARGIN,
            100.0 * TOP5_MARGIN,
            pct(r.max_params_fraction)
        )),
    }
    if let Some(k) = knee_within(r, f64::INFINITY).filter(|k| knee(r).is_none_or(|d| !std::ptr::eq(*k, d))) {
        s.push_str(&format!(
            "Without the size bound it would be T = {}, W = {}: two classes at {} of the base's MACs, but a module adds \
             {} of its parameters and ten classes cost {}.\n",
            k.trunk_stages,
            k.width,
            pct(k.cost_of(2)),
            pct(k.params_fraction),
            pct(k.cost_of(10))
        ));
    }
    s
}

/// Writes `compact-tradeoff.md`, `.json` and `.svg` (composed top-1 against the MACs a class
/// adds, one line per trunk depth, the base as a reference line) into `dir`.
pub fn write(dir: &Path, r: &CompactTradeoffReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let put = |name: &str, bytes: &[u8]| classmod_runtime::host::write_atomically(&dir.join(name), bytes);
    put("compact-tradeoff.md", markdown(r).as_bytes())?;
    put("compact-tradeoff.json", &serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?)?;
    let mut trunks: Vec<usize> = r.points.iter().map(|p| p.trunk_stages).collect();
    trunks.sort_unstable();
    trunks.dedup();
    let series: Vec<Series> = trunks
        .iter()
        .map(|&t| {
            let mut points: Vec<(f64, f64)> = r
                .points
                .iter()
                .filter(|p| p.trunk_stages == t)
                .map(|p| (100.0 * p.macs_fraction, 100.0 * p.top1))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { name: format!("trunk T = {t}"), points }
        })
        .collect();
    let base = r.points.first().map(|p| 100.0 * p.base_top1);
    let svg = line_chart(
        &format!("{}: compact modules, composed top-1 against a class's cost", r.model),
        "MACs a class adds beyond the trunk (% of the base's)",
        "composed top-1 (%)",
        &series,
        &base.map(|b| vec![("base".to_string(), b)]).unwrap_or_default(),
    );
    put("compact-tradeoff.svg", svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: usize, w: usize, macs: f64, top1: f64) -> CompactPoint {
        CompactPoint {
            trunk_stages: t,
            width: w,
            blocks: 2,
            params_fraction: macs * 2.0,
            macs_fraction: macs,
            trunk_macs_fraction: if t == 1 { 0.3 } else { 0.68 },
            top1,
            top5: 0.99,
            base_top1: 0.81,
            base_top5: 0.99,
            decompose_seconds: 1.0,
            eval_seconds: 1.0,
        }
    }

    fn report(points: Vec<CompactPoint>) -> CompactTradeoffReport {
        CompactTradeoffReport {
            model: "resnet20".into(),
            train_images: 100,
            test_images: 10,
            options: CompactOptions::new(None, 0),
            max_params_fraction: MAX_PARAMS_FRACTION,
            points,
        }
    }

    /// The knee is the cheapest two classes among the settings at the base; a cheaper setting
    /// below the margin does not count, and without any setting at the base there is none.
    #[test]
    fn the_knee_is_the_cheapest_setting_at_the_base() {
        let r = report(vec![
            point(1, 8, 0.01, 0.79),   // cheapest, too inaccurate
            point(1, 16, 0.03, 0.808), // within half a point: 0.3 + 0.06
            point(2, 8, 0.01, 0.812),  // 0.68 + 0.02
            point(2, 16, 0.02, 0.815),
        ]);
        let k = knee(&r).unwrap();
        assert_eq!((k.trunk_stages, k.width), (1, 16));
        assert!((k.cost_of(10) - 0.6).abs() < 1e-12);
        assert!(knee(&report(vec![point(1, 8, 0.01, 0.70)])).is_none());
        // A cheaper setting whose module is too large (0.08 of the parameters) is not the knee.
        let r = report(vec![point(1, 32, 0.04, 0.81), point(2, 16, 0.02, 0.815)]);
        assert_eq!((knee(&r).unwrap().trunk_stages, knee(&r).unwrap().width), (2, 16));
        assert_eq!(knee_within(&r, f64::INFINITY).unwrap().width, 32);
        // ResNet-56's bound is tighter: the same W=16 module (4 % of the parameters) is too large.
        let cifar = |depth| classmod_runtime::host::ResNetConfig::cifar(depth, 3, 10).unwrap().network();
        assert_eq!(max_params_fraction(&cifar(20)), 0.06);
        assert_eq!(max_params_fraction(&cifar(56)), 0.04);
        let mut r = report(vec![point(2, 16, 0.0201, 0.815)]);
        r.max_params_fraction = max_params_fraction(&cifar(56));
        assert!(knee(&r).is_none());
    }

    #[test]
    fn writes_table_json_and_chart() {
        let dir = std::env::temp_dir().join(format!("classmod-compact-tradeoff-{}", std::process::id()));
        let r = report(vec![point(1, 8, 0.01, 0.79), point(1, 16, 0.03, 0.808), point(2, 16, 0.02, 0.815)]);
        write(&dir, &r).unwrap();
        let md = std::fs::read_to_string(dir.join("compact-tradeoff.md")).unwrap();
        assert_eq!(md.lines().filter(|l| l.starts_with("| 1 ") || l.starts_with("| 2 ")).count(), 3);
        assert!(md.contains("Knee: T = 1, W = 16"), "{md}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("compact-tradeoff.json")).unwrap()).unwrap();
        assert_eq!(json["points"].as_array().unwrap().len(), 3);
        let svg = std::fs::read_to_string(dir.join("compact-tradeoff.svg")).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2, "one line per trunk depth");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
