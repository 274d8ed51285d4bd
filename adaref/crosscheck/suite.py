"""The property suite: Hypothesis-generated configurations, adaref against a port.

For each generated :class:`Case` (preset, dtype, F, D, L, combine, gate input,
normalisation, load fraction, z-loss, controller and its training form, the depth form
run, k = 1..N, batch size, and two structural flags: ``tied_experts`` copies one
expert's gate embedding onto another's, so the top-k tie rule decides; ``shallow``
makes every depth score equal, so every example exits at layer 1 and the deeper layers
of the hard form receive no example), the suite builds adaref's model with perturbed
weights (:func:`adaref.crosscheck.golden.perturb`), gives the port the same config,
vocabulary sizes and weights through its factory, runs both on the same ids and
labels, and compares every named intermediate in forward order (component by
component: gates, each expert on its rows, the combine, each layer's output, each
estimator; then the whole model: probabilities and eq. 18's terms) and, if the port
has ``gradients``, every gradient. A failure is shrunk by Hypothesis to the smallest
configuration that still fails, and reported with its first divergent tensor.

Tolerances are :mod:`adaref.crosscheck.tolerances`'. In a float32 case, adaref also
runs in float64 on the same (float32) weights, and a tensor may differ by up to four
times adaref's own float32 error on it, |float32 - float64|: some generated cases are
ill-conditioned (a LayerNorm over D = 2 nearly equal values, a soft mixture rounding to
1) and there two correct float32 implementations legitimately differ by more than the
default tolerance. Float64 cases have no such allowance.

Requires ``hypothesis`` (``pip install 'adaref[test]'``).
"""
from __future__ import annotations

import io
import sys
from dataclasses import asdict, dataclass
from typing import TextIO

import numpy as np

from adaref.crosscheck.adapter import load_factory
from adaref.crosscheck.compare import Row, check_tensor
from adaref.crosscheck.golden import perturb
from adaref.crosscheck.reference import Lambdas, forward, gradients
from adaref.crosscheck.tolerances import TOLERANCES


class SuiteError(ValueError):
    """The suite cannot run (no Hypothesis, a factory that cannot be loaded)."""


@dataclass(frozen=True)
class Case:
    preset: str
    dtype: str
    fields: int
    dim: int
    num_layers: int
    combine: str
    gate_input: str
    norm: str
    load_fraction: str
    z_loss: bool
    controller: bool
    train_form: str
    form: str
    k: int
    batch: int
    tied_experts: bool
    shallow: bool
    seed: int

    def config(self):
        from adaref.model import model_config

        cfg = model_config(self.preset)
        ctl = cfg.controller
        prior = ctl.depth_prior if len(ctl.depth_prior) == self.num_layers else ()
        gate = cfg.gate.replace(combine=self.combine, input=self.gate_input, jitter=0.0)
        moe = cfg.moe.replace(norm=self.norm, load_fraction=self.load_fraction, z_loss=self.z_loss)
        return cfg.replace(dim=self.dim, num_layers=self.num_layers, gate=gate, moe=moe,
                           controller=ctl.replace(enabled=self.controller, train_form=self.train_form,
                                                  depth_prior=prior, gate=ctl.gate.replace(jitter=0.0)))

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


def cases(presets=("paper", "upstream"), dtypes=("float64", "float32")):
    """The Hypothesis strategy of :class:`Case` (simplest values first, for shrinking)."""
    from hypothesis import strategies as st

    @st.composite
    def draw_case(draw):
        controller = draw(st.booleans().map(lambda b: not b))            # shrinks to True
        train_form = draw(st.sampled_from(("soft", "straight_through", "hard", "expected")))
        form = draw(st.sampled_from(("soft", "hard", "straight_through", "expected"))) if controller else "full"
        return Case(
            preset=draw(st.sampled_from(tuple(presets))),
            dtype=draw(st.sampled_from(tuple(dtypes))),
            fields=draw(st.integers(2, 6)),
            dim=draw(st.integers(2, 6)),
            num_layers=draw(st.integers(1, 3)),
            combine=draw(st.sampled_from(("gates", "switch", "unweighted"))),
            gate_input=draw(st.sampled_from(("x0", "prev"))),
            norm=draw(st.sampled_from(("layernorm", "none"))),
            load_fraction=draw(st.sampled_from(("argmax", "topk"))),
            z_loss=draw(st.booleans()),
            controller=controller, train_form=train_form, form=form,
            k=draw(st.integers(1, 5)),
            batch=draw(st.integers(1, 12)),
            tied_experts=draw(st.booleans()),
            shallow=draw(st.booleans()) if controller else False,
            seed=draw(st.integers(0, 2**16)),
        )

    return draw_case()


def build_case(case: Case):
    """(config, vocab sizes, adaref model, ids, labels, lambdas) of a case."""
    from adaref.model import AdaEnsemble

    cfg = case.config()
    rng = np.random.default_rng(case.seed)
    vocab = [int(v) for v in rng.integers(2, 9, size=case.fields)]
    model = AdaEnsemble(cfg, vocab, rng=rng, dtype=np.dtype(case.dtype))
    perturb(model, rng)
    if case.tied_experts:
        for layer in model.layers:
            e = layer.gate.embeddings.data
            e[-1] = e[0]                                   # expert N-1 ties with expert 0
    if case.shallow and cfg.controller.enabled:
        e = model.controller.gate.embeddings.data
        e[:] = e[0]                                        # every depth scores the same: exit at 1
    ids = np.stack([rng.integers(0, v, size=case.batch) for v in vocab], axis=1).astype(np.int64)
    labels = (rng.random(case.batch) < 0.5).astype(np.float64)
    lambdas = Lambdas(0.01, 0.02, 0.5 if case.z_loss else 0.0)
    return cfg, vocab, model, ids, labels, lambdas


def rounding_noise(ours: dict, exact: dict) -> dict[str, float]:
    """Per tensor, max |float32 answer - float64 answer| of adaref on the same weights: how
    much float32 arithmetic itself moves that tensor in this case (0 where the routes,
    and so the shapes, differ)."""
    noise = {}
    for name, value in ours.items():
        ref64 = exact.get(name)
        if value.dtype.kind == "f" and ref64 is not None and ref64.shape == value.shape and value.size:
            noise[name] = float(np.max(np.abs(value.astype(np.float64) - ref64)))
    return noise


def compare_named(ours: dict, theirs: dict, dtype: str, what: str, noise: dict | None = None) -> list[Row]:
    """Rows for every name either side records, in our (forward) order, then theirs.
    ``noise`` (float32 cases): a port may differ by up to 4 times adaref's own float32
    rounding of each tensor, on top of the dtype's tolerances."""
    tol = TOLERANCES[dtype]
    noise = noise or {}
    rows = []
    for name, value in ours.items():
        if name not in theirs:
            rows.append(Row(f"{what}{name}", "missing", value.shape, message="the port did not return it"))
        else:
            rows.append(check_tensor(f"{what}{name}", theirs[name], value, tol["rtol"], tol["atol"],
                                     4.0 * noise.get(name, 0.0)))
    for name in theirs:
        if name not in ours:
            rows.append(Row(f"{what}{name}", "extra", message="the port returns it; adaref does not record it "
                                                              "for this case (e.g. a layer no example reaches)"))
    return rows


def check_case(port_factory, case: Case, with_gradients: bool = True) -> list[Row]:
    """Every row of one case (empty list of failures = agree)."""
    import warnings

    from adaref.model import AdaEnsemble

    cfg, vocab, model, ids, labels, lambdas = build_case(case)
    weights = model.state_dict()
    try:
        port = port_factory(cfg, list(vocab), {n: w.copy() for n, w in weights.items()}, np.dtype(case.dtype))
    except Exception as e:   # noqa: BLE001  (the port cannot be built for this case)
        return [Row("(port build)", "error", message=f"{type(e).__name__}: {e}")]
    lam = (lambdas.lambda1, lambdas.lambda2, lambdas.z)
    k = min(case.k, len(cfg.moe.experts))
    exact = None
    if case.dtype == "float32":             # the same float32 weights, computed in float64
        exact = AdaEnsemble(cfg, vocab, rng=np.random.default_rng(0), dtype=np.float64)
        exact.load_state_dict({n: w.astype(np.float64) for n, w in weights.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = forward(model, ids, labels, k=k, form=case.form, lambdas=lambdas)
        noise = rounding_noise(ours, forward(exact, ids, labels, k=k, form=case.form, lambdas=lambdas)) \
            if exact is not None else None
        theirs = _port_call("forward", lambda: port.forward(ids, labels, k=k, form=case.form, lambdas=lam))
        if isinstance(theirs, Row):
            return [theirs]
        rows = compare_named(ours, theirs, case.dtype, "", noise)
        if with_gradients and hasattr(port, "gradients"):
            g_ours = gradients(model, ids, labels, k=k, form=case.form, lambdas=lambdas)
            noise = rounding_noise(g_ours, gradients(exact, ids, labels, k=k, form=case.form, lambdas=lambdas)) \
                if exact is not None else None
            g_theirs = _port_call("gradients",
                                  lambda: port.gradients(ids, labels, k=k, form=case.form, lambdas=lam))
            if isinstance(g_theirs, Row):
                return rows + [g_theirs]
            rows += compare_named(g_ours, g_theirs, case.dtype, "", noise)
    return rows


def _port_call(what: str, call):
    """The port's answer as {name: array}, or a failing Row if it raised or answered
    something that is not a mapping of arrays (the port's fault, not adaref's)."""
    try:
        answer = call()
        return {str(n): np.asarray(v) for n, v in dict(answer).items()}
    except Exception as e:   # noqa: BLE001  (any failure of the port is a finding about it)
        return Row(f"(port.{what})", "error", message=f"{type(e).__name__}: {e}")


@dataclass
class SuiteResult:
    passed: bool
    examples: int
    case: Case | None = None
    first: Row | None = None
    failures: int = 0


def run_suite(factory, *, examples: int = 40, seed: int = 0, presets=("paper", "upstream"),
              dtypes=("float64", "float32"), gradients: bool = True, out: TextIO | None = None) -> SuiteResult:
    """Run the suite against ``factory`` (a callable or ``"module:function"``)."""
    try:
        import hypothesis
        from hypothesis import HealthCheck, given, settings
    except ImportError:
        raise SuiteError("the property suite needs Hypothesis: pip install 'adaref[test]'") from None
    out = out if out is not None else sys.stdout
    if isinstance(factory, str):
        try:
            factory = load_factory(factory)
        except ValueError as e:
            raise SuiteError(str(e)) from None
    seen = {"n": 0}
    last: dict = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(cases(presets, dtypes))
    def prop(case):
        seen["n"] += 1
        rows = check_case(factory, case, gradients)
        bad = [r for r in rows if not r.ok]
        if bad:
            last.update(case=case, first=bad[0], failures=len(bad))
            raise AssertionError(f"first divergent tensor {bad[0].name}: {bad[0].status}: {bad[0].message}")

    prop = hypothesis.seed(seed)(prop)
    port = _trial(factory, presets, dtypes)
    if gradients and not hasattr(port, "gradients"):
        gradients = False
        print("adaref.crosscheck test: the port has no gradients method; comparing forward passes only",
              file=out)
    print(f"adaref.crosscheck test: up to {examples} generated configurations "
          f"(presets {', '.join(presets)}; {', '.join(dtypes)}), seed {seed}", file=out)
    buffer = io.StringIO()
    old = sys.stdout
    sys.stdout = buffer                              # Hypothesis prints its own falsifying report
    try:
        prop()
        error = None
    except AssertionError:
        error = "shrunk"
    except Exception as e:      # noqa: BLE001  e.g. Hypothesis' FlakyFailure
        error = e
    finally:
        sys.stdout = old
    case, first = last.get("case"), last.get("first")
    if error is None:
        print(f"PASS: {seen['n']} configurations agree on every named intermediate"
              f"{' and gradient' if gradients else ''}", file=out)
        return SuiteResult(True, seen["n"])
    if error == "shrunk":
        print(f"FAIL after shrinking; smallest failing configuration:\n  {case.describe()}", file=out)
    elif "Flaky" in type(error).__name__:
        print("FAIL: the port gave different answers to the same case when it was run again", file=out)
    else:
        print(f"FAIL: {type(error).__name__}: {error}", file=out)
    if case is not None and error != "shrunk":
        print(f"a failing configuration:\n  {case.describe()}", file=out)
    if first is not None:
        print(f"first divergent tensor: {first.name}: {first.status}: {first.message}", file=out)
        print(f"({last.get('failures')} tensor(s) differ in that case; {seen['n']} cases run, "
              f"shrinking included)", file=out)
    return SuiteResult(False, seen["n"], case, first, last.get("failures", 0))


def _trial(factory, presets, dtypes):
    """Build one port before the suite starts (and return it): a factory that cannot
    build one at all (a missing dependency, a wrong signature) or builds something that
    is not a port is a usage error, not a divergence."""
    case = Case(preset=presets[0], dtype=dtypes[0], fields=2, dim=2, num_layers=1, combine="gates",
                gate_input="x0", norm="layernorm", load_fraction="argmax", z_loss=False, controller=True,
                train_form="soft", form="soft", k=1, batch=1, tied_experts=False, shallow=False, seed=0)
    cfg, vocab, model, *_ = build_case(case)
    try:
        port = factory(cfg, list(vocab), model.state_dict(), np.dtype(case.dtype))
    except Exception as e:     # noqa: BLE001
        raise SuiteError(f"the factory cannot build a port: {type(e).__name__}: {e}") from None
    check_port(port)
    return port


def check_port(port) -> None:
    """A SuiteError unless ``port`` follows the adapter protocol
    (:class:`adaref.crosscheck.adapter.Port`): a callable ``forward``, and ``gradients``
    callable if it is there. Names what is missing."""
    from adaref.crosscheck.adapter import Port

    problems = []
    if not isinstance(port, Port) or not callable(getattr(port, "forward", None)):
        problems.append("no method forward(ids, labels, *, k, form, lambdas)")
    if hasattr(port, "gradients") and not callable(port.gradients):
        problems.append("a 'gradients' attribute that is not a method "
                        "(optional: gradients(ids, labels, *, k, form, lambdas))")
    if problems:
        raise SuiteError(f"the factory returned {_short(port)}, not a port: it has "
                         f"{' and '.join(problems)} (the adapter protocol: adaref.crosscheck.adapter, "
                         f"docs/crosscheck.md 'Adapter protocol')")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
