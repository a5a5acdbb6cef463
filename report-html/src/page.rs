//! The page: its style, its head and end, escaping, and a chart or a
//! placeholder of the chart's size.

use std::fmt::Write as _;

use crate::charts::ChartError;

/// The style every report page uses.
pub const STYLE: &str = "
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1, h2 { font-weight: 600; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: .25em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; }
thead th { background: #f3f3f3; }
.bad { color: #b00; font-weight: 600; }
.good { color: #070; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.chart { margin: 0; border: 1px solid #eee; }
.chart svg { display: block; max-width: 100%; height: auto; }
.placeholder { display: flex; align-items: center; justify-content: center;
  background: #fafafa; color: #777; font-style: italic; }
pre { background: #f6f6f6; padding: 1em; overflow: auto; }
";

/// The start of a page titled `title` (escaped), through its `<h1>`.
pub fn head(title: &str) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let title = escape(title);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = write!(page, "<title>{title}</title>\n<style>");
    page.push_str(STYLE);
    let _ = writeln!(page, "</style>\n</head>\n<body>\n<h1>{title}</h1>");
    page
}

/// Closes a page [`head`] opened.
pub fn end(page: &mut String) {
    page.push_str("</body>\n</html>\n");
}

/// Escapes text for use in HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Appends a chart, or a placeholder of the same size with `empty` (or the
/// drawing error) in it.
pub fn figure(
    page: &mut String,
    chart: Result<Option<String>, ChartError>,
    (width, height): (u32, u32),
    empty: &str,
) {
    let note = match chart {
        Ok(Some(svg)) => {
            let _ = writeln!(page, "<figure class=\"chart\">{svg}</figure>");
            return;
        }
        Ok(None) => empty.to_owned(),
        Err(e) => manul_error::chain(&e),
    };
    let _ = writeln!(
        page,
        "<div class=\"chart placeholder\" style=\"width:{width}px;height:{height}px\"><p>{}</p></div>",
        escape(&note)
    );
}

/// Appends a table: a header row and rows of cells, each escaped; a cell
/// whose text starts with a letter is left-aligned.
pub fn table(page: &mut String, header: &[&str], rows: &[Vec<String>]) {
    page.push_str("<table>\n<thead><tr>");
    for h in header {
        let _ = write!(page, "<th>{}</th>", escape(h));
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        page.push_str("<tr>");
        for cell in row {
            let class = if cell.chars().next().is_some_and(|c| !c.is_ascii_digit()) {
                " class=\"text\""
            } else {
                ""
            };
            let _ = write!(page, "<td{class}>{}</td>", escape(cell));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let mut page = head("<script>");
        table(&mut page, &["<th>"], &[vec!["<td>".into()]]);
        figure(&mut page, Ok(None), (10, 10), "<none>");
        end(&mut page);
        assert!(!page.contains("<script>") && !page.contains("<td>") && !page.contains("<none>"));
        assert!(page.ends_with("</html>\n"));
    }
}
