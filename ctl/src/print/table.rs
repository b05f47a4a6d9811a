//! etcdctl's tables, drawn as its table library draws them: a ruled box, headers upper-cased
//! and centred, cells right-aligned, one space of padding on each side of every cell.

use std::io::{self, Write};

pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn render(&self, out: &mut dyn Write) -> io::Result<()> {
        let header: Vec<String> = self.header.iter().map(|h| h.to_uppercase()).collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .chain([&header[column]])
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let rule: String = widths
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .chain(["+".to_owned()])
            .collect();
        writeln!(out, "{rule}")?;
        let mut line = String::new();
        for (cell, width) in header.iter().zip(&widths) {
            let gap = width - cell.chars().count();
            let left = gap / 2;
            line.push_str(&format!(
                "| {}{cell}{} ",
                " ".repeat(left),
                " ".repeat(gap - left)
            ));
        }
        writeln!(out, "{line}|")?;
        writeln!(out, "{rule}")?;
        for row in &self.rows {
            let mut line = String::new();
            for (column, width) in widths.iter().enumerate() {
                let cell = row.get(column).map(String::as_str).unwrap_or("");
                let gap = width - cell.chars().count();
                line.push_str(&format!("| {}{cell} ", " ".repeat(gap)));
            }
            writeln!(out, "{line}|")?;
        }
        writeln!(out, "{rule}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_what_etcdctl_draws() {
        let table = Table {
            header: vec!["endpoint", "hash"],
            rows: vec![vec!["127.0.0.1:23790".into(), "1082501586".into()]],
        };
        let mut out = Vec::new();
        table.render(&mut out).expect("render into memory");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "+-----------------+------------+\n\
             |    ENDPOINT     |    HASH    |\n\
             +-----------------+------------+\n\
             | 127.0.0.1:23790 | 1082501586 |\n\
             +-----------------+------------+\n"
        );
    }
}
