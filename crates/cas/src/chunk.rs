//! Chunks: how bytes are cut, named and encoded.

use std::fmt;

/// Chunks are at least this long (but the last of a file)...
pub const MIN_CHUNK: u32 = 16 * 1024;
/// ...this long on average...
pub const AVG_CHUNK: u32 = 64 * 1024;
/// ...and at most this long.
pub const MAX_CHUNK: u32 = 256 * 1024;

/// The name of a chunk: the BLAKE3 hash of its (uncompressed) bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `raw`.
    pub fn of(raw: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(raw).as_bytes())
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hexadecimal digits.
    pub fn parse(text: &str) -> Option<ChunkId> {
        parse_hex32(text).map(ChunkId)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// How a chunk's bytes are kept: one byte before them says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

/// zstd level: fast, and most of the gain on guest memory (zero pages,
/// text) comes at any level.
const ZSTD_LEVEL: i32 = 1;

/// `raw` compressed as vgrid compresses chunks (the VM runtime's
/// checkpoint packs too): the same bytes give the same result.
pub fn compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(raw, ZSTD_LEVEL)
}

/// The stored form of `raw`: compressed when that is smaller.
pub fn encode(raw: &[u8]) -> Vec<u8> {
    if let Ok(z) = compress(raw)
        && z.len() < raw.len()
    {
        let mut out = Vec::with_capacity(z.len() + 1);
        out.push(Codec::Zstd as u8);
        out.extend_from_slice(&z);
        return out;
    }
    let mut out = Vec::with_capacity(raw.len() + 1);
    out.push(Codec::Raw as u8);
    out.extend_from_slice(raw);
    out
}

/// Why stored bytes are not the chunk they claim to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadChunk {
    #[error("the stored chunk is empty")]
    Empty,
    #[error("unknown codec {0}")]
    Codec(u8),
    #[error("it does not decompress: {0}")]
    Decompress(String),
    #[error("its bytes hash to {found}, not to its name")]
    Hash { found: String },
    #[error("it is {0} bytes long, more than a chunk may be")]
    TooLong(usize),
}

/// The raw bytes of a stored chunk, checked against `id`.
pub fn decode(stored: &[u8], id: &ChunkId) -> Result<Vec<u8>, BadChunk> {
    let (&codec, body) = stored.split_first().ok_or(BadChunk::Empty)?;
    let raw = match codec {
        0 => body.to_vec(),
        1 => zstd::bulk::decompress(body, MAX_CHUNK as usize)
            .map_err(|e| BadChunk::Decompress(e.to_string()))?,
        other => return Err(BadChunk::Codec(other)),
    };
    if raw.len() > MAX_CHUNK as usize {
        return Err(BadChunk::TooLong(raw.len()));
    }
    let found = ChunkId::of(&raw);
    if found != *id {
        return Err(BadChunk::Hash { found: found.hex() });
    }
    Ok(raw)
}

/// The chunk boundaries of `data`: `(offset, length)` in order.
pub fn cut(data: &[u8]) -> Vec<(usize, usize)> {
    fastcdc::v2020::FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| (c.offset, c.length))
        .collect()
}

/// Cuts a stream into chunks, calling `f` with each chunk's bytes in order.
pub fn cut_stream(
    reader: impl std::io::Read,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    for chunk in fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })?;
        f(&chunk.data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_bad_ones_are_refused() {
        let zeros = vec![0u8; 100_000];
        let id = ChunkId::of(&zeros);
        let stored = encode(&zeros);
        assert_eq!(stored[0], Codec::Zstd as u8);
        assert!(stored.len() < 1000);
        assert_eq!(decode(&stored, &id).expect("decodes"), zeros);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let stored_noise = encode(&noise);
        assert_eq!(
            decode(&stored_noise, &ChunkId::of(&noise)).expect("decodes"),
            noise
        );
        let mut flipped = stored.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode(&flipped, &id).is_err());
        assert!(matches!(
            decode(&stored_noise, &id),
            Err(BadChunk::Hash { .. })
        ));
        assert_eq!(decode(&[], &id), Err(BadChunk::Empty));
        assert_eq!(decode(&[7, 1, 2], &id), Err(BadChunk::Codec(7)));
        assert_eq!(ChunkId::parse(&id.hex()), Some(id));
        assert_eq!(ChunkId::parse("zz"), None);
    }

    #[test]
    fn an_insertion_moves_few_boundaries() {
        let data: Vec<u8> = (0..2_000_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let ids = |d: &[u8]| -> Vec<ChunkId> {
            cut(d)
                .iter()
                .map(|&(o, l)| ChunkId::of(&d[o..o + l]))
                .collect()
        };
        let before = ids(&data);
        let mut shifted = data.clone();
        shifted.splice(1000..1000, [1u8, 2, 3]);
        let after = ids(&shifted);
        let same = after.iter().filter(|c| before.contains(c)).count();
        assert!(same + 3 >= before.len(), "{same} of {}", before.len());
        let mut streamed = Vec::new();
        cut_stream(&data[..], |c| {
            streamed.push(ChunkId::of(c));
            Ok(())
        })
        .expect("cuts");
        assert_eq!(streamed, before, "a stream is cut as the whole is");
    }
}
