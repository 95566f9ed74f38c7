"""The data of studies/mine.yaml, from scikit-learn's bundled sets (nothing downloaded):
data/raw/iris.csv (a table with a label column) and data/raw/digits8.npz (8 x 8 images).

    python studies/mine_data.py
"""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, load_iris

Path("data/raw").mkdir(parents=True, exist_ok=True)
iris = load_iris(as_frame=True)
iris.data.assign(species=iris.target_names[iris.target]).to_csv("data/raw/iris.csv", index=False)
digits = load_digits()
np.savez("data/raw/digits8.npz", x=digits.images.astype(np.float32), y=digits.target)
