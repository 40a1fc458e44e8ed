//! Boots a kernel through its PVH entry point instead of the bzImage's. QEMU loads the
//! uncompressed ELF `vmlinux` straight into guest memory and jumps to the 32-bit PVH
//! entry (`CONFIG_PVH`, on in every Debian kernel since 5.x), so the guest skips the
//! real-mode setup, the decompressor and KASLR's relocation pass. Under TCG those cost
//! 0.5-1.4 s of every boot (measured QEMU start to runner ready, alternating: Debian 6.1
//! 4.0 s -> 3.4 s, 6.12 4.8 s -> 3.4 s, 5.10 3.5 s -> 3.0 s).
//!
//! The ELF is taken out of the bzImage once (the setup header says where the compressed
//! payload is) and cached by the bzImage's content. A kernel without the PVH note, or
//! compressed in a format read here not (bzip2, lzma, lzo), boots from its bzImage as
//! before, and the reason is kept for the log. The kernel the guest runs is the same
//! either way; only the way into it differs (and KASLR, which the PVH entry does not
//! apply: addresses match `nokaslr`, as `--gdb` and memory dumps want anyway).

use std::io::Read;
use std::path::{Path, PathBuf};

use object::read::elf::{ElfFile64, NoteIterator, ProgramHeader, SectionHeader};
use object::Endianness;

use crate::cache::{Cache, KeyHasher};

/// Bumped when what is extracted, or how, changes: old cache entries are then unused.
const FORMAT: &str = "pvh-1";

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note that makes an ELF kernel PVH-bootable.
const PHYS32_ENTRY: u32 = 18;

/// PVH kernels kept (~50 MB each; a bisection makes one per step): the most recently
/// used stay.
pub const KEEP_PVH_KERNELS: usize = 12;

/// No x86 kernel decompresses to more than this; a larger claim is a corrupt payload.
const MAX_KERNEL: usize = 512 << 20;

/// The LZ4 "legacy" frame the kernel's `lz4 -l` writes: a magic, then blocks of at most
/// 8 MiB each preceded by their compressed length.
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PvhError {
    #[error("not a bzImage (no `HdrS` setup header)")]
    NotBzImage,
    #[error("boot protocol {0:#x} has no payload fields (needs 2.08, kernel 2.6.26+)")]
    OldProtocol(u16),
    #[error("the setup header's payload ({offset:#x} + {length:#x}) lies outside the file")]
    PayloadOutside { offset: usize, length: usize },
    #[error("the payload is compressed as {0}, which kchaos does not decompress")]
    Unsupported(&'static str),
    #[error("the payload's compression is not recognised")]
    Unknown,
    #[error("decompressing the {format} payload failed: {message}")]
    Corrupt {
        format: &'static str,
        message: String,
    },
    #[error("the {format} payload decompressed to {got} bytes, its trailer says {want}")]
    SizeMismatch {
        format: &'static str,
        got: usize,
        want: usize,
    },
    #[error("the payload is not an x86-64 ELF kernel")]
    NotElf,
    #[error("the kernel has no PVH entry note (CONFIG_PVH is off)")]
    NoPvhNote,
}

/// What QEMU's `-kernel` gets for a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootKernel {
    /// The PVH ELF in the cache, or the bzImage itself.
    pub path: PathBuf,
    /// `Some(why)` when the bzImage is booted: why the PVH entry is not used.
    pub fallback: Option<String>,
}

impl BootKernel {
    pub fn is_pvh(&self) -> bool {
        self.fallback.is_none()
    }

    fn bzimage(bzimage: &Path, why: String) -> BootKernel {
        BootKernel {
            path: bzimage.to_path_buf(),
            fallback: Some(why),
        }
    }
}

/// The kernel file to boot for `bzimage`: its PVH ELF (extracted now, or found in the
/// cache), else the bzImage with the reason. Never fails: any problem is a fallback.
pub fn boot_kernel(cache: &Cache, bzimage: &Path) -> BootKernel {
    let data = match std::fs::read(bzimage) {
        Ok(d) => d,
        Err(e) => return BootKernel::bzimage(bzimage, format!("cannot read it: {e}")),
    };
    let key = {
        let mut h = KeyHasher::new(FORMAT);
        h.field(&data);
        let hex = h.finish();
        hex.get(..24).unwrap_or(&hex).to_owned()
    };
    let dir = match cache.dir("kernels/pvh") {
        Ok(d) => d,
        Err(e) => return BootKernel::bzimage(bzimage, e.to_string()),
    };
    let elf_path = dir.join(format!("{key}.vmlinux"));
    let none_path = dir.join(format!("{key}.none"));
    if elf_path.is_file() {
        crate::cache::touch(&elf_path);
        return BootKernel {
            path: elf_path,
            fallback: None,
        };
    }
    if let Ok(why) = std::fs::read_to_string(&none_path) {
        return BootKernel::bzimage(bzimage, why);
    }
    let started = std::time::Instant::now();
    match extract(&data) {
        Ok(elf) => match Cache::write_atomic(&elf_path, &elf) {
            Ok(()) => {
                crate::cache::evict_lru(&dir, "vmlinux", KEEP_PVH_KERNELS, Some(&elf_path));
                tracing::debug!(
                    bzimage = %bzimage.display(),
                    elf = %elf_path.display(),
                    ms = started.elapsed().as_millis(),
                    "extracted the PVH kernel"
                );
                BootKernel {
                    path: elf_path,
                    fallback: None,
                }
            }
            Err(e) => BootKernel::bzimage(bzimage, e.to_string()),
        },
        Err(e) => {
            let why = e.to_string();
            // Remembered, so a kernel without PVH is not decompressed again per cell.
            let _ = Cache::write_atomic(&none_path, why.as_bytes());
            BootKernel::bzimage(bzimage, why)
        }
    }
}

/// The PVH-bootable ELF inside a bzImage.
pub fn extract(bzimage: &[u8]) -> Result<Vec<u8>, PvhError> {
    let payload = payload(bzimage)?;
    let elf = decompress(payload)?;
    check_pvh(&elf)?;
    Ok(elf)
}

/// The compressed kernel, located by the setup header (boot protocol 2.08+):
/// `setup_sects` at 0x1F1 (0 means 4), `payload_offset` at 0x248 and `payload_length`
/// at 0x24C, the offset counted from the end of the real-mode setup.
fn payload(data: &[u8]) -> Result<&[u8], PvhError> {
    if data.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(PvhError::NotBzImage);
    }
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let version = u16_at(0x206).ok_or(PvhError::NotBzImage)?;
    if version < 0x0208 {
        return Err(PvhError::OldProtocol(version));
    }
    let setup_sects = match data.get(0x1F1).copied().ok_or(PvhError::NotBzImage)? {
        0 => 4,
        n => usize::from(n),
    };
    let field = |at| {
        u32_at(at)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(PvhError::NotBzImage)
    };
    let (offset, length) = (field(0x248)?, field(0x24C)?);
    let start = (setup_sects + 1) * 512 + offset;
    start
        .checked_add(length)
        .and_then(|end| data.get(start..end))
        .ok_or(PvhError::PayloadOutside { offset, length })
}

/// Which compressor wrote the payload, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lz4Legacy,
}

impl Compression {
    fn detect(payload: &[u8]) -> Result<Compression, PvhError> {
        let starts = |magic: &[u8]| payload.starts_with(magic);
        if starts(&[0x1F, 0x8B]) {
            Ok(Compression::Gzip)
        } else if starts(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
            Ok(Compression::Xz)
        } else if starts(&[0x28, 0xB5, 0x2F, 0xFD]) {
            Ok(Compression::Zstd)
        } else if starts(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Ok(Compression::Lz4Legacy)
        } else if starts(b"BZh") {
            Err(PvhError::Unsupported("bzip2"))
        } else if starts(&[0x89, b'L', b'Z', b'O']) {
            Err(PvhError::Unsupported("lzo"))
        } else if starts(&[0x5D, 0x00, 0x00]) {
            Err(PvhError::Unsupported("lzma"))
        } else {
            Err(PvhError::Unknown)
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4Legacy => "lz4",
        }
    }
}

fn decompress(payload: &[u8]) -> Result<Vec<u8>, PvhError> {
    let format = Compression::detect(payload)?;
    let corrupt = |message: String| PvhError::Corrupt {
        format: format.name(),
        message,
    };
    // Every format but gzip (which has its own) gets the decompressed size appended
    // by the kernel's build (`size_append`): not part of the stream, a check on it.
    let (body, trailer) = match format {
        Compression::Gzip => (payload, None),
        _ => {
            let at = payload
                .len()
                .checked_sub(4)
                .ok_or_else(|| corrupt("shorter than its size trailer".into()))?;
            let (body, t) = payload.split_at(at);
            let size = usize::try_from(u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
                .map_err(|e| corrupt(e.to_string()))?;
            (body, Some(size))
        }
    };
    if trailer.is_some_and(|size| size > MAX_KERNEL) {
        return Err(corrupt("the size trailer claims more than 512 MiB".into()));
    }
    let mut out = Vec::with_capacity(trailer.unwrap_or(64 << 20));
    let limit = u64::try_from(MAX_KERNEL + 1).unwrap_or(u64::MAX);
    match format {
        Compression::Gzip => {
            flate2::read::GzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Compression::Xz => {
            xz2::read::XzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Compression::Zstd => {
            let mut input = body;
            ruzstd::decoding::StreamingDecoder::new(&mut input)
                .map_err(|e| corrupt(e.to_string()))?
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Compression::Lz4Legacy => lz4_legacy(body, &mut out).map_err(corrupt)?,
    }
    if out.len() > MAX_KERNEL {
        return Err(corrupt("more than 512 MiB".into()));
    }
    match trailer {
        Some(want) if want != out.len() => Err(PvhError::SizeMismatch {
            format: format.name(),
            got: out.len(),
            want,
        }),
        _ => Ok(out),
    }
}

/// The kernel's LZ4 legacy stream: frames of a magic and blocks, each block its
/// little-endian compressed length then the LZ4 block.
fn lz4_legacy(stream: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut rest = stream;
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(format!("{} stray bytes at the end", rest.len()));
        }
        let (head, tail) = rest.split_at(4);
        let word = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        rest = tail;
        if word == LZ4_LEGACY_MAGIC {
            continue;
        }
        let size = usize::try_from(word).map_err(|e| e.to_string())?;
        let data = rest
            .get(..size)
            .ok_or_else(|| format!("a block of {size} bytes with {} left", rest.len()))?;
        let n = lz4_flex::block::decompress_into(data, &mut block).map_err(|e| e.to_string())?;
        out.extend_from_slice(block.get(..n).unwrap_or_default());
        if out.len() > MAX_KERNEL {
            return Err("more than 512 MiB".into());
        }
        rest = rest.get(size..).unwrap_or_default();
    }
    Ok(())
}

/// An x86-64 ELF with a `Xen` note of type `XEN_ELFNOTE_PHYS32_ENTRY`, in a `PT_NOTE`
/// segment (what QEMU looks at) or a note section.
fn check_pvh(elf: &[u8]) -> Result<(), PvhError> {
    let file = ElfFile64::<Endianness>::parse(elf).map_err(|_| PvhError::NotElf)?;
    if file.elf_header().e_machine.get(file.endian()) != object::elf::EM_X86_64 {
        return Err(PvhError::NotElf);
    }
    let endian = file.endian();
    let is_entry = |notes: Option<NoteIterator<'_, object::elf::FileHeader64<Endianness>>>| {
        let Some(mut notes) = notes else {
            return false;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian) == PHYS32_ENTRY {
                return true;
            }
        }
        false
    };
    let in_segments = file
        .elf_program_headers()
        .iter()
        .any(|ph| is_entry(ph.notes(endian, elf).ok().flatten()));
    let in_sections = file
        .elf_section_table()
        .iter()
        .any(|sh| is_entry(sh.notes(endian, elf).ok().flatten()));
    if in_segments || in_sections {
        Ok(())
    } else {
        Err(PvhError::NoPvhNote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An x86-64 ELF with a note section holding `notes` (name, type).
    fn elf_with_notes(notes: &[(&[u8], u32)]) -> Vec<u8> {
        use object::write::Object as WriteObject;
        use object::{Architecture, BinaryFormat, SectionKind};
        let mut obj = WriteObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let mut data = Vec::new();
        for (name, kind) in notes {
            let namesz = u32::try_from(name.len() + 1).unwrap();
            data.extend_from_slice(&namesz.to_le_bytes());
            data.extend_from_slice(&4u32.to_le_bytes());
            data.extend_from_slice(&kind.to_le_bytes());
            data.extend_from_slice(name);
            data.push(0);
            while data.len() % 4 != 0 {
                data.push(0);
            }
            data.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        }
        let section = obj.add_section(Vec::new(), b".notes".to_vec(), SectionKind::Note);
        obj.append_section_data(section, &data, 4);
        obj.write().unwrap()
    }

    /// A bzImage around `payload`: setup header, 2 setup sectors, payload at offset 0x40.
    fn bzimage(payload: &[u8], version: u16) -> Vec<u8> {
        let mut data = vec![0u8; 3 * 512 + 0x40];
        data[0x1F1] = 2;
        data[0x202..0x206].copy_from_slice(b"HdrS");
        data[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        data[0x248..0x24C].copy_from_slice(&0x40u32.to_le_bytes());
        let len = u32::try_from(payload.len()).unwrap();
        data[0x24C..0x250].copy_from_slice(&len.to_le_bytes());
        data.extend_from_slice(payload);
        data.extend_from_slice(b"trailing setup code the payload does not include");
        data
    }

    fn with_size(mut compressed: Vec<u8>, size: usize) -> Vec<u8> {
        let size = u32::try_from(size).unwrap();
        compressed.extend_from_slice(&size.to_le_bytes());
        compressed
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        with_size(e.finish().unwrap(), data.len())
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        let c =
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest);
        with_size(c, data.len())
    }

    /// The legacy frame in blocks of `block` input bytes (the kernel's are 8 MiB).
    fn lz4(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&u32::try_from(c.len()).unwrap().to_le_bytes());
            out.extend_from_slice(&c);
        }
        with_size(out, data.len())
    }

    #[test]
    fn the_pvh_kernel_comes_out_of_every_supported_compression() {
        let pvh = elf_with_notes(&[(b"Xen", 6), (b"Xen", PHYS32_ENTRY)]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("gzip", gzip(&pvh)),
            ("xz", xz(&pvh)),
            ("zstd", zstd(&pvh)),
            ("lz4, one block", lz4(&pvh, LZ4_LEGACY_BLOCK)),
            ("lz4, many blocks", lz4(&pvh, 100)),
        ];
        for (what, payload) in cases {
            assert_eq!(
                extract(&bzimage(&payload, 0x020F)),
                Ok(pvh.clone()),
                "{what}"
            );
        }
    }

    #[test]
    fn what_cannot_boot_through_pvh_says_why() {
        let pvh = elf_with_notes(&[(b"Xen", PHYS32_ENTRY)]);
        let no_note = elf_with_notes(&[(b"Xen", 6), (b"GNU", PHYS32_ENTRY)]);
        let mut bad_size = lz4(&pvh, 100);
        let n = bad_size.len();
        bad_size[n - 4..].copy_from_slice(&7u32.to_le_bytes());
        let mut cut = lz4(&pvh, 100);
        cut.truncate(cut.len() / 2);
        cut.extend_from_slice(&0u32.to_le_bytes());
        let mut huge = xz(&pvh);
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut outside = bzimage(&gzip(&pvh), 0x020F);
        outside[0x24C..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        // (what, the file, the error)
        let cases: Vec<(&str, Vec<u8>, PvhError)> = vec![
            ("an ELF, not a bzImage", pvh.clone(), PvhError::NotBzImage),
            (
                "boot protocol 2.06",
                bzimage(&gzip(&pvh), 0x0206),
                PvhError::OldProtocol(0x206),
            ),
            (
                "payload fields past the end",
                outside,
                PvhError::PayloadOutside {
                    offset: 0x40,
                    length: usize::try_from(u32::MAX).unwrap(),
                },
            ),
            (
                "no PVH note (CONFIG_PVH=n)",
                bzimage(&gzip(&no_note), 0x020F),
                PvhError::NoPvhNote,
            ),
            (
                "not an ELF inside",
                bzimage(&gzip(b"just bytes"), 0x020F),
                PvhError::NotElf,
            ),
            (
                "bzip2",
                bzimage(b"BZh91AY&SY", 0x020F),
                PvhError::Unsupported("bzip2"),
            ),
            (
                "lzo",
                bzimage(b"\x89LZO\x00\r\n", 0x020F),
                PvhError::Unsupported("lzo"),
            ),
            (
                "lzma",
                bzimage(b"\x5d\x00\x00\x80\x00", 0x020F),
                PvhError::Unsupported("lzma"),
            ),
            (
                "garbage",
                bzimage(b"\x00\x01\x02\x03\x04", 0x020F),
                PvhError::Unknown,
            ),
            (
                "size trailer disagrees",
                bzimage(&bad_size, 0x020F),
                PvhError::SizeMismatch {
                    format: "lz4",
                    got: pvh.len(),
                    want: 7,
                },
            ),
            (
                "size trailer claims 4 GiB",
                bzimage(&huge, 0x020F),
                PvhError::Corrupt {
                    format: "xz",
                    message: "the size trailer claims more than 512 MiB".into(),
                },
            ),
        ];
        for (what, file, want) in cases {
            assert_eq!(extract(&file), Err(want), "{what}");
        }
        // A truncated stream is an error of its format, whatever the decoder says.
        let err = extract(&bzimage(&cut, 0x020F));
        assert!(
            matches!(err, Err(PvhError::Corrupt { format: "lz4", .. })),
            "{err:?}"
        );
    }

    #[test]
    fn the_cache_keeps_both_answers() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        let pvh = elf_with_notes(&[(b"Xen", PHYS32_ENTRY)]);
        let good = dir.path().join("good-bzImage");
        std::fs::write(&good, bzimage(&zstd(&pvh), 0x020F)).unwrap();
        let first = boot_kernel(&cache, &good);
        assert!(first.is_pvh(), "{first:?}");
        assert_eq!(std::fs::read(&first.path).ok(), Some(pvh));
        assert_eq!(boot_kernel(&cache, &good), first, "found in the cache");

        let old = dir.path().join("old-bzImage");
        std::fs::write(&old, bzimage(b"BZh91AY&SY", 0x020F)).unwrap();
        let fallback = boot_kernel(&cache, &old);
        assert_eq!(fallback.path, old);
        assert_eq!(
            fallback.fallback.as_deref(),
            Some("the payload is compressed as bzip2, which kchaos does not decompress")
        );
        assert_eq!(
            boot_kernel(&cache, &old),
            fallback,
            "the reason is cached too"
        );

        let missing = boot_kernel(&cache, &dir.path().join("nothing"));
        assert!(!missing.is_pvh());
    }
}
