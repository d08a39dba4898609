//! Small SVG line charts for experiment reports. Hand-written on purpose: plotters, the usual
//! crate, needs a system font stack (font-kit / fontconfig) or a bundled TTF to draw any text,
//! while an SVG viewer renders `<text>` itself; a chart here is a few dozen lines of markup.

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How many series a chart tells apart by colour.
pub const COLOURS: usize = COLORS.len();
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A chart of `series` plus dashed horizontal reference lines, axes auto-scaled with a margin.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    references: &[(String, f64)],
) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 70.0, 190.0, 40.0, 50.0);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(references.iter().map(|r| r.1));
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |a: f64, b: f64| {
        if (b - a).abs() < 1e-12 {
            (a - 1.0, b + 1.0)
        } else {
            (a - 0.05 * (b - a), b + 0.05 * (b - a))
        }
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let (pw, ph) = (w - left - right, h - top - bottom);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>\n",
        left + pw / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let (fx, fy) = (x0 + (x1 - x0) * i as f64 / 5.0, y0 + (y1 - y0) * i as f64 / 5.0);
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{fx:.3}</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{fy:.3}</text>\n\
             <line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\n",
            px(fx),
            top + ph + 18.0,
            left - 6.0,
            py(fy) + 4.0,
            left + pw,
            py(fy),
            py(fy)
        ));
    }
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n<text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">{}</text>\n",
        left + pw / 2.0,
        h - 12.0,
        escape(x_label),
        top + ph / 2.0,
        top + ph / 2.0,
        escape(y_label)
    ));
    let legend = |s: &mut String, i: usize, name: &str, color: &str, dash: &str| {
        let y = top + 10.0 + 18.0 * i as f64;
        s.push_str(&format!(
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            left + pw + 12.0,
            left + pw + 36.0,
            left + pw + 42.0,
            y + 4.0,
            escape(name)
        ));
    };
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts = se.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        for &(x, y) in &pts {
            s.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>\n", px(x), py(y)));
        }
        legend(&mut s, i, &se.name, color, "none");
    }
    for (j, (name, y)) in references.iter().enumerate() {
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-dasharray=\"6 4\"/>\n",
            left + pw,
            py(*y),
            py(*y)
        ));
        legend(&mut s, series.len() + j, name, "#555", "6 4");
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_series_references_and_escapes_text() {
        let svg = line_chart(
            "a <b>",
            "x",
            "y",
            &[Series { name: "s1".into(), points: vec![(0.5, 0.8), (0.9, 0.81), (0.7, 0.6)] }],
            &[("base".into(), 0.81)],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("stroke-dasharray=\"6 4\""));
        // An empty chart still renders.
        assert!(line_chart("t", "x", "y", &[], &[]).contains("</svg>"));
    }
}
