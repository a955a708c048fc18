//! "Did you mean": the known field closest to an unknown one, among the
//! fields of the table where it was written.

/// Names other schedulers use for a field, with vgrid's name: a user coming
/// from Slurm or HTCondor types these, and their spelling is too far from
/// ours for an edit distance to find.
const ALIASES: &[(&str, &str)] = &[
    ("cores", "cpus"),
    ("cpu", "cpus"),
    ("ncpus", "cpus"),
    ("request_cpus", "cpus"),
    ("cpus_per_task", "cpus"),
    ("mem", "memory_mb"),
    ("memory", "memory_mb"),
    ("ram", "memory_mb"),
    ("request_memory", "memory_mb"),
    ("time", "walltime_s"),
    ("time_limit", "walltime_s"),
    ("walltime", "walltime_s"),
    ("nodes", "vms"),
    ("executable", "command"),
    ("arguments", "command"),
    ("args", "command"),
    ("cmd", "command"),
    ("environment", "env"),
    ("nice", "priority"),
    ("qos", "class"),
    ("partition", "class"),
    ("constraint", "requirements"),
    ("constraints", "requirements"),
    ("ro", "readonly"),
    ("read_only", "readonly"),
    ("src", "from"),
    ("source", "from"),
    ("dest", "to"),
    ("destination", "to"),
];

/// The field of `known` that `unknown` was probably meant to be: the alias
/// when one names a field of this table, else the closest name by edit
/// distance when close enough to be a typo (at most a third of the longer
/// name's letters, and one edit for short names), or a known name that
/// starts with `unknown` (`memory` for `memory_mb`).
pub(crate) fn closest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    if let Some(&k) = known.iter().find(|k| **k == lower) {
        return Some(k);
    }
    if let Some((_, field)) = ALIASES.iter().find(|(alias, _)| *alias == lower)
        && let Some(&k) = known.iter().find(|k| *k == field)
    {
        return Some(k);
    }
    let best = known
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .min_by_key(|(d, _)| *d)?;
    let longer = lower.chars().count().max(best.1.chars().count());
    if best.0 <= (longer / 3).max(1) {
        return Some(best.1);
    }
    known
        .iter()
        .find(|k| lower.len() >= 3 && k.starts_with(&lower))
        .copied()
}

/// The known fields serde lists after "expected one of" (or "expected"):
/// `` `a`, `b`, `c` ``.
pub(crate) fn expected_fields(message: &str) -> Vec<&str> {
    let Some((_, list)) = message.split_once(", expected ") else {
        return Vec::new();
    };
    let list = list.strip_prefix("one of ").unwrap_or(list);
    list.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of neighbours (`cpsu` is one edit from `cpus`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: &[&str] = &[
        "name",
        "image",
        "cpus",
        "memory_mb",
        "vms",
        "command",
        "env",
        "user",
        "inputs",
        "outputs",
        "mounts",
        "class",
        "start",
        "end",
        "priority",
        "requirements",
        "rank",
        "checkpoint_interval_s",
        "mode",
        "walltime_s",
    ];

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(distance("cpus", "cpus"), 0);
        assert_eq!(distance("cpsu", "cpus"), 1);
        assert_eq!(distance("imge", "image"), 1);
        assert_eq!(distance("", "vms"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn typos_aliases_and_prefixes_find_the_field() {
        assert_eq!(closest("imgae", TOP), Some("image"));
        assert_eq!(closest("comand", TOP), Some("command"));
        assert_eq!(closest("prority", TOP), Some("priority"));
        assert_eq!(closest("Image", TOP), Some("image"));
        assert_eq!(closest("wall-time-s", TOP), Some("walltime_s"));
        assert_eq!(closest("cores", TOP), Some("cpus"));
        assert_eq!(closest("memory", TOP), Some("memory_mb"));
        assert_eq!(closest("checkpoint", TOP), Some("checkpoint_interval_s"));
    }

    #[test]
    fn far_names_get_no_suggestion() {
        assert_eq!(closest("colour", TOP), None);
        assert_eq!(closest("x", TOP), None);
        assert_eq!(closest("zzzzzzzz", TOP), None);
        // An alias only counts where its field exists.
        assert_eq!(closest("cores", &["from", "to"]), None);
    }

    #[test]
    fn serde_field_lists_are_read() {
        assert_eq!(
            expected_fields("unknown field `x`, expected one of `from`, `to`"),
            ["from", "to"]
        );
        assert_eq!(
            expected_fields("unknown field `x`, expected `from`"),
            ["from"]
        );
        assert!(expected_fields("unknown field `x`").is_empty());
    }
}
