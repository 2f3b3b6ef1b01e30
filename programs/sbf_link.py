"""A linker for one BPF relocatable object into a Solana SBPFv0 shared object.

Upstream linkers cannot make one (ld.lld 14 refuses R_BPF_64_64 against local symbols, newer
lld has no EM_BPF, GNU bpf-ld has no -shared), so this writes the layout of Solana's own
``sbf.ld`` script, as the v0 loader reads it (anza-xyz/sbpf ``src/elf.rs``, lenient parser):

* ELF64 little-endian, ``ET_DYN``, ``EM_BPF`` (247), ``e_flags`` 0 (SBPF v0), ``e_entry`` the
  ``entrypoint`` symbol; four program headers (text, rodata, data ``PT_LOAD``; ``PT_DYNAMIC``);
* ``.text`` at 0x120 (right after the headers), section address equal to file offset; then
  ``.rodata`` (every ``.rodata*`` input section), ``.dynamic``, ``.dynsym``, ``.dynstr``,
  ``.rel.dyn``, ``.shstrtab`` and the section header table;
* ``.rel.dyn``: ``R_BPF_64_RELATIVE`` (8) for every ``lddw`` of a ``.text``/``.rodata`` address
  (input ``R_BPF_64_64``, implicit addend; the linked address goes into the immediates and the
  loader adds the 4 GiB program region), ``R_BPF_64_32`` (10) for every syscall ``call -1``
  against an undefined ``.dynsym`` symbol (the loader writes the murmur3 hash of its name);
  calls inside ``.text`` stay pc-relative as clang emits them; ``R_BPF_64_ABS64`` words in
  ``.rodata`` are resolved to 0x100000000 + address;
* no writable ``.data`` or ``.bss`` (the v0 loader refuses them): such input is an error.

Only the standard library: the output is a pure function of the object's bytes, so a rebuild
is byte-identical.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

EM_BPF: Final = 247
ET_REL: Final = 1
ET_DYN: Final = 3
SHT_PROGBITS: Final = 1
SHT_SYMTAB: Final = 2
SHT_STRTAB: Final = 3
SHT_NOBITS: Final = 8
SHT_REL: Final = 9
SHT_DYNAMIC: Final = 6
SHT_DYNSYM: Final = 11
SHF_WRITE: Final = 1
SHF_ALLOC: Final = 2
SHF_EXECINSTR: Final = 4
PT_LOAD: Final = 1
PT_DYNAMIC: Final = 2
PF_X, PF_W, PF_R = 1, 2, 4
DT_NULL, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 5, 6, 10, 11
DT_REL, DT_RELSZ, DT_RELENT, DT_TEXTREL = 17, 18, 19, 22
R_BPF_64_64: Final = 1
R_BPF_64_ABS64: Final = 2
R_BPF_64_RELATIVE: Final = 8
R_BPF_64_32: Final = 10
MM_PROGRAM_START: Final = 0x1_0000_0000
EHDR_SIZE: Final = 64
PHDR_SIZE: Final = 56
SHDR_SIZE: Final = 64
SYM_SIZE: Final = 24
TEXT_START: Final = EHDR_SIZE + 4 * PHDR_SIZE  # 0x120, sbf.ld's SIZEOF_HEADERS
OPCODE_CALL: Final = 0x85
OPCODE_LDDW: Final = 0x18
MAX_OBJECT_BYTES: Final = 16 << 20  # a relocatable object larger than this is not ours


class LinkError(Exception):
    """The object cannot be linked into an SBPFv0 shared object (the message says why)."""


@dataclass(frozen=True)
class _Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int


@dataclass(frozen=True)
class _Symbol:
    name: str
    value: int
    size: int
    info: int
    shndx: int


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a if a > 1 else n


def _cstr(table: bytes, off: int) -> str:
    end = table.index(b"\0", off)
    return table[off:end].decode()


def _read_object(obj: bytes) -> tuple[list[_Section], list[_Symbol]]:
    if len(obj) > MAX_OBJECT_BYTES:
        raise LinkError(f"object is {len(obj)} bytes, at most {MAX_OBJECT_BYTES}")
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise LinkError("not a 64-bit little-endian ELF object")
    e_type, e_machine = struct.unpack_from("<HH", obj, 16)
    if e_type != ET_REL or e_machine != EM_BPF:
        raise LinkError(f"expected a BPF relocatable object (type {ET_REL}, machine {EM_BPF}), "
                        f"got type {e_type}, machine {e_machine}")
    (shoff,) = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", obj, 0x3A)
    raw = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    names = obj[raw[shstrndx][4]: raw[shstrndx][4] + raw[shstrndx][5]]
    sections = [_Section(i, _cstr(names, r[0]), r[1], r[2], r[4], r[5], r[6], r[7], max(r[8], 1), r[9])
                for i, r in enumerate(raw)]
    symtabs = [s for s in sections if s.type == SHT_SYMTAB]
    if len(symtabs) != 1:
        raise LinkError(f"expected one symbol table, found {len(symtabs)}")
    st = symtabs[0]
    strtab = obj[sections[st.link].offset: sections[st.link].offset + sections[st.link].size]
    symbols = []
    for i in range(st.size // SYM_SIZE):
        name, info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", obj, st.offset + i * SYM_SIZE)
        symbols.append(_Symbol(_cstr(strtab, name), value, size, info, shndx))
    return sections, symbols


@dataclass
class _Out:
    """The output image being laid out: bytes, and where each input section landed."""

    image: bytearray = field(default_factory=bytearray)
    placed: dict[int, int] = field(default_factory=dict)  # input section index -> output address

    def put(self, data: bytes, align: int) -> int:
        self.image.extend(b"\0" * (_align(len(self.image), align) - len(self.image)))
        at = len(self.image)
        self.image.extend(data)
        return at


def link(obj: bytes) -> bytes:
    """Link the BPF object ``obj`` (clang ``-target bpfel -mcpu=v2 -c``) into an SBPFv0 ``.so``."""
    sections, symbols = _read_object(obj)
    for s in sections:
        if s.flags & SHF_ALLOC and (s.flags & SHF_WRITE or s.type == SHT_NOBITS):
            raise LinkError(f"section {s.name} is writable: the SBPFv0 loader accepts no .data or .bss")
    texts = [s for s in sections if s.flags & SHF_ALLOC and s.flags & SHF_EXECINSTR and s.size]
    if [s.name for s in texts] != [".text"]:
        raise LinkError(f"expected exactly one non-empty .text section, found {[s.name for s in texts]} "
                        "(do not compile with -ffunction-sections)")
    rodata = [s for s in sections if s.flags & SHF_ALLOC and not s.flags & SHF_EXECINSTR
              and (s.name.startswith(".rodata") or s.name.startswith(".data.rel.ro"))]
    unknown = [s.name for s in sections if s.flags & SHF_ALLOC and s not in texts and s not in rodata and s.size]
    if unknown:
        raise LinkError(f"allocated sections this linker does not place: {unknown}")

    out = _Out(bytearray(TEXT_START))
    text = texts[0]
    text_addr = out.put(obj[text.offset: text.offset + text.size], 8)
    out.placed[text.index] = text_addr
    ro_start = _align(len(out.image), 8)
    for s in rodata:
        out.placed[s.index] = out.put(obj[s.offset: s.offset + s.size], s.align)
    ro_end = len(out.image)

    def sym_addr(sym: _Symbol) -> int:
        if sym.shndx not in out.placed:
            raise LinkError(f"symbol {sym.name or '(section)'} lies in a section that is not linked ({sym.shndx})")
        return out.placed[sym.shndx] + sym.value

    # relocations: .text ones become dynamic relocations; .rodata words are resolved in place
    syscalls: list[str] = []
    dyn_rel: list[tuple[int, int, str | None]] = []  # (offset, type, syscall name)
    for rel in (s for s in sections if s.type == SHT_REL and s.info in out.placed):
        base = out.placed[rel.info]
        for i in range(rel.size // 16):
            r_offset, r_info = struct.unpack_from("<QQ", obj, rel.offset + i * 16)
            r_type, sym = r_info & 0xFFFFFFFF, symbols[r_info >> 32]
            at = base + r_offset
            if rel.info == text.index and r_type == R_BPF_64_64:
                if out.image[at] != OPCODE_LDDW:
                    raise LinkError(f"R_BPF_64_64 at .text+{r_offset:#x} is not on an lddw")
                (addend,) = struct.unpack_from("<I", out.image, at + 4)
                target = sym_addr(sym) + addend
                struct.pack_into("<I", out.image, at + 4, target)
                struct.pack_into("<I", out.image, at + 12, 0)
                dyn_rel.append((at, R_BPF_64_RELATIVE, None))
            elif rel.info == text.index and r_type == R_BPF_64_32:
                if out.image[at] != OPCODE_CALL:
                    raise LinkError(f"R_BPF_64_32 at .text+{r_offset:#x} is not on a call")
                if sym.shndx != 0:
                    raise LinkError(f"call to defined symbol {sym.name} through a relocation: compile without "
                                    "-ffunction-sections and keep helpers static")
                struct.pack_into("<i", out.image, at + 4, -1)
                if sym.name not in syscalls:
                    syscalls.append(sym.name)
                dyn_rel.append((at, R_BPF_64_32, sym.name))
            elif rel.info != text.index and r_type == R_BPF_64_ABS64:
                (addend,) = struct.unpack_from("<Q", out.image, at)
                struct.pack_into("<Q", out.image, at, MM_PROGRAM_START + sym_addr(sym) + addend)
            else:
                raise LinkError(f"relocation type {r_type} in {sections[rel.info].name} is not supported")

    entry = [s for s in symbols if s.name == "entrypoint" and s.shndx == text.index]
    if len(entry) != 1:
        raise LinkError("the object defines no `entrypoint` function in .text")
    entry_addr = sym_addr(entry[0])

    # .dynstr, .dynsym: the entrypoint, then one undefined symbol per syscall
    dynstr = bytearray(b"\0")
    name_off: dict[str, int] = {}
    for n in ["entrypoint", *syscalls]:
        name_off[n] = len(dynstr)
        dynstr += n.encode() + b"\0"
    dynsym = bytearray(SYM_SIZE)
    dynsym += struct.pack("<IBBHQQ", name_off["entrypoint"], 0x12, 0, 1, entry_addr, entry[0].size)
    for n in syscalls:
        dynsym += struct.pack("<IBBHQQ", name_off[n], 0x10, 0, 0, 0, 0)
    sym_index = {n: i + 2 for i, n in enumerate(syscalls)}
    rel_dyn = b"".join(struct.pack("<QQ", off, ((sym_index[n] << 32) if n else 0) | t) for off, t, n in dyn_rel)

    # .dynamic first needs the addresses of what follows: lay them out, then fill it in
    n_dyn = 9
    dynamic_addr = _align(len(out.image), 8)
    dynsym_addr = dynamic_addr + n_dyn * 16
    dynstr_addr = dynsym_addr + len(dynsym)
    rel_addr = _align(dynstr_addr + len(dynstr), 8)
    dynamic = b"".join(struct.pack("<QQ", tag, val) for tag, val in [
        (DT_REL, rel_addr), (DT_RELSZ, len(rel_dyn)), (DT_RELENT, 16), (DT_SYMTAB, dynsym_addr),
        (DT_SYMENT, SYM_SIZE), (DT_STRTAB, dynstr_addr), (DT_STRSZ, len(dynstr)), (DT_TEXTREL, 0), (DT_NULL, 0)])
    assert out.put(dynamic, 8) == dynamic_addr
    assert out.put(bytes(dynsym), 8) == dynsym_addr
    assert out.put(bytes(dynstr), 1) == dynstr_addr
    assert out.put(rel_dyn, 8) == rel_addr
    data_end = len(out.image)

    names = [".text", ".rodata", ".dynamic", ".dynsym", ".dynstr", ".rel.dyn", ".shstrtab"]
    shstrtab = bytearray(b"\0")
    sh_name = {}
    for n in names:
        sh_name[n] = len(shstrtab)
        shstrtab += n.encode() + b"\0"
    shstr_addr = out.put(bytes(shstrtab), 1)
    shoff = _align(len(out.image), 8)
    out.image.extend(b"\0" * (shoff - len(out.image)))

    def shdr(name: str, typ: int, flags: int, addr: int, size: int, link: int = 0, info: int = 0,
             align: int = 1, entsize: int = 0) -> bytes:
        off = addr
        return struct.pack("<IIQQQQIIQQ", sh_name[name], typ, flags, addr if flags & SHF_ALLOC else 0, off, size,
                           link, info, align, entsize)

    shdrs = [
        bytes(SHDR_SIZE),
        shdr(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text_addr, text.size, align=8),
        shdr(".rodata", SHT_PROGBITS, SHF_ALLOC, ro_start, ro_end - ro_start, align=8),
        shdr(".dynamic", SHT_DYNAMIC, SHF_ALLOC | SHF_WRITE, dynamic_addr, len(dynamic), link=5, align=8,
             entsize=16),
        shdr(".dynsym", SHT_DYNSYM, SHF_ALLOC, dynsym_addr, len(dynsym), link=5, info=1, align=8,
             entsize=SYM_SIZE),
        shdr(".dynstr", SHT_STRTAB, SHF_ALLOC, dynstr_addr, len(dynstr)),
        shdr(".rel.dyn", SHT_REL, SHF_ALLOC, rel_addr, len(rel_dyn), link=4, align=8, entsize=16),
        shdr(".shstrtab", SHT_STRTAB, 0, shstr_addr, len(shstrtab)),
    ]
    if ro_end == ro_start:  # no rodata: keep the section table's indices, with an empty .rodata
        shdrs[2] = shdr(".rodata", SHT_PROGBITS, SHF_ALLOC, ro_start, 0, align=8)
    out.image.extend(b"".join(shdrs))

    phdrs = [
        struct.pack("<IIQQQQQQ", PT_LOAD, PF_R | PF_X, text_addr, text_addr, text_addr, text.size, text.size, 8),
        struct.pack("<IIQQQQQQ", PT_LOAD, PF_R, ro_start, ro_start, ro_start, ro_end - ro_start, ro_end - ro_start,
                    8),
        struct.pack("<IIQQQQQQ", PT_LOAD, PF_R, dynsym_addr, dynsym_addr, dynsym_addr, data_end - dynsym_addr,
                    data_end - dynsym_addr, 8),
        struct.pack("<IIQQQQQQ", PT_DYNAMIC, PF_R | PF_W, dynamic_addr, dynamic_addr, dynamic_addr, len(dynamic),
                    len(dynamic), 8),
    ]
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", ET_DYN, EM_BPF, 1, entry_addr, EHDR_SIZE, shoff, 0, EHDR_SIZE,
                               PHDR_SIZE, len(phdrs), SHDR_SIZE, len(shdrs), len(shdrs) - 1)
    out.image[0:TEXT_START] = ehdr + b"".join(phdrs)
    return bytes(out.image)
