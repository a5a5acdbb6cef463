//! The data files of the table tests, in the style of raft-rs's
//! datadriven tests: blocks of a command line, its input, `----`, and the
//! expected output up to the next blank line. Lines starting with `#`
//! between blocks are comments.

use std::path::Path;

/// One block of a data file.
pub(crate) struct Block {
    /// Line number of the command, for messages.
    pub line: usize,
    pub command: String,
    pub input: Vec<String>,
    pub expected: Vec<String>,
}

/// The blocks of the data file at `path`.
pub(crate) fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().enumerate().peekable();
    let mut out = Vec::new();
    while let Some((n, line)) = lines.next() {
        // Blank lines and `#` comments between blocks.
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut block = Block {
            line: n + 1,
            command: line.trim().to_string(),
            input: Vec::new(),
            expected: Vec::new(),
        };
        for (_, l) in lines.by_ref() {
            if l == "----" {
                break;
            }
            block.input.push(l.to_string());
        }
        while let Some((_, l)) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            block.expected.push(l.to_string());
            lines.next();
        }
        out.push(block);
    }
    out
}
