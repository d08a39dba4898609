//! The decomposition trade-off: nodes kept against composed top-1 / top-5, over settings of
//! `keep_rate` / `tangle_rate` and both heads. Observation runs once; each setting only rebuilds
//! masks and heads, then composes all modules on the same test images beside the base model.

use std::path::Path;
use std::time::Instant;

use classmod_runtime::compose::Rule;
use classmod_runtime::{ModelError, ModelFile, ModuleGroup};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::compose_eval::{self, Composition};
use crate::dataset::ImageSet;
use crate::decompose::{observe, DecomposeOptions, HeadKind};
use crate::plot::{line_chart, Series};

#[derive(Debug, Clone, Serialize)]
pub struct TradeoffPoint {
    pub head: HeadKind,
    pub keep_rate: f64,
    pub tangle_rate: f64,
    /// Mean fraction of the model's nodes a module keeps, overall and per ReLU site.
    pub nodes_kept: f64,
    pub kept_per_site: Vec<(String, f64)>,
    pub top1: f64,
    pub top5: f64,
    pub base_top1: f64,
    pub base_top5: f64,
    pub build_seconds: f64,
    pub eval_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TradeoffReport {
    pub model: String,
    pub images: usize,
    pub observe_seconds: f64,
    pub points: Vec<TradeoffPoint>,
}

/// Runs the sweep. `test` labels are in the model's class order.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &ModelFile,
    key: &str,
    train: &ImageSet,
    test: &ImageSet,
    opts: &DecomposeOptions,
    settings: &[(f64, f64)],
    heads: &[HeadKind],
    progress: &ProgressBar,
) -> Result<TradeoffReport, compose_eval::ComposeError> {
    let obs = observe(model, key, train, opts, &ProgressBar::hidden())?;
    let mut points = Vec::new();
    for &head in heads {
        for &(keep_rate, tangle_rate) in settings {
            let t0 = Instant::now();
            let d = obs.modules(train, keep_rate, tangle_rate, head, opts.batch)?;
            let build_seconds = t0.elapsed().as_secs_f64();
            let kept_per_site = d
                .sites
                .iter()
                .enumerate()
                .map(|(i, site)| {
                    (
                        site.name.clone(),
                        d.reports.iter().map(|r| r.kept_per_site[i].1).sum::<f64>() / d.reports.len() as f64,
                    )
                })
                .collect();
            let k = d.modules.len();
            let composition = Composition {
                groups: vec![ModuleGroup::new(obs.base().clone(), d.modules.clone())?],
                order: (0..k).map(|i| (0, i)).collect(),
            };
            let r = compose_eval::evaluate(&composition, test, Rule::Max, opts.batch, &ProgressBar::hidden())?;
            let base = r.base.as_ref().ok_or_else(|| ModelError::BadConfig("no base figures".into()))?;
            points.push(TradeoffPoint {
                head,
                keep_rate,
                tangle_rate,
                nodes_kept: d.nodes_kept(),
                kept_per_site,
                top1: r.composed.top1,
                top5: r.composed.top5,
                base_top1: base.top1,
                base_top5: base.top5,
                build_seconds,
                eval_seconds: r.composed.seconds,
            });
            progress.inc(1);
        }
    }
    Ok(TradeoffReport { model: obs.base().config().name(), images: test.len(), observe_seconds: obs.seconds(), points })
}

/// The Markdown table of a sweep.
pub fn markdown(r: &TradeoffReport) -> String {
    let mut s = format!(
        "# Decomposition trade-off: {} ({} test images)\n\nObservation took {:.1} s. Base = the model restricted to the same classes on the same images.\n\n\
         | head | keep_rate | tangle_rate | nodes kept | top-1 | top-5 | base top-1 | base top-5 | Δtop-1 | Δtop-5 |\n|---|---|---|---|---|---|---|---|---|---|\n",
        r.model, r.images, r.observe_seconds
    );
    for p in &r.points {
        s.push_str(&format!(
            "| {:?} | {} | {} | {:.1} % | {:.2} | {:.2} | {:.2} | {:.2} | {:+.2} | {:+.2} |\n",
            p.head,
            p.keep_rate,
            p.tangle_rate,
            100.0 * p.nodes_kept,
            100.0 * p.top1,
            100.0 * p.top5,
            100.0 * p.base_top1,
            100.0 * p.base_top5,
            100.0 * (p.top1 - p.base_top1),
            100.0 * (p.top5 - p.base_top5)
        ));
    }
    s
}

/// Writes `tradeoff.md`, `tradeoff.json` and `tradeoff.svg` into `dir`.
pub fn write(dir: &Path, r: &TradeoffReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut series: Vec<Series> = Vec::new();
    for head in [HeadKind::Channel, HeadKind::Calibrated] {
        let points: Vec<(f64, f64)> =
            r.points.iter().filter(|p| p.head == head).map(|p| (p.nodes_kept, p.top1)).collect();
        if !points.is_empty() {
            series.push(Series { name: format!("{head:?} head, top-1"), points });
        }
    }
    let base = r.points.first().map(|p| p.base_top1).unwrap_or(0.0);
    let svg = line_chart(
        &format!("{}: nodes kept vs composed top-1 ({} images)", r.model, r.images),
        "mean fraction of nodes a module keeps",
        "composed top-1",
        &series,
        &[("base model".into(), base)],
    );
    classmod_runtime::atomic_file::write(&dir.join("tradeoff.svg"), svg.as_bytes())?;
    classmod_runtime::atomic_file::write(&dir.join("tradeoff.md"), markdown(r).as_bytes())?;
    let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    classmod_runtime::atomic_file::write(&dir.join("tradeoff.json"), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_table_json_and_chart() {
        let point = |head, k, kept, top1| TradeoffPoint {
            head,
            keep_rate: k,
            tangle_rate: 0.1,
            nodes_kept: kept,
            kept_per_site: vec![("relu0".into(), kept)],
            top1,
            top5: 0.98,
            base_top1: 0.81,
            base_top5: 0.985,
            build_seconds: 1.0,
            eval_seconds: 2.0,
        };
        let r = TradeoffReport {
            model: "resnet20".into(),
            images: 1000,
            observe_seconds: 3.0,
            points: vec![point(HeadKind::Channel, 0.9, 0.93, 0.815), point(HeadKind::Calibrated, 0.5, 0.7, 0.6)],
        };
        let md = markdown(&r);
        assert!(md.contains("| Channel | 0.9 | 0.1 | 93.0 % | 81.50 |"), "{md}");
        assert!(md.contains("+0.50"), "{md}");
        let dir = std::env::temp_dir().join(format!("classmod-tradeoff-{}", std::process::id()));
        write(&dir, &r).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("tradeoff.json")).unwrap()).unwrap();
        assert_eq!(json["points"].as_array().unwrap().len(), 2);
        let svg = std::fs::read_to_string(dir.join("tradeoff.svg")).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2, "one line per head");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
