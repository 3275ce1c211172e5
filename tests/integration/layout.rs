//! The binary's code layout (link/cold-text.ld, passed by build.rs): each group of code that
//! does not run in the usual mode comes out of the link as its own section after `.text`, with
//! at least the code its patterns matched when they were written. A pattern that stops
//! matching (a crate renamed, a mangling scheme changed) shrinks its group and fails here,
//! instead of quietly bringing the cold code back among the hot (docs/performance.md "Resident memory on the local API").

use crate::util::BIN;

/// The groups and a floor for each: about half of what the release x86_64 build holds (x86_64
/// release: 156, 505, 40 and 166 KiB; debug builds hold more of our code, the same std).
const GROUPS: [(&str, u64); 4] = [
    (".text.yurt_cold_optional", 48 << 10),
    (".text.yurt_cold_tls", 200 << 10),
    (".text.yurt_cold_cli", 12 << 10),
    (".text.yurt_cold_backtrace", 64 << 10),
];

#[test]
fn cold_code_groups_follow_the_text_each_with_its_code() {
    let elf = std::fs::read(BIN).unwrap();
    let sections = sections(&elf);
    let text = sections
        .iter()
        .find(|s| s.0 == ".text")
        .expect("no .text section");
    let mut end = text.1 + text.2;
    for (name, floor) in GROUPS {
        let (_, addr, size) = sections
            .iter()
            .find(|s| s.0 == name)
            .unwrap_or_else(|| panic!("{BIN} has no {name} section: link/cold-text.ld not used"));
        assert!(
            *size >= floor,
            "{name} holds {size} bytes, less than {floor}: a pattern in link/cold-text.ld no longer matches"
        );
        assert!(
            *addr >= end,
            "{name} at {addr:#x}, before the end of the previous group"
        );
        end = addr + size;
    }
}

/// (name, address, size) of each section of a little-endian ELF file, 32- or 64-bit.
fn sections(elf: &[u8]) -> Vec<(String, u64, u64)> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[5], 1, "not little-endian");
    let wide = elf[4] == 2;
    let int = |at: usize, len: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..len].copy_from_slice(&elf[at..at + len]);
        u64::from_le_bytes(b)
    };
    let word = if wide { 8 } else { 4 };
    // e_shoff, e_shentsize, e_shnum, e_shstrndx.
    let (shoff, rest) = if wide { (0x28, 0x3a) } else { (0x20, 0x2e) };
    let shoff = int(shoff, word) as usize;
    let (entsize, count, strndx) = (
        int(rest, 2) as usize,
        int(rest + 2, 2) as usize,
        int(rest + 4, 2) as usize,
    );
    // sh_name, then sh_addr, sh_offset and sh_size at these offsets in a header.
    let (addr_at, offset_at, size_at) = if wide {
        (0x10, 0x18, 0x20)
    } else {
        (0x0c, 0x10, 0x14)
    };
    let header = |i: usize| shoff + i * entsize;
    let strtab = int(header(strndx) + offset_at, word) as usize;
    (0..count)
        .map(|i| {
            let h = header(i);
            let name = strtab + int(h, 4) as usize;
            let len = elf[name..].iter().position(|&b| b == 0).unwrap();
            (
                String::from_utf8_lossy(&elf[name..name + len]).into_owned(),
                int(h + addr_at, word),
                int(h + size_at, word),
            )
        })
        .collect()
}
