//! The fast path for ordinary job lines: 18 fields of `-?digits` (field
//! values may carry a short fraction), separated by spaces, read eight
//! bytes at a time. Anything else — comments, blank lines, tabs, signs,
//! exponents, long numbers, a wrong field count — is left to the full
//! parser in `parse.rs`, which also words every error; so the fast path
//! only decides how quickly a line is read, never what it means (the
//! property test in `parse.rs` checks both give the same trace).

/// Eight copies of a byte.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

const ZEROS: u64 = splat(b'0');
const SPACES: u64 = splat(b' ');

/// 10^k for the fraction digits the fast path takes (exactly what
/// `10f64.powi(k)` gives for these k: every power is an exact integer).
const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Eight bytes from `i`, little-endian; past the end of the data the
/// bytes read as `\n`, which ends a line as the end of the data does.
#[inline(always)]
fn load(data: &[u8], i: usize) -> u64 {
    match data.get(i..i + 8) {
        Some(s) => <[u8; 8]>::try_from(s).map_or(0, u64::from_le_bytes),
        None => {
            let mut b = [b'\n'; 8];
            let rest = data.get(i..).unwrap_or(&[]);
            b[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(b)
        }
    }
}

/// How many of the word's first bytes are ASCII digits (0-8).
#[inline(always)]
fn digit_run(w: u64) -> usize {
    let x = w ^ ZEROS;
    // A byte is a digit iff x < 10: adding 0x76 to its low 7 bits sets the
    // top bit for 10..=127 without carrying into the next byte, and `| x`
    // catches 128..=255.
    let t = ((x & splat(0x7f)) + splat(0x76)) | x;
    (t & splat(0x80)).trailing_zeros() as usize / 8
}

/// The value of the first `k` (1-8) digits of the word.
#[inline(always)]
fn digits_value(w: u64, k: usize) -> u64 {
    // Move the k digits to the top bytes; the zero bytes shifted in are
    // leading zeros. Byte 0 (the first digit) is the most significant.
    let v = (w ^ ZEROS) << (8 * (8 - k));
    let v = ((v & 0x0f00_0f00_0f00_0f00) >> 8) + (v & 0x000f_000f_000f_000f) * 10;
    let v = ((v & 0x00ff_0000_00ff_0000) >> 16) + (v & 0x0000_00ff_0000_00ff) * 100;
    ((v & 0x0000_ffff_0000_0000) >> 32) + (v & 0x0000_0000_0000_ffff) * 10000
}

/// 10^k for k = 0..=8.
const POW10_INT: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Skips spaces (only `' '`) from `i`.
#[inline(always)]
fn skip_spaces(data: &[u8], mut i: usize) -> usize {
    loop {
        let x = load(data, i) ^ SPACES;
        if x != 0 {
            return i + x.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
}

/// Reads the digits at `i`: their value, their count (up to 19: more than
/// 18 could overflow, and the caller gives up on such a token) and the byte
/// after them (`\n` at the end of the data).
#[inline(always)]
fn digits(data: &[u8], i: usize) -> (u64, usize, u8) {
    let w = load(data, i);
    let k = digit_run(w);
    if k == 0 {
        return (0, 0, w as u8);
    }
    let v = digits_value(w, k);
    if k < 8 {
        // The byte after the digits is still in the word.
        #[allow(clippy::cast_possible_truncation)]
        return (v, k, (w >> (8 * k)) as u8);
    }
    // Eight digits or more: rare in SWF files (times stay below 10^8 s).
    let w2 = load(data, i + 8);
    let k2 = digit_run(w2);
    let v =
        v.wrapping_mul(POW10_INT[k2])
            .wrapping_add(if k2 == 0 { 0 } else { digits_value(w2, k2) });
    if k2 < 8 {
        #[allow(clippy::cast_possible_truncation)]
        return (v, 8 + k2, (w2 >> (8 * k2)) as u8);
    }
    let w3 = load(data, i + 16);
    let k3 = digit_run(w3).min(3);
    let v =
        v.wrapping_mul(POW10_INT[k3])
            .wrapping_add(if k3 == 0 { 0 } else { digits_value(w3, k3) });
    #[allow(clippy::cast_possible_truncation)]
    (v, 16 + k3, (w3 >> (8 * k3)) as u8)
}

/// A job line parsed by the fast path.
pub(crate) struct FastLine {
    /// The 18 fields, truncated toward zero.
    pub fields: [i64; 18],
    /// Field 6 (average CPU time) with its fraction.
    pub avg_cpu: f64,
    /// Where the next line starts.
    pub next: usize,
}

/// Parses the line at `pos` if it is an ordinary job line; `None` hands it
/// to the full parser.
#[inline(always)]
pub(crate) fn job_line(data: &[u8], pos: usize) -> Option<FastLine> {
    let mut fields = [0i64; 18];
    let mut avg_cpu = 0.0;
    let mut i = skip_spaces(data, pos);
    // The byte after the last token.
    let mut after = b' ';
    for (k, field) in fields.iter_mut().enumerate() {
        if k > 0 {
            // At least one space between fields.
            if after != b' ' {
                return None;
            }
            i = skip_spaces(data, i);
        }
        let neg = data.get(i) == Some(&b'-');
        i += usize::from(neg);
        let (int, n, next) = digits(data, i);
        if n == 0 || n > 18 {
            return None;
        }
        i += n;
        after = next;
        // < 10^18 < 2^63.
        #[allow(clippy::cast_possible_wrap)]
        let int = int as i64;
        let int = if neg { -int } else { int };
        *field = int;
        if after == b'.' {
            // The full parser's hand-made float: up to 9 fraction digits on
            // an integer part below 2^53 (15 digits are always below).
            let (frac, m, next) = digits(data, i + 1);
            if m == 0 || m > 9 || n > 15 {
                return None;
            }
            i += 1 + m;
            after = next;
            if k == 5 {
                #[allow(clippy::cast_precision_loss)]
                let mag = int.unsigned_abs() as f64 + frac as f64 / POW10[m];
                avg_cpu = if neg { -mag } else { mag };
            }
        } else if k == 5 {
            #[allow(clippy::cast_precision_loss)]
            {
                avg_cpu = int as f64;
            }
        }
    }
    // The end of the line: spaces, then `\n`, `\r\n` or the end of the
    // data.
    if after == b' ' {
        i = skip_spaces(data, i);
    }
    if data.get(i) == Some(&b'\r') {
        i += 1;
    }
    match data.get(i) {
        None | Some(b'\n') => Some(FastLine {
            fields,
            avg_cpu,
            next: i + 1,
        }),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_and_values() {
        let w = |s: &[u8]| load(s, 0);
        assert_eq!(digit_run(w(b"12345678")), 8);
        assert_eq!(digit_run(w(b"123 5678")), 3);
        assert_eq!(digit_run(w(b" 2345678")), 0);
        assert_eq!(digit_run(w(b"9/:09\xb0\x39x")), 1);
        assert_eq!(digits_value(w(b"12345678"), 8), 12_345_678);
        assert_eq!(digits_value(w(b"1234xxxx"), 4), 1234);
        assert_eq!(digits_value(w(b"0"), 1), 0);
        assert_eq!(
            digits(b"123456789012345678 ", 0),
            (123_456_789_012_345_678, 18, b' ')
        );
        assert_eq!(digits(b"1234567890", 0), (1_234_567_890, 10, b'\n'));
        assert_eq!(digits(b"12345678", 0), (12_345_678, 8, b'\n'));
        assert_eq!(digits(b"42.5", 0), (42, 2, b'.'));
        assert_eq!(digits(b"x", 0).1, 0);
        assert!(digits(b"1234567890123456789", 0).1 > 18);
    }

    #[test]
    fn ordinary_lines_and_what_is_left_to_the_full_parser() {
        let line = b"    1        0 588530    937  306 142.50    -1   -1  35100    -1  1  97  -1 307  3 -1 -1 -1\r\n";
        let l = job_line(line, 0);
        assert_eq!(l.as_ref().map(|l| l.fields[3]), Some(937));
        assert_eq!(l.as_ref().map(|l| l.fields[5]), Some(142));
        assert_eq!(l.as_ref().map(|l| l.avg_cpu), Some(142.5));
        assert_eq!(l.as_ref().map(|l| l.fields[17]), Some(-1));
        assert_eq!(l.map(|l| l.next), Some(line.len()));
        for other in [
            &b"; comment\n"[..],
            b"\n",
            b"1 2 3\n",
            b"1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19\n",
            b"1\t2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\n",
            b"+1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\n",
            b"1e3 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\n",
            b"1 2 3 4 5 .5 7 8 9 10 11 12 13 14 15 16 17 18\n",
            b"1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 1234567890123456789\n",
        ] {
            assert!(
                job_line(other, 0).is_none(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
