"""Keras-style callbacks. Under data parallelism every rank runs every callback with identical, globally
averaged logs, so decisions (stop, lower the learning rate) agree across ranks; callbacks that write files or
print do so on rank 0 only.

Rooms: base.py (Callback, CallbackList, History, the progress bar, LambdaCallback), monitors.py
(EarlyStopping, ReduceLROnPlateau, ModelCheckpoint), loggers.py (LearningRateScheduler, TerminateOnNaN,
CSVLogger), backup.py (BackupAndRestore); TensorBoard is distnet/tensorboard.py, loaded on first use.
May import: parallel.world (rank 0 or not), checkpoint; callbacks reach the model through its public API.
"""
from .backup import BackupAndRestore
from .base import Callback, CallbackList, History, LambdaCallback, ProgbarLogger
from .loggers import CSVLogger, LearningRateScheduler, TerminateOnNaN
from .monitors import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau


def __getattr__(name):
    """TensorBoard lives in distnet/tensorboard.py (it imports this package); loaded on first use."""
    if name == "TensorBoard":
        from ..tensorboard import TensorBoard
        return TensorBoard
    raise AttributeError(f"module 'distnet.callbacks' has no attribute {name!r}")


__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "LambdaCallback", "EarlyStopping",
           "ReduceLROnPlateau", "ModelCheckpoint", "LearningRateScheduler", "TerminateOnNaN", "CSVLogger",
           "BackupAndRestore", "TensorBoard"]
