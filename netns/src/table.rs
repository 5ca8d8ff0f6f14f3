//! Aligned plain-text tables for human output (`--json` is the script interface).

/// A table: a header row and data rows, rendered with columns padded to the widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| (*s).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row (missing cells are blank, extra cells are kept).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no data row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Render: two spaces between columns, no trailing blanks, one line per row.
    pub fn render(&self) -> String {
        let ncols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                line.push_str(c);
                if i + 1 < ncols {
                    line.push_str(&" ".repeat(w - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `-` for an empty cell, so columns never look shifted.
pub fn dash(s: impl Into<String>) -> String {
    let s = s.into();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_trimmed() {
        let mut t = Table::new(&["NAME", "STATE", "MTU"]);
        t.row(vec!["lo".into(), "UP".into(), "65536".into()]);
        t.row(vec!["eth0".into(), "LOWERLAYERDOWN".into(), "".into()]);
        assert_eq!(
            t.render(),
            "NAME  STATE           MTU\n\
             lo    UP              65536\n\
             eth0  LOWERLAYERDOWN\n"
        );
        assert!(!t.is_empty());
        assert_eq!(dash(""), "-");
        assert_eq!(dash("x"), "x");
    }

    #[test]
    fn unicode_width_by_chars() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["é".into(), "x".into()]);
        assert_eq!(t.render(), "A  B\né  x\n");
    }
}
