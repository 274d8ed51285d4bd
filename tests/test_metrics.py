"""Exact AUC and log-loss against their brute-force definitions."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaref.metrics import auc, log_loss


def brute_auc(y, s):
    pos = [si for yi, si in zip(y, s) if yi == 1]
    neg = [si for yi, si in zip(y, s) if yi == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


# Scores from a small set of values so that ties are frequent.
_pairs = st.lists(st.tuples(st.integers(0, 1), st.sampled_from([-1.0, 0.0, 0.25, 0.5, 0.5, 2.0, 3.5])),
                  min_size=2, max_size=40).filter(lambda v: 0 < sum(y for y, _ in v) < len(v))


@given(_pairs)
def test_auc_equals_all_pairs_definition(pairs):
    y = [p[0] for p in pairs]
    s = [p[1] for p in pairs]
    assert auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)


@given(_pairs)
def test_auc_invariant_under_monotone_map_and_flips_under_negation(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    assert auc(y, np.exp(s)) == pytest.approx(auc(y, s), abs=1e-12)
    assert auc(y, -s) == pytest.approx(1.0 - auc(y, s), abs=1e-12)


@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0.0, 1.0)), min_size=1, max_size=40),
       st.sampled_from([1e-7, 1e-3]))
def test_log_loss_equals_definition(pairs, eps):
    y = [p[0] for p in pairs]
    q = [p[1] for p in pairs]
    expect = 0.0
    for yi, qi in pairs:
        qi = min(max(qi, eps), 1 - eps)
        expect -= math.log(qi) if yi == 1 else math.log(1 - qi)
    expect /= len(pairs)
    assert log_loss(y, q, eps=eps) == pytest.approx(expect, rel=1e-10, abs=1e-12)


def test_metric_errors_are_clear():
    with pytest.raises(ValueError, match="both classes"):
        auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0 or 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="entries"):
        log_loss([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])


def test_log_loss_takes_probabilities_off_by_rounding_and_refuses_logits():
    from adaref.metrics import PROB_SLACK, log_loss
    assert log_loss([1, 0], [1.0000001192092896, 0.0]) == pytest.approx(log_loss([1, 0], [1.0, 0.0]))
    with pytest.raises(ValueError, match=r"probs must be probabilities in \[0, 1\], got 1.5 at index 1"):
        log_loss([0, 1], [0.1, 1.5])
    assert PROB_SLACK < 1e-5
