"""Check what `make demo` printed: an answer, a target pose in map, and a ground-truth error <= 10 cm.

Usage: ``python scripts/check_demo.py DEMO_OUTPUT`` (exit 0 when it holds; each failure named).
"""

import re
import sys


def main(path: str) -> int:
    text = open(path, encoding="utf-8").read()
    problems = []
    if not re.search(r"^answer: \S", text, re.M):
        problems.append("no answer line")
    if not re.search(r"^target_pose \(map\): position \[", text, re.M):
        problems.append("no target pose in the map frame")
    match = re.search(r"^ground truth: target error ([0-9.]+) m", text, re.M)
    if not match:
        problems.append("no ground-truth error line")
    elif float(match.group(1)) > 0.10:
        problems.append(f"ground-truth error {match.group(1)} m is over 0.10 m")
    for p in problems:
        print(f"check_demo: {p}", file=sys.stderr)
    if not problems:
        print(f"check_demo: ok (ground-truth error {match.group(1)} m)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
