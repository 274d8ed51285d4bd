"""The gradient-check oracle: analytic vector-Jacobian products against float64 central
differences.

Two entry points:

* :func:`gradcheck` checks adaref's autograd: ``f`` maps Tensors to a Tensor.
* :func:`check_vjp` checks **any** implementation on plain NumPy arrays: you give a
  forward function and its vector-Jacobian product, for instance wrapping a PyTorch or
  TensorFlow model (see its docstring). :func:`gradcheck` is built on it.

Method. Let y = f(x_1, ..., x_n). The oracle picks directions u in the output space:
every unit vector when y has at most ``full_jacobian_max`` elements (the full
Jacobian is compared), otherwise ``n_projections`` random Gaussian vectors (seeded),
which also catches a backward pass that ignores or mis-shapes its incoming gradient.
For each u and each element j of each checked input it compares

    analytic  = (J^T u)_j                         from the VJP under test
    numeric   = u . (f(x + eps e_j) - f(x - eps e_j)) / (2 eps)

and fails when ``|analytic - numeric| > atol + rtol * |numeric|`` for any pair.

Tolerances (float64 throughout; inputs are copied to contiguous float64 arrays, so
views or broadcast inputs are never perturbed in place). With eps = 1e-6, the central
difference has truncation error about eps^2 |f'''| / 6 ~ 1e-13 and rounding error about
1e-16 |f| / eps ~ 1e-10 |f|; ``atol = 1e-6`` and ``rtol = 1e-5`` leave three to four
orders of magnitude of margin for well-scaled functions (|f| up to ~1e3), while a wrong
gradient (a missing factor, a sign, a dropped term) is off by O(|gradient|) and is
caught. For float32 models, check a float64 copy: float32 central differences have
errors ~1e-3 and hide real bugs. Near a kink (relu at 0, max ties, top-k ties) the
finite difference straddles two branches: keep test points at least ~1e3 eps away.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from adaref.tensor import Tensor, dense


class GradcheckError(AssertionError):
    """An analytic gradient that disagrees with central differences (or cannot be checked)."""


def _is_checked(x: Any) -> bool:
    """Float Tensors and float arrays are differentiated; everything else is a constant."""
    if isinstance(x, Tensor):
        return True
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def check_vjp(forward: Callable[..., np.ndarray],
              vjp: Callable[..., Sequence[np.ndarray | None]],
              *inputs: Any,
              eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5,
              n_projections: int = 2, full_jacobian_max: int = 16,
              sample: int | None = None, seed: int = 0,
              names: Sequence[str] | None = None) -> bool:
    """Check ``vjp`` against central differences of ``forward`` on plain arrays.

    Args:
        forward: ``forward(*inputs) -> ndarray`` (any shape). Must not modify its inputs.
        vjp: ``vjp(u, *inputs) -> sequence`` with one entry per input: the gradient of
            ``sum(u * forward(*inputs))`` with respect to that input (shape of the input),
            or None for inputs that are not differentiated.
        inputs: float arrays are checked; anything else (integer ids, Python numbers) is
            passed through unchanged as a constant.
        eps, atol, rtol: step and tolerances (see the module docstring).
        n_projections: random output directions when the output is large.
        full_jacobian_max: compare the full Jacobian when the output has at most this
            many elements.
        sample: check only this many randomly chosen elements of each input (seeded);
            None checks every element.
        seed: seeds the projections and the sample.
        names: input names for messages (default ``input 0``, ``input 1``, ...).

    Returns True; raises :class:`GradcheckError` on the first input whose gradient is
    wrong, naming the input, the worst element's index, the analytic and numeric values
    and the errors.

    To check another framework's gradient, wrap it so it takes and returns arrays. For
    PyTorch (in float64):

    .. code-block:: python

        def forward(x, w):
            return torch_f(torch.from_numpy(x), torch.from_numpy(w)).numpy()

        def vjp(u, x, w):
            xt = torch.from_numpy(x).requires_grad_()
            wt = torch.from_numpy(w).requires_grad_()
            torch_f(xt, wt).backward(torch.from_numpy(u))
            return xt.grad.numpy(), wt.grad.numpy()

        adaref.check_vjp(forward, vjp, x, w)

    >>> import numpy as np
    >>> x = np.array([1.0, -2.0, 0.5])
    >>> check_vjp(lambda x: np.sin(x), lambda u, x: [u * np.cos(x)], x)
    True
    """
    rng = np.random.default_rng(seed)
    arrays = [np.array(x, dtype=np.float64, order="C", copy=True) if _is_checked(x) else x
              for x in inputs]
    checked = [i for i, x in enumerate(inputs) if _is_checked(x)]
    names = list(names) if names is not None else [f"input {i}" for i in range(len(inputs))]

    def run(args: list) -> np.ndarray:
        # A copy: f's output may be a view of an input (reshape), which we perturb next.
        return np.array(forward(*args), dtype=np.float64, copy=True)

    y = run(arrays)
    if not np.array_equal(y, run(arrays), equal_nan=True):
        raise GradcheckError("gradcheck: f is not deterministic (two calls on the same inputs "
                             "differ); switch off noise such as gate jitter or dropout")
    if not np.all(np.isfinite(y)):
        raise GradcheckError(f"gradcheck: f's output has non-finite values at "
                             f"{np.argwhere(~np.isfinite(y))[0].tolist()}")
    if y.size <= full_jacobian_max:
        directions = np.eye(y.size).reshape((y.size,) + y.shape)     # (K, *y.shape)
    else:
        directions = rng.standard_normal((n_projections,) + y.shape)

    # Analytic: one VJP per direction, (K, n_i) per checked input.
    analytic = {i: [] for i in checked}
    for u in directions:
        grads = vjp(u.copy(), *arrays)
        if len(grads) != len(arrays):
            raise GradcheckError(f"gradcheck: vjp returned {len(grads)} gradients for "
                                 f"{len(arrays)} inputs")
        for i in checked:
            g = np.zeros(arrays[i].shape) if grads[i] is None else np.asarray(dense(grads[i]))
            if g.shape != arrays[i].shape:
                raise GradcheckError(f"gradcheck: gradient of {names[i]} has shape {g.shape}, "
                                     f"expected {arrays[i].shape}")
            analytic[i].append(g.astype(np.float64).ravel())

    for i in checked:
        x = arrays[i]
        flat = x.reshape(-1)                                         # a view into arrays[i]
        positions = np.arange(flat.size)
        if sample is not None and sample < flat.size:
            positions = np.sort(rng.choice(flat.size, size=sample, replace=False))
        a = np.stack(analytic[i])[:, positions]                      # (K, n)
        n = np.empty_like(a)
        for col, j in enumerate(positions):
            original = flat[j]
            flat[j] = original + eps
            y_plus = run(arrays)
            flat[j] = original - eps
            y_minus = run(arrays)
            flat[j] = original
            slope = (y_plus - y_minus).ravel() / (2 * eps)          # d y / d x_j
            n[:, col] = directions.reshape(len(directions), -1) @ slope
        _compare(names[i], x.shape, positions, a, n, atol, rtol, y.size <= full_jacobian_max,
                 y.shape)
    return True


def _compare(name, shape, positions, analytic, numeric, atol, rtol, full, out_shape) -> None:
    """Raise GradcheckError at the worst element if any |a - n| > atol + rtol |n|."""
    err = np.abs(analytic - numeric)
    bad = ~(err <= atol + rtol * np.abs(numeric))                    # NaN counts as bad
    if not bad.any():
        return
    excess = np.where(bad, np.nan_to_num(err / (atol + rtol * np.abs(numeric)), nan=np.inf), 0)
    k, col = np.unravel_index(np.argmax(excess), excess.shape)
    index = tuple(int(v) for v in np.unravel_index(positions[col], shape))
    a, n = analytic[k, col], numeric[k, col]
    if not full:
        where = f"random projection {k}"
    elif out_shape == ():
        where = "scalar output"
    else:
        where = f"output element {tuple(int(v) for v in np.unravel_index(k, out_shape))}"
    rel = abs(a - n) / abs(n) if n != 0 else float("inf")
    raise GradcheckError(
        f"gradcheck: wrong gradient for {name} at index {index} ({where}): "
        f"analytic {a:.10g}, numeric {n:.10g}, abs error {abs(a - n):.3g}, rel error {rel:.3g} "
        f"(atol {atol:g}, rtol {rtol:g}; {int(bad.sum())} of {bad.size} entries fail)")


def gradcheck(f: Callable[..., Tensor], *inputs: Any, eps: float = 1e-6, atol: float = 1e-6,
              rtol: float = 1e-5, n_projections: int = 2, full_jacobian_max: int = 16,
              sample: int | None = None, seed: int = 0) -> bool:
    """Check adaref's autograd gradient of ``f`` against float64 central differences.

    ``f(*tensors) -> Tensor`` of any shape. Float inputs (Tensors or NumPy arrays) are
    copied to float64 Tensors that require grad and are checked; other inputs (integer
    ids, Python numbers) are passed through unchanged. An input that ``f`` does not use,
    or that reaches the output only through ``detach()``, has analytic gradient zero.
    Options as in :func:`check_vjp`.

    >>> import numpy as np, adaref
    >>> x = np.array([0.3, -1.2, 2.0])
    >>> adaref.gradcheck(lambda x: (x * x).sum(), x)
    True
    >>> adaref.gradcheck(lambda x: (x * x.detach()).sum(), x)
    Traceback (most recent call last):
    ...
    adaref.gradcheck.GradcheckError: gradcheck: wrong gradient for input 0 (x) at index (2,) ...
    """
    names = [f"input {i}" + (f" ({_name(f, i, x)})" if _name(f, i, x) else "")
             for i, x in enumerate(inputs)]

    def forward(*arrays):
        out = f(*[Tensor(a) if _is_checked(a) else a for a in arrays])
        if not isinstance(out, Tensor):
            raise GradcheckError(f"gradcheck: f must return a Tensor, got {type(out).__name__}")
        return out.data

    def vjp(u, *arrays):
        tensors = [Tensor(a, requires_grad=True) if _is_checked(a) else a for a in arrays]
        out = f(*tensors)
        if out.requires_grad:
            out.backward(u)
        return [t.grad if isinstance(t, Tensor) else None for t in tensors]

    return check_vjp(forward, vjp, *inputs, eps=eps, atol=atol, rtol=rtol,
                     n_projections=n_projections, full_jacobian_max=full_jacobian_max,
                     sample=sample, seed=seed, names=names)


def _name(f: Callable, i: int, x: Any) -> str:
    """The input's name: a named Tensor's name, else f's parameter name if it has one."""
    if isinstance(x, Tensor) and x.name:
        return x.name
    code = getattr(f, "__code__", None)
    if code is not None and i < code.co_argcount:
        return code.co_varnames[i]
    return ""


def gradcheck_module(f: Callable[..., Tensor], module: Any, *inputs: Any,
                     include: Callable[[str], bool] | None = None, **options: Any) -> bool:
    """Check the gradients of a Module's parameters (and of float ``inputs``).

    ``f(*inputs) -> Tensor`` runs ``module`` (captured by ``f``). Each parameter whose
    dotted name passes ``include`` (default: all) is checked as if it were an input:
    its array is swapped for a float64 copy that the oracle perturbs, and its analytic
    gradient is read from ``.grad`` (a RowSparseGrad counts as its dense form). Errors
    name the parameter, e.g. ``layers.0.experts.cross.W``. The module must be float64
    and deterministic (switch off jitter: ``module.eval()`` or the option that does).
    Options as in :func:`check_vjp`.
    """
    named = [(n, p) for n, p in module.named_parameters() if include is None or include(n)]
    params = [p for _, p in named]
    originals = [p.data for p in params]
    n_in = len(inputs)

    def install(arrays):
        for p, a in zip(params, arrays[n_in:]):
            p.data = a

    def forward(*arrays):
        install(arrays)
        out = f(*[Tensor(a) if _is_checked(a) else a for a in arrays[:n_in]])
        return out.data

    def vjp(u, *arrays):
        install(arrays)
        for p in params:
            p.grad = None
        tensors = [Tensor(a, requires_grad=True) if _is_checked(a) else a for a in arrays[:n_in]]
        out = f(*tensors)
        if out.requires_grad:
            out.backward(u)
        return [t.grad if isinstance(t, Tensor) else None for t in tensors] + [p.grad for p in params]

    names = [f"input {i}" for i in range(n_in)] + [f"parameter {n}" for n, _ in named]
    try:
        return check_vjp(forward, vjp, *inputs, *originals, names=names, **options)
    finally:
        for p, a in zip(params, originals):
            p.data, p.grad = a, None
