"""Writes the linker script that puts the functions a profiled sidecar ran
at the front of its text (run by bench/sidecar-layout): first those it ran
after start-up, then those only start-up ran.

Arguments: the profiled binary, globs (joined by `:`) of the archives holding
C and assembly objects (aws-lc's rlib; libc.a for a static sidecar), the
script to write, then callgrind output files (`N.out.1`: start-up, dumped as
the sidecar first released its start-up pages; `N.out`: after) and `.names`
files (one symbol per line: functions seen by a page-fault profile, which
runs on the real CPU where valgrind cannot; `.steady.names` after start-up).

Rust and C functions have a section each (`.text.<symbol>`, named after one
of the symbols at its address); the patterns
drop what changes between builds (LLVM's `.llvm.N` suffix, the legacy
mangling hash, aws-lc's version prefix), except for generic functions of
which only a few instances ran, where the exact names keep the others out.
Assembly has one `.text` per object: those objects go whole, except objects
larger than BIG_OBJECT (AVX-512 AES-GCM, 700 KB of which a connection runs a
few pages): in the packed text all of them would be resident.
"""
import collections
import glob
import re
import subprocess
import sys

binary, rlibs, out, *profiles = sys.argv[1:]
BIG_OBJECT = 128 * 1024


def steady_profile(path):
    """Profiles of what ran after start-up: callgrind's last dump (`N.out`;
    `N.out.1` is the dump taken as the sidecar first gave back its start-up
    pages) and `.steady.names`."""
    return path.endswith(".steady.names") or bool(re.search(r"\.out(\.(?!1$)\d+)?$", path))


def read_profiles(paths):
    executed = set()
    for path in paths:
        with open(path, errors="replace") as f:
            if path.endswith(".names"):
                executed.update(line.strip() for line in f if line.strip())
                continue
            for line in f:
                m = re.match(r"^c?fn=\(\d+\) (.+)$", line)
                if m:
                    executed.add(m.group(1).strip())
    return executed


def key(name):
    name = re.sub(r"\.llvm\.\d+$", "", name)
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)
    return re.sub(r"^aws_lc_\d+_\d+_\d+_", "aws_lc_*_", name)


functions = []
nm = subprocess.run(["nm", "-S", binary], capture_output=True, text=True, check=True).stdout
for line in nm.splitlines():
    parts = line.split(None, 3)
    if len(parts) == 4 and parts[2] in "tTwW":
        functions.append((int(parts[0], 16), int(parts[1], 16), parts[3]))

# The archives' objects: names, and the code sections of each.
archives = {}
for archive in (path for pattern in rlibs.split(":") for path in glob.glob(pattern)):
    member = None
    big = set()
    headers = subprocess.run(["objdump", "-h", archive], capture_output=True, text=True).stdout
    for line in headers.splitlines():
        m = re.match(r"^(\S+\.o):\s+file format", line)
        if m:
            member = m.group(1)
        elif member and line.split()[1:2] == [".text"] and int(line.split()[2], 16) > BIG_OBJECT:
            big.add(member)
    dump = subprocess.run(["objdump", "-t", archive], capture_output=True, text=True).stdout
    archives[archive] = (big, dump, set(re.findall(r"^(\S+\.o):\s+file format", dump, re.M)))


def layout(executed):
    """The input patterns placing what `executed` names: whole objects, then
    functions; and the bytes of functions that ran."""
    # Identical functions share an address, and their section is named after
    # one of them, which need not be the name the profile reported.
    ran_at = {address for address, _, name in functions if name in executed}
    sizes, ran = collections.Counter(), collections.Counter()
    ran_names = collections.defaultdict(set)
    for address, size, name in functions:
        sizes[key(name)] += size
        if address in ran_at:
            ran[key(name)] += size
            ran_names[key(name)].add(re.sub(r"\.llvm\.\d+$", "", name))

    # Whole objects, as linker-script input patterns: assembly objects of the
    # rlibs, whose code is one `.text`; and members of C archives built
    # without a section per function (glibc's libc.a, in a static sidecar),
    # whose code is in `.text` and `.text.<variant>` (`.text.avx2`, ...).
    ran_members = set()
    for archive, (big, dump, _) in archives.items():
        whole_member = archive.endswith(".a")
        member = None
        for line in dump.splitlines():
            m = re.match(r"^(\S+\.o):\s+file format", line)
            if m:
                member = m.group(1)
            elif member and "\t" in line and member not in big and line.split()[-1] in executed:
                section = line.split("\t")[0].split()[-1]
                if whole_member and (section == ".text" or section.startswith(".text.")):
                    ran_members.add((archive, member))
                elif section == ".text":
                    ran_members.add((None, re.sub(r"^[0-9a-f]{16}-", "*-", member)))

    # Valgrind runs the variants for its own CPU model (no AVX-512, BMI2 or
    # ADX): the variants this CPU runs instead sit beside them. glibc:
    # `memmove-evex-*.o` and `memmove-avx512-*.o` beside `memmove-avx-*.o`,
    # `e_pow-fma.o` beside `e_pow.o`; aws-lc: `curve25519_x25519.o` beside
    # `curve25519_x25519_alt.o`.
    objects = set()
    for archive, member in sorted(ran_members, key=str):
        if archive is None:
            objects.add(f"*:{member}(.text)")
            if member.endswith("_alt.o"):
                objects.add(f"*:{member[:-6]}.o(.text)")
            continue
        name = archive.rsplit("/", 1)[-1]
        objects.add(f"*{name}:{member}(.text .text.*)")
        base = member.split("-", 1)[0].removesuffix(".o")
        for sibling in archives[archive][2]:
            if sibling.split("-", 1)[0].removesuffix(".o") == base and re.search(r"-(evex|avx512|fma\.o)", sibling):
                objects.add(f"*{name}:{sibling}(.text .text.*)")

    patterns = []
    for k in sorted(ran):
        if sizes[k] > 2 * ran[k] and sizes[k] - ran[k] > 8192:
            patterns += sorted(n + "*" for n in ran_names[k])
        else:
            patterns.append(k + "*")
    lines = sorted(objects) + [f"*(.text.{p} .text.unlikely.{p} .text.startup.{p})" for p in patterns]
    return lines, sum(ran.values()), sum(sizes.values())


# What runs after start-up goes first: a sidecar gives back the pages
# start-up touched (veil_sys::release_binary_pages), and what it touches
# afterwards comes back in whole page-cache windows, so the functions it
# serves with are kept together, apart from those only start-up ran.
steady, steady_bytes, _ = layout(read_profiles([p for p in profiles if steady_profile(p)]))
everything, ran_bytes, text_bytes = layout(read_profiles(profiles))
written = set()
with open(out, "w") as f:
    f.write("/* Generated by bench/sidecar-layout from a profiled run of examples/bench; do not edit.\n")
    f.write("   The functions the sidecar ran after start-up go first in its text, then those\n")
    f.write("   only start-up ran (see crates/veil/build.rs). */\n")
    f.write("SECTIONS {\n  .text.veil_hot : {\n")
    for line in steady + everything:
        if line not in written:
            written.add(line)
            f.write(f"    {line}\n")
    f.write("  }\n} INSERT BEFORE .text;\n")
print(f"{len(written)} patterns: {steady_bytes} bytes of text ran after start-up, {ran_bytes} in all, of {text_bytes}")
