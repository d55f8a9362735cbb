"""The code's layout keeps its promises: stage packages, thin node modules that import
their own stage, cheap start-up, DVC deps that cover the code a stage runs, and
parameter files that agree with the models."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
STAGES = ("tiling", "filtering", "segmentation", "clustering", "classification", "annotation", "evaluation")
#: The stage package(s) each pipeline's nodes may import (besides histocluster.wsi and errors).
OWN = {
    "tiling": {"wsi", "segmentation"},  # the nuclei network estimates an unknown µm/px
    "filtering": {"wsi"},
    "segmentation": {"segmentation"},
    "evaluation": {"segmentation"},
    "clustering": {"clustering"},
    "classification": {"labelling"},
    "apply": {"labelling", "clustering"},  # cells placed in a saved clustering
    "annotation": {"reporting"},
}
HEAVY = ("torch", "sklearn", "umap", "cv2", "matplotlib", "skimage", "scipy", "shapely", "numba", "openslide")


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def histocluster_imports(path: Path) -> set[str]:
    """Every histocluster module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("histocluster")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("histocluster"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if module_file(m)}


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if module_file(".".join(parts[:i]))]
        todo += list(histocluster_imports(module_file(name)))
    return seen


def test_every_flat_module_found_a_stage_package():
    flat = {p.stem for p in (SRC / "histocluster").glob("*.py")}
    assert flat <= {
        "__init__",
        "__main__",
        "errors",
        "hooks",
        "log_handler",
        "output_folders",
        "params",
        "pipeline_registry",
        "settings",
        "strict_model",
        "lazy",
        "atomic_files",
        "run_lineage",
        "run_lock",
    }, flat
    for package in ("wsi", "segmentation", "features", "clustering", "labelling", "reporting"):
        assert (SRC / "histocluster" / package / "__init__.py").is_file()
        if package != "features":  # features' settings are parts of segmentation's and clustering's
            assert (SRC / "histocluster" / package / "settings.py").is_file(), package


@pytest.mark.parametrize("stage", sorted(OWN))
def test_nodes_import_only_their_own_stage_package(stage):
    nodes = SRC / "histocluster" / "pipelines" / stage / "nodes.py"
    packages = {m.split(".")[1] for m in histocluster_imports(nodes)}
    assert packages <= OWN[stage] | {"wsi", "errors", "lazy", "run_lineage"}, (stage, packages)


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "evaluation"])
def test_dvc_deps_cover_every_module_the_stage_runs(stage):
    """``dvc repro`` cannot keep stale outputs after a code change: every histocluster file
    the stage's pipeline imports (directly or not) lies under one of its deps."""
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    covered = [ROOT / d for d in deps]
    for name in closure(f"histocluster.pipelines.{stage}.pipeline") | {
        "histocluster.settings",
        "histocluster.pipeline_registry",
    }:
        path = module_file(name)
        assert any(path == d or d in path.parents for d in covered), (stage, path.relative_to(ROOT))
    params = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["params"]
    for entry in params:
        (conf,) = entry
        assert ROOT / conf in covered, f"{stage}: its conf file {conf} is not a dep"


def test_classification_depends_on_the_labels_file():
    from histocluster.labelling.settings import ClassificationParams

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["classification"]["deps"]
    assert ClassificationParams().labels_file in deps


def test_importing_the_parameters_loads_no_numerical_library():
    """Every kedro command imports the parameter models: they must stay light."""
    code = (
        "import sys, json, histocluster.params, histocluster.hooks, histocluster.settings; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert loaded == []


@pytest.mark.parametrize(
    "stage", ["tiling", "filtering", "segmentation", "clustering", "classification", "annotation"]
)
def test_parameter_files_say_what_the_models_default_to(stage):
    """conf/base/parameters_<stage>.yml holds every key of its model with the model's
    default, so the file a user reads is what runs when nothing is overridden."""
    from histocluster.params import PARAMETER_MODELS

    written = yaml.safe_load((ROOT / "conf" / "base" / f"parameters_{stage}.yml").read_text())[stage]
    default = json.loads(PARAMETER_MODELS[stage]().model_dump_json())
    assert json.loads(PARAMETER_MODELS[stage].model_validate(written).model_dump_json()) == default
    assert _keys(written) == _keys(default), sorted(_keys(written) ^ _keys(default))


def _keys(tree, prefix="") -> set[str]:
    out = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            out |= {prefix + str(key)} | _keys(value, prefix + str(key) + ".")
    return out


def _catalog():
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")
    return DataCatalog.from_config(loader["catalog"])


def test_no_catalog_pattern_swallows_an_unrelated_dataset_name():
    """A future dataset named like ``cell_marker`` or ``tile_counter`` is not silently
    pickled into data/06_models/ by a catch-all pattern; the fitted models still are."""
    catalog = _catalog()
    for name in ("cell_marker", "tile_counter", "cluster_border"):
        assert type(catalog.get(name, fallback_to_runtime_pattern=True)).__name__ == "MemoryDataset", name
    for name in ("reducer", "clusterer"):
        dataset = catalog.get(name)
        assert type(dataset).__name__ == "PickleDataset" and "06_models" in str(dataset._filepath)


def test_the_docker_image_runs_the_gpu_configuration():
    """The image (and compose) select conf/gpu, and conf/gpu really changes the run:
    Kedro, given that environment, loads Cellpose-SAM, ResNet features and cuML."""
    env = {}
    for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            env.update(part.split("=", 1) for part in line[4:].split() if "=" in part)
    assert env.get("KEDRO_ENV") == "gpu"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["histocluster"]["environment"]["KEDRO_ENV"] == "gpu"
    from kedro.config import OmegaConfigLoader

    params = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="gpu")["parameters"]
    from histocluster.params import validate_parameters

    parsed = validate_parameters(params)
    assert parsed["segmentation"].segmenter == "cellpose"
    assert parsed["segmentation"].cell_features.deep == "resnet50"
    assert parsed["clustering"].device == "gpu" and "resnet50" in parsed["clustering"].embedders


def test_the_notebook_names_a_cluster_only_from_what_the_person_writes():
    """The example notebook must not give a cluster a real cell type it never looked at:
    every name passed to apply_human is a variable the reader sets, never a label of the
    vocabulary written into the code."""
    from histocluster.labelling.settings import DEFAULT_LABEL_SETS

    vocabulary = {label for label_set in DEFAULT_LABEL_SETS.values() for label in label_set.labels}
    notebook = json.loads((ROOT / "notebooks" / "explore_clusters.ipynb").read_text())
    calls = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if "%" in source.split("\n")[0]:
            continue  # IPython magics
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "apply_human":
                calls += 1
                names = [v for arg in node.args if isinstance(arg, ast.Dict) for v in arg.values]
                assert names and not any(
                    isinstance(v, ast.Constant) and v.value in vocabulary for v in names
                ), ast.unparse(node)
    assert calls == 1


def test_prep_runs_on_a_fresh_project():
    """``kedro run --pipelines=prep`` needs nothing but the slides and the parameters
    (the contact sheets need the segmentation pass, which measures the tiles' quality)."""
    from histocluster.pipelines.prep.pipeline import create_pipeline

    free = {name for name in create_pipeline().inputs() if not name.startswith("params:")}
    assert free == {"raw_slides"}


#: Imported only where the optional GPU stack is installed (``.[gpu]``), never by default.
GPU_ONLY = {"cuml", "cupy"}
#: Declared though never imported: command-line tools the README's workflow runs, the
#: Parquet engine pandas loads, and OpenSlide's library files.
NOT_IMPORTED = {"dvc", "kedro-viz", "pyarrow", "openslide-bin"}


def test_declared_dependencies_are_the_imported_ones():
    """Every third-party module the package imports is declared in pyproject.toml (by its
    distribution), and every declared distribution is imported or is a command-line tool."""
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(specs):
        return {norm(re.split(r"[\[<>=~!; ]", spec, maxsplit=1)[0]) for spec in specs}

    declared = names(project["dependencies"])
    # Optional parts of the package (SpatialData export) import what their extra declares.
    extras = names(
        spec for extra, specs in project["optional-dependencies"].items() if extra != "dev" for spec in specs
    )
    imported = set()
    for path in (ROOT / "src" / "histocluster").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"histocluster"} - GPU_ONLY
    owners = packages_distributions()
    needed = {m: {norm(d) for d in owners.get(m, [])} for m in third_party}
    undeclared = sorted(m for m, dists in needed.items() if not dists & (declared | extras))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    used = set().union(*needed.values()) | NOT_IMPORTED
    unused = sorted((declared | extras - {"cuml-cu13"}) - used)
    assert not unused, f"declared but never imported: {unused}"
