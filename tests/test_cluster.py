"""cluster.yaml must pass Ray's own cluster-launcher validation, offline."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def test_cluster_yaml_passes_ray_validation():
    cfg = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    validate_config(cfg)
    gpus = [t["resources"].get("GPU", 0) for t in cfg["available_node_types"].values()]
    assert max(gpus) >= 1, "the cluster must offer GPU worker nodes"
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_broken_cluster_yaml_is_rejected():
    cfg = yaml.safe_load(CLUSTER.read_text())
    del cfg["available_node_types"]["gpu_a10g_x4"]["node_config"]
    with pytest.raises(Exception, match="node_config"):
        validate_config(prepare_config(cfg))
