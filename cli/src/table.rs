//! Plain aligned columns for terminal output: numbers right-aligned, text left.

/// Rows under a header, printed with columns padded to their widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The header and the rows.
    pub(crate) fn render(&self) -> String {
        self.lines(true)
    }

    /// The rows only (listings, which scripts read).
    pub(crate) fn render_body(&self) -> String {
        self.lines(false)
    }

    fn lines(&self, header: bool) -> String {
        let columns = self.header.len();
        let shown: Vec<&Vec<String>> = header
            .then_some(&self.header)
            .into_iter()
            .chain(&self.rows)
            .collect();
        let mut widths = vec![0; columns];
        for row in &shown {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        // A column is numeric if every body cell starts with a digit or is "-".
        let numeric: Vec<bool> = (0..columns)
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        r.get(i).is_some_and(|c| {
                            c == "-" || c.chars().next().is_some_and(|ch| ch.is_ascii_digit())
                        })
                    })
            })
            .collect();
        let mut out = String::new();
        for row in shown {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                let last = i + 1 == columns;
                if numeric[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if !last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_text_left_and_numbers_right() {
        let mut t = Table::new(&["name", "size"]);
        t.row(vec!["a".into(), "10".into()]);
        t.row(vec!["long name".into(), "2000".into()]);
        assert_eq!(
            t.render(),
            "name       size\na            10\nlong name  2000\n"
        );
        assert_eq!(t.render_body().lines().count(), 2);
    }
}
