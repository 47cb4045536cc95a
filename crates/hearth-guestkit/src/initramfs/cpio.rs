//! A writer for the newc cpio format the kernel unpacks as an initramfs.
//! Because the archive is written byte by byte, device nodes such as
//! /dev/console can be put in it without root.

/// One archive being written. Entries get sequential inode numbers and a
/// zero mtime, so the same inputs always give the same bytes.
#[derive(Debug, Default)]
pub struct CpioWriter {
    out: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

struct Header<'a> {
    name: &'a str,
    mode: u32,
    size: usize,
    rdev: (u32, u32),
}

impl CpioWriter {
    pub fn new() -> Self {
        CpioWriter {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(
            Header {
                name,
                mode: S_IFDIR | perm,
                size: 0,
                rdev: (0, 0),
            },
            &[],
        );
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(
            Header {
                name,
                mode: S_IFREG | perm,
                size: data.len(),
                rdev: (0, 0),
            },
            data,
        );
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        let data = target.as_bytes();
        self.entry(
            Header {
                name,
                mode: S_IFLNK | 0o777,
                size: data.len(),
                rdev: (0, 0),
            },
            data,
        );
    }

    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(
            Header {
                name,
                mode: S_IFCHR | perm,
                size: 0,
                rdev: (major, minor),
            },
            &[],
        );
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.entry(
            Header {
                name: "TRAILER!!!",
                mode: 0,
                size: 0,
                rdev: (0, 0),
            },
            &[],
        );
        self.out
    }

    fn entry(&mut self, h: Header<'_>, data: &[u8]) {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if h.mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            ino,
            h.mode,
            0,
            0,
            nlink,
            0,
            h.size as u32,
            0,
            0,
            h.rdev.0,
            h.rdev.1,
            h.name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(h.name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back (name, mode, data) triples, checking alignment on the way.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut entries = Vec::new();
        let total = b.len();
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let data_start = (110 + namesize).div_ceil(4) * 4;
            let data = b[data_start..data_start + size].to_vec();
            b = &b[(data_start + size).div_ceil(4) * 4..];
            assert!((total - b.len()).is_multiple_of(4));
            if name == "TRAILER!!!" {
                return entries;
            }
            entries.push((name, mode, data));
        }
    }

    #[test]
    fn entries_round_trip_with_types_and_alignment() {
        let mut w = CpioWriter::new();
        w.dir("dev", 0o755);
        w.char_device("dev/console", 0o600, 5, 1);
        w.file("init", 0o755, b"#!/bin/sh\n");
        w.symlink("bin/sh", "busybox");
        let entries = parse(&w.finish());
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "bin/sh"]);
        assert_eq!(entries[1].1, S_IFCHR | 0o600);
        assert_eq!(entries[2].2, b"#!/bin/sh\n");
        assert_eq!(entries[3].2, b"busybox");
    }

    #[test]
    fn output_is_deterministic() {
        let build = || {
            let mut w = CpioWriter::new();
            w.file("a", 0o644, b"x");
            w.finish()
        };
        assert_eq!(build(), build());
    }
}
