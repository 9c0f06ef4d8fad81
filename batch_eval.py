"""Score folders of chest X-rays and write confusion matrices, classification reports and predictions.

    python batch_eval.py FOLDER_OR_URI --out DIR [--model REF ...] [--batch-size N] [--threshold T]
                         [--heatmaps K] [--shard I/N] [--resume | --overwrite] [--engine local|ray] [--ray-address ADDRESS]
                         [--stall-timeout SECONDS] [--adapt] [--no-figures] [--no-intervals]
    python batch_eval.py merge DIR [DIR ...] --out DIR [--no-figures] [--no-intervals]

FOLDER with NORMAL/ and PNEUMONIA/ subfolders (any case, any depth) is scored against those labels;
any other folder gets predictions only. REF is a model folder, an ensemble folder (pneumo ensemble --write;
scored from its members' probabilities when they are scored too) or a Hub repo OWNER/NAME[@REVISION]
(default: every bundled model, or the PNEUMO_*_MODEL variables). Exit status: 0 scored something, 1 nothing
scored, 2 bad usage, 3 stalled (no progress for --stall-timeout seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices stay out of the console

LAYOUT = """\
output layout (DIR):
  <model>/predictions.csv        file, true label (empty if unlabeled), P(positive class), decision, threshold,
                                 out-of-distribution score and flag, one row per scored file
  <model>/metrics.json           counts and, for labeled files, accuracy, sensitivity, specificity, precision,
                                 F1, ROC-AUC, ECE, confusion matrix, 95% bootstrap intervals (not with
                                 --no-intervals), subgroups; with --adapt, the site the model was adapted to
  <model>/classification_report.csv, confusion_matrix.csv
  <model>/confusion_matrix.png, roc_curve.png, reliability_diagram.png   (figures at 200 dpi; none with
                                 --no-figures, nor comparison.png)
  <model>/heatmaps/              with --heatmaps K: the K most confident mistakes with the model's heatmap
                                 (Grad-CAM or integrated gradients) overlaid, and index.csv
  comparison.csv, comparison.png every model's metrics side by side
  disagreements.csv              files on which any two models' decisions differ, with every model's
                                 probability and decision
  skipped.csv                    every file that could not be read, with the reason
  run.json                       the folder, shard and models scored (what merge reads)

exit status:
  0  something was scored
  1  nothing was scored (an empty folder or shard)
  2  bad usage: a missing folder, an unwritable --out, a model that cannot be loaded, runs that do not merge
  3  stopped: no progress for --stall-timeout seconds (the message names the stage); --resume goes on
"""

SUMMARY_COLUMNS = ["accuracy", "sensitivity", "specificity", "f1", "roc_auc"]


def shard_spec(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 0/4)") from None
    if not (count >= 1 and 0 <= index < count):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return index, count


def parse_score_args(argv):
    from pneumo.batch.watchdog import DEFAULT_STALL_S

    parser = argparse.ArgumentParser(prog="batch_eval.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=LAYOUT + "\nMerge sharded runs with: batch_eval.py merge DIR... --out DIR")
    # A str, not a Path: Path("s3://b/x") would become "s3:/b/x".
    parser.add_argument("folder", metavar="FOLDER_OR_URI",
                        help="chest X-rays to score, searched recursively (a local folder; with --engine ray also "
                             "s3://, gs:// or file:// URIs); files under NORMAL/ and PNEUMONIA/ folders (any case, any "
                             "depth) are scored against those labels, any other file gets a prediction only")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for the reports (created if needed; see the layout below)")
    parser.add_argument("--model", action="append", dest="models", metavar="REF",
                        help="model folder or Hub repo OWNER/NAME[@REVISION]; repeat for several (default: every "
                             "bundled model)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    parser.add_argument("--threshold", type=float, help="override every model's own decision threshold")
    parser.add_argument("--heatmaps", "--gradcam", type=int, default=0, metavar="K",
                        help="heatmaps of each model's K most confident mistakes (--gradcam: the older name)")
    parser.add_argument("--shard", type=shard_spec, default=(0, 1), metavar="I/N",
                        help="score only the I-th of N deterministic parts of the folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in the same --out: files already scored are not scored again")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the reports of another run in --out: what that run wrote is removed first, "
                             "nothing else (without it, or --resume, an --out holding another run is refused)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this machine (default); ray: Ray Data, on this machine or the cluster at "
                             "--ray-address (pip install -r requirements-ray.txt)")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="with --engine ray: join this Ray cluster (auto: the one `ray start` began here; "
                             "or ray://HEAD:10001) instead of starting Ray on this machine; one with token "
                             "authentication also needs RAY_AUTH_MODE=token and its token (docs/scale-out.md)")
    parser.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_S, metavar="SECONDS",
                        help=f"stop a run that makes no progress for this long, saying which stage stalled and "
                             f"keeping what was scored for --resume (default {DEFAULT_STALL_S:g}; 0: never)")
    parser.add_argument("--adapt", action="store_true",
                        help="adapt each model to this folder's own images first, as pneumo adapt does (labels are "
                             "not used): the batch-norm step and the site operating point, each where its guard "
                             "trusts it; what was done is printed and recorded in metrics.json")
    add_report_options(parser)
    return parser, parser.parse_args(argv)


def add_report_options(parser) -> None:
    """The two costly reports, which a quick look at a folder (or a test) can do without."""
    parser.add_argument("--no-figures", dest="figures", action="store_false",
                        help="draw no figures (the PNGs); every table and metrics.json stay the same")
    parser.add_argument("--no-intervals", dest="intervals", action="store_false",
                        help="leave the 95%% bootstrap intervals (1,000 resamples) out of metrics.json")


def parse_merge_args(argv):
    parser = argparse.ArgumentParser(prog="batch_eval.py merge", description="Merge sharded runs.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=LAYOUT)
    parser.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="the --out folders of the shards")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for the merged reports, as if one run had scored every shard")
    add_report_options(parser)
    return parser, parser.parse_args(argv)


def check_writable(parser, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out {out}: cannot create it ({error.strerror})")
    if not os.access(out, os.W_OK):
        parser.error(f"--out {out}: not writable")


def check_engine_options(parser, args) -> None:
    """The folder or URI and the options each engine takes, before any model loads."""
    from pneumo import PneumoError

    uri = "://" in args.folder
    if uri and args.engine != "ray":
        parser.error(f"{args.folder}: URIs are read by --engine ray")
    if not uri and not Path(args.folder).is_dir():
        parser.error(f"{args.folder}: no such folder")
    if args.adapt and (args.engine != "local" or args.shard != (0, 1)):
        parser.error("--adapt adapts to a whole folder on this machine: not with --engine ray or --shard")
    if args.engine != "ray":
        if args.ray_address:
            parser.error("--ray-address needs --engine ray")
        return
    if args.heatmaps and uri:
        parser.error("--heatmaps needs a local folder")
    from pneumo.batch.ray_engine import import_ray

    try:
        import_ray()
    except PneumoError as error:
        parser.error(str(error))


def adapt_all(parser, predictors, folder) -> None:
    from pneumo import PneumoError
    from pneumo.site.adapt import adapt_for_scoring

    try:
        for name, what in adapt_for_scoring(predictors, folder).items():
            print(f"{name}: {what}", file=sys.stderr)
    except PneumoError as error:
        parser.error(f"--adapt: {error}")


def print_summary(all_metrics: dict) -> None:
    print(f"\n{'model':<16}{'images':>8}{'skipped':>9}" + "".join(f"{c:>13}" for c in SUMMARY_COLUMNS))
    for name, m in all_metrics.items():
        values = "".join(f"{m[c]:>13.3f}" if m.get(c) is not None else f"{'-':>13}" for c in SUMMARY_COLUMNS)
        print(f"{name:<16}{m['image_count']:>8}{m['skipped_count']:>9}{values}")
    print()
    for name, m in all_metrics.items():
        decided = ", ".join(f"{label} {count}" for label, count in m.get("decisions", {}).items())
        flagged = m.get("out_of_distribution", 0)
        named = ", ".join(m.get("out_of_distribution_files", []))
        named += ", ..." if flagged > len(m.get("out_of_distribution_files", [])) else ""
        print(f"{name}: decided {decided}; " + (f"{flagged} not like a chest X-ray, so no verdict: {named}" if flagged
                                                else "none flagged as unlike a chest X-ray"))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from pneumo import ModelLoadError, PneumoError
    from pneumo.batch.scoring import claim_out, merge_runs, run_folder
    from pneumo.batch.watchdog import STALLED_EXIT_STATUS
    from pneumo.errors import RunStalledError

    if argv[:1] == ["merge"]:
        parser, args = parse_merge_args(argv[1:])
        check_writable(parser, args.out)
        try:
            metrics = merge_runs(args.runs, args.out, figures=args.figures, intervals=args.intervals)
        except PneumoError as error:
            parser.error(str(error))
    else:
        parser, args = parse_score_args(argv)
        check_engine_options(parser, args)
        check_writable(parser, args.out)
        if args.resume and args.overwrite:
            parser.error("--resume continues a run, --overwrite replaces it: give one")
        try:
            claim_out(args.out, resume=args.resume, overwrite=args.overwrite)
        except PneumoError as error:
            parser.error(str(error))
        from pneumo.hub.bundled import bundled_reference, load_models, model_references

        try:
            # A bundled model may be named ('resnet50', 'ResNet50') where no such folder exists here.
            models = [ref if Path(ref).exists() else bundled_reference(ref) or ref for ref in args.models or []]
            # Numbered by position: the same model may be given twice. An ensemble reuses its members.
            predictors = list(load_models(dict(enumerate(models)) if models else model_references(),
                                          show_progress=True).values())
        except PneumoError as error:
            parser.error(str(error))
        if args.adapt:
            adapt_all(parser, predictors, args.folder)
        try:
            if args.engine == "ray":
                from pneumo.batch.ray_engine import run_folder_ray

                metrics = run_folder_ray(args.folder, args.out, predictors, batch_size=args.batch_size,
                                         threshold=args.threshold, heatmaps=args.heatmaps, shard=args.shard,
                                         ray_address=args.ray_address, resume=args.resume,
                                         figures=args.figures, intervals=args.intervals,
                                         stall_s=args.stall_timeout, hard_exit=True)
            else:
                metrics = run_folder(args.folder, args.out, predictors, batch_size=args.batch_size,
                                     threshold=args.threshold, heatmaps=args.heatmaps, shard=args.shard,
                                     resume=args.resume, figures=args.figures, intervals=args.intervals,
                                     stall_s=args.stall_timeout, hard_exit=True)
        except RunStalledError as error:
            print(f"\nbatch_eval.py: {error}", file=sys.stderr)  # a line of its own, after a progress bar
            return STALLED_EXIT_STATUS
        except ModelLoadError as error:  # a model a Ray worker cannot load (a folder missing on a node): bad usage
            parser.error(str(error))
        except PneumoError as error:  # nothing to score, or a --resume of a run started otherwise
            print(f"batch_eval.py: {error}", file=sys.stderr)
            return 1
    print_summary(metrics)
    print(f"\nreports written to {args.out}")
    return 0 if any(m["image_count"] for m in metrics.values()) else 1


def exit_with(status: int) -> None:
    """Exit with `status`. A run the watchdog stopped may leave a thread blocked in a read that never returns,
    which Python would wait for at exit: after a stall the process ends without waiting."""
    from pneumo.batch.watchdog import STALLED_EXIT_STATUS

    if status == STALLED_EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    exit_with(main())
