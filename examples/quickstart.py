"""Search, retrain, evaluate, export and report with the library (tiny preset, Fashion-MNIST).

    python examples/quickstart.py DATA_DIR [OUT_DIR [section.key=value ...]]

DATA_DIR is the Fashion-MNIST IDX folder (e.g. ``../shared/data/fashion-mnist``); without
the argument it is env ``TFDARTS_DATA_DIR``, and when that is unset too the library's own
default applies (the Debian package's folder, else a TFDS download). OUT_DIR (default
``quickstart``) receives ``search/``, ``retrain/``, ``evaluation/`` (metrics and the
SavedModel) and ``report/report.html``; every job folder has ``tensorboard/`` event files
(``tensorboard --logdir OUT_DIR``). Later arguments override config keys, e.g.
``search.epochs=2``. Progress lines appear on stdout without any logging set-up.
Rerunning resumes from the checkpoints in OUT_DIR.
"""

import os
import sys

import tfdarts
from tfdarts import config, data, evaluation, network, report, trainer


def main(data_dir: str, out: str, overrides=()) -> dict:
    """The whole workflow in ten lines; returns the test-split result record."""
    presets = os.path.join(os.path.dirname(tfdarts.__file__), "configs")
    cfg = config.load_config([f"{presets}/presets/tiny.yaml", f"{presets}/datasets/fashion_mnist.yaml"],
                             [f"data.data_dir={data_dir}", *overrides])
    prepared = data.prepare(cfg.data)
    found = trainer.search(cfg, prepared, f"{out}/search")
    model_fn = network.model_fn(prepared.spec.task, found.genotype, cfg.retrain)
    trainer.retrain(cfg, prepared, model_fn, f"{out}/retrain")
    record = evaluation.evaluate_and_export(cfg, prepared, f"{out}/retrain", f"{out}/evaluation",
                                            search_seconds=found.seconds)  # + SavedModel
    report.build_report(f"{out}/report", f"{out}/search", f"{out}/retrain", [record],
                        evaluation_dir=f"{out}/evaluation")
    return record


if __name__ == "__main__":
    args = sys.argv[1:]
    folder = args[1] if len(args) > 1 else "quickstart"
    result = main(args[0] if args else os.environ.get("TFDARTS_DATA_DIR", ""), folder, args[2:])
    print(f"test {result['metrics']}; SavedModel in {folder}/evaluation/saved_model, "
          f"report in {folder}/report/report.html")
