"""The ``Quantizer`` interface and ``ComposableQuantizer``.

A quantizer decides *what* to quantize and *how* by annotating an exported
graph; the flows (``prepare_pt2e`` / ``convert_pt2e``) do the rest. Backend
plugins usually subclass :class:`quantplug.annotators.PatternQuantizer`,
which implements ``annotate`` from a table of pattern rules; this module
holds the minimal contract a third party must meet.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Sequence

from torch.fx import GraphModule

from .specs import ANNOTATION_KEY

if TYPE_CHECKING:  # pragma: no cover
    from .backend_config import BackendConfig

__all__ = ["Quantizer", "ComposableQuantizer"]


class Quantizer(ABC):
    """Annotates an exported graph with quantization specs.

    Lifecycle inside ``prepare_pt2e``: ``transform_for_annotation`` (may
    rewrite the graph, e.g. decompose an op), ``annotate`` (sets
    ``node.meta["quantization_annotation"]``), ``validate`` (raises on
    annotations the backend cannot run).
    """

    #: The backend's pattern table; ``validate`` checks annotations against it.
    backend_config: "BackendConfig | None" = None

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        """Optionally rewrite the graph before annotation (default: unchanged)."""
        return model

    @abstractmethod
    def annotate(self, model: GraphModule) -> GraphModule:
        """Attach ``QuantizationAnnotation`` objects to the nodes to quantize."""

    def validate(self, model: GraphModule) -> None:
        """Reject annotations the backend's kernels cannot run.

        The default checks every annotation against ``self.backend_config``
        with :func:`quantplug.backend_config.validate_annotations`.
        """
        if self.backend_config is not None:
            from .backend_config import validate_annotations

            validate_annotations(model, self.backend_config)


class ComposableQuantizer(Quantizer):
    """Runs several quantizers in order; earlier ones win.

    A node annotated by an earlier quantizer (``_annotated``) is left alone
    by later ones, so e.g. a dynamic-linear quantizer can go first and a
    static quantizer annotate the rest.
    """

    def __init__(self, quantizers: Sequence[Quantizer]) -> None:
        if not quantizers:
            raise ValueError("ComposableQuantizer needs at least one quantizer")
        self.quantizers = list(quantizers)

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        for q in self.quantizers:
            model = q.transform_for_annotation(model)
        return model

    def annotate(self, model: GraphModule) -> GraphModule:
        for q in self.quantizers:
            before = {n: n.meta.get(ANNOTATION_KEY) for n in model.graph.nodes}
            q.annotate(model)
            for n, ann in before.items():
                # A later quantizer must not overwrite an earlier one's claim.
                if ann is not None and ann._annotated and n.meta.get(ANNOTATION_KEY) is not ann:
                    n.meta[ANNOTATION_KEY] = ann
        return model

    def validate(self, model: GraphModule) -> None:
        for q in self.quantizers:
            q.validate(model)
