//! An error as one sentence, the same everywhere it is shown.

/// The error and its sources, joined by `: `: one sentence for a log, an
/// API answer or a job's history.
pub fn sentence(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        let s = e.to_string();
        // A transparent wrapper repeats its inner message; say it once.
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        src = e.source();
    }
    out
}
