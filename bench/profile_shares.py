"""Shares of a job's CPU by part of the engine, from a perf profile with call stacks
(BENCHMARKS.md, "Where the two jobs spend their CPU").

    perf record -F 499 --call-graph dwarf,16384 -o PROFILE -- \
        riskstream bench engine SPEC --events 1000000 --out NEW_DIR
    perf script -i PROFILE | python bench/profile_shares.py

Each sample goes to the first part below that one of its stack's frames belongs to; samples of
the event generator (which `bench engine` runs before the timed part) are left out. Kernel time
spent copying written files into the page cache is counted apart, whatever wrote them. Prints
the shares, then the leaf functions that take the most.
"""

import collections
import re
import sys

# In order: a sample is counted under the first that matches a frame of its stack.
PARTS = [
    ("generator (not timed)", r"MemorySource::generate|generator::"),
    ("JSON decoding", r"decode::|JsonDecoder"),
    ("Parquet encoding", r"parquet::|ZSTD_|zstd"),
    ("Delta log", r"deltalake|delta_kernel"),
    ("streaming aggregation", r"stream::partial::|GroupValues|aggregates::|groups_accumulator|unnest|time_window"),
    ("incremental window evaluation", r"stream::incremental::"),
    ("generic window path", r"stream::rolling::"),
    ("page-cache copy of written files", r"^copy_folio_from_iter_atomic$"),
    ("other DataFusion and Arrow", r"datafusion|arrow_"),
]
SKIPPED = PARTS[0][0]


def samples(lines):
    """Each sample's stack, leaf first, as symbol names."""
    stack = []
    for line in lines:
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line[0] in " \t":
            fields = line.strip().split(" ", 1)
            if len(fields) == 2:
                symbol = re.sub(r" \(.*\)$", "", fields[1])
                stack.append(re.sub(r"\+0x[0-9a-f]+$", "", symbol).strip())
    if stack:
        yield stack


def part_of(stack):
    for name, pattern in PARTS:
        if any(re.search(pattern, frame) for frame in stack):
            return name
    return "rest"


def main() -> None:
    parts = collections.Counter()
    leaves = collections.Counter()
    for stack in samples(sys.stdin):
        part = part_of(stack)
        if part == SKIPPED:
            continue
        parts[part] += 1
        leaves[(part, stack[0])] += 1
    total = sum(parts.values())
    if total == 0:
        sys.exit("no samples with call stacks on stdin (perf script of a --call-graph profile)")
    print(f"{total} samples, the generator's left out")
    for part, n in parts.most_common():
        print(f"{100 * n / total:6.2f}%  {part}")
    print()
    for (part, leaf), n in leaves.most_common(30):
        print(f"{100 * n / total:6.2f}%  {leaf[:110]}  [{part}]")


if __name__ == "__main__":
    main()
