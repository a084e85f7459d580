# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fashion-MNIST with the zoo's ResNet
#
# A small residual network (`nn_from_scratch.zoo.resnet`: batch norm, projection shortcuts,
# global average pooling) on Fashion-MNIST: the data, augmentation, training with the
# command line's recipe, learning curves, the confusion matrix, the mistakes, what the
# network sees (filters and feature maps), and saving and reloading the model.
#
# `SIZE` is the only parameter (environment variable `NN_NOTEBOOK_SIZE`): `"full"` trains a
# width-16 ResNet on 10,000 images for 5 epochs (a few minutes on one CPU core); `"ci"` a
# width-8 one on 256 images for one epoch, so `.ci/run` executes the notebook in seconds. The
# command line trains the full recipe: `python -m nn_from_scratch train --model resnet`
# (width 32, all 60,000 images, 10 epochs).

# %% tags=["parameters"]
import os

SIZE = os.environ.get("NN_NOTEBOOK_SIZE", "full")

# %%
FULL = SIZE == "full"
WIDTH = 16 if FULL else 8
N_TRAIN = 10000 if FULL else 256
EPOCHS = 5 if FULL else 1
N_TEST = 5000 if FULL else 300

import numpy as np
import matplotlib.pyplot as plt
from threadpoolctl import threadpool_limits

threadpool_limits(1)  # one BLAS thread: the fastest setting on a small shared machine
print(f"SIZE = {SIZE!r}: width {WIDTH}, {N_TRAIN} training images x {EPOCHS} epochs, {N_TEST} test images")

# %% [markdown]
# ## The data
#
# `datasets.fashion_mnist.load_data()` returns the arrays `keras.datasets.fashion_mnist` does:
# uint8 images `(N, 28, 28)` and labels 0-9, from files bundled with the package (checked
# against their sha256 on every load). `CLASS_NAMES` names the labels.

# %%
from nn_from_scratch.datasets import fashion_mnist

(x_train_u8, y_train), (x_test_u8, y_test) = fashion_mnist.load_data()
names = fashion_mnist.CLASS_NAMES
print(x_train_u8.shape, x_train_u8.dtype, y_train.shape, "| test:", x_test_u8.shape)
print("images per class (training):", np.bincount(y_train))

fig, axes = plt.subplots(2, 10, figsize=(13, 3))
for c in range(10):
    for row in range(2):
        ax = axes[row, c]
        ax.imshow(x_train_u8[np.flatnonzero(y_train == c)[row]], cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, c].set_title(names[c], fontsize=9)
fig.suptitle("two training images per class")
fig.tight_layout()

# %% [markdown]
# The network takes `(N, 1, 28, 28)` float32 in `[0, 1]`: `zoo.preprocess_images` adds the
# channel axis and divides by 255.

# %%
from nn_from_scratch import zoo

rng = np.random.default_rng(0)
pick = rng.permutation(len(x_train_u8))[:N_TRAIN]          # a class-balanced-on-average subset
x_train, y_train = zoo.preprocess_images(x_train_u8[pick]), y_train[pick]
x_test, y_test = zoo.preprocess_images(x_test_u8[:N_TEST]), y_test[:N_TEST]
print(x_train.shape, x_train.dtype, float(x_train.min()), float(x_train.max()))

# %% [markdown]
# ## Augmentation
#
# `augment.random_crop` pads each image with zeros and cuts a random 28x28 window (torchvision's
# `RandomCrop(28, padding=2)`); `augment.random_flip` mirrors half of them left-right (a shirt
# mirrored is still a shirt). In training, the `RandomCropFlip` callback draws fresh crops and
# flips for every epoch from the model's seeded generator.

# %%
from nn_from_scratch.augment import RandomCropFlip, random_crop, random_flip

originals = x_train[:8]
augmented = random_flip(random_crop(originals, padding=2, rng=np.random.default_rng(1)), rng=np.random.default_rng(2))
fig, axes = plt.subplots(2, 8, figsize=(12, 3.2))
for k in range(8):
    for row, images in enumerate((originals, augmented)):
        axes[row, k].imshow(images[k, 0], cmap="gray_r")
        axes[row, k].set_xticks([])
        axes[row, k].set_yticks([])
axes[0, 0].set_ylabel("original")
axes[1, 0].set_ylabel("crop + flip")
fig.tight_layout()

# %% [markdown]
# ## The model and its training
#
# The recipe of `python -m nn_from_scratch train --model resnet` (`zoo.RECIPES["resnet"]`): SGD
# with Nesterov momentum 0.9 and weight decay 5e-4, a linear warm-up then a cosine decay of
# the learning rate per batch (`CosineDecay`), label smoothing 0.1, crops and flips.

# %%
from nn_from_scratch.callbacks import CosineDecay
from nn_from_scratch.losses import SoftMaxLoss
from nn_from_scratch.optimizers import GradientDescent

recipe = zoo.RECIPES["resnet"]
model = zoo.resnet(width=WIDTH, seed=0)
model.compile(GradientDescent(recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                              weight_decay=recipe.weight_decay),
              SoftMaxLoss(label_smoothing=recipe.label_smoothing), metrics=["accuracy"])
model.summary()

# %%
batch_size = 64
steps = EPOCHS * -(-N_TRAIN // batch_size)
warmup = steps // EPOCHS if EPOCHS > 1 else 0
augment = RandomCropFlip(x_train, padding=recipe.crop_padding, flip=recipe.flip)
history = model.fit(augment.images, y_train, epochs=EPOCHS, batch_size=batch_size, shuffle=True,
                    validation_data=(x_test, y_test), verbose=2,
                    callbacks=[augment, CosineDecay(decay_steps=steps - warmup, unit="batch", warmup_steps=warmup)])

# %% [markdown]
# ## Learning curves

# %%
from nn_from_scratch import plots

fig = plots.plot_history(history, title=f"ResNet (width {WIDTH}) on {N_TRAIN} Fashion-MNIST images")

# %% [markdown]
# The training loss includes label smoothing (its floor is about 0.5, not 0), and the training
# accuracy is measured on augmented images, so validation can sit above training early on.
#
# ## Where it goes wrong: the confusion matrix

# %%
from nn_from_scratch.metrics import classification_report

logits = model.predict(x_test, batch_size=256)
predicted = logits.argmax(axis=1)
print(f"test accuracy: {np.mean(predicted == y_test):.4f} on {N_TEST} images\n")
print(classification_report(y_test, predicted, class_names=names))

# %%
fig = plots.plot_confusion_matrix(y_test, predicted, class_names=names, normalize=True,
                                  title="confusion matrix (rows sum to 1: recall on the diagonal)")

# %% [markdown]
# Shirts, T-shirts, pullovers and coats are confused with each other; trousers, bags, sandals
# and sneakers are easy. The mistakes, with the predicted class's probability:

# %%
wrong = np.flatnonzero(predicted != y_test)
fig = plots.plot_predictions(x_test[wrong], y_test[wrong], logits[wrong], class_names=names, max_images=24, cols=8,
                             title=f"{len(wrong)} of {N_TEST} test images are wrong; the first 24")

# %% [markdown]
# ## What the network sees
#
# The 3x3 kernels of the stem's convolution, and the activations of one test image at three
# depths. `plots.layer_outputs` names every node of the graph as `model.summary()` does;
# `plot_feature_maps` takes a name or an index.

# %%
stem = model.nodes[0].layer
fig = plots.plot_filters(stem)

# %%
image = x_test[0]
print("the image is a", names[y_test[0]], "| predicted:", names[predicted[0]])
node_names = [name for name, _ in plots.layer_outputs(model, image[None])]
print(node_names)

# %%
for layer in ("re_lu", "re_lu_2", node_names[-3]):
    fig = plots.plot_feature_maps(model, image, layer=layer, max_maps=16)

# %% [markdown]
# ## Save and reload
#
# `model.save` writes one safetensors file: the architecture (the graph's nodes included), the
# weights, the batch-norm statistics and the optimizer's state. `load_model` rebuilds it
# without running any code from the file; its predictions are bit-identical.

# %%
import tempfile

from nn_from_scratch import load_model

path = os.path.join(tempfile.mkdtemp(), "resnet.safetensors")
model.save(path)
again = load_model(path)
print(f"{os.path.getsize(path):,} bytes; reloaded a {type(again).__name__} with {again.count_params():,} parameters")
same = np.array_equal(again.predict(x_test, batch_size=256), logits)
print("predictions bit-identical after reloading:", same)
assert same
