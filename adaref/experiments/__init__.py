"""The paper's experiments (§4): one command per table and figure.

``python -m adaref.experiments table1|table2|table3|table4|figure4|figure5 --help``;
docs/experiments.md describes the commands, the definitions and the grid.

One concept per module:

* :mod:`~adaref.experiments.data` -- the data (bundled sample, a file, planted rows) and
  the base run of each;
* :mod:`~adaref.experiments.models` -- the 13 competing models, AdaEnsemble and its
  variants (fixed k, no controller, single experts, other depths) as run configs;
* :mod:`~adaref.experiments.runner` -- the registry of runs: one directory per
  configuration, reused when done, resumed when interrupted;
* :mod:`~adaref.experiments.grid` -- the hyper-parameter grid, searched on the
  validation split;
* :mod:`~adaref.experiments.paper` -- the paper's numbers (Tables 1-4);
* :mod:`~adaref.experiments.tables` -- means over seeds, Markdown, the JSON and CSV files;
* :mod:`~adaref.experiments.figures` -- the alluvial diagram (Figure 4), Figure 5 and
  plots of Tables 2 and 4;
* :mod:`~adaref.experiments.commands` -- one function per result;
* :mod:`~adaref.experiments.cli` -- the command line.
"""
