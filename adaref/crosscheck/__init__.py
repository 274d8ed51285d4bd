"""The cross-check toolkit: adaref as the oracle another AdaEnsemble is checked against.

* :mod:`~adaref.crosscheck.spec` -- the public names: parameters (shape, layout, equation)
  and named intermediates in forward order (:data:`adaref.model.trace.NAMES`)
* :mod:`~adaref.crosscheck.reference` -- adaref's answers: :func:`forward` (every named
  intermediate and eq. 18's terms) and :func:`gradients`
* :mod:`~adaref.crosscheck.golden` -- reference answers written to a directory
* :mod:`~adaref.crosscheck.compare` -- a dump against a golden directory, first divergence named
* :mod:`~adaref.crosscheck.tolerances` -- default tolerances by dtype, with their reasoning
* :mod:`~adaref.crosscheck.mapping` -- foreign weights in and out (declarative mappings);
  the PyTorch convention
* :mod:`~adaref.crosscheck.upstream_tf` -- the mapping of the authors' TensorFlow model
* :mod:`~adaref.crosscheck.adapter`, :mod:`~adaref.crosscheck.suite` -- the adapter
  protocol and the Hypothesis property suite
* :mod:`~adaref.crosscheck.torch_port` -- an independent PyTorch implementation, the
  example adapter (needs ``pip install 'adaref[torch]'``; nothing else imports torch)

Command line: ``python -m adaref.crosscheck spec|golden|compare|test --help``.
"""
from adaref.crosscheck.compare import Report, compare
from adaref.crosscheck.golden import GoldenError, make_golden
from adaref.crosscheck.mapping import (Mapping, MappingError, Part, Rule, export_weights, import_weights,
                                       torch_mapping)
from adaref.crosscheck.reference import Lambdas, forward, gradients
from adaref.crosscheck.spec import model_spec

__all__ = ["Report", "compare", "GoldenError", "make_golden", "Mapping", "MappingError", "Part", "Rule",
           "export_weights", "import_weights", "torch_mapping", "Lambdas", "forward", "gradients",
           "model_spec"]
