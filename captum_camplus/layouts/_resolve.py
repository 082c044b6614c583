"""The ``layout=`` policies: ``"auto"`` and the default, over one model inference, their error
texts, and :func:`resolve_layout`.

Both policies read the same things: the model's facts at the layer (read once) and the shapes'
readings. :class:`ModelInference` holds those; :class:`AutoLayout` takes the one reading left,
:class:`DefaultLayout` keeps Captum's channels-first reading and refuses a tensor that
contradicts it. Neither is a kind of the other.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module

from captum_camplus.layouts._model import ModelFacts, model_facts
from captum_camplus.layouts._probe import ProbeError, confirms
from captum_camplus.layouts._shapes import (
    MAX_PREFIX_TOKENS,
    InputShape,
    check_batch,
    image_size,
    partitioned,
    size_text,
)
from captum_camplus.layouts._types import (
    ChannelsFirstLayout,
    ChannelsLastLayout,
    FunctionLayout,
    Layout,
    LayoutSpec,
    Reading,
    RerollLayout,
    TokenLayout,
    listed,
    selector,
    shape_readings,
)

#: The start of every reason why nothing confirms a reading.
_UNSTATED = "nothing confirms it: no model attribute states the layout"

#: The layouts that ``layout=`` accepts by name.
LAYOUT_NAMES = ("channels_first", "channels_last", "tokens", "auto")


class ModelInference:
    """What the model says about its layer (:class:`ModelFacts`, read once, when first needed)
    and the readings of a layer tensor that those facts allow."""

    def __init__(self, forward_func: Any = None, layer: Module | None = None) -> None:
        self._source = (forward_func, layer)
        self._facts: ModelFacts | None = None

    @property
    def facts(self) -> ModelFacts:
        """The model's :class:`ModelFacts` at the layer."""
        if self._facts is None:
            self._facts = model_facts(*self._source)
        return self._facts

    def layout_from_facts(self, tensor: Tensor) -> Layout | None:
        """Without the input: Hiera's re-roll, tokens where the model states a prefix count,
        channels last where it says so, else None (channels first)."""
        facts = self.facts
        if tensor.dim() == 3 and facts.reroll is not None:
            return RerollLayout(facts.reroll)
        if tensor.dim() == 3 and facts.prefix_tokens is not None:
            return TokenLayout(facts.prefix_tokens, facts.grid)
        if tensor.dim() == 4 and facts.channels_last:
            return ChannelsLastLayout()
        return None

    def readings(self, tensor: Tensor, input_shape: Sequence[int]) -> list[Reading]:
        """:func:`shape_readings` of ``tensor`` that the model's facts allow; for Hiera's
        unrolled tokens, the model's re-roll alone."""
        reroll = self.facts.reroll
        if reroll is not None and tensor.dim() == 3:  # the layout refuses another stage or size
            layout = RerollLayout(reroll)
            return [
                Reading(
                    layout, f"tokens re-rolled by the model ({reroll.source})", selector(layout)
                )
            ]
        return shape_readings(tensor.shape, input_shape, self.facts)

    def confirmed(
        self, tensor: Tensor, input_shape: Sequence[int], readings: Sequence[Reading]
    ) -> tuple[list[Reading], str]:
        """The ``readings`` that something confirms, and how, or why none (for messages).

        The model's facts confirm a re-roll and a token reading of a stated prefix count with a
        stated patch size or grid; a channels-first grid that is the only reading stands, as
        Captum reads it (``layout=None`` too); every other reading needs the locality probe
        (:mod:`captum_camplus.layouts._probe`), run once per layer, input size and reading.
        """
        stated = [r for r in readings if self._stated(r)]
        if stated:
            return stated, f"the model's attributes ({self.facts.source})"
        if len(readings) == 1 and isinstance(readings[0].layout, ChannelsFirstLayout):
            return list(readings), "Captum's channels-first reading, the only one the shapes admit"
        forward_func, layer = self._source
        if forward_func is None or layer is None or not readings:
            return [], f"{_UNSTATED} and there is no model to probe"
        if layer.training:  # the probe's noise images would move BatchNorm's statistics
            return [], (
                f"{_UNSTATED}, and the locality probe does not run a model in training mode "
                "(call model.eval() to let it confirm a reading)"
            )
        try:
            found = [r for r in readings if self._probe(r, tensor, input_shape)]
        except ProbeError as error:
            return [], f"{_UNSTATED}, and {error}"
        if found:
            return found, "the locality probe (each cell responds to its own image region)"
        return [], (
            f"the locality probe contradicts {'it' if len(readings) == 1 else 'each'}: "
            "perturbing an image region does not change most the cell the reading puts there "
            "(tokens reordered, prefix tokens miscounted, or a layer that mixes all positions)"
        )

    def _stated(self, reading: Reading) -> bool:
        facts = self.facts
        if isinstance(reading.layout, RerollLayout):
            return True
        return (
            isinstance(reading.layout, TokenLayout)
            and facts.prefix_tokens is not None
            and (facts.patch_size is not None or facts.grid is not None)
        )

    def _probe(self, reading: Reading, tensor: Tensor, input_shape: Sequence[int]) -> bool:
        layout = reading.layout
        forward_func, layer = self._source
        assert layer is not None

        def to_cells(change: Tensor) -> Tensor:
            cells = layout(change).norm(dim=1).flatten(1)
            if isinstance(layout, TokenLayout) and layout.prefix_tokens:
                return torch.cat([change[:, : layout.prefix_tokens].norm(dim=-1), cells], dim=1)
            return cells

        grid = layout.grid if isinstance(layout, TokenLayout) else None
        if grid is None:
            grid = tuple(
                tensor.shape[2:] if isinstance(layout, ChannelsFirstLayout) else tensor.shape[1:3]
            )
        (h, w) = (int(grid[0]), int(grid[1]))
        return confirms(
            forward_func,
            layer,
            input_shape,
            tensor.shape,
            (h, w),
            to_cells,
            reading.selector,
            tensor,
        )


def _reads_as_is(tensor: Tensor, input_shape: Sequence[int]) -> bool:
    """Tensors that no policy rearranges: of 1-D models, ``(N, C)``, of inputs not images."""
    return image_size(input_shape) is None or tensor.dim() not in (3, 4)


def _per_position(tensor: Tensor, input_shape: Sequence[int]) -> Tensor:
    """``(N, T, D)`` of a sequence input ``(N, T)`` (token ids of a text model) to ``(N, D, T)``:
    one map value per input position. The input's length confirms the reading."""
    if tensor.shape[1] != input_shape[1]:
        raise ValueError(
            f"the layer tensor {tuple(tensor.shape)} of the sequence input "
            f"{tuple(input_shape)} has {tensor.shape[1]} positions, not the input's "
            f"{input_shape[1]}, so no position of the input is confirmed for each: pick a layer "
            "with one row per input position (an embedding, an encoder layer), or pass "
            "layout='channels_first' to read it as Captum does (a map over the last dimension)"
        )
    return tensor.movedim(2, 1)


class _ModelPolicy(Layout, abc.ABC):
    """A layout decided per tensor from a :class:`ModelInference` of its model and layer."""

    def __init__(self, forward_func: Any = None, layer: Module | None = None) -> None:
        self.inference = ModelInference(forward_func, layer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def facts(self) -> ModelFacts:
        """The model's :class:`ModelFacts` at the layer (read once)."""
        return self.inference.facts


class AutoLayout(_ModelPolicy):
    """The one reading of the tensor for its input, confirmed by the model (``layout="auto"``).

    See :mod:`captum_camplus.layouts`. Tensors of 1-D models, ``(N, C)`` tensors and inputs that
    are not images are taken as they are. Called without the input (``map_from_layer``), the
    model's attributes alone decide: tokens with their prefix count and fixed grid, channels last
    where the model says so, channels first otherwise. An ``(N, T, D)`` tensor of a sequence
    input ``(N, T)`` (a text model's token ids) gives one map value per position, ``(N, 1, T)``.
    """

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        if input_shape is None:
            chosen = self.inference.layout_from_facts(tensor)
            return tensor if chosen is None else chosen(tensor)
        check_batch(tensor, input_shape)
        if len(input_shape) == 2 and tensor.dim() == 3:
            return _per_position(tensor, input_shape)
        if _reads_as_is(tensor, input_shape):
            return tensor
        if tensor.dim() == 4 and self.facts.channels_last is not None:  # the modules say it
            chosen = ChannelsLastLayout() if self.facts.channels_last else ChannelsFirstLayout()
            return chosen(tensor, input_shape)
        readings = self.inference.readings(tensor, input_shape)
        confirmed, how = self.inference.confirmed(tensor, input_shape, readings)
        if len(confirmed) == 1:
            return confirmed[0].layout(tensor, input_shape)
        raise ValueError(
            self._listing(tensor, input_shape, confirmed or readings, how, bool(confirmed))
        )

    def _listing(
        self,
        tensor: Tensor,
        input_shape: Sequence[int],
        readings: list[Reading],
        how: str,
        confirmed: bool,
    ) -> str:
        """The error text for several confirmed readings, unconfirmed ones, or none."""
        head = f"the layer tensor {tuple(tensor.shape)} of the {size_text(input_shape)} input"
        if len(readings) > 1 and confirmed:
            return (
                f"{head} can be read {len(readings)} ways: {listed(readings)}, each confirmed by "
                f"{how}. Pass the one that is right"
            )
        if readings:
            return (
                f"{head} can be read as {listed(readings)}, but {how}. Pass the layout that is "
                "right (from the model's code: where its tokens come from, how many are prefix "
                "tokens, in what order), or pick a layer whose layout the model states"
            )
        unconfirmed = shape_readings(tensor.shape, input_shape)
        if unconfirmed:
            return (
                f"{head} can be read as "
                + "; ".join(f"{r.description} ({r.selector})" for r in unconfirmed)
                + f", which the model's attributes ({self.facts.source}) contradict. Pass the "
                "layout that is right"
            )
        return (
            f"{head} has no reading: not (N, C, h, w) nor (N, h, w, C) with an h x w grid of the "
            f"input's aspect, nor tokens (N, P + gh * gw, D) with 0 <= P <= {MAX_PREFIX_TOKENS} "
            "and gh x gw the input divided by a patch size. Pass layout='channels_first', "
            "'channels_last', TokenLayout(prefix_tokens, grid) or a callable that returns "
            "(N, C, *grid)"
        )


class DefaultLayout(_ModelPolicy):
    """Channels first (Captum's reading), refusing a tensor that contradicts it.

    Built by :func:`resolve_layout` when no layout is named. For a 4-D image input, a 3-D layer
    tensor (transformer tokens) and a 4-D one that only reads as channels last, or that the
    model's attributes say is channels last, raise an error naming the layout to pass. A 4-D
    tensor with no reading at all (a convolution without padding at an odd aspect) is taken as
    it is, as Captum does; so are other inputs (1-D models).
    """

    def __call__(self, tensor: Tensor, input_shape: InputShape = None) -> Tensor:
        if input_shape is None:
            chosen = self.inference.layout_from_facts(tensor)
            if chosen is not None:
                raise ValueError(self._refusal(tensor, chosen))
            return tensor
        check_batch(tensor, input_shape)
        if _reads_as_is(tensor, input_shape):
            return tensor
        readings = self.inference.readings(tensor, input_shape)
        if tensor.dim() == 4:
            if self.facts.channels_last is False or any(
                isinstance(r.layout, ChannelsFirstLayout) for r in readings
            ):
                return tensor
            if not readings and self.facts.channels_last is None:
                if not partitioned(tensor.shape, *image_size(input_shape) or (0, 0)):
                    return tensor
                raise ValueError(self._partitioned(tensor, input_shape))
            return_to = readings[0].layout if readings else ChannelsLastLayout()
            raise ValueError(self._refusal(tensor, return_to, input_shape))
        confirmed, how = self.inference.confirmed(tensor, input_shape, readings)
        chosen = confirmed[0].layout if len(confirmed) == 1 else None
        raise ValueError(self._refusal(tensor, chosen, input_shape, readings, how))

    @staticmethod
    def _partitioned(tensor: Tensor, input_shape: Sequence[int]) -> str:
        return (
            f"the layer tensor {tuple(tensor.shape)} of the {size_text(input_shape)} input is not "
            f"(N, C, H, W) with an image grid: its last two sizes {tuple(tensor.shape[2:])} do "
            "not follow the image's aspect and its middle two tile it, as in a partitioned "
            "(N, windows, tokens, C) tensor of window or grid attention; pick the block's norm1 "
            "(before the partition), or pass layout='channels_first' if it really is "
            "(N, C, H, W), or a callable that returns (N, C, H, W)"
        )

    def _refusal(
        self,
        tensor: Tensor,
        chosen: Layout | None,
        input_shape: InputShape = None,
        readings: Sequence[Reading] = (),
        how: str = "",
    ) -> str:
        shape = tuple(tensor.shape)
        of = "" if input_shape is None else f" of the {size_text(input_shape)} input"
        tail = ", or layout='channels_first' if it really is (N, C, *spatial)"
        if isinstance(chosen, ChannelsLastLayout):
            because = f" (the model's {self.facts.source})" if self.facts.source else ""
            return (
                f"the layer tensor {shape}{of} looks like channels last (N, H, W, C){because}: "
                f"pass layout='channels_last' (or 'auto'){tail}"
            )
        if isinstance(chosen, RerollLayout):
            return (
                f"the layer tensor {shape}{of} is Hiera tokens in mask-unit order, not row by row "
                f"({chosen.reroll.source}): pass layout='auto', which re-rolls them as the model "
                "does; no TokenLayout reads them"
            )
        if isinstance(chosen, TokenLayout):
            return (
                f"the layer tensor {shape}{of} looks like transformer tokens (N, tokens, D), "
                f"{chosen.prefix_tokens} prefix + grid {chosen.grid or 'from the input'}: pass "
                f"layout='auto' (or {selector(chosen)}){tail}"
            )
        listing = listed(readings)
        return (
            f"the layer tensor {shape}{of} is 3-D, not (N, C, H, W): "
            + (f"it reads as {listing}, but {how}" if listing else "no token grid fits it either")
            + f"; pass the layout that is right{tail}"
        )


def resolve_layout(
    layout: LayoutSpec, forward_func: Any = None, layer: Module | None = None
) -> Layout:
    """The :class:`Layout` for a ``layout=`` argument.

    Args:
        layout: ``None`` (channels first, with the checks of :class:`DefaultLayout`),
            ``"channels_first"``, ``"channels_last"``, ``"tokens"`` (:meth:`TokenLayout.from_model`
            of ``forward_func``), ``"auto"`` (:class:`AutoLayout`), a :class:`Layout`, or a
            callable (:class:`FunctionLayout`).
        forward_func, layer: The attribution's model and layer, read by ``"tokens"``, ``"auto"``
            and ``None``.
    """
    if isinstance(layout, TokenLayout) and forward_func is not None:
        layout.check_order(forward_func, layer)
    if isinstance(layout, Layout):
        return layout
    if isinstance(layout, str):
        if layout == "channels_first":
            return ChannelsFirstLayout()
        if layout == "channels_last":
            return ChannelsLastLayout()
        if layout == "tokens":
            return TokenLayout.from_model(forward_func, layer)
        if layout == "auto":
            return AutoLayout(forward_func, layer)
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUT_NAMES}")
    if layout is None:
        return DefaultLayout(forward_func, layer)
    if callable(layout):
        return FunctionLayout(layout)
    raise TypeError(
        f"layout must be None, a name from {LAYOUT_NAMES}, a Layout or a callable, "
        f"got {type(layout).__name__}"
    )


__all__ = ["LAYOUT_NAMES", "AutoLayout", "DefaultLayout", "ModelInference", "resolve_layout"]
