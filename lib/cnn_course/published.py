"""The figures the seed courses published, kept once: notebooks and the fidelity check import them.

Source of every figure: ``shared/reference/published-numbers.md``, which quotes the seed write-ups
(seed 001: the architecture progression, PyTorch; seed 002: the MNIST networks; seed 004: the
MNIST CNN and the VGG-like CIFAR-10 network). Accuracies are in percent. None is an answer to a
question of the course: each is what another course reported, to compare a run with.
"""

from __future__ import annotations

__all__ = ["PUBLISHED_ACCURACY", "PROGRESSION_LABELS"]

#: Accuracy in percent: a number, or the test accuracy after each epoch (a list).
PUBLISHED_ACCURACY: dict[str, float | list[float]] = {
    "fc_mnist_4000": 91.0,  # 002: "~91 %" validation, the fully connected network on 4,000 MNIST images
    "progression_baseline": [94.65, 96.90, 97.73, 97.99, 98.13],  # 001, test accuracy after epochs 1-5
    "progression_part_a": [97.02, 97.98, 98.34, 98.52, 98.57],
    "progression_part_b": [97.66, 98.18, 98.38, 98.27, 98.07],
    "progression_part_c": [97.57, 98.11, 98.66, 98.80, 98.62],
    "progression_part_d": [83.52, 86.68, 87.68, 88.53, 89.30],  # Fashion-MNIST
    "mnist_cnn_99": 99.2,  # 004: the MNIST CNN, 10 epochs, batch 128
    "cifar10_vgg": 86.87,  # 004: the VGG-like CIFAR-10 network, 100 epochs, batch 64
}

#: The labels the architecture notebook gives the runs of the progression, by figure.
PROGRESSION_LABELS = {"progression_baseline": "baseline", "progression_part_a": "A", "progression_part_b": "B",
                      "progression_part_c": "C", "progression_part_d": "D (Fashion-MNIST)"}
