"""The parts of the training loop (``vidseg.train``), one job per module.

- ``data``: the datasets of a config, seeded samples, each epoch's batches, class weights;
- ``losses``: the training loss (``Criterion``) and the one place a new loss term goes (``LOSS_TERMS``);
- ``budget``: the budget (steps / epochs / minutes), the reasons to stop, the LR schedule;
- ``run_dir``: the run directory (lock, resume discovery, metrics log, checkpoint files, when to save);
- ``setup``: warm start, parameter groups, what a resumed run may change.
"""
