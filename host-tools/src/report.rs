//! Plain-text tables for people; `--json` output is built from the same report structs.

use crate::eval::EvalReport;

/// The per-class accuracy table followed by the overall figures.
pub fn eval_table(r: &EvalReport) -> String {
    let w = r.per_class.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
    let mut s = format!("{:<w$}  {:>6}  {:>7}  {:>7}\n", "class", "n", "correct", "top-1");
    s.push_str(&format!("{}\n", "-".repeat(w + 26)));
    for c in &r.per_class {
        s.push_str(&format!("{:<w$}  {:>6}  {:>7}  {:>6.2}%\n", c.name, c.n, c.correct, 100.0 * c.top1));
    }
    s.push_str(&format!("{}\n", "-".repeat(w + 26)));
    s.push_str(&format!(
        "{:<w$}  {:>6}  top-1 {:.2}%  top-5 {:.2}%  ({:.1} s, {:.0} images/s)\n",
        "all",
        r.n,
        100.0 * r.top1,
        100.0 * r.top5,
        r.seconds,
        r.images_per_second
    ));
    s
}

/// `confusion[true][predicted]` with class names as row labels and class indices as columns.
pub fn confusion_table(names: &[String], confusion: &[Vec<u32>]) -> String {
    let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    let cell = confusion.iter().flatten().map(|v| v.to_string().len()).max().unwrap_or(1).max(3);
    let mut s = format!("confusion (rows: true class, columns: predicted)\n{:<w$}", "");
    for j in 0..names.len() {
        s.push_str(&format!(" {j:>cell$}"));
    }
    s.push('\n');
    for (i, row) in confusion.iter().enumerate() {
        s.push_str(&format!("{:<w$}", format!("{i} {}", names[i]).chars().take(w + 3).collect::<String>()));
        for v in row {
            s.push_str(&format!(" {v:>cell$}"));
        }
        s.push('\n');
    }
    s
}
