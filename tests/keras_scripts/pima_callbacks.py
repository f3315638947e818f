"""A Keras 3 script for tabular data with the habits Keras users bring: seeds, regularizers, initializers, a
learning-rate schedule, a metric object, EarlyStopping, ModelCheckpoint to a .keras file, CSVLogger,
BackupAndRestore, load_model, save_weights. Usage: python pima_callbacks.py DATA.csv OUT_DIR
tests/test_keras_scripts.py runs it as written (with keras, when installed) and with `import distnet as keras`."""
import sys

import numpy as np
import keras
from keras import layers

keras.utils.set_random_seed(1)
data = np.loadtxt(sys.argv[1], delimiter=",")
x, y = data[:, :8], data[:, 8]
x = (x - x.mean(axis=0)) / x.std(axis=0)
out = sys.argv[2]

model = keras.Sequential(
    [
        keras.Input(shape=(8,)),
        layers.Dense(16, activation="relu", kernel_initializer=keras.initializers.HeNormal(),
                     kernel_regularizer=keras.regularizers.l2(1e-4)),
        layers.Dropout(0.1),
        layers.Dense(8, activation="relu"),
        layers.Dense(1, activation="sigmoid"),
    ]
)
schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=100, decay_rate=0.9)
model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="binary_crossentropy",
              metrics=[keras.metrics.BinaryAccuracy(name="acc")])
model.summary()

callbacks = [
    keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
    keras.callbacks.ModelCheckpoint(f"{out}/best.keras", monitor="val_acc", save_best_only=True),
    keras.callbacks.CSVLogger(f"{out}/log.csv"),
    keras.callbacks.BackupAndRestore(backup_dir=f"{out}/backup"),
]
history = model.fit(x[:600], y[:600], epochs=30, batch_size=32, validation_split=0.2, callbacks=callbacks,
                    verbose=2)
print("epochs run:", len(history.history["loss"]))

best = keras.models.load_model(f"{out}/best.keras")
loss, acc = best.evaluate(x[600:], y[600:], verbose=0)
print("held-out accuracy:", acc)
model.save_weights(f"{out}/final.weights.h5")
