//! Experiments that reproduce and extend the paper's measurements; each writes a Markdown table,
//! a JSON file and, where a picture helps, an SVG chart.

pub mod compact_tradeoff;
pub mod cost;
pub mod open_set;
pub mod reuse;
pub mod rq1;
pub mod scores;
pub mod serving;
pub mod subsets;
pub mod tradeoff;
pub mod transplant;
