"""``python -m adaref.train``: train AdaEnsemble (the project's main job).

    python -m adaref.train --sample criteo
    python -m adaref.train --data train.txt --dataset criteo --preset paper
    python -m adaref.train --resume runs/criteo-paper-s0-...

Prepares the data (:mod:`adaref.data`), trains with the objective of eq. 18 and the
bi-level optimisation of Algorithm 2 (:mod:`adaref.training`), keeps the weights with
the best validation AUC, evaluates them on the test split and writes the run directory
(config.json, metrics.json, history.csv, best.npz, last.npz, PNG plots).

Option precedence: the preset's defaults (for ``--sample``, defaults chosen for the
~10k-row samples; see :func:`adaref.training.config.sample_defaults`) < ``--config`` file
< the flags given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from adaref.argtypes import integer
from adaref.config import ConfigError, read_config_file
from adaref.training.cli import add_config_flags, merge, parse_value, set_dotted
from adaref.model.config import ModelConfig
from adaref.training.config import BaselineChoice, RunConfig, TrainConfig, baseline_train_config, run_config


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    p = argparse.ArgumentParser(allow_abbrev=False,
        prog="python -m adaref.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python -m adaref.train (--sample NAME | --data PATH --dataset NAME | --config JSON "
              "| --resume DIR) [options]",
        description="Train AdaEnsemble on Criteo, Avazu or iPinYou data and evaluate it.",
        epilog="'row N' in the help refers to docs/decisions.md (the paper's open choices). "
               "Every model and training option above can also be set in a --config JSON file "
               "(the run directory's config.json has the full form).")
    src = p.add_argument_group("data")
    which = src.add_mutually_exclusive_group()
    which.add_argument("--sample", choices=["criteo", "avazu", "ipinyou"],
                       help="train on the bundled real sample of this data set (data_samples/) with the "
                            "defaults chosen for a 10k-row sample instead of the preset's full-data ones: "
                            "D = 8, L = 2, batch 256, evaluation every 20 steps, rare-level threshold 2; "
                            "paper: k annealed 5 -> 2 over 100 steps, straight-through depth training, "
                            "joint steps (no Algorithm 2); upstream: its own choices scaled down, depth "
                            "prior (0.3, 0.7) (docs/training.md)")
    which.add_argument("--data", metavar="PATH", help="a raw data file (needs --dataset)")
    src.add_argument("--dataset", choices=["criteo", "avazu", "ipinyou"], help="the format of --data")
    src.add_argument("--on-bad-line", choices=["error", "skip"],
                     help="a malformed data line stops with FILE:LINE: field ... (error, default) or is "
                          "dropped, counted by reason and reported (skip); any data option can be set "
                          "in --config under data.overrides, e.g. {\"read.on_bad_line\": \"skip\"}")
    run = p.add_argument_group("run")
    run.add_argument("--preset", choices=["paper", "upstream"],
                     help="paper: the paper's text (default); upstream: the authors' TensorFlow code")
    run.add_argument("--config", metavar="JSON", help="a run configuration file (unknown keys are errors)")
    run.add_argument("--seed", type=integer(0),
                     help="seed of the split, initialisation, batch order and jitter (default 0)")
    run.add_argument("--dtype", choices=["float32", "float64"], help="floating-point type (default float32)")
    run.add_argument("--bilevel", choices=["on", "off"],
                     help="Algorithm 2 (on, paper) or joint steps on training batches (off, authors' code)")
    run.add_argument("--out", metavar="DIR", help="run directory (default runs/<dataset>-<preset>-s<seed>-<time>)")
    run.add_argument("--resume", metavar="DIR", help="continue an interrupted run from DIR/last.npz")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--model", metavar="NAME", dest="baseline_name",
                     help="train a competing model of the paper's Table 1 instead of AdaEnsemble: lr, fm, "
                          "dnn, wide_deep, deepfm, deep_crossing, dcn, pnn, xdeepfm, autoint, fibinet, "
                          "xdeepint, dcn_v2 (its options: --baseline.options JSON); joint steps, Adam on "
                          "every parameter, FTRL for lr and fm (docs/baselines.md)")
    hints = {}
    hints.update(add_config_flags(p, ModelConfig, "model."))
    hints.update(add_config_flags(p, TrainConfig, "train."))
    hints.update(add_config_flags(p, BaselineChoice, "baseline."))
    return p, hints


def resolve_run(args: argparse.Namespace, hints: dict) -> RunConfig:
    """Preset defaults < --config < flags."""
    preset = args.preset or "paper"
    if args.config:
        given = read_config_file(args.config, f"--config {args.config}")
        if not isinstance(given, dict):
            raise ConfigError(f"--config {args.config}: expected a JSON object")
        for section in ("data", "model", "train"):
            if not isinstance(given.get(section, {}), dict):
                raise ConfigError(f"--config {args.config}: {section!r} must be an object of options, "
                                  f"got {given[section]!r}")
        preset = args.preset or given.get("data", {}).get("preset", preset)
    else:
        given = {}
    sample = args.sample is not None or (not args.data and given.get("data", {}).get("sample", True))
    base = run_config(preset, sample=bool(sample))
    given_baseline = given.get("baseline") if isinstance(given.get("baseline"), dict) else {}
    baseline = args.baseline_name or getattr(args, "cfg:baseline.name", None) or given_baseline.get("name")
    if baseline:           # the competing models' training defaults (§4.1.4), before --config and flags
        base = base.replace(train=baseline_train_config(baseline, base.train))
    tree = merge(base.to_dict(), given)
    if args.sample:
        tree["data"] = {**tree["data"], "dataset": args.sample, "sample": True, "path": ""}
    if args.data:
        tree["data"] = {**tree["data"], "dataset": args.dataset, "sample": False, "path": args.data}
    tree["data"]["preset"] = preset
    for key in ("seed", "dtype"):
        if getattr(args, key) is not None:
            tree[key] = getattr(args, key)
    if args.bilevel:
        tree["train"]["bilevel"] = args.bilevel
    if args.baseline_name:
        tree.setdefault("baseline", {})["name"] = args.baseline_name
    if args.on_bad_line:
        given_overrides = tree["data"].get("overrides") or {}
        if not isinstance(given_overrides, dict):
            raise ConfigError(f"data.overrides must be an object of data options, got {given_overrides!r}")
        tree["data"]["overrides"] = {**given_overrides, "read.on_bad_line": args.on_bad_line}
    given_flags = {dest[4:] for dest, value in vars(args).items() if dest.startswith("cfg:") and value is not None}
    for name in given_flags:
        set_dotted(tree, name, parse_value(getattr(args, "cfg:" + name), hints[name], name))
    for slot in ("optimizer", "embedding_optimizer", "gate_optimizer"):
        # another optimiser by flag starts from its own defaults, not the old one's options
        chosen, before = tree["train"][slot], base.to_dict()["train"][slot]
        if (f"train.{slot}.name" in given_flags and f"train.{slot}.options" not in given_flags
                and chosen["name"] != before["name"] and chosen["options"] == before["options"]):
            chosen["options"] = {}
    return RunConfig.from_dict(tree)


def _finished(run_dir: Path) -> dict | None:
    """The metrics of a run that has finished (its metrics.json), else None."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and isinstance(metrics.get("test"), dict) else None


def _print_table(metrics: dict, run_dir: Path, seconds: float, model: str = "AdaEnsemble") -> None:
    t = metrics["test"]
    chosen = (f"best step {metrics['best_step']}" if metrics["best_step"] >= 0
              else f"final weights after {metrics['steps']} steps (no validation split)")
    if metrics.get("stopped_early"):
        best = metrics["best_step"]
        why = (f"stopped early at step {metrics['steps']} (epoch {metrics['epochs']:g}): no better "
               f"validation AUC in {metrics.get('patience', '?')} evaluations after step {best}")
    else:
        why = f"trained the whole budget: {metrics['steps']} steps ({metrics['epochs']:g} epochs)"
    print(f"\n{why}")
    print(f"{model}, test split ({t['examples']} examples), {chosen}")
    print(f"  {'':<34}{'AUC':>8}{'log-loss':>10}")
    if model != "AdaEnsemble":
        print(f"  {'prediction':<34}{t['auc']:>8.4f}{t['log_loss']:>10.4f}")
        print(f"  FLOPs per example: {t['mean_flops'] / 1e6:.3f}M")
        print(f"  run directory: {run_dir}  ({seconds:.1f}s)")
        return
    print(f"  {'hard exit (Algorithm 1, serving)':<34}{t['auc']:>8.4f}{t['log_loss']:>10.4f}")
    if t["auc_soft"] is not None:
        print(f"  {'soft depth mixture (sum_l p_l y_l)':<34}{t['auc_soft']:>8.4f}{t['log_loss_soft']:>10.4f}")
    print(f"  mean FLOPs per example: {t['mean_flops'] / 1e6:.3f}M (k = {t['k']})")
    depth = "  ".join(f"L{i + 1} {100 * f:.1f}%" for i, f in enumerate(t["depth_fractions"]))
    print(f"  exit depth: {depth}")
    print(f"  run directory: {run_dir}  ({seconds:.1f}s)")


def _check_model_size(run: RunConfig) -> None:
    """Refuse a model whose training cannot fit in memory, from the number of fields
    alone (the vocabularies only add to it), before any data is read."""
    from adaref.data.dataset import resolve_options
    from adaref.data.pipeline import plan_fields
    from adaref.data.schema import SCHEMAS
    from adaref.model.config import check_model_memory
    from adaref.training.trainer import TRAINING_COPIES, trains_adaensemble

    if not trains_adaensemble(run):
        return
    d = run.data
    options = resolve_options(d.dataset, d.preset, d.sample, overrides=d.overrides or None, seed=run.seed)
    fields = len(plan_fields(SCHEMAS[d.dataset], options.transform))
    check_model_memory(run.model, fields, 0, np.dtype(run.dtype).itemsize, copies=TRAINING_COPIES,
                       what="training (weights, gradients, optimiser states)")


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"adaref.train: {message}", file=sys.stderr)


def _os_error(e: OSError) -> str:
    """``PATH: reason`` of an operating-system error (disk full, read-only, ...)."""
    if e.filename is None:
        return str(e)
    extra = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
    return f"{e.filename}{extra}: {e.strerror or e}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0 done, 1 a data, checkpoint or
    file-system error, 2 a configuration or usage error (including a run directory in
    use by another run), 3 divergence, 130 interrupted (Ctrl-C)."""
    parser, hints = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    holder: list = []               # the claimed run directory, released whatever happens
    try:
        return _run(parser, hints, args, holder)
    except KeyboardInterrupt:       # before training started (data preparation) or after it
        how = ""
        if holder and (holder[0].path / "last.npz").is_file():
            how = f"; continue with --resume {holder[0].path}"
        elif holder:
            how = "; nothing was trained yet: run the same command again"
        print(f"\nadaref.train: interrupted{how}", file=sys.stderr)
        return 130
    finally:
        for claimed in holder:
            claimed.release()


def _run(parser, hints, args, holder: list) -> int:
    from adaref.data import DataFormatError, OptionsError, load
    from adaref.data.samples import SampleNotFoundError
    from adaref.io import NpzError
    from adaref.nn import StateDictError
    from adaref.training.rundir import RunDirectoryBusy, claim, reset_unstarted
    from adaref.training.trainer import Trainer, TrainingDataError, TrainingDiverged, TrainingInterrupted

    start = time.perf_counter()
    try:
        run, run_dir, from_start = _prepare_run(parser, hints, args, claim, reset_unstarted, holder)
        if run.train.xi > 0 and run.train.bilevel == "off" and not args.quiet:
            print("adaref.train: note: --train.xi has no effect with --bilevel off", file=sys.stderr)
        d = run.data
        _check_model_size(run)                 # before the data is prepared: D and L alone can be absurd
        ds = load(d.dataset, sample=d.sample, input=None if d.sample else d.path, preset=d.preset,
                  seed=run.seed, overrides=d.overrides or None, progress=not args.quiet)
        skipped = ds.manifest.get("rows", {}).get("skipped", {})
        if skipped.get("total") and not args.quiet:
            first = skipped.get("first_lines", {})
            reasons = "; ".join(f"{reason}: {n} (first lines {', '.join(map(str, first.get(reason, [])))})"
                                for reason, n in skipped["by_reason"].items())
            print(f"adaref.train: skipped {skipped['total']} bad line(s) of "
                  f"{ds.manifest['rows']['data_lines']}: {reasons}", file=sys.stderr)
        trainer = Trainer(run, ds, run_dir, quiet=args.quiet)
        if args.resume and not from_start:
            trainer.restore(run_dir / "last.npz")
        if not args.quiet:
            split = {k: len(v) for k, v in trainer.rows.items()}
            print(f"{d.dataset} ({'bundled sample' if d.sample else d.path}), preset {d.preset}: "
                  f"train/val/test {split.get('train', 0)}/{split.get('val', 0)}/{split.get('test', 0)}; "
                  f"{trainer.model.num_parameters():,} parameters; {trainer.total_steps} steps; "
                  f"run directory {run_dir}", flush=True)
        trainer.fit()
        metrics = trainer.finish()
    except RunDirectoryBusy as e:
        print(f"adaref.train: {'--resume' if args.resume else '--out'} {e}; wait for that run to end "
              f"or choose another directory", file=sys.stderr)
        return 2
    except (ConfigError, OptionsError) as e:
        print(f"adaref.train: configuration error: {e}", file=sys.stderr)
        return 2
    except (DataFormatError, SampleNotFoundError, TrainingDataError) as e:
        print(f"adaref.train: data error: {e}", file=sys.stderr)
        return 1
    except (StateDictError, NpzError) as e:
        print(f"adaref.train: checkpoint error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"\nadaref.train: {e}", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        print(f"\nadaref.train: training diverged at {e}", file=sys.stderr)
        return 3
    except MemoryError:
        print("adaref.train: out of memory (a smaller --train.batch_size or --train.eval_batch_size, "
              "or a smaller model, needs less)", file=sys.stderr)
        return 1
    except OSError as e:               # disk full, read-only directory, permissions
        print(f"adaref.train: file error: {_os_error(e)}", file=sys.stderr)
        return 1
    if not args.quiet:
        _print_table(metrics, run_dir, time.perf_counter() - start, run.baseline.name or "AdaEnsemble")
    return 0


def _prepare_run(parser, hints, args, claim, reset_unstarted, holder: list):
    """The run configuration and directory, claimed for this process (appended to
    ``holder`` as soon as it is claimed, so the caller releases it whatever happens).
    Returns ``(run, run_dir, from_start)``: ``from_start`` is a --resume of a run that
    stopped before its first checkpoint (it starts from step 0)."""
    from_start = False
    if args.resume:
        run_dir = Path(args.resume)
        if not run_dir.exists():
            parser.error(f"--resume {run_dir}: no such directory")
        if not run_dir.is_dir():
            parser.error(f"--resume {run_dir}: not a directory (give the run directory)")
        given = [k for k, v in vars(args).items() if v not in (None, False) and k not in ("resume", "quiet")]
        if given:
            names = ", ".join("--" + (k[4:] if k.startswith("cfg:") else k) for k in given)
            parser.error(f"--resume takes every option from {run_dir / 'config.json'}; drop {names}")
        if not (run_dir / "config.json").is_file():
            parser.error(f"--resume {run_dir}: not a resumable run directory (no config.json)")
        claimed = claim(run_dir)
        holder.append(claimed)
        for note in claimed.notes():
            _say(args, note)
        if not (run_dir / "last.npz").is_file():
            if not claimed.unstarted:
                parser.error(f"--resume {run_dir}: not a resumable run directory (no last.npz)")
            removed = reset_unstarted(claimed)
            from_start = True
            _say(args, f"{run_dir} holds a run that stopped before its first checkpoint (config.json, no "
                       f"last.npz); training it from step 0 with its config.json"
                       + (f" (removed its {', '.join(removed)})" if removed else ""))
        elif _finished(run_dir) is not None and not args.quiet:
            print(f"adaref.train: the run in {run_dir} has already finished (it has metrics.json); "
                  f"nothing is trained: its checkpoint is checked and its selected weights scored again")
        run = RunConfig.from_dict(read_config_file(str(run_dir / "config.json"),
                                                   f"--resume {run_dir / 'config.json'}"))
        return run, run_dir, from_start
    if not args.sample and not args.data and not args.config:
        parser.error("give --sample NAME, --data PATH --dataset NAME, --config FILE or --resume DIR")
    if args.data and not args.dataset:
        parser.error("--data needs --dataset criteo|avazu|ipinyou")
    run = resolve_run(args, hints)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path("runs") / (
        f"{run.data.dataset}-{run.data.preset}-s{run.seed}-{stamp}")
    if run_dir.exists() and not run_dir.is_dir():
        parser.error(f"--out {run_dir}: a file of that name exists; give a directory")
    claimed = claim(run_dir)
    holder.append(claimed)
    for note in claimed.notes():
        _say(args, note)
    if (run_dir / "config.json").exists():
        if not claimed.unstarted:
            parser.error(f"--out {run_dir}: already holds a run (config.json); choose another "
                         f"directory, or continue that run with --resume {run_dir}")
        removed = reset_unstarted(claimed)
        _say(args, f"{run_dir} holds a run that stopped before its first checkpoint (config.json, no "
                   f"last.npz): treated as not started, and started again"
                   + (f" (removed its {', '.join(removed)})" if removed else ""))
    return run, run_dir, from_start


if __name__ == "__main__":
    from adaref.runtime import keep_freed_memory

    keep_freed_memory()          # a program may tune its allocator; `import adaref` does not
    sys.exit(main())
