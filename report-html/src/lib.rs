//! Self-contained HTML report pages: inline CSS and SVG charts drawn with
//! `plotters`, nothing fetched, every piece of text escaped. The one home
//! of the chart and page helpers the scale test's report and `manulctl
//! report` share.
//!
//! It draws and escapes; it refuses to read or write files (callers do)
//! and to hold any report's figures.

pub mod charts;
pub mod page;

pub use charts::{ChartError, FULL, HALF};
pub use page::{escape, figure};
