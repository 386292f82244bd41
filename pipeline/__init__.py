"""TFX and Kubeflow pipelines around the `tfdarts` library.

The library never imports this package. The steps (ingest, search, retrain,
evaluate, analyze, and optionally baselines) are defined once in
`pipeline.pipeline.STEPS`; `pipeline.run` runs them with TFX's LocalDagRunner,
`pipeline.kubeflow` compiles them into a Kubeflow Pipelines YAML whose tasks call
the same step code through `pipeline.steps`.
"""
