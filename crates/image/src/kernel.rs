//! Turning Debian's compressed kernel (`bzImage`) into the uncompressed ELF
//! `vmlinux` that QEMU boots directly through its PVH entry point.
//!
//! Why: under TCG, the kernel decompressing itself (8 MB of xz) takes most
//! of the boot — about 8 of 12 seconds on the development machine. Booting
//! the ELF skips it (measured in `docs/images.md`). QEMU loads an ELF kernel
//! with a Xen `PHYS32_ENTRY` note (Linux's `CONFIG_PVH`) through its PVH
//! path, with the same `-initrd` and `-append`.
//!
//! The bzImage's setup header (Linux boot protocol 2.08 or later) says where
//! the compressed payload is (`payload_offset`, `payload_length`, relative to
//! the protected-mode code after `setup_sects` sectors).

use std::path::Path;

use crate::error::ImageError;
use crate::tools::{self, Tool};

const XZ: Tool = Tool {
    name: "xz",
    package: "xz-utils",
    purpose: "decompress the Debian kernel",
};
const ZSTD: Tool = Tool {
    name: "zstd",
    package: "zstd",
    purpose: "decompress the Debian kernel",
};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point note.
const PVH_NOTE_TYPE: u32 = 18;

/// The compressed payload of a bzImage, or why there is none.
pub fn bzimage_payload(bz: &[u8]) -> Result<&[u8], String> {
    if bz.len() < 0x250 || &bz[0x202..0x206] != b"HdrS" {
        return Err("not a bzImage (no HdrS setup header)".into());
    }
    let version = u16::from_le_bytes([bz[0x206], bz[0x207]]);
    if version < 0x208 {
        return Err(format!(
            "boot protocol {version:#x} has no payload fields (needs 2.08)"
        ));
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let u32_at = |o: usize| u32::from_le_bytes([bz[o], bz[o + 1], bz[o + 2], bz[o + 3]]) as usize;
    let start = (setup_sects + 1) * 512 + u32_at(0x248);
    let end = start.saturating_add(u32_at(0x24c));
    bz.get(start..end)
        .ok_or_else(|| "the payload lies outside the file".to_string())
}

/// Decompresses a kernel payload (xz, zstd or gzip, by magic number).
pub fn decompress(payload: &[u8], work: &Path) -> Result<Vec<u8>, ImageError> {
    if payload.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .map_err(ImageError::io(work.join("vmlinux (gzip payload)")))?;
        return Ok(out);
    }
    let (tool, args): (Tool, &[&str]) = if payload.starts_with(b"\xfd7zXZ\x00") {
        (XZ, &["-dc", "--single-stream"])
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (ZSTD, &["-dcq"])
    } else {
        return Err(ImageError::BadFile {
            path: work.join("vmlinuz"),
            why: "the kernel payload is compressed with a method vgrid does not know".into(),
        });
    };
    // A file rather than a pipe: no writer thread, and the tools stop at
    // the end of the first stream (the payload may carry trailing bytes).
    let file = work.join("kernel-payload");
    std::fs::write(&file, payload).map_err(ImageError::io(&file))?;
    let mut cmd = tools::command(tool)?;
    cmd.args(args).arg(&file);
    let out = tools::run(cmd, None);
    let _ = std::fs::remove_file(&file);
    Ok(out?.stdout)
}

/// Whether `elf` is an x86-64 ELF with a PVH entry note.
pub fn has_pvh_entry(elf: &[u8]) -> bool {
    pvh_entry(elf).is_some()
}

fn pvh_entry(elf: &[u8]) -> Option<()> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| -> Option<usize> {
        Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?) as usize)
    };
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let u64_at = |o: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?)).ok()
    };
    let phoff = u64_at(0x20)?;
    let phentsize = u16_at(0x36)?;
    let phnum = u16_at(0x38)?;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != 4 {
            continue; // not PT_NOTE
        }
        let offset = u64_at(ph + 0x08)?;
        let size = u64_at(ph + 0x20)?;
        let notes = elf.get(offset..offset.checked_add(size)?)?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let namesz = u32::from_le_bytes(notes[at..at + 4].try_into().ok()?) as usize;
            let descsz = u32::from_le_bytes(notes[at + 4..at + 8].try_into().ok()?) as usize;
            let kind = u32::from_le_bytes(notes[at + 8..at + 12].try_into().ok()?);
            let name = notes.get(at + 12..at + 12 + namesz)?;
            if name == b"Xen\0" && kind == PVH_NOTE_TYPE {
                return Some(());
            }
            at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_NOTE segment holding `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        elf[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        elf[ph + 8..ph + 16].copy_from_slice(&(120u64).to_le_bytes());
        elf[ph + 0x20..ph + 0x28].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        elf.extend_from_slice(notes);
        elf
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend((name.len() as u32).to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(kind.to_le_bytes());
        n.extend(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn the_pvh_note_is_found_among_others() {
        let mut notes = note(b"Xen\0", 6, b"linux\0");
        notes.extend(note(b"GNU\0", 3, &[1, 2, 3, 4]));
        let without = elf_with_notes(&notes);
        assert!(!has_pvh_entry(&without));
        notes.extend(note(b"Xen\0", PVH_NOTE_TYPE, &[0, 0, 0, 1]));
        assert!(has_pvh_entry(&elf_with_notes(&notes)));
        // Truncated or foreign input is simply "no".
        let mut cut = elf_with_notes(&notes);
        cut.truncate(130);
        assert!(!has_pvh_entry(&cut));
        assert!(!has_pvh_entry(b"MZ not an elf"));
    }

    /// A fake bzImage: setup header, then a gzip payload.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 2usize;
        let mut bz = vec![0u8; (setup_sects + 1) * 512];
        bz[0x1f1] = setup_sects as u8;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        bz[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend_from_slice(&[0xaa; 16]);
        bz.extend_from_slice(payload);
        bz.extend_from_slice(b"trailing");
        bz
    }

    #[test]
    fn a_gzip_payload_is_found_and_decompressed() {
        use std::io::Write;
        let elf = elf_with_notes(&note(b"Xen\0", PVH_NOTE_TYPE, &[0; 4]));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).unwrap();
        let bz = fake_bzimage(&gz.finish().unwrap());
        let payload = bzimage_payload(&bz).unwrap();
        let dir = std::env::temp_dir();
        assert_eq!(decompress(payload, &dir).unwrap(), elf);
    }

    #[test]
    fn broken_bzimages_are_refused_with_a_reason() {
        assert!(bzimage_payload(b"short").unwrap_err().contains("HdrS"));
        let mut bz = fake_bzimage(b"xx");
        bz[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(bzimage_payload(&bz).unwrap_err().contains("outside"));
        let mut old = fake_bzimage(b"xx");
        old[0x206..0x208].copy_from_slice(&0x204u16.to_le_bytes());
        assert!(bzimage_payload(&old).unwrap_err().contains("2.08"));
        let dir = std::env::temp_dir();
        assert!(decompress(b"????", &dir).is_err());
    }
}
