"""Project hooks: checks that stop a run before any work when its configuration is wrong,
the run's lock and lineage, and handing freed memory back between nodes."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, DatasetError

from histocluster.errors import UserInputError
from histocluster.labelling.credentials import set_credentials
from histocluster.output_folders import (
    OutputFolderError,
    describe_disk_error,
    failed_output,
    unwritable_folders,
)
from histocluster.params import PARAMETER_MODELS, parse, validate_parameters

logger = logging.getLogger(__name__)

#: Nodes that run a segmenter.
SEGMENTING_NODES = {"segment_tiles", "evaluate_segmentation"}


def _params(catalog, section: str):
    """The run's ``params:<section>`` as its model (Kedro hands hooks the raw mapping)."""
    values = catalog.load(f"params:{section}")
    return values if isinstance(values, PARAMETER_MODELS[section]) else parse(section, values)


class ConsoleLogHook:
    """Once the session's logging is set up: this project's messages are printed as written
    on Kedro's Rich console (:mod:`histocluster.log_handler`)."""

    @hook_impl
    def after_context_created(self, context) -> None:
        from histocluster.log_handler import print_project_messages_as_written

        print_project_messages_as_written()


class ValidateParametersHook:
    """Checks every pipeline's parameters against its model when the context is created,
    so a typo or a wrong type stops the run before any work with one message naming
    every bad key (``Error: ...``, exit status 1, no traceback).

    Kedro itself then turns each ``params:<pipeline>`` into its model for the nodes,
    from their type hints; this hook only makes the failure readable and complete."""

    @hook_impl
    def after_context_created(self, context) -> None:
        # The raw configuration (runtime --params included), before Kedro's own
        # validation, which would fail first with a traceback.
        validate_parameters(context.config_loader["parameters"])
        try:
            credentials = context.config_loader["credentials"]
        except Exception:  # no credentials file anywhere: keys may come from the environment
            credentials = {}
        set_credentials(credentials)


class CheckModelFilesHook:
    """A run that will segment needs its model files: Cellpose's checkpoint (looked for, and
    fetched where allowed) or the nuclei network's weights (loaded), and the ResNet-50
    weights when the pass computes ResNet features — checked before the first node, so a
    missing or broken file costs no work."""

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        names = {node.name for node in pipeline.nodes}
        if not SEGMENTING_NODES & names:
            return
        params = _params(catalog, "segmentation")
        if params.segmenter == "cellpose":
            from histocluster.segmentation.cellpose import resolve_checkpoint

            resolve_checkpoint(params.cellpose)
        elif params.watershed.foreground == "network":
            # Without torch: the pass may run on worker processes, and torch in this
            # process would cost ~0.3 GB for nothing (the network loads where it runs).
            from histocluster.segmentation.network_file import check_network

            w = params.watershed
            choice = check_network(w.weights_path, w.runtime, w.precision)
            logger.info("Nuclei network: %s on %s in %s", choice.path.name, choice.runtime, choice.arithmetic)
        if params.cell_features.deep == "resnet50" and "segment_tiles" in names:
            from histocluster.features.resnet import resolve_weights

            resolve_weights(params.cell_features.resnet50)
        if params.cell_features.deep == "typenet" and "segment_tiles" in names:
            from histocluster.features.type_net import type_net_weights

            path = type_net_weights(params.cell_features.typenet.weights_path)
            logger.info("Type network for per-cell features: %s", path)


class OutputFoldersHook:
    """Before the first node: every local folder the run saves in can be written (a
    read-only, full or mistyped ``data/`` is one ``Error:`` naming the folders, before any
    work), and the labels file, when the run names clusters, can be read.

    When a save fails on the disk (full, read-only, no permission), the run ends with one
    ``Error:`` line naming the dataset and folder instead of a traceback, and a file the
    failed save left half-written is removed, so it never looks like a finished output.
    """

    def __init__(self) -> None:
        self._outputs: dict[str, str] = {}  # dataset → the file or folder it writes
        self._save_paths: dict[str, Path] = {}  # dataset → the one file this run writes

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._outputs, self._save_paths = {}, {}
        folders: dict[str, set[str]] = defaultdict(set)
        for name in sorted(pipeline.all_outputs()):
            dataset = catalog.get(name)
            local = _local_target(dataset)
            if local is None:
                continue  # in memory, or remote storage (checked by its own client)
            target, one_file = local
            self._outputs[name] = str(target)
            if isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None:
                folders[str(target)].add(name)  # <filepath>/<version>/<file>
                with contextlib.suppress(DatasetError):  # this version exists: the save says so
                    self._save_paths[name] = Path(str(dataset._get_save_path()))
            elif one_file:
                folders[str(target.parent)].add(name)
                self._save_paths[name] = target
            else:
                folders[str(target)].add(name)
        problems = unwritable_folders(folders)
        if problems:
            raise OutputFolderError(
                "The run cannot write its outputs (nothing was run):\n" + "\n".join(problems)
            )
        if "label_clusters" in {node.name for node in pipeline.nodes}:
            from histocluster.labelling.labels_file import load_cluster_labels

            load_cluster_labels(
                _params(catalog, "classification").labels_file
            )  # a broken file stops the run now

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        message = describe_disk_error(error, self._outputs)
        if message is None:
            return
        name = failed_output(error, self._outputs)
        partial = self._save_paths.get(name) if name else None
        if partial is not None and partial.is_file() and not partial.is_symlink():
            partial.unlink()
            message += f" The partly written {partial.name} was removed."
        raise OutputFolderError(message) from None


class MissingInputsHook:
    """A pipeline run on its own needs what earlier pipelines saved: an input that was
    never made (``kedro run --pipelines=segmentation`` on a fresh project) is one
    ``Error:`` naming it and the pipeline that makes it, before any work, instead of
    Kedro's ``VersionNotFoundError`` traceback from the middle of the run."""

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        missing = []
        for name in sorted(pipeline.inputs()):
            dataset = catalog.get(name)
            if not isinstance(dataset, AbstractVersionedDataset):
                continue  # parameters, memory, folders of optional pictures, the slide folder
            if not dataset.exists():
                missing.append(name)
        if missing:
            makers = [_made_by(name) for name in missing]
            lines = "\n".join(
                f"  {name}: made by `kedro run --pipelines={maker}`" if maker else f"  {name}"
                for name, maker in zip(missing, makers, strict=True)
            )
            raise MissingInputError(
                "This run needs outputs that no earlier run has made (run those pipelines first, "
                "or `kedro run` for everything):\n" + lines
            )


class MissingInputError(UserInputError):
    """A pipeline's input was never saved."""


def _made_by(dataset: str) -> str | None:
    """The stage pipeline that saves ``dataset``, from the pipeline folders themselves
    (during a run Kedro's registry holds only the pipelines asked for)."""
    import importlib
    import pkgutil

    import histocluster.pipelines as folders
    from histocluster.pipeline_registry import COMPOSITES, OPTIONAL

    for module in sorted(m.name for m in pkgutil.iter_modules(folders.__path__) if m.ispkg):
        if module in COMPOSITES + OPTIONAL:
            continue
        pipe = importlib.import_module(f"{folders.__name__}.{module}.pipeline").create_pipeline()
        if dataset in pipe.all_outputs():
            return module
    return None


class RunLockHook:
    """One ``kedro run`` at a time per project: the run takes ``data/.kedro-run.lock``
    before anything else and holds it until it ends; a second run started meanwhile is
    one ``Error:`` naming the run that holds it (:mod:`histocluster.run_lock`)."""

    def __init__(self) -> None:
        self._lock = None

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        from histocluster.run_lock import LOCK_NAME, acquire

        self._release()  # a session of this process that ended without its after-hook
        root = Path(run_params.get("project_path") or ".")
        pipelines = run_params.get("pipeline_names") or ["__default__"]
        self._lock = acquire(
            root / "data" / LOCK_NAME,
            {"run": run_params.get("run_id"), "pipelines": ",".join(pipelines)},
        )

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        self._release()


class RunLineageHook:
    """Every versioned output gets a run record beside it (``<file>.run.json``: the run
    that made it, the input versions it read and its lineage), and a node whose inputs
    trace one table to different runs is refused before it runs, with one ``Error:``
    naming the tables and the command that remakes the stale ones
    (:mod:`histocluster.run_lineage`)."""

    def __init__(self) -> None:
        self._catalog = None
        self._run = ""
        self._memory: dict[str, dict[str, str]] = {}  # unsaved outputs of this run → lineage
        self._node_lineage: dict[str, dict[str, str]] = {}
        self._node_inputs: dict[str, dict[str, str]] = {}
        self._records: list[tuple[Path, Path]] = []  # (run record, the file it describes)

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        """Before any work: follows the lineage of every table through the whole pipeline
        (its inputs from their run records, its outputs as this run will make them), and
        refuses the run with every stale input and one command that remakes them all."""
        from histocluster.run_lineage import MixedRunsError, conflicts, describe_conflicts, merge

        self._catalog, self._run = catalog, str(run_params.get("run_id") or "")
        self._memory, self._node_lineage, self._node_inputs, self._records = {}, {}, {}, []
        planned: dict[str, dict[str, str]] = {}
        found = {}
        for node in pipeline.nodes:  # in the order they run
            lineages, saved = {}, set()
            for name in _data_inputs(node):
                if name in planned:
                    lineage = planned[name]
                else:
                    lineage, saved = self._saved_lineage(name)[0], saved | {name}
                if lineage:
                    lineages[name] = lineage
            # Stale are saved inputs: what this run makes only inherits their staleness.
            node_conflicts = [
                replace(c, stale=tuple(n for n, _ in pairs), stale_runs=tuple(r for _, r in pairs))
                for c in conflicts(lineages)
                if (pairs := [(n, r) for n, r in zip(c.stale, c.stale_runs, strict=True) if n in saved])
            ]
            if node_conflicts:
                found[node.name] = node_conflicts
            merged = merge(lineages)
            for name in node.outputs:
                planned[name] = {**merged, name: self._run} if self._versioned(name) else merged
        if found:
            stale = {name for node_conflicts in found.values() for c in node_conflicts for name in c.stale}
            raise MixedRunsError(describe_conflicts(found, _remake_command(stale)))

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        """A record whose file was never saved (the save failed) is removed."""
        for record, file in self._records:
            if not file.exists():
                record.unlink(missing_ok=True)

    def _versioned(self, name: str) -> bool:
        dataset = self._catalog.get(name) if self._catalog is not None else None
        return isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None

    def _saved_lineage(self, name: str) -> tuple[dict[str, str], str | None]:
        """The lineage of the saved version a run reads (the newest, or the one pinned with
        ``--load-versions``) and that version; nothing for unversioned data."""
        from histocluster.run_lineage import read_lineage

        if not self._versioned(name):
            return {}, None  # the slide folder, pictures, memory
        dataset = self._catalog.get(name)
        try:
            version = dataset.resolve_load_version()
        except DatasetError:
            return {}, None  # never saved: MissingInputsHook says so
        if version is None:
            return {}, None
        return read_lineage(dataset._get_versioned_path(version), name, version), version

    @hook_impl
    def before_node_run(self, node, catalog, inputs) -> None:
        """Records what the node read (checked again: the versions it actually loaded)."""
        from histocluster.run_lineage import MixedRunsError, conflicts, describe_conflicts, merge

        lineages, versions = {}, {}
        for name in _data_inputs(node):
            if name in self._memory:
                lineage, version = self._memory[name], None
            else:
                lineage, version = self._saved_lineage(name)
            if lineage:
                lineages[name] = lineage
            if version is not None:
                versions[name] = version
        if found := conflicts(lineages):
            stale = {name for conflict in found for name in conflict.stale}
            raise MixedRunsError(describe_conflicts({node.name: found}, _remake_command(stale)))
        merged = merge(lineages)
        self._node_lineage[node.name] = merged
        # The version of each table read: from a file, or made earlier in this run.
        self._node_inputs[node.name] = {
            **{name: merged[name] for name in node.inputs if name in merged},
            **versions,
        }

    @hook_impl
    def before_dataset_saved(self, dataset_name, data, node) -> None:
        from histocluster.run_lineage import write_record

        lineage = dict(self._node_lineage.get(node.name, {}))
        if not self._versioned(dataset_name):
            self._memory[dataset_name] = lineage  # passed on in memory (or not a table)
            return
        dataset = self._catalog.get(dataset_name)
        version = dataset.resolve_save_version()
        lineage[dataset_name] = version
        self._memory[dataset_name] = lineage
        protocol = str(getattr(dataset, "_protocol", "file"))
        if protocol in ("file", "local"):  # records on object stores: not yet
            # Written before the file, so a saved file always has its record.
            file = Path(str(dataset._get_versioned_path(version)))
            record = write_record(
                file,
                run=version,
                made_by=node.name,
                inputs=self._node_inputs.get(node.name, {}),
                lineage=lineage,
            )
            self._records.append((record, file))


#: The stage pipelines in the order they run.
STAGE_ORDER = ("tiling", "segmentation", "filtering", "clustering", "classification", "annotation")


def _data_inputs(node) -> list[str]:
    return [name for name in node.inputs if not name.startswith("params:") and name != "parameters"]


def _remake_command(stale: set[str]) -> str:
    """``kedro run --pipelines=...`` for the stage pipelines that make ``stale``."""
    makers = {maker for name in stale if (maker := _made_by(name))}
    order = {name: k for k, name in enumerate(STAGE_ORDER)}
    if not makers:
        return "kedro run"
    return "kedro run --pipelines=" + ",".join(sorted(makers, key=lambda m: (order.get(m, 99), m)))


class ReleaseMemoryHook:
    """Hand freed memory back to the system: Arrow's after every dataset load, and glibc's
    too before each node.

    Kedro drops a node's inputs once no later node needs them, but the allocators keep
    freed memory for reuse: glibc's, so without this the process's resident size carries
    every earlier node's high-water mark into the next, and Arrow's (mimalloc), which
    held ~2× the pandas table's size after a Parquet load (the cell table: ~3.5 kB per
    cell resident for ~0.9 kB of data). docs/benchmarks.md, *Whole slides*, has the effect on a run's
    peak. ``malloc_trim`` takes a few milliseconds, Arrow's release microseconds; without
    glibc only Arrow's is done. (No ``gc.collect()`` here: on a big run it cost ~0.2 s per node.)"""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        self._trim = getattr(libc, "malloc_trim", None)

    @staticmethod
    def _release_arrow() -> None:
        arrow = sys.modules.get("pyarrow")  # nothing to hand back if Arrow was never used
        if arrow is not None:
            arrow.default_memory_pool().release_unused()

    @hook_impl
    def after_dataset_loaded(self, dataset_name, data, node) -> None:
        self._release_arrow()

    @hook_impl
    def before_node_run(self, node, catalog, inputs) -> None:
        self._release_arrow()
        if self._trim is not None:
            self._trim(0)


class ResultsViewHook:
    """After a run, ``results/`` at the project root links to the newest version of each
    output a person opens (:mod:`histocluster.reporting.results_view`). Registered after the run
    lock, so it runs while the lock is still held."""

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        from histocluster.reporting.results_view import RESULTS, refresh_view

        root = Path(run_params.get("project_path") or Path.cwd())
        targets = {}
        for link, name in RESULTS.items():
            with contextlib.suppress(DatasetError, KeyError):
                dataset = catalog.get(name)
                path = _newest_path(dataset) if dataset is not None else None
                if path is not None:
                    targets[link] = root / path
        refresh_view(root / "results", targets)


def _local_target(dataset) -> tuple[Path, bool] | None:
    """The local file or folder ``dataset`` reads and writes, and whether it is one file
    (``filepath``) rather than a folder (``path``); ``None`` for a dataset in memory or on
    remote storage."""
    description = dataset._describe() if dataset is not None else {}
    target = description.get("filepath") or description.get("path")
    protocol = str(description.get("protocol") or getattr(dataset, "_protocol", "file"))
    if not target or protocol not in ("file", "local") or "://" in str(target):
        return None
    return Path(str(target)), "filepath" in description


def _newest_path(dataset) -> Path | None:
    """Where ``dataset`` keeps its newest data: the newest version's file for a versioned
    dataset (``None`` before the first), else its local file or folder."""
    if isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None:
        try:
            return Path(str(dataset._get_load_path()))
        except DatasetError:
            return None
    local = _local_target(dataset)
    return None if local is None else local[0]
