"""``python -m adaref.experiments table1|table2|table3|table4|figure4|figure5``."""
from __future__ import annotations

import argparse
import difflib
import sys
import time
from pathlib import Path

from adaref.argtypes import integer, integer_list
from adaref.config import ConfigError

DESCRIPTION = """\
Reproduce a result of the paper's §4 (Tables 1-4, Figures 4-5) at the scale of your data.

Each command trains the runs it needs (or reuses them: a run directory under OUT/runs
with metrics.json and the same config.json is not trained again, an interrupted one is
resumed), then writes OUT/<command>.md (a Markdown table with the paper's numbers
beside adaref's), OUT/<command>.json and .csv (every run, the grid's choices) and its
PNGs. The commands share runs: Table 3's "w/ controller", Table 4 and Figure 4 use Table
1's AdaEnsemble runs when given the same --out.

Hyper-parameters: a small grid searched on the validation split at the first seed
(Adam lr in {1e-3, 3e-4}; FTRL alpha in {0.01, 0.05, 0.1} for LR and FM), then the
chosen setting at every seed; AdaEnsemble's variants take AdaEnsemble's choice.
docs/experiments.md has the definitions and the grid."""

COMMAND_HELP = {
    "table1": "every model (the 13 baselines and AdaEnsemble): test AUC and log-loss, mean ± std over seeds",
    "table2": "SparseMoE k = 1..4, DenseMoE (k = N), the Ensemble of the single-expert models (mean of "
              "their probabilities) and each single expert, with FLOPs per example",
    "table3": "AdaEnsemble with and without the depth controller: AUC, log-loss, FLOPs",
    "table4": "AdaEnsemble's exit-depth distribution on the test split",
    "figure4": "alluvial diagram of AdaEnsemble's expert sets across layers (one PNG per seed)",
    "figure5": "AUC and log-loss against the depth L = 1..4 (k = 3) and against k = 1..4 (L = 4)",
}


DETAILS = {
    "table1": "Rows: LR, FM, DNN, Wide&Deep, DeepFM, DeepCrossing, DCN, PNN, xDeepFM, AutoInt, FiBiNET,\n"
              "xDeepInt, DCN V2 (docs/baselines.md) and AdaEnsemble, each with its grid's chosen setting.\n"
              "On samples and planted data AutoInt and xDeepFM take smaller sizes (--full-size: not).\n"
              "Writes OUT/table1.md, .json, .csv.",
    "table2": "SparseMoE(k): AdaEnsemble with k fixed (a constant k schedule) and no depth controller\n"
              "(--controller on keeps it); DenseMoE: k = N = 5, every expert, gate-weighted; X Expert Only:\n"
              "AdaEnsemble with that expert alone (k = 1, no controller, same depth); Ensemble: the mean of\n"
              "the five single-expert models' test probabilities, each trained alone (per seed), its FLOPs\n"
              "the sum of theirs. Writes OUT/table2.md, .json, .csv, table2.png (AUC against FLOPs).",
    "table3": "w/ controller: Table 1's AdaEnsemble; w/o controller: the same with\n"
              "model.controller.enabled = false (full depth, the last layer's estimator).\n"
              "Writes OUT/table3.md, .json, .csv.",
    "table4": "The share of test examples exiting at each depth (the hard exit of Algorithm 1) of Table\n"
              "1's AdaEnsemble, per seed and mean ± std. Writes OUT/table4.md, .json, .csv, table4.png.",
    "figure4": "Table 1's AdaEnsemble routes the test split; each example's expert set at each layer it\n"
               "reached is its path. Columns: layers; blocks: expert sets (and 'exited'); flows coloured\n"
               "by the frequency of the whole route. Writes OUT/figure4.md (expert shares, top routes),\n"
               ".json, .csv, figure4_s<seed>.png.",
    "figure5": "AdaEnsemble with the controller and k fixed: (a) k = 3, L = 1..4; (b) L = 4, k = 1..4.\n"
               "Writes OUT/figure5.md, .json, .csv, figure5.png.",
}


def _set(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"give NAME=VALUE, e.g. model.num_layers=4, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    data = common.add_argument_group("data (one of)")
    which = data.add_mutually_exclusive_group()
    which.add_argument("--sample", choices=["criteo", "avazu", "ipinyou"],
                       help="a bundled real sample (data_samples/, ~10k rows; the default: criteo) with the sample defaults "
                            "(D = 8, L = 2, batch 256; docs/training.md)")
    which.add_argument("--data", metavar="FILE", help="a raw data file (needs --dataset): the paper preset's "
                                                      "full-data defaults (D = 16, L = 4, k = 3, batch 4096)")
    which.add_argument("--planted", metavar="ROWS", type=integer(5000, why=" (fewer leave too few test rows)"),
                       help="generated planted-interaction data of ROWS rows (10 fields, up to 20 levels; "
                            "python -m adaref.bench planted's function): the Bayes-optimal AUC is known")
    data.add_argument("--dataset", choices=["criteo", "avazu", "ipinyou"], help="the format of --data")
    run = common.add_argument_group("runs")
    run.add_argument("--seeds", type=integer_list(0), default=[0, 1, 2],
                     help="comma-separated seeds (default 0,1,2); the grid is searched at the first. On "
                          "--sample and --data a seed also draws the 70/10/20 split")
    run.add_argument("--out", metavar="DIR", help="output directory, shared by the commands (default "
                                                  "experiments/<data>)")
    run.add_argument("--quick", action="store_true",
                     help="tiny budgets (4 steps, one evaluation), no grid search, Figure 5 at L = 1, 2 "
                          "and k = 1, 2 only: for tests; the numbers mean nothing")
    run.add_argument("--no-grid", action="store_true", help="no search: every model at its default setting")
    run.add_argument("--full-size", action="store_true",
                     help="keep the default sizes of AutoInt and xDeepFM on samples and planted data "
                          "(smaller ones are used there by default: docs/experiments.md)")
    run.add_argument("--set", metavar="NAME=VALUE", type=_set, action="append", default=[],
                     help="change a run option for every run, by its dotted name in config.json, e.g. "
                          "--set model.num_layers=4 --set train.epochs=5 (repeatable)")
    run.add_argument("--plots", action="store_true",
                     help="write each run's PNG plots (curves, expert usage, ...) as python -m adaref.train "
                          "does; off by default: about a second a run")
    run.add_argument("--quiet", action="store_true", help="print only the result")

    p = argparse.ArgumentParser(prog="python -m adaref.experiments", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                                epilog="examples:\n"
                                       "  python -m adaref.experiments table1 --sample criteo --seeds 0,1,2\n"
                                       "  python -m adaref.experiments table2 --sample criteo --out runs/exp\n"
                                       "  python -m adaref.experiments figure5 --planted 200000 --seeds 0,1\n"
                                       "  python -m adaref.experiments table1 --data train.txt --dataset criteo")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in COMMAND_HELP.items():
        c = sub.add_parser(name, parents=[common], help=text, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"{text}.\n\n{DETAILS[name]}\n\n"
                                       "Runs already done under OUT/runs (metrics.json and the same config.json) are\n"
                                       "reused, an interrupted one resumed. Hyper-parameters: a grid searched on the\n"
                                       "validation split at the first seed (Adam lr 1e-3, 3e-4; FTRL alpha 0.01, 0.05,\n"
                                       "0.1), recorded in the JSON. The paper's numbers are printed beside adaref's\n"
                                       "(the scales differ). docs/experiments.md")
        if name == "table1":
            c.add_argument("--models", metavar="NAMES",
                           help="comma-separated subset of: lr, fm, dnn, wide_deep, deepfm, deep_crossing, dcn, "
                                "pnn, xdeepfm, autoint, fibinet, xdeepint, dcn_v2, adaensemble (default: all)")
        if name == "table2":
            c.add_argument("--controller", choices=["on", "off"], default="off",
                           help="the depth controller in the SparseMoE and DenseMoE rows (default off: "
                                "the MoE layers alone; the paper's numbers suggest on)")
    return p


def _parse_sets(pairs: list[tuple[str, str]]) -> dict:
    from adaref.training.cli import config_fields, parse_value
    from adaref.training.config import RunConfig

    hints = {name: hint for name, hint, _ in config_fields(RunConfig)}
    out = {}
    for name, text in pairs:
        if name not in hints:
            close = difflib.get_close_matches(name, list(hints), n=3)
            raise ConfigError(f"--set {name}: no such run option" + (f" (did you mean {', '.join(close)}?)"
                                                                      if close else ""))
        out[name] = parse_value(text, hints[name], f"set {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    from adaref.data import DataFormatError, OptionsError
    from adaref.data.samples import SampleNotFoundError
    from adaref.experiments.commands import COMMANDS, make_context
    from adaref.experiments.runner import RunMismatch
    from adaref.training.rundir import RunDirectoryBusy
    from adaref.training.trainer import TrainingDataError, TrainingDiverged
    from adaref.experiments.data import DataSpec
    from adaref.experiments.models import BASELINES

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.data and not args.dataset:
        parser.error("--data needs --dataset criteo|avazu|ipinyou")
    if args.dataset and not args.data:
        parser.error("--dataset goes with --data FILE")
    if args.data:
        if not Path(args.data).is_file():
            parser.error(f"--data {args.data}: no such file")
        spec = DataSpec("file", args.dataset, path=str(Path(args.data).resolve()))
    elif args.planted:
        spec = DataSpec("planted", "planted", rows=args.planted)
    else:
        spec = DataSpec("sample", args.sample or "criteo")
    out = Path(args.out) if args.out else Path("experiments") / (
        f"{spec.dataset}-{spec.kind}" + (f"-{spec.rows}" if spec.kind == "planted" else ""))
    extra = {}
    if args.command == "table1" and args.models:
        names = tuple(m.strip() for m in args.models.split(","))
        unknown = [m for m in names if m not in BASELINES + ("adaensemble",)]
        if unknown:
            parser.error(f"--models: unknown {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(BASELINES + ('adaensemble',))}")
        extra["models"] = names
    if args.command == "table2":
        extra["controller"] = args.controller == "on"
    start = time.perf_counter()
    try:
        ctx = make_context(spec, out, args.seeds, quick=args.quick, grid=not args.no_grid,
                           small=False if args.full_size else None, sets=_parse_sets(args.set),
                           log=None if args.quiet else print, plots=args.plots)
        payload = COMMANDS[args.command](ctx, **extra)
    except (ConfigError, OptionsError) as e:
        print(f"adaref.experiments: configuration error: {e}", file=sys.stderr)
        return 2
    except (DataFormatError, SampleNotFoundError, TrainingDataError, RunMismatch, RunDirectoryBusy) as e:
        print(f"adaref.experiments: {e}", file=sys.stderr)
        return 1
    except TrainingDiverged as e:
        print(f"adaref.experiments: training diverged at {e}; the run's directory holds its last "
              f"checkpoint", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\nadaref.experiments: interrupted after {time.perf_counter() - start:.0f}s; run the same "
              f"command again to continue (finished runs are reused, the interrupted one resumed)",
              file=sys.stderr)
        return 130
    if args.quiet:
        print((out / f"{args.command}.md").read_text())
    return 0 if payload else 1
