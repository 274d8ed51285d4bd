"""``python -m adaref.crosscheck spec|golden|compare|test``: check another AdaEnsemble
implementation against adaref.

Exit status: 0 the implementations agree (or the command succeeded), 1 they disagree,
2 a usage or configuration error (the message names the flag, file or tensor; also out
of memory and a file the OS refuses), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from adaref.argtypes import integer, number

DESCRIPTION = """\
Check another implementation of AdaEnsemble (a PyTorch/TensorFlow/TorchRec port, a
serving graph) against adaref: same weights in, same intermediates and gradients out.

  spec     the public names: every parameter (shape, layout, equation) and every named
           intermediate in forward order, as JSON
  golden   write reference answers: weights, inputs, every intermediate of both depth
           forms, the gradients of eq. 18, and a manifest
  compare  their dump (.npz) against a golden directory; names the first divergent tensor
  test     run a property suite (Hypothesis) against a port given as MODULE:FACTORY

Exit status: 0 agree, 1 disagree, 2 usage or configuration error, 130 interrupted.
"""


class UsageError(Exception):
    """A configuration or input error: printed as one line, exit status 2."""


def _config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=("paper", "upstream"), default=None,
                   help="model preset (default paper); the upstream preset is the authors' code")
    g.add_argument("--config", metavar="FILE", default=None,
                   help="a model config JSON, or a run's config.json (its 'model' part); "
                        "instead of --preset")
    g.add_argument("--dim", type=integer(1), default=None, help="override D, the embedding size")
    g.add_argument("--num-layers", type=integer(1), default=None,
                   help="override L (the upstream preset's depth prior needs L = 4)")
    g.add_argument("--fields", type=integer(1), default=None,
                   help="F for synthetic inputs (default: Criteo's 39 fields under paper, 38 under "
                        "upstream); ignored with --data")
    g.add_argument("--vocab", type=integer(2), default=None,
                   help="largest per-field vocabulary size for synthetic inputs (default 50)")


def _model_config(args):
    from adaref.config import ConfigError
    from adaref.model import model_config
    from adaref.model.config import ModelConfig

    if args.config and args.preset:
        raise UsageError("give --preset or --config, not both")
    preset = args.preset or "paper"
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                doc = json.load(f)
        except OSError as e:
            raise UsageError(f"--config {args.config}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"--config {args.config}: not JSON: {e}") from None
        if isinstance(doc, dict) and isinstance(doc.get("model"), dict):
            doc = doc["model"]                                   # a run's config.json
        elif isinstance(doc, dict) and isinstance(doc.get("config"), dict) and "format" in doc:
            doc = doc["config"]                                  # a golden set's manifest.json
        try:
            cfg = ModelConfig.from_dict(doc)
        except (ConfigError, TypeError, ValueError) as e:
            raise UsageError(f"--config {args.config}: {e}") from None
        preset = cfg.expert_preset
    else:
        cfg = model_config(preset)
    changes = {}
    if args.dim is not None:
        changes["dim"] = args.dim
    if args.num_layers is not None:
        changes["num_layers"] = args.num_layers
    if changes:
        prior = cfg.controller.depth_prior
        if "num_layers" in changes and prior and len(prior) != changes["num_layers"]:
            raise UsageError(f"--num-layers {changes['num_layers']}: this model's depth prior has {len(prior)} "
                             f"entries (one per layer); keep L = {len(prior)}, or give --config a model config "
                             f"whose controller.depth_prior has {changes['num_layers']} entries (or is [])")
        try:
            cfg = cfg.replace(**changes)
        except ConfigError as e:
            raise UsageError(f"--dim/--num-layers: {e}") from None
    return cfg, preset


def _synthetic_vocab(args, preset: str, rng: np.random.Generator) -> list[int]:
    f = args.fields if args.fields is not None else (39 if preset == "paper" else 38)
    top = args.vocab if args.vocab is not None else 50
    return [int(v) for v in rng.integers(2, top + 1, size=f)]


def _lambdas(preset: str, args):
    from adaref.crosscheck.reference import Lambdas
    from adaref.training.config import train_config

    t = train_config(preset)
    return Lambdas(t.lambda1 if args.lambda1 is None else args.lambda1,
                   t.lambda2 if args.lambda2 is None else args.lambda2,
                   t.z_loss if args.z is None else args.z)


# ---------------------------------------------------------------------------------
def cmd_spec(args) -> int:
    from adaref.crosscheck.spec import build_model, model_spec

    cfg, preset = _model_config(args)
    if args.data:
        from adaref.crosscheck.golden import refuse_golden_as_data
        from adaref.data import open_encoded
        try:
            refuse_golden_as_data(args.data)
            vocab = open_encoded(args.data).vocab_sizes
        except (OSError, ValueError) as e:         # GoldenError is a ValueError
            raise UsageError(f"--data {args.data}: {e}") from None
    else:
        vocab = _synthetic_vocab(args, preset, np.random.default_rng([args.seed, 1]))
    k = args.k if args.k is not None else cfg.moe.schedule.k
    if k > len(cfg.moe.experts):
        raise UsageError(f"--k {k}: must be in [1, {len(cfg.moe.experts)}] (the model's experts)")
    spec = model_spec(build_model(cfg, vocab), k)
    text = json.dumps(spec, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"spec: {len(spec['parameters'])} parameters, "
              f"{', '.join(f'{k}: {len(v)} names' for k, v in spec['forms'].items())} -> {args.out}")
    else:
        print(text)
    return 0


def cmd_golden(args) -> int:
    import time

    from adaref.crosscheck.golden import GoldenError, data_inputs, make_golden

    cfg, preset = _model_config(args)
    lambdas = _lambdas(preset, args)
    ids = labels = None
    source = None
    if args.data:
        try:
            vocab, ids, labels, oov = data_inputs(args.data, args.batch, args.split)
        except (OSError, ValueError) as e:
            raise UsageError(f"--data {args.data}: {e}") from None
        if oov != cfg.embedding_oov:
            raise UsageError(f"--data {args.data}: prepared with oov_embedding={oov!r}, the model has "
                             f"embedding_oov={cfg.embedding_oov!r} (prepare it with the same preset)")
        source = {"kind": "data", "path": args.data, "split": args.split}
    else:
        vocab = _synthetic_vocab(args, preset, np.random.default_rng([args.seed, 1]))
    start = time.perf_counter()
    try:
        manifest = make_golden(args.out, cfg, vocab_sizes=vocab, ids=ids, labels=labels,
                               dtype=np.dtype(args.dtype), batch=args.batch, seed=args.seed, k=args.k,
                               lambdas=lambdas, source=source, preset=preset)
    except GoldenError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"--out {args.out}: {e.strerror or e}") from None
    print(f"golden: {preset} preset, F = {len(vocab)}, D = {cfg.dim}, L = {cfg.num_layers}, "
          f"B = {manifest['batch']}, k = {manifest['k']}, {manifest['dtype']}: "
          f"{len(manifest['outputs'])} intermediates ({', '.join(manifest['forms'])}), "
          f"{len(manifest['gradients'])} gradients ({manifest['gradient_form']} form) -> {args.out} "
          f"({time.perf_counter() - start:.1f}s)")
    return 0


def cmd_compare(args) -> int:
    from adaref.crosscheck.compare import compare, load_names
    from adaref.crosscheck.golden import GoldenError

    try:
        names = load_names(args.names) if args.names else None
        report = compare(args.golden, args.theirs, names=names, rtol=args.rtol, atol=args.atol,
                         only=args.only or (), allow_missing=args.allow_missing, form=args.form)
    except GoldenError as e:
        raise UsageError(str(e)) from None
    print(report.format(verbose=not args.quiet))
    return 0 if report.agree else 1


def cmd_test(args) -> int:
    from adaref.crosscheck.suite import SuiteError, run_suite

    try:
        result = run_suite(args.factory, examples=args.examples, seed=args.seed,
                           presets=args.presets, dtypes=args.dtypes, gradients=not args.no_gradients,
                           out=sys.stdout)
    except SuiteError as e:
        raise UsageError(str(e)) from None
    return 0 if result.passed else 1


# ---------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adaref.crosscheck", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("spec", allow_abbrev=False, help="the public names and layouts, as JSON",
                       description="Print (or write) the spec of a model: every parameter with its "
                                   "shape, dtype, layout and equation, and every named intermediate of "
                                   "each depth form in forward order. Generated from the model itself.")
    _config_args(s)
    s.add_argument("--k", type=integer(1), default=None, help="k to write into the shapes (default: the preset's)")
    s.add_argument("--seed", type=integer(0), default=0,
                   help="synthetic vocabulary sizes as golden draws them for the same --seed (default 0)")
    s.add_argument("--data", metavar="DIR", default=None, help="vocabulary sizes of a prepared data directory")
    s.add_argument("--out", metavar="FILE", help="write the JSON here instead of printing it")
    s.set_defaults(run=cmd_spec)

    g = sub.add_parser("golden", allow_abbrev=False, help="write reference answers to a directory",
                       description="Write weights.npz, inputs.npz, outputs.npz (every intermediate of "
                                   "each depth form, as '<form>.<name>'), grads.npz (eq. 18's gradient "
                                   "for every parameter and X_0) and manifest.json. Same arguments give "
                                   "byte-identical files on one machine.")
    _config_args(g)
    g.add_argument("--out", required=True, metavar="DIR", help="the golden directory (created)")
    g.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="default float64")
    g.add_argument("--batch", type=integer(1), default=32, help="examples (default 32)")
    g.add_argument("--seed", type=integer(0), default=0, help="weights, inputs (default 0)")
    g.add_argument("--k", type=integer(1), default=None, help="experts per example (default: the preset's final k)")
    g.add_argument("--data", metavar="DIR", default=None,
                   help="a prepared data directory (python -m adaref.data prepare): take the first "
                        "--batch rows of --split instead of synthetic ids")
    g.add_argument("--split", choices=("train", "val", "test"), default="test", help="with --data (default test)")
    g.add_argument("--lambda1", type=number(0), default=None, help="eq. 18 lambda_1 (default: the preset's)")
    g.add_argument("--lambda2", type=number(0), default=None, help="eq. 18 lambda_2 (default: the preset's)")
    g.add_argument("--z", type=number(0), default=None, help="z-loss weight (default: the preset's)")
    g.set_defaults(run=cmd_golden)

    c = sub.add_parser("compare", allow_abbrev=False, help="their dump against a golden directory",
                       description="Compare every golden tensor, in forward order, with the tensor of the "
                                   "same name in THEIRS.npz; print max abs / max rel errors and name the "
                                   "first divergent tensor. Default tolerances follow the golden dtype "
                                   "(float64: rtol 1e-9, atol 1e-12; float32: rtol 2e-3, atol 1e-5; atol "
                                   "is scaled by max(1, max |golden|)).")
    c.add_argument("golden", metavar="GOLDEN_DIR", help="a directory written by golden")
    c.add_argument("theirs", metavar="THEIRS.npz",
                   help="their tensors under the golden names ('<form>.<name>', 'grad.<name>'), np.savez")
    c.add_argument("--names", metavar="MAP.json", help="rename their tensors: {\"their name\": \"golden name\"}")
    c.add_argument("--rtol", type=number(0), default=None, help="relative tolerance (default by dtype)")
    c.add_argument("--atol", type=number(0), default=None, help="absolute tolerance (default by dtype)")
    c.add_argument("--only", action="append", metavar="GLOB",
                   help="compare only golden names matching this glob, e.g. 'hard.*' (repeatable)")
    c.add_argument("--form", choices=("soft", "expected", "straight_through", "hard", "full"), default=None,
                   help="their names carry no form prefix and are this form's (e.g. a serving graph: hard); "
                        "compares that form's tensors (and gradients, if given)")
    c.add_argument("--allow-missing", action="store_true",
                   help="a golden tensor absent from their dump is reported, not a failure")
    c.add_argument("--quiet", action="store_true", help="only the summary and the first divergence")
    c.set_defaults(run=cmd_compare)

    t = sub.add_parser("test", allow_abbrev=False, help="property suite against a port (MODULE:FACTORY)",
                       description="Run Hypothesis-generated configurations (both presets, every combine "
                                   "and depth form, k = 1..N, idle experts, empty deep layers, float64 "
                                   "and float32) through adaref and the port, compare every named "
                                   "intermediate and gradient, and shrink a failure to the smallest "
                                   "configuration with the first divergent tensor named. The factory is "
                                   "called as factory(config, vocab_sizes, weights, dtype) (see "
                                   "adaref.crosscheck.adapter); e.g. adaref.crosscheck.torch_port:build.")
    t.add_argument("factory", metavar="MODULE:FACTORY",
                   help="an importable callable factory(config, vocab_sizes, weights, dtype) -> port")
    t.add_argument("--examples", type=integer(1), default=40, help="Hypothesis examples (default 40)")
    t.add_argument("--seed", type=integer(0), default=0, help="Hypothesis seed (default 0)")
    t.add_argument("--presets", nargs="+", choices=("paper", "upstream"), default=("paper", "upstream"))
    t.add_argument("--dtypes", nargs="+", choices=("float64", "float32"), default=("float64", "float32"))
    t.add_argument("--no-gradients", action="store_true", help="compare forward passes only")
    t.set_defaults(run=cmd_test)
    return p


def main(argv: list[str] | None = None) -> int:
    from adaref.config import ConfigError

    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 2
    try:
        return int(args.run(args))
    except UsageError as e:
        print(f"adaref.crosscheck {args.command}: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:      # the model itself refused (e.g. too large for memory: --dim, --fields)
        print(f"adaref.crosscheck {args.command}: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"adaref.crosscheck {args.command}: out of memory (a smaller --batch or model?)", file=sys.stderr)
        return 2
    except OSError as e:          # a file the command reads or writes (named by the OS error)
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"adaref.crosscheck {args.command}: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adaref.crosscheck {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
