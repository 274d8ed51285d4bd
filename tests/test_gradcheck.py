"""The oracle must accept right gradients and reject wrong ones, with a useful message."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import adaref
from adaref import GradcheckError, Tensor, check_vjp, gradcheck, ops
from adaref.tensor import Function
from opcheck import op_test


def test_rejects_the_detach_example_from_the_issue():
    x = np.array([0.5, -1.5, 2.0])
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: (x * x.detach()).sum(), x)
    msg = str(info.value)
    # names the input, the worst element (largest |x| -> index 2), both values, the errors
    assert "input 0 (x)" in msg and "index (2,)" in msg
    assert "analytic 2," in msg and "numeric 4," in msg and "abs error 2" in msg
    assert "rel error 0.5" in msg


class _BadSquare(Function):
    """x^2 with a VJP that ignores the incoming gradient: right only when g = 1."""
    name = "bad_square"

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return (2 * self.x,)


class _OffByOne(Function):
    """Correct except at one element."""
    name = "off_by_one"

    def forward(self, x):
        return 3 * x

    def backward(self, g):
        gx = 3 * g
        gx.flat[-1] += 1e-3
        return (gx,)


def test_catches_a_vjp_that_ignores_its_incoming_gradient():
    x = np.linspace(-1, 1, 40).reshape(20, 2)        # 40 outputs: random projections
    gradcheck(lambda x: (x * x).sum(), x)            # scalar output hides nothing to catch
    with pytest.raises(GradcheckError, match="random projection"):
        gradcheck(lambda x: _BadSquare.apply(x), x)
    with pytest.raises(GradcheckError, match="output element"):
        gradcheck(lambda x: _BadSquare.apply(x), x[:2])  # 4 outputs: full Jacobian


@pytest.mark.parametrize("shape", [(3,), (30, 2)])
def test_catches_a_single_wrong_element_in_both_modes(shape):
    x = np.ones(shape)
    with pytest.raises(GradcheckError, match=rf"index \({shape[0] - 1}, ?(1)?\)"):
        gradcheck(lambda x: _OffByOne.apply(x), x)


def test_tolerances_are_respected():
    x = np.ones(3)
    # an error of 1e-3 passes with atol 1e-2 and fails with the default 1e-6
    gradcheck(lambda x: _OffByOne.apply(x), x, atol=1e-2)
    with pytest.raises(GradcheckError):
        gradcheck(lambda x: _OffByOne.apply(x), x)


def test_detects_nondeterminism_and_bad_outputs():
    rng = np.random.default_rng(0)
    with pytest.raises(GradcheckError, match="not deterministic"):
        gradcheck(lambda x: x * float(rng.uniform()), np.ones(2))
    with pytest.raises(GradcheckError, match="non-finite"), np.errstate(divide="ignore"):
        gradcheck(lambda x: ops.log(x), np.array([1.0, 0.0]))
    with pytest.raises(GradcheckError, match="must return a Tensor"):
        gradcheck(lambda x: x.data, np.ones(2))


def test_check_vjp_on_plain_arrays():
    x, w = np.array([0.3, -0.7, 1.1]), np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.1]])
    forward = lambda x, w: np.tanh(x @ w)                                # noqa: E731
    right = lambda u, x, w: (((1 - forward(x, w) ** 2) * u) @ w.T,      # noqa: E731
                             np.outer(x, (1 - forward(x, w) ** 2) * u))
    wrong = lambda u, x, w: ((u @ w.T), np.outer(x, u))                 # noqa: E731 (no tanh')
    assert check_vjp(forward, right, x, w)
    with pytest.raises(GradcheckError, match="wrong gradient for input 0"):
        check_vjp(forward, wrong, x, w)
    with pytest.raises(GradcheckError, match=r"gradient of w has shape \(2, 3\)"):
        check_vjp(forward, lambda u, x, w: (right(u, x, w)[0], right(u, x, w)[1].T), x, w,
                  names=["x", "w"])


def test_constants_pass_through_and_inputs_are_not_mutated():
    w = np.arange(8.0).reshape(4, 2)
    ids = np.array([3, 0, 3])
    w_copy = w.copy()
    assert gradcheck(lambda w, ids, k: ops.embedding(w, ids) * k, w, ids, 2.0)
    np.testing.assert_array_equal(w, w_copy)


def test_float32_inputs_are_checked_in_float64():
    x = np.array([0.1, 0.2], dtype=np.float32)
    assert gradcheck(lambda x: ops.exp(x) * x, x)


def test_sample_checks_a_subset_of_elements():
    x = np.ones(200)
    assert gradcheck(lambda x: (x * x).sum(), x, sample=10)
    bad = lambda x: _OffByOne.apply(x).sum()  # noqa: E731  (wrong only at the last element)
    with pytest.raises(GradcheckError):
        gradcheck(bad, x, sample=None)


def test_gradcheck_module_names_the_wrong_parameter():
    from adaref.nn import Linear

    lin = Linear(3, 2, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(4, 3))
    assert adaref.gradcheck_module(lambda x: ops.tanh(lin(x)), lin, x)
    # stop the weight's gradient: the check must name it
    with pytest.raises(GradcheckError, match="parameter weight"):
        adaref.gradcheck_module(lambda x: ops.tanh(x @ lin.weight.detach() + lin.bias), lin, x)
    assert lin.weight.grad is None and lin.weight.data.dtype == np.float64


# The factory itself must fail on a wrong op: run a property built by op_test on an op
# whose VJP is wrong and require Hypothesis to report a failure.
class _WrongTanh(Function):
    name = "wrong_tanh"

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, g):
        return (g * (1 - self.y),)          # should be 1 - y^2


def test_the_op_factory_fails_on_a_wrong_vjp():
    prop = op_test(lambda x: _WrongTanh.apply(x))(lambda: None)
    with pytest.raises(GradcheckError):
        prop()


class _MutatingExp(Function):
    name = "mutating_exp"

    def forward(self, x):
        y = np.exp(x)
        self.y = y
        return y

    def backward(self, g):
        g *= self.y                          # writes into the upstream gradient
        return (g,)


def test_the_op_factory_fails_on_an_op_that_mutates_its_gradient():
    prop = op_test(lambda x: _MutatingExp.apply(x))(lambda: None)
    with pytest.raises(AssertionError, match="mutated the upstream gradient"):
        prop()
