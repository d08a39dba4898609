//! The paper's RQ1: do all of a model's modules, composed, classify as well as the model? For
//! packed directories of modules (each a module for every class of one base), the composition's
//! and the base's top-1 / top-5 on the same test images, beside the paper's own rows where it
//! published them for the dataset, and every class's top-1 as a chart (classes ranked by the
//! base's accuracy on them, so a module that falls short of its class shows as a dip).

use serde::Serialize;

use crate::compose_eval::ComposeReport;
use crate::plot::{line_chart, Series};

/// One row of the paper's table: top-1 and top-5 in percent.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PaperRow {
    pub model: &'static str,
    pub base: (f64, f64),
    pub composed: (f64, f64),
}

/// Pan & Rajan (ESEC/FSE 2022, camera-ready), Table 1, Tiny ImageNet: bases trained from scratch
/// without batch normalisation, their mask modules composed (as quoted in issue 34).
pub const PAPER_TINY_IMAGENET: [PaperRow; 3] = [
    PaperRow { model: "ResNet-20", base: (33.2, 59.7), composed: (32.6, 59.7) },
    PaperRow { model: "ResNet-32", base: (31.8, 58.6), composed: (31.5, 58.0) },
    PaperRow { model: "ResNet-56", base: (32.1, 58.7), composed: (31.0, 57.8) },
];

/// The datasets whose RQ1 rows the paper published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Paper {
    TinyImagenet,
}

impl Paper {
    pub fn rows(self) -> &'static [PaperRow] {
        match self {
            Paper::TinyImagenet => &PAPER_TINY_IMAGENET,
        }
    }
}

/// One packed directory's composition against its base.
#[derive(Debug, Clone, Serialize)]
pub struct Rq1Row {
    pub packed: String,
    /// The base's architecture (`resnet56`).
    pub model: String,
    /// `compact` or `mask`.
    pub kind: String,
    pub images: usize,
    pub base_top1: f64,
    pub base_top5: f64,
    pub composed_top1: f64,
    pub composed_top5: f64,
    /// Per class, in class order: (name, the base's top-1, the composition's).
    pub per_class: Vec<(String, f64, f64)>,
    pub seconds: f64,
}

impl Rq1Row {
    /// The row of a [`ComposeReport`] of every module of one base (`None` without the base's
    /// figures, which a composition of several bases has not).
    pub fn new(packed: String, model: String, kind: String, r: &ComposeReport) -> Option<Rq1Row> {
        let base = r.base.as_ref()?;
        Some(Rq1Row {
            packed,
            model,
            kind,
            images: r.composed.n,
            base_top1: base.top1,
            base_top5: base.top5,
            composed_top1: r.composed.top1,
            composed_top5: r.composed.top5,
            per_class: base
                .per_class
                .iter()
                .zip(&r.composed.per_class)
                .map(|(b, c)| (c.name.clone(), b.top1, c.top1))
                .collect(),
            seconds: r.composed.seconds,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rq1Report {
    pub rows: Vec<Rq1Row>,
    pub paper: Option<Paper>,
}

/// The table: ours, then the paper's, each composed against its base.
pub fn markdown(r: &Rq1Report, command: &str) -> String {
    let mut s = format!(
        "# RQ1: all modules composed against the model\n\n`{command}`\n\n\
         | model | modules | source | test images | base top-1 | base top-5 | composed top-1 | composed top-5 | Δ top-1 | Δ top-5 |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for x in &r.rows {
        s += &format!(
            "| {} | {} | classmod | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:+.2} | {:+.2} |\n",
            x.model,
            x.kind,
            x.images,
            100.0 * x.base_top1,
            100.0 * x.base_top5,
            100.0 * x.composed_top1,
            100.0 * x.composed_top5,
            100.0 * (x.composed_top1 - x.base_top1),
            100.0 * (x.composed_top5 - x.base_top5)
        );
    }
    if let Some(p) = r.paper {
        for x in p.rows() {
            s += &format!(
                "| {} | mask | the paper | all | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | {:+.1} |\n",
                x.model,
                x.base.0,
                x.base.1,
                x.composed.0,
                x.composed.1,
                x.composed.0 - x.base.0,
                x.composed.1 - x.base.1
            );
        }
        s += "\nThe paper's rows: Pan & Rajan (ESEC/FSE 2022), Table 1, bases trained from scratch without batch \
              normalisation; ours are fine-tuned bases, so compare the Δ columns.\n";
    }
    s += "\nPer class (`rq1-per-class.svg`): each class's top-1, classes ranked by the base's top-1 on them.\n\n\
          | model | modules | classes below the base's top-1 on them | above | same | largest drop (points) |\n\
          |---|---|---:|---:|---:|---|\n";
    for x in &r.rows {
        let below = x.per_class.iter().filter(|c| c.2 < c.1).count();
        let above = x.per_class.iter().filter(|c| c.2 > c.1).count();
        let worst = x.per_class.iter().min_by(|a, b| (a.2 - a.1).total_cmp(&(b.2 - b.1)));
        s += &format!(
            "| {} | {} | {below} | {above} | {} | {} |\n",
            x.model,
            x.kind,
            x.per_class.len() - below - above,
            worst.map_or("-".into(), |w| format!("{} ({:+.1})", w.0, 100.0 * (w.2 - w.1)))
        );
    }
    s
}

/// Every class's top-1, per row, classes ranked by the row's base's top-1 on them; one base line
/// per model.
pub fn per_class_chart(r: &Rq1Report) -> String {
    let mut series = Vec::new();
    let mut models_drawn = Vec::new();
    for x in &r.rows {
        let mut order: Vec<usize> = (0..x.per_class.len()).collect();
        order.sort_by(|&a, &b| x.per_class[a].1.total_cmp(&x.per_class[b].1).then(a.cmp(&b)));
        let points = |f: fn(&(String, f64, f64)) -> f64| -> Vec<(f64, f64)> {
            order.iter().enumerate().map(|(rank, &c)| (rank as f64, 100.0 * f(&x.per_class[c]))).collect()
        };
        if !models_drawn.contains(&x.model) {
            models_drawn.push(x.model.clone());
            series.push(Series { name: format!("{} base", x.model), points: points(|c| c.1) });
        }
        series.push(Series { name: format!("{} {} composed", x.model, x.kind), points: points(|c| c.2) });
    }
    line_chart("Top-1 per class", "classes, ranked by the base's top-1 on them", "top-1 (%)", &series, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, per_class: Vec<(String, f64, f64)>) -> Rq1Row {
        Rq1Row {
            packed: "dir".into(),
            model: "resnet56".into(),
            kind: kind.into(),
            images: 300,
            base_top1: 0.5,
            base_top5: 0.75,
            composed_top1: 0.52,
            composed_top5: 0.74,
            per_class,
            seconds: 1.0,
        }
    }

    #[test]
    fn table_beside_the_papers_and_per_class_counts() {
        let classes = vec![("a".into(), 0.5, 0.6), ("b".into(), 0.4, 0.1), ("c".into(), 0.9, 0.9)];
        let r = Rq1Report {
            rows: vec![row("compact", classes.clone()), row("mask", classes)],
            paper: Some(Paper::TinyImagenet),
        };
        let md = markdown(&r, "classmod experiment rq1");
        assert!(
            md.contains("| resnet56 | compact | classmod | 300 | 50.00 | 75.00 | 52.00 | 74.00 | +2.00 | -1.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| ResNet-56 | mask | the paper | all | 32.1 | 58.7 | 31.0 | 57.8 | -1.1 | -0.9 |"),
            "{md}"
        );
        // Class b fell 30 points, a rose 10, c stayed.
        assert!(md.contains("| resnet56 | compact | 1 | 1 | 1 | b (-30.0) |"), "{md}");
        let svg = per_class_chart(&r);
        // One base line for the model, one composed line per kind.
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("resnet56 base") && svg.contains("resnet56 mask composed"));
        let none = markdown(&Rq1Report { paper: None, ..r }, "c");
        assert!(!none.contains("the paper"));
    }
}
