"""Parameter models: the shipped files parse, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from histocluster.params import FilteringParams, ParameterError, TilingParams, parse, validate_parameters

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def shipped() -> dict:
    params = {}
    for path in CONF.glob("parameters_*.yml"):
        params.update(yaml.safe_load(path.read_text()))
    return params


def test_shipped_parameters_are_valid_and_match_the_model_defaults():
    parsed = validate_parameters(shipped())
    assert parsed["tiling"] == TilingParams()
    assert parsed["filtering"] == FilteringParams()


def test_typo_is_named():
    params = shipped()
    params["tiling"]["tile_sise"] = 256
    with pytest.raises(ParameterError, match=r"tiling\.tile_sise: unknown parameter"):
        validate_parameters(params)


def test_nested_wrong_type_is_named():
    params = shipped()
    params["filtering"]["thresholds"]["min_laplacian_var"] = "high"
    with pytest.raises(ParameterError, match=r"filtering\.thresholds\.min_laplacian_var"):
        validate_parameters(params)


def test_nested_typo_is_named():
    params = shipped()
    params["filtering"]["thresholds"]["min_laplacian_vr"] = 3
    with pytest.raises(ParameterError, match=r"filtering\.thresholds\.min_laplacian_vr: unknown parameter"):
        validate_parameters(params)


def test_every_problem_at_once():
    params = shipped()
    params["tiling"]["overlap"] = "x"
    del params["filtering"]
    with pytest.raises(ParameterError) as info:
        validate_parameters(params)
    assert "tiling.overlap" in str(info.value) and "Missing parameters 'filtering'" in str(info.value)


def test_overlap_must_be_below_tile_size():
    with pytest.raises(ParameterError, match="overlap"):
        parse("tiling", {"tile_size": 256, "overlap": 300})


def test_resolutions_must_be_positive():
    with pytest.raises(ParameterError, match="target_mpp"):
        parse("tiling", {"target_mpp": [0.5, -1]})


def test_shipped_clustering_parameters_are_the_model_defaults():
    from histocluster.params import ClusteringParams

    assert validate_parameters(shipped())["clustering"] == ClusteringParams()


def test_gpu_environment_overrides_single_keys(tmp_path):
    """conf/gpu changes the backends and keeps every other key of conf/base."""
    from kedro.config import OmegaConfigLoader

    from histocluster.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(CONF.parent), env="gpu", **CONFIG_LOADER_ARGS)
    parsed = validate_parameters(loader["parameters"])
    assert parsed["clustering"].device == "gpu"
    assert parsed["clustering"].embedders == {"morphology": 1.0, "resnet50": 1.0}
    assert parsed["segmentation"].segmenter == "cellpose"
    assert parsed["clustering"].reduction.n_components == 50  # from conf/base
    assert parsed["segmentation"].watershed.min_area_um2 == 10.0


def test_clustering_mistakes_are_named():
    params = shipped()
    params["clustering"]["clusterer"]["method"] = "kmedoids"
    params["clustering"]["embedders"] = {"morphology": 1.0, "vit": 1.0}
    with pytest.raises(ParameterError) as error:
        validate_parameters(params)
    assert "clustering.clusterer.method" in str(error.value) and "clustering.embedders" in str(error.value)


def test_unknown_top_level_key_is_refused_with_the_closest_name():
    params = shipped()
    params["tilling"] = {"max_tiles": 4}  # --params tilling.max_tiles=4
    with pytest.raises(ParameterError, match=r"Unknown parameters 'tilling'.*did you mean 'tiling'\?"):
        validate_parameters(params)
    params = shipped()
    params["zzz"] = 1
    with pytest.raises(ParameterError, match=r"Unknown parameters 'zzz'.*known: tiling, filtering"):
        validate_parameters(params)


def test_a_cross_field_error_names_its_fields_not_the_whole_section():
    params = shipped()
    params["tiling"].update(tile_size=256, overlap=300)
    with pytest.raises(ParameterError) as info:
        validate_parameters(params)
    message = str(info.value)
    assert "overlap" in message and "tile_size" in message
    assert len(message) < 400, message  # the section (over 1 KB with every key) is not repeated
    assert "target_mpp" not in message and "Value error" not in message
