//! The tiny Firecracker test guest: a 64-bit ELF "kernel" of a few dozen
//! bytes of hand-assembled machine code that prints a marker on the serial
//! port and then resets the machine (or halts forever).
//!
//! Hosts whose KVM cannot run a real Linux kernel (software hypervisors such
//! as kvm-pvm) still run this, so the whole Firecracker path (API, kernel
//! loading, console capture, exit, stop) is tested end to end everywhere.
//!
//! Firecracker loads an ELF kernel segment by segment at each `p_paddr` and
//! enters it at `e_entry` in 64-bit long mode with identity paging and
//! interrupts off, so the code needs no set-up of its own.

/// Where the single loadable segment lives in guest memory (16 MiB), above
/// Firecracker's lowest kernel address (1 MiB) and inside the smallest VM.
pub const LOAD_ADDRESS: u64 = 0x100_0000;

/// The 8250 UART's data register (COM1): a byte written here is printed.
const SERIAL_PORT: u16 = 0x3f8;
/// The i8042 keyboard controller's command port.
const I8042_COMMAND_PORT: u8 = 0x64;
/// The i8042 command that pulses the CPU reset line; Firecracker exits 0.
const I8042_RESET: u8 = 0xfe;

const ELF_HEADER_SIZE: u16 = 64;
const PROGRAM_HEADER_SIZE: u16 = 56;
/// The code starts right after the headers, rounded up to 16 bytes.
pub const CODE_OFFSET: u64 = 0x80;

/// What the guest does after printing its marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestEnd {
    /// Resets through the i8042, which makes Firecracker exit with status 0.
    Reset,
    /// Halts forever: the VM runs until it is killed.
    HaltForever,
}

/// A guest that prints `marker` and a newline, then resets.
pub fn tiny_guest_elf(marker: &str) -> Vec<u8> {
    tiny_guest_elf_ending(marker, GuestEnd::Reset)
}

/// A guest that prints `marker` and a newline, then ends as `end` says.
pub fn tiny_guest_elf_ending(marker: &str, end: GuestEnd) -> Vec<u8> {
    let code = guest_code(marker, end);
    let file_size = CODE_OFFSET + code.len() as u64;
    let mut elf = elf_header(LOAD_ADDRESS + CODE_OFFSET);
    elf.extend(program_header(file_size));
    elf.resize(CODE_OFFSET as usize, 0);
    elf.extend(code);
    elf
}

/// The machine code: one `mov al, byte; out dx, al` per byte to print.
fn guest_code(marker: &str, end: GuestEnd) -> Vec<u8> {
    let mut asm = Asm::default();
    asm.mov_dx(SERIAL_PORT);
    for &byte in marker.as_bytes().iter().chain(b"\n") {
        asm.mov_al(byte);
        asm.out_dx_al();
    }
    if end == GuestEnd::Reset {
        asm.mov_al(I8042_RESET);
        asm.out_imm8_al(I8042_COMMAND_PORT);
    }
    asm.halt_forever();
    asm.0
}

/// A guest that counts for ever: line `n` (from 1) is `n` as eight
/// digits of base 16 written with the characters `0` to `?` (each digit
/// is `'0' + value`), then a newline, with a busy wait between lines. The
/// count lives in a register, so a guest restored from a snapshot goes on
/// from where it stopped; a restarted one would begin at 1 again.
pub fn counting_guest_elf() -> Vec<u8> {
    let code = counting_code(COUNT_DELAY_LOOPS);
    let file_size = CODE_OFFSET + code.len() as u64;
    let mut elf = elf_header(LOAD_ADDRESS + CODE_OFFSET);
    elf.extend(program_header(file_size));
    elf.resize(CODE_OFFSET as usize, 0);
    elf.extend(code);
    elf
}

/// Iterations of the busy wait between two lines of the counting guest
/// (a busy loop: under kvm-pvm it runs far slower than on bare metal,
/// so this is small; a line comes every few milliseconds to a second).
const COUNT_DELAY_LOOPS: u32 = 200_000;

/// The counter a line of [`counting_guest_elf`] shows, if it is one.
pub fn count_of(line: &str) -> Option<u32> {
    let line = line.trim();
    if line.len() != 8 {
        return None;
    }
    line.bytes().try_fold(0u32, |n, b| match b {
        b'0'..=b'?' => Some(n << 4 | u32::from(b - b'0')),
        _ => None,
    })
}

/// `ebx` counts; each line prints its eight nibbles, highest first, by
/// rotating `ebx` four bits at a time (eight rotations leave it as it was).
fn counting_code(delay: u32) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend([0x66, 0xba]); // mov dx, imm16
    c.extend(SERIAL_PORT.to_le_bytes());
    c.extend([0x31, 0xdb]); // xor ebx, ebx
    let top = c.len();
    c.extend([0xff, 0xc3]); // inc ebx
    c.extend([0xb9, 8, 0, 0, 0]); // mov ecx, 8
    let digit = c.len();
    c.extend([0xc1, 0xc3, 0x04]); // rol ebx, 4
    c.extend([0x89, 0xd8]); // mov eax, ebx
    c.extend([0x24, 0x0f]); // and al, 0x0f
    c.extend([0x04, b'0']); // add al, '0'
    c.push(0xee); // out dx, al
    c.extend([0xe2, back(c.len() + 2, digit)]); // loop digit
    c.extend([0xb0, b'\n', 0xee]); // mov al, '\n'; out dx, al
    c.push(0xb9); // mov ecx, delay
    c.extend(delay.to_le_bytes());
    let wait = c.len();
    c.extend([0xe2, back(c.len() + 2, wait)]); // loop wait
    c.extend([0xeb, back(c.len() + 2, top)]); // jmp short top
    c
}

/// The rel8 displacement of a short jump ending at `from` to `to`, which
/// lies at most 128 bytes before it.
fn back(from: usize, to: usize) -> u8 {
    let distance = u8::try_from(from - to).expect("a short jump back");
    distance.wrapping_neg()
}

/// A hand assembler for the handful of x86-64 instructions the guest uses;
/// each method emits exactly one instruction (or one fixed idiom).
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    /// `mov dx, imm16` (66 BA iw): the port that `out dx, al` writes to.
    fn mov_dx(&mut self, value: u16) {
        self.0.extend([0x66, 0xba]);
        self.0.extend(value.to_le_bytes());
    }

    /// `mov al, imm8` (B0 ib): the byte to write next.
    fn mov_al(&mut self, value: u8) {
        self.0.extend([0xb0, value]);
    }

    /// `out dx, al` (EE): writes AL to the I/O port in DX.
    fn out_dx_al(&mut self) {
        self.0.push(0xee);
    }

    /// `out imm8, al` (E6 ib): writes AL to a fixed I/O port below 256.
    fn out_imm8_al(&mut self, port: u8) {
        self.0.extend([0xe6, port]);
    }

    /// `hlt` (F4) followed by `jmp short -3` (EB FD) back to the `hlt`, so
    /// the vCPU halts again should anything ever wake it.
    fn halt_forever(&mut self) {
        self.0.push(0xf4);
        self.0.extend([0xeb, 0xfd]);
    }
}

/// The ELF64 file header of a little-endian x86-64 executable with one
/// program header right after it and no section headers.
fn elf_header(entry: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(ELF_HEADER_SIZE as usize);
    h.extend(b"\x7fELF"); // e_ident[EI_MAG0..=EI_MAG3]
    h.extend([2, 1, 1, 0]); // ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE
    h.extend([0; 8]); // e_ident padding up to EI_NIDENT (16)
    h.extend(2u16.to_le_bytes()); // e_type: ET_EXEC
    h.extend(62u16.to_le_bytes()); // e_machine: EM_X86_64
    h.extend(1u32.to_le_bytes()); // e_version: EV_CURRENT
    h.extend(entry.to_le_bytes()); // e_entry
    h.extend(u64::from(ELF_HEADER_SIZE).to_le_bytes()); // e_phoff
    h.extend(0u64.to_le_bytes()); // e_shoff: no section headers
    h.extend(0u32.to_le_bytes()); // e_flags
    h.extend(ELF_HEADER_SIZE.to_le_bytes()); // e_ehsize
    h.extend(PROGRAM_HEADER_SIZE.to_le_bytes()); // e_phentsize
    h.extend(1u16.to_le_bytes()); // e_phnum
    h.extend(0u16.to_le_bytes()); // e_shentsize
    h.extend(0u16.to_le_bytes()); // e_shnum
    h.extend(0u16.to_le_bytes()); // e_shstrndx
    h
}

/// One PT_LOAD segment mapping the whole file (headers included, as small
/// ELF files do) at [`LOAD_ADDRESS`], virtual and physical alike.
fn program_header(file_size: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROGRAM_HEADER_SIZE as usize);
    p.extend(1u32.to_le_bytes()); // p_type: PT_LOAD
    p.extend(5u32.to_le_bytes()); // p_flags: PF_R | PF_X
    p.extend(0u64.to_le_bytes()); // p_offset
    p.extend(LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    p.extend(LOAD_ADDRESS.to_le_bytes()); // p_paddr: where Firecracker loads it
    p.extend(file_size.to_le_bytes()); // p_filesz
    p.extend(file_size.to_le_bytes()); // p_memsz
    p.extend(0x1000u64.to_le_bytes()); // p_align
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn header_says_x86_64_executable_entered_at_the_code() {
        let elf = tiny_guest_elf("hello");
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(&elf[4..7], &[2, 1, 1], "64-bit, little-endian, version 1");
        assert_eq!(u16_at(&elf, 16), 2, "ET_EXEC");
        assert_eq!(u16_at(&elf, 18), 62, "EM_X86_64");
        assert_eq!(u64_at(&elf, 24), LOAD_ADDRESS + CODE_OFFSET, "e_entry");
        assert_eq!(u64_at(&elf, 32), 64, "e_phoff");
        assert_eq!(u16_at(&elf, 52), 64, "e_ehsize");
        assert_eq!(u16_at(&elf, 54), 56, "e_phentsize");
        assert_eq!(u16_at(&elf, 56), 1, "e_phnum");
    }

    #[test]
    fn one_load_segment_covers_the_file_at_16_mib() {
        let elf = tiny_guest_elf("hello");
        let ph = &elf[64..120];
        assert_eq!(u32_at(ph, 0), 1, "PT_LOAD");
        assert_eq!(u64_at(ph, 8), 0, "p_offset");
        assert_eq!(u64_at(ph, 16), 0x100_0000, "p_vaddr");
        assert_eq!(u64_at(ph, 24), 0x100_0000, "p_paddr");
        assert_eq!(u64_at(ph, 32), elf.len() as u64, "p_filesz");
        assert_eq!(u64_at(ph, 40), elf.len() as u64, "p_memsz");
    }

    #[test]
    fn code_prints_each_marker_byte_then_newline_then_resets() {
        let elf = tiny_guest_elf("ok");
        let code = &elf[CODE_OFFSET as usize..];
        let expected: &[u8] = &[
            0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0xb0, b'o', 0xee, // mov al, 'o'; out dx, al
            0xb0, b'k', 0xee, // mov al, 'k'; out dx, al
            0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
            0xb0, 0xfe, 0xe6, 0x64, // mov al, 0xfe; out 0x64, al
            0xf4, 0xeb, 0xfd, // hlt; jmp -3
        ];
        assert_eq!(code, expected);
    }

    #[test]
    fn counting_code_loops_back_to_its_labels() {
        let code = counting_code(7);
        assert_eq!(&code[..6], &[0x66, 0xba, 0xf8, 0x03, 0x31, 0xdb]);
        assert_eq!(&code[6..8], &[0xff, 0xc3], "inc ebx at the top");
        let loop_digit = code.len() - 14;
        assert_eq!(&code[loop_digit..loop_digit + 2], &[0xe2, 0xf4]);
        assert!(code.ends_with(&[0x07, 0, 0, 0, 0xe2, 0xfe, 0xeb, 0xe1]));
        assert_eq!(back(0x28, 0x06), 0xde);
    }

    #[test]
    fn count_lines_read_back_as_numbers() {
        assert_eq!(count_of("0000000:\n"), Some(10));
        assert_eq!(count_of("000001?0"), Some(0x1f0));
        assert_eq!(count_of("hello"), None);
        assert_eq!(count_of("0000000g"), None);
    }

    #[test]
    fn halting_guest_has_no_reset() {
        let elf = tiny_guest_elf_ending("ok", GuestEnd::HaltForever);
        let code = &elf[CODE_OFFSET as usize..];
        assert!(!code.windows(2).any(|w| w == [0xe6, 0x64]));
        assert!(code.ends_with(&[0xf4, 0xeb, 0xfd]));
    }
}
