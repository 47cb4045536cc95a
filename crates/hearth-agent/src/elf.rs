//! What a dynamically linked program needs before it can run: its ELF
//! interpreter (`PT_INTERP`, the dynamic loader) and its shared libraries
//! (`DT_NEEDED`). The kernel answers a missing loader with the same ENOENT
//! as a missing program, so the agent reads these itself to say which file
//! is really missing. Plain byte parsing of the headers (ELF32 and ELF64,
//! little-endian), read at their offsets: no dependency, and a 100 MB
//! program is not read whole.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 4] = b"\x7fELF";
const CLASS_32: u8 = 1;
const CLASS_64: u8 = 2;
const LITTLE_ENDIAN: u8 = 1;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
/// More program headers or dynamic entries than any real program has: a
/// corrupt file is not read for ever.
const MAX_ENTRIES: u64 = 4096;
/// The longest interpreter path or library name read.
const MAX_NAME: usize = 4096;

/// What the headers of a dynamically linked program ask for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dynamic {
    /// `PT_INTERP`: the loader the kernel starts; `None` for a static one.
    pub interpreter: Option<String>,
    /// `DT_NEEDED`: the libraries the loader must find, in order.
    pub needed: Vec<String>,
}

/// The program's dynamic needs; `None` when it is not a little-endian
/// ELF file (or cannot be read).
pub fn read(path: &Path) -> Option<Dynamic> {
    let file = File::open(path).ok()?;
    Elf::new(&file)?.dynamic()
}

/// One program header: its type, file offset, virtual address and size.
#[derive(Debug, Clone, Copy)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// An open ELF file and its class (the width of its words).
struct Elf<'a> {
    file: &'a File,
    is64: bool,
}

impl<'a> Elf<'a> {
    fn new(file: &'a File) -> Option<Self> {
        let ident = bytes(file, 0, 16)?;
        if &ident[..4] != MAGIC || ident[5] != LITTLE_ENDIAN {
            return None;
        }
        let is64 = match ident[4] {
            CLASS_64 => true,
            CLASS_32 => false,
            _ => return None,
        };
        Some(Elf { file, is64 })
    }

    fn dynamic(&self) -> Option<Dynamic> {
        let segments = self.segments()?;
        let interpreter = segments
            .iter()
            .find(|s| s.kind == PT_INTERP)
            .and_then(|s| self.string(s.offset, s.filesz as usize));
        let needed = segments
            .iter()
            .find(|s| s.kind == PT_DYNAMIC)
            .map(|d| self.needed(d, &segments))
            .unwrap_or_default();
        Some(Dynamic {
            interpreter,
            needed,
        })
    }

    fn segments(&self) -> Option<Vec<Segment>> {
        let (phoff, entsize, count) = if self.is64 {
            (self.u64_at(32)?, self.u16_at(54)?, self.u16_at(56)?)
        } else {
            (self.u32_at(28)?, self.u16_at(42)?, self.u16_at(44)?)
        };
        (0..count.min(MAX_ENTRIES))
            .map(|i| self.segment(phoff + i * entsize))
            .collect()
    }

    fn segment(&self, at: u64) -> Option<Segment> {
        Some(if self.is64 {
            Segment {
                kind: self.u32_at(at)? as u32,
                offset: self.u64_at(at + 8)?,
                vaddr: self.u64_at(at + 16)?,
                filesz: self.u64_at(at + 32)?,
            }
        } else {
            Segment {
                kind: self.u32_at(at)? as u32,
                offset: self.u32_at(at + 4)?,
                vaddr: self.u32_at(at + 8)?,
                filesz: self.u32_at(at + 16)?,
            }
        })
    }

    /// The `DT_NEEDED` names: offsets into the string table, which the
    /// dynamic section gives as a virtual address.
    fn needed(&self, dynamic: &Segment, segments: &[Segment]) -> Vec<String> {
        let word = if self.is64 { 8 } else { 4 };
        let count = (dynamic.filesz / (2 * word)).min(MAX_ENTRIES);
        let mut strtab = None;
        let mut offsets = Vec::new();
        for i in 0..count {
            let at = dynamic.offset + i * 2 * word;
            let (Some(tag), Some(value)) = (self.word_at(at), self.word_at(at + word)) else {
                break;
            };
            match tag {
                DT_NULL => break,
                DT_NEEDED => offsets.push(value),
                DT_STRTAB => strtab = file_offset(segments, value),
                _ => {}
            }
        }
        let Some(strtab) = strtab else {
            return Vec::new();
        };
        offsets
            .into_iter()
            .filter_map(|o| self.string(strtab + o, MAX_NAME))
            .collect()
    }

    /// A NUL-terminated string at `at`, at most `max` bytes.
    fn string(&self, at: u64, max: usize) -> Option<String> {
        let raw = bytes_upto(self.file, at, max.min(MAX_NAME))?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let s = String::from_utf8_lossy(&raw[..end]).into_owned();
        (!s.is_empty()).then_some(s)
    }

    fn word_at(&self, at: u64) -> Option<u64> {
        if self.is64 {
            self.u64_at(at)
        } else {
            self.u32_at(at)
        }
    }

    fn u16_at(&self, at: u64) -> Option<u64> {
        let b = bytes(self.file, at, 2)?;
        Some(u16::from_le_bytes([b[0], b[1]]).into())
    }

    fn u32_at(&self, at: u64) -> Option<u64> {
        let b: [u8; 4] = bytes(self.file, at, 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b).into())
    }

    fn u64_at(&self, at: u64) -> Option<u64> {
        let b: [u8; 8] = bytes(self.file, at, 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// The file offset of virtual address `vaddr`, through the loadable
/// segment that maps it.
fn file_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
    segments
        .iter()
        .filter(|s| s.kind == PT_LOAD)
        .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
        .map(|s| s.offset + (vaddr - s.vaddr))
}

/// Exactly `len` bytes at `at`.
fn bytes(file: &File, at: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, at).ok()?;
    Some(buf)
}

/// Up to `len` bytes at `at` (fewer at the end of the file).
fn bytes_upto(file: &File, at: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0; len];
    let n = file.read_at(&mut buf, at).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_host_program_names_its_loader_and_libc() {
        // /bin/ls on any glibc host: PIE, dynamically linked.
        let ls = read(Path::new("/bin/ls")).expect("/bin/ls is ELF");
        let interp = ls.interpreter.clone().expect("/bin/ls has an interpreter");
        assert!(interp.contains("ld-linux"), "{interp}");
        assert!(ls.needed.iter().any(|l| l == "libc.so.6"), "{ls:?}");
    }

    #[test]
    fn a_static_program_needs_nothing() {
        // The static agent, when it was built (scripts/build-agent).
        let agent = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/agent-build/x86_64-unknown-linux-gnu/release/hearth-agent");
        let agent = std::env::var_os("HEARTH_AGENT").map_or(agent, Into::into);
        if !agent.exists() {
            eprintln!("no static agent at {}: skipped", agent.display());
            return;
        }
        assert_eq!(read(&agent), Some(Dynamic::default()));
    }

    #[test]
    fn a_script_or_garbage_is_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(read(&script), None);
        let short = dir.path().join("short");
        std::fs::write(&short, b"\x7fELF\x02\x01").unwrap();
        assert_eq!(read(&short), None);
        assert_eq!(read(&dir.path().join("absent")), None);
    }

    #[test]
    fn a_truncated_program_still_names_what_it_read() {
        // The headers are at the front: a cut file keeps its interpreter.
        let ls = std::fs::read("/bin/ls").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &ls[..4096]).unwrap();
        let read = read(&cut).expect("the headers are there");
        assert!(read.interpreter.is_some(), "{read:?}");
    }
}
