"""Shared pytest configuration: Hypothesis profiles.

Select a profile with ``ADAREF_HYPOTHESIS_PROFILE``:

* ``ci``       -- few examples per property; the default when ``CI`` is set.
* ``dev``      -- the default for local runs.
* ``thorough`` -- many examples; run before a release or after touching the core.

Every profile sets ``deadline=None`` so Numba JIT compilation on the first call
never fails a test, and ``derandomize=True`` in CI so a CI run is reproducible.
"""
import os

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=12, derandomize=True, print_blob=True, **_common)
settings.register_profile("dev", max_examples=40, **_common)
settings.register_profile("thorough", max_examples=400, **_common)

_default = "ci" if os.environ.get("CI") else "dev"
settings.load_profile(os.environ.get("ADAREF_HYPOTHESIS_PROFILE", _default))
