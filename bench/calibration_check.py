"""Why does a retrained regression model score a low R^2? Ranking or calibration?

Evaluates one retrained model (a ``model.keras`` file) on the first `--examples`
images of the training and of the test split of a prepared dataset (a
``dataset`` folder of a pipeline run), three ways:

- inference mode (the moving batch-norm statistics, as the evaluation does);
- batch statistics (training-mode batch norm, batches of `--batch`);
- inference mode after re-estimating the moving statistics at the final
  weights (one training-mode pass over the training images; momentum 0.9
  forgets the old statistics within about 50 batches).

For each it prints R^2, the Pearson correlation of prediction and target, and
the mean and sd of both (standardised units), then one JSON line. R^2 far
below the squared correlation means the predictions rank the examples but are
shifted or scaled. Regression datasets with one target only.

    .venv/bin/python bench/calibration_check.py RUN/dataset RUN/.../model.keras
"""
import argparse
import json
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from tfdarts import data as data_lib
from tfdarts import export


def _split(data: data_lib.PreparedData, which: str, n: int) -> Tuple[tf.Tensor, np.ndarray]:
    """``(x (n, H, W, C) normalised, y (n,) standardised)`` of one split."""
    x = getattr(data, f"x_{which}")[:n]
    y = getattr(data, f"y_{which}")[:n]
    return (data_lib.normalize_inputs(tf.convert_to_tensor(x), data.spec),
            data_lib.standardize_targets(y, data.spec)[:, 0])


def _predict(model, x: tf.Tensor, y: np.ndarray, training: bool,
             batch: int) -> Tuple[np.ndarray, np.ndarray]:
    """Outputs ``(m,)`` and targets ``(m,)`` over the full batches of `x`."""
    fn = tf.function(lambda t: model(t, training=training), reduce_retracing=True)
    outs = [fn(x[i:i + batch]).numpy()[:, 0] for i in range(0, len(y) - batch + 1, batch)]
    return np.concatenate(outs), y[:len(outs) * batch]


def _stats(pred: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    r2 = 1.0 - np.mean((pred - y) ** 2) / np.var(y)
    return {"r2": float(r2), "corr": float(np.corrcoef(pred, y)[0, 1]),
            "pred_mean": float(pred.mean()), "pred_sd": float(pred.std()),
            "target_mean": float(y.mean()), "target_sd": float(y.std())}


def check(dataset_dir: str, model_path: str, examples: int, batch: int) -> Dict[str, Dict[str, float]]:
    """The six evaluations described in the module docstring, by name."""
    data = data_lib.load_prepared(dataset_dir)
    if data.spec.task.is_classification or data.spec.task.num_outputs != 1:
        raise SystemExit(f"{dataset_dir}: a regression dataset with one target is needed")
    train, test = _split(data, "train", examples), _split(data, "test", examples)
    out = {}
    model = export.load_model(model_path)
    out["test_moving"] = _stats(*_predict(model, *test, False, batch))
    out["train_moving"] = _stats(*_predict(model, *train, False, batch))
    model = export.load_model(model_path)
    out["train_batch"] = _stats(*_predict(model, *train, True, batch))
    out["test_batch"] = _stats(*_predict(model, *test, True, batch))
    model = export.load_model(model_path)
    _predict(model, *train, True, batch)  # re-estimates the moving statistics
    out["test_reestimated"] = _stats(*_predict(model, *test, False, batch))
    out["train_reestimated"] = _stats(*_predict(model, *train, False, batch))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dir", help="a prepared dataset folder (RUN/dataset)")
    parser.add_argument("model", help="a retrained model.keras file")
    parser.add_argument("--examples", type=int, default=3072, help="images per split")
    parser.add_argument("--batch", type=int, default=64, help="batch size (training-mode passes)")
    args = parser.parse_args()
    result = check(args.dataset_dir, args.model, args.examples, args.batch)
    for name, s in result.items():
        print(f"{name:18s} R2 {s['r2']:+.3f}  corr {s['corr']:.3f}  prediction mean {s['pred_mean']:+.3f} "
              f"sd {s['pred_sd']:.3f}  target mean {s['target_mean']:+.3f} sd {s['target_sd']:.3f}")
    print(json.dumps({"model": args.model, **result}))


if __name__ == "__main__":
    main()
