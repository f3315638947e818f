"""Training: compile, fit, evaluate, predict for any Model, data-parallel through the DataParallel strategy.

Rooms: trainer.py (the Trainer mixin: the Keras entry points, compile settings), fit_loop.py (the epoch loop,
validation, evaluation over shards), step.py (flat buffers, the training step, named step statistics,
accumulation), adapter.py (input checks, batches, sample/class weights, validation split), resume.py (the
public training state that BackupAndRestore uses).
May import: layers/ (base helpers), losses, metrics, optimizers, callbacks, data/, parallel.strategy (and only
that from parallel/); never models/.
"""
