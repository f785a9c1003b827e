#!/usr/bin/env python3
"""Prints the N slowest tests of a CTest run from its log (build/Testing/Temporary/LastTest.log):
usage: slowest_tests.py LOG [N]."""
import re
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    times, name = [], None
    with open(sys.argv[1], errors="replace") as log:
        for line in log:
            m = re.match(r"\d+/\d+ Test: (\S+)", line)
            if m:
                name = m.group(1)
                continue
            m = re.match(r"Test time =\s*([\d.]+) sec", line)
            if m and name:
                times.append((float(m.group(1)), name))
                name = None
    times.sort(reverse=True)
    print(f"the {min(count, len(times))} slowest of {len(times)} tests (s, as run beside each other):")
    for seconds, test in times[:count]:
        print(f"  {seconds:8.1f}  {test}")


if __name__ == "__main__":
    main()
