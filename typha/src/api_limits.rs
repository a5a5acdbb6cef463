//! What one write request may cost the replica that validates it: its size
//! on the wire, and the problems its refusal lists.
//!
//! A request larger than [`WriteLimits::max_request_bytes`] is refused by
//! gRPC's decoder (OUT_OF_RANGE, from its length prefix); each item is
//! at most the model's 8 MiB input. Validation stops once the request's
//! refusal lists [`WriteLimits::max_problems`] problems or
//! [`WriteLimits::max_message_bytes`] of text, whichever comes first, and
//! says so: an input made of errors (an 8 MiB array of numbers is four
//! million documents that are not resources) costs a bounded amount of
//! work and memory, and its refusal fits in a gRPC status (a client takes
//! at most 16 KiB of headers; the message's text, escaped, stays below).

use tonic::Status;

/// Longest line of one problem, in bytes (a longer one is cut).
pub const MAX_PROBLEM_BYTES: usize = 512;

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    /// Largest encoded request (gRPC message) a client may send.
    pub max_request_bytes: usize,
    /// Most problems one refusal lists.
    pub max_problems: usize,
    /// Most text one refusal holds.
    pub max_message_bytes: usize,
}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits {
            max_request_bytes: 64 * 1024 * 1024,
            max_problems: 100,
            max_message_bytes: 4096,
        }
    }
}

/// The problems of one request, as its refusal lists them.
#[derive(Debug)]
pub struct Problems {
    limits: WriteLimits,
    lines: Vec<String>,
    bytes: usize,
    /// Whether some problem was not listed (or not looked for).
    cut: bool,
}

impl Problems {
    pub fn new(limits: WriteLimits) -> Problems {
        Problems {
            limits,
            lines: Vec::new(),
            bytes: 0,
            cut: false,
        }
    }

    /// How many more problems are worth finding: 0 once the refusal is
    /// full.
    pub fn room(&self) -> usize {
        if self.bytes >= self.limits.max_message_bytes {
            return 0;
        }
        self.limits.max_problems.saturating_sub(self.lines.len())
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Lists `problem`, cut to [`MAX_PROBLEM_BYTES`]; once the refusal is
    /// full it only notes that more were found.
    pub fn push(&mut self, problem: &str) {
        if self.room() == 0 {
            self.cut = true;
            return;
        }
        let left = self.limits.max_message_bytes - self.bytes;
        let line = manul_model::load::clip(problem, MAX_PROBLEM_BYTES.min(left));
        self.bytes += line.len() + 1;
        self.lines.push(line);
    }

    /// Notes that validation stopped before the end of the request.
    pub fn stopped(&mut self) {
        self.cut = true;
    }

    /// INVALID_ARGUMENT listing the problems, and saying so when the list
    /// is not complete.
    pub fn into_status(self) -> Status {
        let mut text = self.lines.join("\n");
        if self.cut {
            text.push_str(&format!(
                "\nvalidation stopped after {} problems; fix these and apply again to see any others",
                self.lines.len()
            ));
        }
        Status::invalid_argument(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_bounded_by_count_and_by_text() {
        let limits = WriteLimits {
            max_problems: 3,
            ..WriteLimits::default()
        };
        let mut p = Problems::new(limits);
        for k in 0..10 {
            assert_eq!(p.room(), 3usize.saturating_sub(k));
            p.push(&format!("problem {k}"));
        }
        let status = p.into_status();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "problem 0\nproblem 1\nproblem 2\nvalidation stopped after 3 problems; fix these and apply again to see any others"
        );

        let mut p = Problems::new(WriteLimits::default());
        let long = "é".repeat(10_000);
        while p.room() > 0 {
            p.push(&long);
        }
        p.push(&long);
        let status = p.into_status();
        assert!(
            status.message().len() <= 4096 + 200,
            "{}",
            status.message().len()
        );
        assert!(
            status
                .message()
                .lines()
                .all(|l| l.len() <= MAX_PROBLEM_BYTES + 3)
        );
        assert!(status.message().ends_with("to see any others"));
    }
}
