"""Given: a cell from a file or a paper in place of a search (``pipeline.run --genotype``).

Its output is a SearchResult artifact holding only ``genotype.json``, with properties
``source="given"`` and ``origin`` (the published name or the file it came from), so
retrain, evaluate and analyze treat it like a searched cell and lineage shows where
it came from.
"""

import functools
import os
from typing import Any, Dict, Mapping

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline import artifacts
from pipeline.components import common
from tfdarts import contract
from tfdarts.config import Config


def run(config: Config, inputs: Mapping[str, str], outputs: Mapping[str, str], work_dir: str,
        genotype_json: str = "", origin: str = "") -> Dict[str, Dict[str, Any]]:
    """Validates the given genotype against the search space and writes it out.

    Returns:
        SearchResult properties: genotype, source, origin, dataset and fingerprint.
    """
    del work_dir
    from tfdarts import fileio
    from tfdarts.genotype import Genotype

    genotype = Genotype.from_json(genotype_json)
    dataset = common.read_properties(inputs["dataset"])
    fileio.write_json(os.path.join(outputs["search"], contract.GENOTYPE_FILE), genotype.to_dict())
    return {"search": {"genotype": genotype.to_dict(), "source": "given", "origin": origin,
                       "dataset": dataset.get("name", config.data.name),
                       "fingerprint": dataset.get("fingerprint"), "metric": dataset.get("metric")}}


@component
def Given(dataset: InputArtifact[artifacts.Dataset], search: OutputArtifact[artifacts.SearchResult],
          config_json: Parameter[str], code_version: Parameter[str], genotype_json: Parameter[str],
          origin: Parameter[str], work_root: Parameter[str] = "") -> None:
    """TFX wrapper of `run`."""
    fn = functools.partial(run, genotype_json=genotype_json, origin=origin)
    common.run_tfx("given", fn, {"dataset": dataset}, {"search": search}, config_json,
                   code_version, work_root)
