"""The peer of `make bench-batch`: the straightforward script a user writes to score a file.

    python batch_baseline.py MODEL.joblib INPUT.csv OUTPUT.csv

The whole file into pandas, the model's predict and predict_proba on all of it, the answers out
with pandas, as modelrun's batch writes them (row number, prediction, one probability per class).
No checks.
"""

import sys

import joblib
import pandas as pd

model = joblib.load(sys.argv[1])
frame = pd.read_csv(sys.argv[2])
X = frame if hasattr(model, "feature_names_in_") else frame.to_numpy()
predictions, probabilities = model.predict(X), model.predict_proba(X)
answers = pd.DataFrame(probabilities, columns=[f"probability_{c}" for c in model.classes_])
answers.insert(0, "prediction", predictions)
answers.to_csv(sys.argv[3], index_label="line")
