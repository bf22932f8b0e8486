//! A line diff of two snapshot texts, for failure messages: only the changed lines,
//! each under the block (`message ...`, `service ...`) it belongs to.

use std::fmt::Write as _;

/// `-` for lines only in `old`, `+` for lines only in `new`; comments and blank lines are skipped.
pub(crate) fn changed_lines(old: &str, new: &str) -> String {
    let old: Vec<&str> = old.lines().filter(|line| is_content(line)).collect();
    let new: Vec<&str> = new.lines().filter(|line| is_content(line)).collect();

    // Longest common subsequence table, filled from the end: the texts are a few
    // hundred lines, so the quadratic table is small.
    let mut common = vec![vec![0_usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }

    let mut out = Output::default();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            if !old[i].starts_with(' ') {
                out.block = Some(old[i]);
                out.block_shown = false;
            }
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            // Removals first, so they appear under the block they were part of.
            out.changed('-', old[i]);
            i += 1;
        } else {
            out.changed('+', new[j]);
            j += 1;
        }
    }
    out.text
}

#[derive(Default)]
struct Output<'a> {
    text: String,
    /// The block the next changed line belongs to.
    block: Option<&'a str>,
    /// Whether that block's header was written already.
    block_shown: bool,
}

impl<'a> Output<'a> {
    fn changed(&mut self, sign: char, line: &'a str) {
        if !line.starts_with(' ') {
            self.block = Some(line);
            self.block_shown = true;
        } else if !self.block_shown {
            if let Some(header) = self.block {
                let _ = writeln!(self.text, "  {header}");
            }
            self.block_shown = true;
        }
        let _ = writeln!(self.text, "{sign} {line}");
    }
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_lines_appear_under_their_block() {
        let old = "file a.proto\n  package a\n\nmessage a.M\n  field 1 id singular string\n  field 2 name singular string\n";
        let new = "file a.proto\n  package a\n\nmessage a.M\n  field 1 id singular string\n  field 3 name singular string\n\nmessage a.N\n";
        assert_eq!(
            changed_lines(old, new),
            "  message a.M\n-   field 2 name singular string\n+   field 3 name singular string\n+ message a.N\n"
        );
    }

    #[test]
    fn equal_texts_have_no_changed_lines() {
        let text = "# header\nfile a.proto\n  package a\n";
        assert_eq!(changed_lines(text, "file a.proto\n\n  package a\n"), "");
    }
}
