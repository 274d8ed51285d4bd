"""Default tolerances of ``compare``, by dtype, and why.

An element passes when ``|theirs - golden| <= rtol * |golden| + atol * scale`` with
``scale = max(1, max |golden|)`` over the tensor (NumPy's ``allclose`` with an absolute
term that follows the tensor's magnitude). Integer tensors (rows, top-k, exit depths)
must be equal.

* **float64**: rtol 1e-9, atol 1e-12. A correct float64 port differs from adaref only
  in the order of its sums (BLAS blocking, fused kernels, a dense instead of a sparse
  combine): each rounding is 1.1e-16 relative, and through four layers of 600-long dot
  products, LayerNorms, softmaxes and the cosine gate the observed differences stay
  below 1e-13 relative (the shipped PyTorch port agrees to about 1e-14 on every tensor).
  1e-9 leaves four orders of magnitude for other libraries while still failing every
  real defect we seeded (a missing activation, a transposed weight, a bias on the wrong
  side give errors of 1e-3 or more). The absolute term covers entries that cancel to
  nearly zero (a gradient that sums terms of both signs), whose relative error is
  meaningless.
* **float32**: rtol 2e-3, atol 1e-5. Rounding is 6e-8 relative; accumulated over the
  same depth, differences of 1e-5 relative are common and a few entries near
  cancellation reach 1e-4 to 1e-3 of the tensor's scale (the PyTorch port peaks at
  4e-4, on gate scores). The price: a float32 comparison cannot see a defect smaller
  than about 2e-3 relative (a 0.1% error in one expert passes). Structural defects
  (a missing activation, a transposed weight, a bias on the wrong side) are far larger
  and fail; to hunt small ones, compare in float64. A top-k decision between two
  nearly equal scores can flip in float32; ``compare`` then reports the first tensor
  where the routes differ.
"""
from __future__ import annotations

TOLERANCES = {
    "float64": {"rtol": 1e-9, "atol": 1e-12},
    "float32": {"rtol": 2e-3, "atol": 1e-5},
}
