"""Genotype validation, JSON round-trip and derivation from alphas (no TensorFlow)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tfdarts import genotype as G


@pytest.mark.parametrize("geno", [G.DARTS_V1, G.DARTS_V2])
def test_json_round_trip(geno, tmp_path):
    path = tmp_path / "g.json"
    path.write_text(geno.to_json())
    assert G.Genotype.load(str(path)) == geno
    assert G.Genotype.from_dict(json.loads(geno.to_json())) == geno


def _alphas_with(choices, nodes=4, k=len(G.PRIMITIVES)):
    """Alphas where edge (node, src) -> (op, weight) as given, the rest uniform small."""
    a = np.full((G.num_edges(nodes), k), 0.01)
    for (node, src), (op, weight) in choices.items():
        a[G.edge_index(node, src), G.PRIMITIVES.index(op)] = weight
    return a


def test_parse_alphas_hand_built():
    choices = {(0, 1): ("sep_conv_3x3", 0.9), (0, 0): ("skip_connect", 0.5),
               (1, 2): ("dil_conv_5x5", 0.8), (1, 0): ("max_pool_3x3", 0.7),
               (2, 3): ("avg_pool_3x3", 0.6), (2, 1): ("sep_conv_5x5", 0.55),
               (3, 4): ("dil_conv_3x3", 0.95), (3, 2): ("sep_conv_3x3", 0.4)}
    a = _alphas_with(choices)
    geno = G.parse_alphas(a, a)
    assert geno.normal == (("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_5x5", 2),
                           ("max_pool_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_5x5", 1),
                           ("dil_conv_3x3", 4), ("sep_conv_3x3", 2))
    assert geno.normal_concat == (2, 3, 4, 5)


def test_none_never_chosen():
    a = _alphas_with({})
    a[:, G.PRIMITIVES.index("none")] = 10.0  # none strongest everywhere
    a[G.edge_index(0, 1), G.PRIMITIVES.index("skip_connect")] = 0.5
    geno = G.parse_alphas(a, a)
    ops = [op for op, _ in geno.normal + geno.reduce]
    assert "none" not in ops
    assert geno.normal[0] == ("skip_connect", 1)


def test_parse_alphas_custom_primitives_and_nodes():
    prims = ("none", "skip_connect", "sep_conv_3x3")
    a = np.zeros((G.num_edges(2), 3))
    a[:, 2] = 1.0
    geno = G.parse_alphas(a, a, prims, nodes=2)
    assert geno.nodes == 2 and all(op == "sep_conv_3x3" for op, _ in geno.normal)


@pytest.mark.parametrize("normal, message", [
    ((("conv_9x9", 0), ("skip_connect", 1)), "unknown op 'conv_9x9'"),
    ((("none", 0), ("skip_connect", 1)), "unknown op 'none'"),
    ((("skip_connect", 0), ("skip_connect", 2)), "input index 2 out of range"),
    ((("skip_connect", 0),), "2 edges per node"),
])
def test_invalid_genotype_raises(normal, message):
    with pytest.raises(G.GenotypeError, match=message):
        G.Genotype(normal, (2,), (("skip_connect", 0), ("skip_connect", 1)), (2,))


def test_corrupt_json_names_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(G.GenotypeError, match="bad.json"):
        G.Genotype.load(str(path))


def test_wrong_alpha_shape():
    with pytest.raises(G.GenotypeError, match="shape"):
        G.parse_alphas(np.zeros((3, 8)), np.zeros((14, 8)))


def test_genotype_and_config_import_no_tensorflow():
    code = ("import sys, tfdarts.genotype, tfdarts.config, tfdarts.task; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
