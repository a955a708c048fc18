//! The hand-written byte parser: one pass over the (decompressed) bytes, no
//! allocation per line, 18 numbers per job line.

use crate::error::{LineError, LineProblem, Location, shown};
use crate::{Header, MAX_MEMORY_KB, MAX_TIME_S, Record, Skipped, Trace};

/// How to treat malformed lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// The first malformed line is an error.
    #[default]
    Strict,
    /// Malformed lines are skipped and counted; the first few are kept as
    /// examples.
    Lenient,
}

/// How many skipped lines keep their error as an example in lenient mode.
pub const SKIPPED_EXAMPLES: usize = 10;

/// A number as written in a field: its value truncated toward zero, and the
/// exact value as a float (for the one fractional field, average CPU time).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Number {
    int: i64,
    float: f64,
}

/// Parses one field. The fast path takes `[+-]digits[.digits]`; anything else
/// (an exponent, say) goes through the standard float parser, which must
/// give a finite value.
fn parse_number(tok: &[u8]) -> Result<Number, LineProblem> {
    let (neg, digits) = match tok.first() {
        Some(b'-') => (true, &tok[1..]),
        Some(b'+') => (false, &tok[1..]),
        _ => (false, tok),
    };
    let mut int: i64 = 0;
    let mut i = 0;
    while i < digits.len() && digits[i].is_ascii_digit() {
        let d = i64::from(digits[i] - b'0');
        int = match int.checked_mul(10).and_then(|v| v.checked_add(d)) {
            Some(v) => v,
            None => return Err(LineProblem::OutOfRange { text: shown(tok) }),
        };
        i += 1;
    }
    let int_digits = i;
    if i == digits.len() && int_digits > 0 {
        let int = if neg { -int } else { int };
        #[allow(clippy::cast_precision_loss)]
        return Ok(Number {
            int,
            float: int as f64,
        });
    }
    if i < digits.len() && digits[i] == b'.' {
        let frac = &digits[i + 1..];
        if frac.iter().all(u8::is_ascii_digit) && (int_digits > 0 || !frac.is_empty()) {
            let int = if neg { -int } else { int };
            // Short fractions are exact enough by hand; long ones go to the
            // standard parser.
            let float = if frac.len() <= 9 && int.unsigned_abs() < (1 << 53) {
                let mut f: u32 = 0;
                for &d in frac {
                    f = f * 10 + u32::from(d - b'0');
                }
                #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
                let scale = 10f64.powi(frac.len() as i32);
                #[allow(clippy::cast_precision_loss)]
                let mag = int.unsigned_abs() as f64 + f64::from(f) / scale;
                if neg { -mag } else { mag }
            } else {
                slow_float(tok)?
            };
            return Ok(Number { int, float });
        }
    }
    let float = slow_float(tok)?;
    // The float is finite here; `as` saturates, so check the range first.
    #[allow(clippy::cast_precision_loss)]
    if float.abs() >= i64::MAX as f64 {
        return Err(LineProblem::OutOfRange { text: shown(tok) });
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(Number {
        int: float.trunc() as i64,
        float,
    })
}

/// The standard float parser, accepting only finite values.
fn slow_float(tok: &[u8]) -> Result<f64, LineProblem> {
    let not_a_number = || LineProblem::NotANumber { text: shown(tok) };
    // Only plain ASCII can be a number; this also rules out "inf", "NaN" and
    // friends, which the standard parser would accept.
    if !tok
        .iter()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return Err(not_a_number());
    }
    let s = std::str::from_utf8(tok).map_err(|_| not_a_number())?;
    let v: f64 = s.parse().map_err(|_| not_a_number())?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(LineProblem::OutOfRange { text: shown(tok) })
    }
}

/// Skips spaces and tabs from `i`. SWF files pad columns with runs of
/// spaces, so eight spaces at a time are skipped with one comparison.
fn skip_blanks(data: &[u8], mut i: usize) -> usize {
    const EIGHT_SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
    while let Some(chunk) = data.get(i..i + 8) {
        let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_ne_bytes);
        if word != EIGHT_SPACES {
            break;
        }
        i += 8;
    }
    while i < data.len() && is_space(data[i]) {
        i += 1;
    }
    i
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c')
}

/// Parses a whole trace held in memory. `file` is used in error messages.
#[cfg(test)]
pub fn parse_bytes(data: &[u8], file: &str, mode: Mode) -> Result<Trace, LineError> {
    // Real traces average 80-95 bytes per job line.
    let mut p = Parser::new(file, mode, Vec::with_capacity(data.len() / 80 + 1));
    p.feed(data)?;
    Ok(p.finish().into_trace(file))
}

/// Where parsed job lines go: a `Vec<Record>` for a [`Trace`], or straight
/// into something more compact (the simulator's jobs).
pub trait RecordSink {
    /// Takes one job line.
    fn record(&mut self, r: Record);
}

impl RecordSink for Vec<Record> {
    fn record(&mut self, r: Record) {
        self.push(r);
    }
}

/// What a parser found besides the job lines.
#[derive(Debug)]
pub struct Parsed<S> {
    /// The header comments.
    pub header: Header,
    /// Lines skipped (lenient mode).
    pub skipped: Skipped,
    /// Lines in the file.
    pub lines: u64,
    /// The sink, holding the job lines.
    pub sink: S,
}

impl Parsed<Vec<Record>> {
    /// The parsed trace.
    pub fn into_trace(self, file: &str) -> Trace {
        Trace {
            file: file.to_string(),
            header: self.header,
            records: self.sink,
            skipped: self.skipped,
            lines: self.lines,
        }
    }
}

/// A parser fed with whole lines, piece by piece (so that decompression can
/// run on another thread while earlier pieces are parsed).
pub struct Parser<'f, S> {
    file: &'f str,
    mode: Mode,
    header: Header,
    sink: S,
    skipped: Skipped,
    line_no: u64,
    /// Whether ordinary job lines take the fast path (`fast.rs`); off only
    /// in the tests that use the full parser alone as an oracle.
    fast: bool,
}

impl<'f, S: RecordSink> Parser<'f, S> {
    /// A parser that hands job lines to `sink`.
    pub fn new(file: &'f str, mode: Mode, sink: S) -> Parser<'f, S> {
        Parser {
            file,
            mode,
            header: Header::default(),
            sink,
            skipped: Skipped::default(),
            line_no: 0,
            fast: true,
        }
    }

    /// Parses `data`, which must hold whole lines: every line in it ends
    /// with `\n`, except the last line of the file.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), LineError> {
        let mut pos = 0;
        while pos < data.len() {
            self.line_no += 1;
            if self.fast
                && let Some(l) = crate::fast::job_line(data, pos)
                && beyond_limits(&l.fields).is_none()
            {
                self.sink
                    .record(to_record(&l.fields, l.avg_cpu, self.line_no));
                pos = l.next;
                continue;
            }
            let (outcome, next) = parse_line_at(data, pos, self.line_no, &mut self.header);
            pos = next;
            match outcome {
                Ok(Some(r)) => self.sink.record(r),
                Ok(None) => {}
                Err((field, problem)) => {
                    let err = LineError {
                        location: Location {
                            file: self.file.to_string(),
                            line: self.line_no,
                            field,
                        },
                        problem,
                    };
                    match self.mode {
                        Mode::Strict => return Err(err),
                        Mode::Lenient => {
                            self.skipped.count += 1;
                            if self.skipped.examples.len() < SKIPPED_EXAMPLES {
                                self.skipped.examples.push(err);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Everything parsed so far.
    pub fn finish(self) -> Parsed<S> {
        Parsed {
            header: self.header,
            skipped: self.skipped,
            lines: self.line_no,
            sink: self.sink,
        }
    }
}

type LineResult = Result<Option<Record>, (Option<u8>, LineProblem)>;

/// The end of the line that contains `pos`: the index of its `\n`, or the
/// end of the data.
fn line_end(data: &[u8], pos: usize) -> usize {
    data[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(data.len(), |i| pos + i)
}

/// Parses the line starting at `pos` and returns where the next line
/// starts. Job lines are parsed in one pass: each field's digits are
/// accumulated as they are scanned; only unusual tokens (fractions,
/// exponents, garbage) take the slower path.
fn parse_line_at(
    data: &[u8],
    pos: usize,
    line_no: u64,
    header: &mut Header,
) -> (LineResult, usize) {
    let n = data.len();
    let mut i = pos;
    while i < n && is_space(data[i]) {
        i += 1;
    }
    if i == n || data[i] == b'\n' {
        return (Ok(None), i + 1);
    }
    if data[i] == b';' {
        let end = line_end(data, i);
        let res = header
            .read_comment(&data[i + 1..end], line_no)
            .map(|()| None)
            .map_err(|p| (None, p));
        return (res, end + 1);
    }
    // Only field 6 (average CPU time) keeps its fraction; the others are
    // plain integers, which keeps this array small and in registers/cache.
    let mut fields = [0i64; 18];
    let mut avg_cpu = 0.0f64;
    let mut count = 0usize;
    loop {
        i = skip_blanks(data, i);
        if i == n || data[i] == b'\n' {
            break;
        }
        let start = i;
        // Fast path: [-]digits followed by a separator. Up to 18 digits
        // cannot overflow an i64, so the loop needs no overflow checks.
        let neg = data[i] == b'-';
        if neg {
            i += 1;
        }
        let digits_start = i;
        let mut v: u64 = 0;
        while i < n {
            let d = data[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        let digits = i - digits_start;
        let at_separator = i == n || data[i] == b'\n' || is_space(data[i]);
        let number = if at_separator && digits > 0 && digits <= 18 {
            // v < 10^18 < 2^63.
            #[allow(clippy::cast_possible_wrap)]
            let int = v as i64;
            let int = if neg { -int } else { int };
            #[allow(clippy::cast_precision_loss)]
            Ok(Number {
                int,
                float: int as f64,
            })
        } else {
            while i < n && data[i] != b'\n' && !is_space(data[i]) {
                i += 1;
            }
            parse_number(&data[start..i])
        };
        if count < 18 {
            // `count` < 18 fits a u8.
            #[allow(clippy::cast_possible_truncation)]
            let field_no = count as u8 + 1;
            match number {
                Ok(num) => {
                    fields[count] = num.int;
                    if count == 5 {
                        avg_cpu = num.float;
                    }
                }
                Err(p) => return (Err((Some(field_no), p)), line_end(data, i) + 1),
            }
        }
        count += 1;
    }
    let next = i + 1;
    if count != 18 {
        return (Err((None, LineProblem::FieldCount { found: count })), next);
    }
    if let Some(problem) = beyond_limits(&fields) {
        return (Err(problem), next);
    }
    (Ok(Some(to_record(&fields, avg_cpu, line_no))), next)
}

/// A job line's record from its fields.
#[inline]
fn to_record(fields: &[i64; 18], avg_cpu: f64, line_no: u64) -> Record {
    let f = |k: usize| fields[k];
    Record {
        job_id: f(0),
        submit_s: f(1),
        wait_s: f(2),
        run_s: f(3),
        alloc_procs: f(4),
        avg_cpu_s: avg_cpu,
        used_mem_kb: f(6),
        req_procs: f(7),
        req_time_s: f(8),
        req_mem_kb: f(9),
        status: f(10),
        user: f(11),
        group: f(12),
        executable: f(13),
        queue: f(14),
        partition: f(15),
        preceding_job: f(16),
        think_time_s: f(17),
        line: line_no,
    }
}

/// The fields the simulator computes with, with the most it can take: a
/// value above it is a malformed line (an error naming the field, or a
/// skipped line with `--lenient`), never an overflow further on.
const LIMITED_FIELDS: [(usize, i64, &str); 5] = [
    (1, MAX_TIME_S, "s"),
    (3, MAX_TIME_S, "s"),
    (6, MAX_MEMORY_KB, "KB"),
    (8, MAX_TIME_S, "s"),
    (9, MAX_MEMORY_KB, "KB"),
];

/// The first field (1-based) of a job line above its limit, and why.
fn beyond_limits(fields: &[i64; 18]) -> Option<(Option<u8>, LineProblem)> {
    LIMITED_FIELDS.iter().find_map(|&(k, max, unit)| {
        let value = fields[k];
        // k < 18 fits a u8.
        #[allow(clippy::cast_possible_truncation)]
        let field_no = k as u8 + 1;
        (value > max).then_some((Some(field_no), LineProblem::TooLarge { value, max, unit }))
    })
}

/// Parses one line on its own (tests).
#[cfg(test)]
fn parse_line(line: &[u8], line_no: u64, header: &mut Header) -> LineResult {
    parse_line_at(line, 0, line_no, header).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Result<Number, LineProblem> {
        parse_number(s.as_bytes())
    }

    #[test]
    fn numbers_integer_fraction_sign_exponent() {
        assert_eq!(num("42").map(|n| n.int), Ok(42));
        assert_eq!(num("-1").map(|n| n.int), Ok(-1));
        assert_eq!(num("+7").map(|n| n.int), Ok(7));
        let n = num("142.50").ok();
        assert_eq!(n.map(|n| n.int), Some(142));
        assert_eq!(n.map(|n| n.float), Some(142.5));
        assert_eq!(num("-2.9").map(|n| n.int), Ok(-2));
        assert_eq!(num(".5").map(|n| n.int), Ok(0));
        assert_eq!(num("3.").map(|n| n.int), Ok(3));
        assert_eq!(num("1e3").map(|n| n.int), Ok(1000));
        assert_eq!(num("9223372036854775807").map(|n| n.int), Ok(i64::MAX));
    }

    #[test]
    fn numbers_refused() {
        for bad in [
            "abc", "-", "+", ".", "1x", "--1", "inf", "NaN", "1..2", "0x10", "é",
        ] {
            assert!(
                matches!(num(bad), Err(LineProblem::NotANumber { .. })),
                "{bad} should not be a number"
            );
        }
        assert!(matches!(
            num("99999999999999999999"),
            Err(LineProblem::OutOfRange { .. })
        ));
        assert!(matches!(num("1e300"), Err(LineProblem::OutOfRange { .. })));
        assert!(matches!(num("1e999"), Err(LineProblem::OutOfRange { .. })));
    }

    #[test]
    fn blank_comment_and_job_lines() {
        let mut h = Header::default();
        assert_eq!(parse_line(b"", 1, &mut h), Ok(None));
        assert_eq!(parse_line(b"  \t\r", 1, &mut h), Ok(None));
        assert_eq!(parse_line(b"; hello", 1, &mut h), Ok(None));
        let r = parse_line(
            b"  1 0 5 100 4 99.5 -1 4 200 -1 1 7 8 9 1 -1 -1 -1\r",
            3,
            &mut h,
        );
        let r = r.ok().flatten();
        assert_eq!(r.as_ref().map(|r| r.run_s), Some(100));
        assert_eq!(r.as_ref().map(|r| r.avg_cpu_s), Some(99.5));
        assert_eq!(r.as_ref().map(|r| r.user), Some(7));
        assert_eq!(r.as_ref().map(|r| r.line), Some(3));
    }

    #[test]
    fn wrong_field_counts() {
        let mut h = Header::default();
        assert_eq!(
            parse_line(b"1 2 3", 1, &mut h),
            Err((None, LineProblem::FieldCount { found: 3 }))
        );
        let long = b"1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20";
        assert_eq!(
            parse_line(long, 1, &mut h),
            Err((None, LineProblem::FieldCount { found: 20 }))
        );
    }

    #[test]
    fn bad_field_is_named() {
        let mut h = Header::default();
        let got = parse_line(b"1 2 3 x 5 6 7 8 9 10 11 12 13 14 15 16 17 18", 1, &mut h);
        assert_eq!(
            got,
            Err((Some(4), LineProblem::NotANumber { text: "x".into() }))
        );
    }

    #[test]
    fn strict_error_names_file_and_line() {
        let data = b"; MaxProcs: 4\n1 0 0 10 1 -1 -1 1 10 -1 1 1 1 1 1 1 -1 -1\n1 0 0\n";
        let err = parse_bytes(data, "t.swf", Mode::Strict).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("t.swf:3: expected 18 whitespace-separated fields, found 3".to_string())
        );
    }

    #[test]
    fn lenient_skips_and_counts() {
        let mut data = Vec::new();
        data.extend_from_slice(b"1 0 0 10 1 -1 -1 1 10 -1 1 1 1 1 1 1 -1 -1\n");
        for _ in 0..15 {
            data.extend_from_slice(b"garbage\n");
        }
        data.extend_from_slice(b"2 0 0 10 1 -1 -1 1 10 -1 1 1 1 1 1 1 -1 -1");
        let t = parse_bytes(&data, "t.swf", Mode::Lenient).ok();
        let t = t.as_ref();
        assert_eq!(t.map(|t| t.records.len()), Some(2));
        assert_eq!(t.map(|t| t.skipped.count), Some(15));
        assert_eq!(t.map(|t| t.skipped.examples.len()), Some(SKIPPED_EXAMPLES));
        assert_eq!(
            t.map(|t| t.skipped.examples[0].location.line),
            Some(2),
            "first skipped line is line 2"
        );
        assert_eq!(t.map(|t| t.lines), Some(17));
    }

    /// Everything a parse gives, with floats shown exactly (`-0.0` too).
    fn outcome(data: &[u8], mode: Mode, fast: bool) -> String {
        let mut p = Parser::new("p.swf", mode, Vec::new());
        p.fast = fast;
        let res = p.feed(data).map(|()| p.finish());
        format!("{res:?}")
    }

    /// A field as SWF writers (and careless ones) write it.
    fn token() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0i64..100_000).prop_map(|v| v.to_string()),
            3 => Just("-1".to_string()),
            2 => (0u64..100_000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b:02}")),
            1 => (-5000i64..0, 0u32..100).prop_map(|(a, b)| format!("{a}.{b}")),
            1 => any::<i64>().prop_map(|v| v.to_string()),
            1 => any::<u64>().prop_map(|v| format!("{v}0")),
            1 => (0u64..10, 0u64..10_000_000_000_000).prop_map(|(a, b)| format!("{a}.{b}")),
            1 => (0u64..1 << 60, 0u32..100).prop_map(|(a, b)| format!("{a}.{b}")),
            1 => "[-+.0-9eE]{1,6}",
            1 => "[-0-9a-z;.#]{1,4}",
            1 => Just("-0".to_string()),
            1 => Just("-".to_string()),
            1 => Just("99999999999".to_string()),
            1 => Just("0000000000000000000000042".to_string()),
        ]
    }

    /// A field as SWF files usually have it.
    fn common_token() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0i64..100_000_000).prop_map(|v| v.to_string()),
            3 => Just("-1".to_string()),
            2 => (0u64..100_000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b:02}")),
            1 => (-5000i64..0, 0u32..100).prop_map(|(a, b)| format!("{a}.{b}")),
            1 => (0u64..1_000_000_000_000_000_000).prop_map(|v| v.to_string()),
        ]
    }

    /// A line: a job line most of the time, with odd spacing now and then.
    fn line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let sep = prop_oneof![
            8 => " {1,9}",
            1 => "[ \t]{1,3}",
            1 => "[ \r\x0b\x0c]{1,2}",
        ];
        // Most lines are clean (what the fast path takes), the rest have any
        // token and field count.
        let fields = prop_oneof![
            3 => proptest::collection::vec((common_token(), " {1,9}"), 18..=18),
            2 => proptest::collection::vec((token(), sep), 16..=20),
        ];
        let job = (
            fields,
            " {0,12}",
            prop_oneof![6 => Just(""), 1 => Just("\r"), 1 => Just(" \r"), 1 => Just("\t")],
        )
            .prop_map(|(fields, lead, end)| {
                let mut l = lead;
                for (k, (t, s)) in fields.iter().enumerate() {
                    if k > 0 {
                        l.push_str(s);
                    }
                    l.push_str(t);
                }
                l.push_str(end);
                l
            });
        prop_oneof![
            12 => job,
            1 => Just(String::new()),
            1 => Just("; MaxProcs: 128".to_string()),
            1 => "[ -~]{0,30}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// The fast path changes how quickly a line is read, never what
        /// it gives: the same records, errors, skipped lines and header as
        /// the full parser alone, in both modes, with or without a final
        /// newline.
        #[test]
        fn fast_path_agrees_with_the_full_parser(
            lines in proptest::collection::vec(line(), 1..12),
            final_newline in proptest::bool::ANY,
        ) {
            let mut text = lines.join("\n");
            if final_newline {
                text.push('\n');
            }
            for mode in [Mode::Strict, Mode::Lenient] {
                proptest::prop_assert_eq!(
                    outcome(text.as_bytes(), mode, true),
                    outcome(text.as_bytes(), mode, false)
                );
            }
        }
    }

    #[test]
    fn fast_path_agrees_on_real_traces() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces");
        let mut seen = 0;
        for name in ["CTC-SP2-1996-3.1-cln.swf.gz", "HPC2N-2002-2.2-cln.swf.gz"] {
            let Ok(gz) = std::fs::read(dir.join(name)) else {
                continue;
            };
            let mut plain = Vec::new();
            let read = std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(&gz[..]),
                &mut plain,
            );
            assert!(read.is_ok(), "{name}");
            assert_eq!(
                outcome(&plain, Mode::Strict, true),
                outcome(&plain, Mode::Strict, false),
                "{name}"
            );
            seen += 1;
        }
        assert!(
            seen > 0 || std::env::var("CI").as_deref() != Ok("true"),
            "no trace found in {}",
            dir.display()
        );
    }
}
