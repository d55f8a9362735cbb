"""Project hooks: checks that stop a run before any work when its configuration is wrong."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl

from histocluster.labelling.credentials import set_credentials
from histocluster.params import SegmentationParams, parse, validate_parameters

#: Nodes that run a segmenter.
SEGMENTING_NODES = {"segment_tiles", "evaluate_segmentation"}


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
        params = catalog.load("params:segmentation")
        if not isinstance(params, SegmentationParams):
            params = parse("segmentation", params)
        if params.segmenter == "cellpose":
            from histocluster.segmentation.cellpose import resolve_checkpoint

            resolve_checkpoint(params.cellpose)
        elif params.watershed.foreground == "network":
            from histocluster.segmentation.watershed import cached_network

            cached_network(params.watershed.weights_path)
        if params.cell_features.deep == "resnet50" and "segment_tiles" in names:
            from histocluster.features.resnet import resolve_weights

            resolve_weights(params.cell_features.resnet50)
