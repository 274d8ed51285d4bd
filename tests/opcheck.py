"""One Hypothesis test factory used by every op test.

``@op_test(fn, ...)`` turns a test stub into a property that, for drawn shapes,
values and options:

1. runs :func:`adaref.gradcheck` in float64 on ``fn`` (the oracle);
2. runs forward and backward on Tensors that wrap the drawn arrays directly, with a
   random upstream gradient, and asserts that neither the inputs nor the upstream
   gradient were mutated, and that every gradient has its input's shape and dtype;
3. runs the op in float32 and asserts that it stays float32 (forward and gradients)
   and agrees with float64 to float32 precision.

A test is a decorator plus ``pass``:

    @op_test(lambda x, y: x * y, n_args=2)
    def test_mul(): pass
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

import adaref
from adaref import Tensor
from adaref.tensor import dense

# float32 agreement: relative error of float32 arithmetic is ~6e-8 per operation; ops
# here chain a few dozen at most, so 1e-4 relative (to the output's scale) is loose
# enough never to flake and tight enough to catch a silent cast to float16.
F32_RTOL = 1e-4


def floats(lo: float = -3.0, hi: float = 3.0) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def away_from_zero(lo: float = 0.2, hi: float = 3.0) -> st.SearchStrategy[float]:
    """Values with lo <= |v| <= hi (denominators, kink-free inputs)."""
    return st.one_of(floats(lo, hi), floats(-hi, -lo))


def broadcastable(n: int, min_dims: int = 0, max_dims: int = 3) -> st.SearchStrategy:
    """n mutually broadcastable shapes, with size-1 and missing (broadcast) dimensions."""
    return hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=min_dims, max_dims=max_dims,
                                             min_side=1, max_side=4).map(lambda s: s.input_shapes)


def one_shape(min_dims: int = 1, max_dims: int = 3, min_side: int = 1) -> st.SearchStrategy:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=4).map(lambda s: (s,))


def op_test(fn: Callable[..., Tensor], *, n_args: int = 1,
            shapes: st.SearchStrategy | None = None,
            elements: st.SearchStrategy | list | None = None,
            kwargs: Callable[[tuple], st.SearchStrategy] | None = None,
            constants: Callable[[tuple, dict], st.SearchStrategy] | None = None,
            avoid: Callable[..., bool] | None = None,
            gradcheck_options: dict | None = None) -> Callable:
    """Build the property test for one op.

    Args:
        fn: ``fn(*tensors, *constants, **kwargs) -> Tensor``.
        n_args: number of differentiable array arguments.
        shapes: strategy for a tuple of ``n_args`` shapes (default: broadcastable).
        elements: value strategy, or a list with one strategy per argument.
        kwargs: ``kwargs(shapes)`` -> strategy of keyword-option dicts (axes, k, ...).
        constants: ``constants(shapes, kwargs)`` -> strategy of a tuple of
            non-differentiable arguments (index arrays, masks) appended after the arrays.
        avoid: ``avoid(*arrays, *constants, **kwargs)`` True when a drawn point is too
            close to a kink (relu at 0, ties) for finite differences; it is rejected.
    """
    shapes = shapes if shapes is not None else broadcastable(n_args)
    if not isinstance(elements, list):
        elements = [elements if elements is not None else floats()] * n_args

    @st.composite
    def case(draw):
        shp = draw(shapes)
        arrays = [draw(hnp.arrays(np.float64, s, elements=e)) for s, e in zip(shp, elements)]
        kw = draw(kwargs(shp)) if kwargs else {}
        consts = tuple(draw(constants(shp, kw))) if constants else ()
        return arrays, consts, kw

    def decorate(stub: Callable) -> Callable:
        @given(case(), st.integers(0, 2**31 - 1))
        def test(data, seed):
            arrays, consts, kw = data
            if avoid is not None:
                assume(not avoid(*arrays, *consts, **kw))
            f = lambda *t: fn(*t, *consts, **kw)  # noqa: E731

            # 1. the oracle, float64
            adaref.gradcheck(f, *arrays, **(gradcheck_options or {}))

            # 2. no mutation of inputs or of the upstream gradient; gradient shapes
            copies = [a.copy() for a in arrays]
            const_copies = copy.deepcopy(consts)
            tensors = [Tensor(a, requires_grad=True) for a in arrays]
            out = f(*tensors)
            upstream = np.random.default_rng(seed).standard_normal(out.shape)
            upstream_copy = upstream.copy()
            out.backward(upstream)
            for a, c in zip(arrays, copies):
                np.testing.assert_array_equal(a, c, err_msg="op mutated an input")
            assert _same(consts, const_copies), "op mutated a constant argument"
            np.testing.assert_array_equal(upstream, upstream_copy,
                                          err_msg="backward mutated the upstream gradient")
            for t in tensors:
                if t.grad is not None:
                    g = dense(t.grad)
                    assert g.shape == t.shape and g.dtype == np.float64
                    assert not np.shares_memory(g, t.data), "gradient aliases its input"

            # 3. float32 stays float32 and matches float64 to float32 precision
            t32 = [Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
            out32 = f(*t32)
            assert out32.dtype == np.float32, f"float32 inputs gave {out32.dtype} output"
            scale = max(1.0, float(np.max(np.abs(out.data), initial=0.0)))
            finite = np.isfinite(out.data)
            np.testing.assert_array_equal(finite, np.isfinite(out32.data))
            np.testing.assert_allclose(out32.data[finite], out.data[finite],
                                       rtol=F32_RTOL, atol=F32_RTOL * scale)
            out32.backward(upstream.astype(np.float32))
            for t in t32:
                if t.grad is not None:
                    assert dense(t.grad).dtype == np.float32, "float32 gradient changed dtype"

        test.__name__ = stub.__name__
        test.__doc__ = stub.__doc__
        return test

    return decorate


def min_gap(x: np.ndarray, axis: int | None = None) -> float:
    """Smallest distance between two entries along ``axis`` (inf if fewer than two)."""
    if axis is None:
        x, axis = x.reshape(-1), 0
    if x.shape[axis] < 2:
        return float("inf")
    s = np.sort(x, axis=axis)
    return float(np.min(np.diff(s, axis=axis), initial=np.inf))


def _same(a: Any, b: Any) -> bool:
    """Deep equality for constants: arrays, tuples/lists of them, slices, numbers."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b
