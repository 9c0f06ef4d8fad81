"""The decoder fuzzer of tests/fuzzing.py at length: more mutated files than CI's tests/test_fuzz.py (5,000), and
the counts by outcome and format, the slowest file and the peak memory printed.

    python benchmarks/fuzz_decoders.py [--files 50000] [--seed 1]

Every file must decode to a model input or raise InvalidImageError; the bugs, if any, are listed with what
reproduces each (`fuzzing.case(seed_name, seed, case, folder)`), and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
import fuzzing  # noqa: E402
from pneumo.imaging.dicom_worker import WORKER_ADDRESS_SPACE_BYTES  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1, help="0 is CI's")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom and Pillow warn about what they repair
    with tempfile.TemporaryDirectory() as folder:
        report = fuzzing.fuzz(args.files, args.seed, Path(folder))
    outcomes = list(report["outcomes"])
    print(f"{report['files']:,} mutated files in {report['seconds']:.0f} s "
          f"({report['files'] / report['seconds']:.0f} files/s), seed {args.seed}")
    print(f"{'format':8s}" + "".join(f"{name:>24s}" for name in outcomes))
    for name, counts in [*report["by_format"].items(), ("all", report["outcomes"])]:
        print(f"{name:8s}" + "".join(f"{counts.get(outcome, 0):>24,}" for outcome in outcomes))
    print(f"slowest file: {report['slowest_case']['seconds']:.2f} s ({report['slowest_case']['case']})")
    print(f"peak RSS: {report['peak_rss_mb']:,} MB (the DICOM decoder's worker process is capped at "
          f"{WORKER_ADDRESS_SPACE_BYTES / 2**30:.0f} GB of address space)")
    for bug in report["bugs"]:
        print(f"BUG: {bug}")
    return 1 if report["bugs"] else 0


if __name__ == "__main__":
    sys.exit(main())
