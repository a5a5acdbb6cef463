//! How Manul prints an error with its causes: [`chain`].
//!
//! It is its own crate, with no dependencies, so that every crate can reach
//! the one rule: the resource model and the dataplane crates (which refuse
//! to depend on the model) alike. `manul_model::error::chain` and
//! `manul_dataplane_api::chain` are this function.
//!
//! It refuses to format anything else: what an error says is its type's
//! business, and an error's message should not repeat its source's text.

/// `error` and its sources, joined with `: ` (a source whose text the
/// message already holds is not repeated): the one way Manul prints an
/// error with its causes.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the config")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("file a.yaml: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn sources_are_joined_and_repeated_text_is_skipped() {
        let e = Outer(Middle(std::io::Error::other("permission denied")));
        assert_eq!(
            chain(&e),
            "reading the config: file a.yaml: permission denied"
        );
    }
}
