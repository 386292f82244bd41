"""The pipeline's steps: one module per step with a plain ``run`` function (called by
both runners) and a thin TFX ``@component`` wrapper around it."""
