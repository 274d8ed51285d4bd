"""Command line of the data pipeline: ``python -m adaref.data prepare|synth ...``.

Exit status: 0 on success, 1 on bad input data (``FILE:LINE: ...`` on stderr) or a file
system error (disk full, read-only output; the path is named), 2 on a usage or option
error, 130 when interrupted (Ctrl-C; nothing is written).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .config import DATASETS, PRESETS, OptionsError
from .readers import DataFormatError

_PREPARE_EPILOG = """\
examples:
  python -m adaref.data prepare --sample criteo
  python -m adaref.data prepare --dataset criteo --input train.txt.gz --preset upstream --out runs/criteo-up
  python -m adaref.data prepare --dataset avazu --input train.csv --on-bad-line skip --set transform.avazu_hour=hour_of_day
  python -m adaref.data prepare --sample ipinyou --set split.kind=by_file

presets (see adaref/data/config.py):
  paper     Criteo numerics floor(ln(v)^2) for v > 2 (missing: own id); iPinYou prices not
            features (both presets; kept: equal-frequency bins, --set transform.drop_fields=[]);
            levels kept if train count >= 20 (>= 2 on --sample);
            id 0 = learned OOV row; random 70/10/20 split from --seed.
  upstream  the authors' code: floor(ln(v^2+1)), missing read as 0, I13 dropped (F = 38);
            levels kept if train count > 20 (> 1 on --sample); id 0 embeds to zero;
            interleaved 80/20 split (lines 0-800 of every 1,000 train, no validation).

The output directory holds ids.npy (B, F) int32, labels.npy (B,) float32, split.npy (B,)
int8 (0 train, 1 val, 2 test), vocab.json and manifest.json. Running again with the same
input and options reuses it; any change rebuilds it. Bad input stops with
FILE:LINE: field I5: expected an integer, got 'abc' unless --on-bad-line skip.
"""

_SYNTH_EPILOG = """\
examples:
  python -m adaref.data synth --rows 200000 --out runs/synth
  python -m adaref.data synth --rows 1000000 --format criteo-text --out /tmp/synth_criteo.txt

encoded output adds probs.npy (true click probability per row) and terms.npy (each planted
term's share of the logit); manifest.json gives the Bayes-optimal AUC and log-loss per split.
"""


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise OptionsError(f"--set expects SECTION.NAME=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a bare word is a string: --set split.kind=by_file
        out[key.strip()] = value
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m adaref.data",
                                description="Prepare CTR data sets (Criteo, Avazu, iPinYou) or write planted synthetic data.")
    sub = p.add_subparsers(dest="command", metavar="{prepare,synth}")
    pr = sub.add_parser("prepare", allow_abbrev=False, help="encode a raw data set into cached int32 ids (B, F)",
                        description="Read a raw Criteo/Avazu/iPinYou file (plain or .gz, LF or CRLF), encode it "
                                    "into per-field ids and print a summary.",
                        epilog=_PREPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("--dataset", choices=DATASETS, help="format of the input (default: the --sample name)")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH",
                     help="raw file(s), read in order as one data stream (iPinYou: train then test)")
    src.add_argument("--sample", choices=DATASETS, help="use the bundled real sample in data_samples/")
    pr.add_argument("--preset", choices=PRESETS, default="paper", help="option preset (default: paper)")
    pr.add_argument("--out", metavar="DIR",
                    help="output directory (default: $ADAREF_CACHE or .adaref_cache, /<dataset>-<preset>[-sample])")
    pr.add_argument("--seed", type=int, help="seed of the random split (split.seed; default 0)")
    pr.add_argument("--on-bad-line", choices=("error", "skip"),
                    help="error (default): stop at the first bad line; skip: drop bad lines and count them")
    pr.add_argument("--rare-threshold", type=int, metavar="N", help="rare-level threshold (transform.rare_threshold)")
    pr.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                    help="set any option, e.g. transform.n_bins=20 or split.fractions=[0.8,0.1,0.1] (repeatable)")
    pr.add_argument("--rebuild", action="store_true", help="rebuild even when the cache matches")
    pr.add_argument("--quiet", action="store_true", help="no progress display")
    pr.add_argument("--json", action="store_true", help="print the manifest as JSON instead of the summary")

    sy = sub.add_parser("synth", allow_abbrev=False, help="write planted-interaction synthetic data",
                        description="Write Criteo-shaped data whose click probability is a known mix of linear, "
                                    "FM, bit-wise cross, Hadamard and attention-like terms.",
                        epilog=_SYNTH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sy.add_argument("--rows", type=int, default=100_000, help="number of rows (default 100000)")
    sy.add_argument("--out", required=True, metavar="PATH", help="output directory (encoded) or file (criteo-text)")
    sy.add_argument("--format", choices=("encoded", "criteo-text"), default="encoded",
                    help="encoded arrays with true probabilities (default), or a raw Criteo train.txt-format file")
    sy.add_argument("--seed", type=int, default=0, help="seed of the planted function and rows (default 0)")
    sy.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="any SynthOptions field, e.g. max_vocab=1000 or coef_attention=1.5 (repeatable)")
    sy.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def summary(m: dict) -> str:
    """Human-readable summary of a prepare manifest."""
    lines = [f"{'reused cache of' if m.get('reused') else 'prepared'} {m['dataset']} (preset {m.get('preset')})"]
    for s in m["sources"]:
        lines.append(f"  source: {s['path']} ({s['size']:,} bytes, sha256 {s['sha256'][:16]}..., "
                     f"{s['data_lines']:,} data lines)")
    r = m["rows"]
    sk = r["skipped"]
    lines.append(f"  rows: {r['data_lines']:,} read, {r['encoded']:,} encoded, {sk['total']:,} skipped")
    for reason, n in sk["by_reason"].items():
        lines.append(f"    skipped {n:,}: {reason} (first: {', '.join(sk['first_lines'][reason])})")
    lines.append("  splits: " + ", ".join(f"{k} {v['rows']:,} (positive {_pct(v['positive_rate'])})"
                                            for k, v in m["splits"].items()))
    lines.append(f"  positive rate: {_pct(m['positive_rate'])}")
    lines.append(f"  fields: {len(m['field_names'])}, id 0 = OOV row ({m['oov_embedding']}); vocabulary sizes:")
    pairs = [f"{n}:{v}" for n, v in zip(m["field_names"], m["vocab_sizes"])]
    for i in range(0, len(pairs), 8):
        lines.append("    " + " ".join(pairs[i:i + 8]))
    t = m["options"]["transform"]
    lines.append(f"  numeric: {t['numeric_transform']}, missing {t['numeric_missing']}; rare: {t['rare_rule']} "
                 f"{t['rare_threshold']} on train; split: {m['options']['split']['kind']} "
                 f"{m['options']['split']['fractions']} seed {m['options']['split']['seed']}")
    return "\n".join(lines)


def _prepare(args) -> int:
    from .dataset import default_out, resolve_options
    from .pipeline import prepare
    from .samples import sample_paths

    dataset = args.dataset or args.sample
    if dataset is None:
        raise OptionsError("prepare: --dataset is required with --input")
    if args.sample and args.dataset and args.dataset != args.sample:
        raise OptionsError(f"prepare: --dataset {args.dataset} does not match --sample {args.sample}")
    overrides = _parse_set(args.set)
    if args.rare_threshold is not None:
        overrides["transform.rare_threshold"] = args.rare_threshold
    options = resolve_options(dataset, args.preset, bool(args.sample), overrides=overrides, seed=args.seed,
                              on_bad_line=args.on_bad_line)
    paths = sample_paths(dataset) if args.sample else args.input
    out = args.out or default_out(dataset, args.preset, bool(args.sample))
    m = prepare(dataset, paths, options, out, preset=args.preset, progress=not args.quiet, rebuild=args.rebuild)
    if args.json:
        print(json.dumps(m, indent=1))
    else:
        print(summary(m))
        print(f"  arrays: {os.path.abspath(out)}/{{ids.npy,labels.npy,split.npy,vocab.json,manifest.json}}")
    return 0


def _synth(args) -> int:
    from .synthetic import SynthOptions, synthesize, write_criteo_text

    values = {"rows": args.rows, "seed": args.seed, **_parse_set(args.set)}
    options = SynthOptions.from_dict(values)
    if args.format == "criteo-text":
        info = write_criteo_text(options, args.out, progress=not args.quiet)
        print(f"wrote {info['rows']:,} Criteo-format rows ({info['bytes']:,} bytes, positive rate "
              f"{_pct(info['positive_rate'])}) to {args.out}")
        return 0
    m = synthesize(options, args.out, progress=not args.quiet)
    print(f"wrote {options.rows:,} planted rows, {options.n_fields} fields, positive rate {_pct(m['positive_rate'])} "
          f"to {os.path.abspath(args.out)}")
    for name, b in m["bayes_optimal"].items():
        if b is not None:
            auc = "n/a" if b["auc"] is None else f"{b['auc']:.4f}"
            print(f"  Bayes-optimal {name}: AUC {auc}, log-loss {b['log_loss']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _prepare(args) if args.command == "prepare" else _synth(args)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written (a partial build is removed)", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory (a smaller read.chunk_bytes needs less)", file=sys.stderr)
        return 1
    except DataFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OptionsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the output directory cannot be written, or is not ours to replace
        where = f"{e.filename}: " if getattr(e, "filename", None) and str(e.filename) not in str(e) else ""
        print(f"error: {where}{e.strerror or e}" if where else f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
