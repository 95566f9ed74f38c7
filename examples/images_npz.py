"""Bring your own study, the worked example: 8x8 images as an npz, and the logits of a
teacher trained elsewhere (here scikit-learn; any framework will do: only its logits are
needed), written where examples/byo.yaml expects them.

    python examples/images_npz.py          # writes data/raw/imgs.npz and data/raw/imgs_teacher.npz
    snakemake -c2 --configfile examples/byo.yaml

The teacher sees only the training pool (x, y), never the fixed test split (x_test,
y_test): its logits on x_test are predictions, as the study's own teachers' are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main(out: Path = Path("data/raw")) -> None:
    digits = load_digits()
    images = digits.images.astype(np.float32)  # (1797, 8, 8)
    labels = np.array([f"digit {d}" for d in digits.target])  # string labels work too
    x, x_test, y, y_test = train_test_split(images, labels, test_size=0.25, random_state=0, stratify=labels)
    teacher = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    teacher.fit(x.reshape(len(x), -1), y)
    # Logit columns in the sorted order of the labels, as the pipeline numbers classes.
    assert list(teacher.classes_) == sorted(set(labels))
    logits = teacher.decision_function(x.reshape(len(x), -1)).astype(np.float32)
    logits_test = teacher.decision_function(x_test.reshape(len(x_test), -1)).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "imgs.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    np.savez(out / "imgs_teacher.npz", logits=logits, logits_test=logits_test)
    accuracy = float((teacher.classes_[logits_test.argmax(1)] == y_test).mean())
    print(f"wrote {out}/imgs.npz ({len(x)} + {len(x_test)} images 8x8) and {out}/imgs_teacher.npz "
          f"(teacher test accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
