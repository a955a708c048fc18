//! Framing of the virtio-serial ports.
//!
//! Both directions use the same frame:
//!
//! ```text
//! offset  size  field
//! 0       2     magic, the bytes "VG" (0x56 0x47)
//! 2       1     kind (see crate::message)
//! 3       1     flags, 0 (reserved)
//! 4       4     payload length, little-endian u32, at most MAX_PAYLOAD
//! 8       n     payload
//! ```
//!
//! The decoder is incremental: bytes are pushed as they arrive (or as a
//! file grows), and complete frames come out. A frame cut short at the end
//! of the input is simply "not yet written". Garbage (a wrong magic, a
//! reserved flag set, an oversized length) is reported as an error and
//! skipped up to the next magic, so decoding never stops making progress and
//! never panics.

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"VG";

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 8;

/// The largest payload a frame may carry (1 MiB).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One frame: a kind and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's bytes on the wire. Payloads above [`MAX_PAYLOAD`] must be
    /// split by the caller; [`crate::message`] does so for output.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        encode_into(self.kind, &self.payload, &mut out);
        out
    }
}

/// Appends one frame to `out`.
///
/// # Panics
///
/// When `payload` is longer than [`MAX_PAYLOAD`] (a programming error).
pub fn encode_into(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= MAX_PAYLOAD, "frame payload too long");
    out.extend_from_slice(&MAGIC);
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Garbage found in the stream; the decoder has already skipped it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Bytes that do not start a frame.
    #[error("stream offset {offset}: {skipped} bytes that are not a frame were skipped")]
    Garbage { offset: u64, skipped: u64 },
    /// A header announcing a payload larger than allowed.
    #[error("stream offset {offset}: frame announces {len} payload bytes (at most {max}); skipped")]
    TooLong { offset: u64, len: u64, max: usize },
    /// A header with reserved flags set.
    #[error("stream offset {offset}: frame has reserved flags {flags:#04x}; skipped")]
    BadFlags { offset: u64, flags: u8 },
}

/// An incremental frame decoder.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Index in `buf` of the first unconsumed byte.
    start: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop consumed bytes before growing, so the buffer stays small.
        if self.start > 0 && (self.start >= 4096 || self.start == self.buf.len()) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Stream offset of the first byte not yet consumed: all frames before it
    /// have been returned. A reader that restarts can resume from here.
    pub fn consumed(&self) -> u64 {
        self.offset
    }

    /// Bytes buffered that do not yet form a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or an
    /// error describing garbage that was skipped (call again to go on).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let avail = &self.buf[self.start..];
        if avail.is_empty() {
            return Ok(None);
        }
        // Resynchronise on the magic.
        if !avail.starts_with(&MAGIC) {
            if avail.len() == 1 && avail[0] == MAGIC[0] {
                return Ok(None);
            }
            let skip = find_magic(avail).unwrap_or(
                // Keep a trailing first magic byte: it may start a frame.
                if avail.last() == Some(&MAGIC[0]) {
                    avail.len() - 1
                } else {
                    avail.len()
                },
            );
            let offset = self.offset;
            self.advance(skip);
            return Err(DecodeError::Garbage {
                offset,
                skipped: skip as u64,
            });
        }
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = avail[2];
        let flags = avail[3];
        let len = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]) as u64;
        let offset = self.offset;
        if flags != 0 {
            self.advance(MAGIC.len());
            return Err(DecodeError::BadFlags { offset, flags });
        }
        if len > MAX_PAYLOAD as u64 {
            self.advance(MAGIC.len());
            return Err(DecodeError::TooLong {
                offset,
                len,
                max: MAX_PAYLOAD,
            });
        }
        let total = HEADER_LEN + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let payload = avail[HEADER_LEN..total].to_vec();
        self.advance(total);
        Ok(Some(Frame { kind, payload }))
    }

    fn advance(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }
}

/// Index of the first magic after position 0, if any.
fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(MAGIC.len())
        .skip(1)
        .position(|w| w == MAGIC)
        .map(|p| p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Frame {
        Frame {
            kind,
            payload: payload.to_vec(),
        }
    }

    fn drain(dec: &mut FrameDecoder) -> (Vec<Frame>, Vec<DecodeError>) {
        let mut frames = Vec::new();
        let mut errors = Vec::new();
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, errors),
                Err(e) => errors.push(e),
            }
        }
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![frame(1, b""), frame(4, b"hello"), frame(255, &[0u8; 1000])];
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend(f.encode());
        }
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        let (got, errors) = drain(&mut dec);
        assert_eq!(got, frames);
        assert!(errors.is_empty());
        assert_eq!(dec.consumed(), bytes.len() as u64);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn byte_by_byte_input_gives_the_same_frames() {
        let frames = vec![frame(2, b"abc"), frame(3, b"VGVG"), frame(9, b"")];
        let bytes: Vec<u8> = frames.iter().flat_map(|f| f.encode()).collect();
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            dec.push(std::slice::from_ref(b));
            let (f, e) = drain(&mut dec);
            assert!(e.is_empty(), "no garbage in a clean stream: {e:?}");
            got.extend(f);
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn a_truncated_frame_is_pending_not_an_error() {
        let bytes = frame(4, b"0123456789").encode();
        let mut dec = FrameDecoder::new();
        dec.push(&bytes[..bytes.len() - 3]);
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.consumed(), 0);
        dec.push(&bytes[bytes.len() - 3..]);
        assert_eq!(dec.next_frame(), Ok(Some(frame(4, b"0123456789"))));
    }

    #[test]
    fn garbage_is_skipped_and_reported_with_its_offset() {
        let mut bytes = b"xxxxx".to_vec();
        bytes.extend(frame(4, b"ok").encode());
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        assert_eq!(
            dec.next_frame(),
            Err(DecodeError::Garbage {
                offset: 0,
                skipped: 5
            })
        );
        assert_eq!(dec.next_frame(), Ok(Some(frame(4, b"ok"))));
    }

    #[test]
    fn oversized_and_flagged_headers_are_skipped() {
        let mut bytes = vec![b'V', b'G', 4, 0];
        bytes.extend(u32::MAX.to_le_bytes());
        bytes.extend([b'V', b'G', 4, 1, 0, 0, 0, 0]);
        bytes.extend(frame(5, b"after").encode());
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        let (frames, errors) = drain(&mut dec);
        assert_eq!(frames, vec![frame(5, b"after")]);
        assert!(matches!(errors[0], DecodeError::TooLong { offset: 0, .. }));
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, DecodeError::BadFlags { flags: 1, .. }))
        );
    }

    #[test]
    fn arbitrary_garbage_never_panics_and_always_progresses() {
        // A small deterministic generator, so the test needs no extra crate.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..500 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    0 => b'V',
                    1 => b'G',
                    2 => 0,
                    _ => next() as u8,
                })
                .collect();
            let mut dec = FrameDecoder::new();
            let mut pos = 0;
            while pos < bytes.len() {
                let step = 1 + (next() % 17) as usize;
                let end = (pos + step).min(bytes.len());
                dec.push(&bytes[pos..end]);
                pos = end;
                let mut rounds = 0;
                while !matches!(dec.next_frame(), Ok(None)) {
                    rounds += 1;
                    assert!(rounds <= bytes.len() + 1, "decoder did not progress");
                }
            }
            assert!(dec.consumed() as usize + dec.pending() == bytes.len());
        }
    }
}
