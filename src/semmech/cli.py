"""Command line: `semmech verify results/<run>` re-checks a run against its manifest (exit 0:
all match; 1: problems, one line each; 2: no usable manifest); `semmech config-reference`
prints the generated config/README.md."""

from __future__ import annotations

import argparse
import sys

from .config import config_reference
from .manifest import MANIFEST_NAME, ManifestError, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semmech")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="re-hash every artifact of a run against its manifest.json")
    v.add_argument("run_dir")
    sub.add_parser("config-reference", help="print the config reference (config/README.md)")
    args = parser.parse_args(argv)
    if args.command == "config-reference":
        sys.stdout.write(config_reference())
        return 0
    if args.command == "verify":
        try:
            problems = verify(args.run_dir)
        except ManifestError as exc:  # nothing to verify against: one line, exit status 2
            print(f"verify: {exc}", file=sys.stderr)
            return 2
        for line in problems:
            print(line)
        if problems:
            print(
                f"verify: {len(problems)} problem(s) in {args.run_dir} against its {MANIFEST_NAME}",
                file=sys.stderr,
            )
            return 1
        print(f"verify: every artifact in {args.run_dir} matches its {MANIFEST_NAME}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
