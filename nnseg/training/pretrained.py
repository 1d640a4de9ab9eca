"""Fine-tuning: start a network from another dataset's checkpoint (``nnseg train --pretrained CKPT``).

:func:`transfer_weights` fills a freshly built network from a checkpoint, tensor by tensor, and says what it did
(:class:`TransferReport`, printed as a short table and logged with the checkpoint's SHA-256):

- **copied**: encoder and decoder tensors of the same name and shape.
- **adapted**: the input layers (the first convolution, and any other layer reading the image) when the number
  of channels differs. More channels: the source's per-channel kernels are repeated cyclically and scaled by
  the number of copies of each source channel (1 -> 2: each channel gets half the kernel; 2 -> 5: copies of
  channel 0 a third, of channel 1 a half), so the same image fed to every channel gives the response the source
  gave. Fewer channels: every new channel gets the sum of the source's
  channel kernels divided by the new channel count (the mean, rescaled by the same rule), with the same
  property. Channels that would start as identical copies then get the new layer's own fresh kernels minus
  their mean over the copies: the sum (the source's response) is unchanged, but the network sees the contrast
  between the channels from the first step. With plain copies it sees only their sum, and a structure told
  apart by that contrast (a cyst dark in T1 and bright in T2) is found late: ``benchmarks/finetune.py
  --ablation``, 50 iterations, new class Dice 0.81 with fresh kernels, 0.20 with plain copies (scratch 0.79).
- **heads**: the segmentation heads (``segmentation_heads()``). Equal label names: copied. Different classes:
  re-initialised, except the rows (weights and bias) of the classes whose *label name* exists in both plans
  (background, and e.g. ``organ`` when both datasets label an organ), which are copied to their new position.
  Other class-dependent layers (FCN's score layers) are re-initialised when the class count differs. The
  recipe's head-bias prior (``small_budget``), when on, then sets every head bias from the new dataset.
- **refused**: anything else (another architecture, other stages, features or kernels): a
  :class:`~nnseg.checkpoint.CheckpointError` naming the checkpoint and the fix (``nnseg plan --transfer-plan``),
  never a partial load.

nnU-Net's ``load_pretrained_weights`` copies every tensor but the segmentation layers and requires all others to
match; it has no channel adaptation and no report.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnseg.checkpoint import Checkpoint, CheckpointError
from nnseg.planning.plan import Plan

#: How the input layers are adapted to another channel count (named in the report and the table).
REPEAT_RULE = "cyclic repeat, each copy / {copies}"
AVERAGE_RULE = "channel sum / {new}"
#: appended when channels start as copies of one kernel (more than one new channel), which fresh kernels tell apart
FRESH_RULE = ", + zero-sum fresh kernels"


@dataclass(frozen=True)
class TransferReport:
    """What :func:`transfer_weights` did, by group of tensors (shared tensors counted once).

    Attributes:
        source: the checkpoint file (or ``<in-memory checkpoint>``).
        sha256: SHA-256 of the checkpoint file (of its weights for an in-memory checkpoint).
        architecture: the network's architecture name.
        source_dataset: the dataset the checkpoint was trained on.
        copied_tensors / copied_params: encoder and decoder tensors copied unchanged, and their element count.
        input_layers: names of the adapted input layers (empty when the channel counts are equal).
        channels: (source, new) input channel counts.
        input_rule: the adaptation rule, "" when nothing was adapted.
        classes: (source, new) output class counts.
        head_status: "copied", "re-initialised" or "partly copied".
        kept_classes: label names whose head rows were copied.
        new_classes: label names whose head rows start fresh.
        reinitialised_tensors: head and class-dependent tensors left at their fresh initialisation (fully or in
            part).
        unused_source_tensors: source tensors with no place in the new network (its deep-supervision heads when
            the new run trains without deep supervision).
    """

    source: str
    sha256: str
    architecture: str
    source_dataset: str
    copied_tensors: int
    copied_params: int
    input_layers: tuple[str, ...]
    channels: tuple[int, int]
    input_rule: str
    classes: tuple[int, int]
    head_status: str
    kept_classes: tuple[str, ...] = ()
    new_classes: tuple[str, ...] = ()
    reinitialised_tensors: int = 0
    unused_source_tensors: int = 0

    def table(self) -> str:
        """A few lines: one per group of tensors, not one per tensor."""
        src_in, new_in = self.channels
        src_classes, new_classes = self.classes
        if self.input_layers:
            first = (
                f"adapted {src_in} -> {new_in} channels ({self.input_rule}; {len(self.input_layers)} layer(s): "
                f"{', '.join(self.input_layers[:2])}{', ...' if len(self.input_layers) > 2 else ''})"
            )
        else:
            first = f"copied ({new_in} channel(s) in both)"
        heads = {
            "copied": f"copied ({new_classes} classes, same labels)",
            "re-initialised": f"re-initialised ({src_classes} -> {new_classes} classes)",
        }.get(
            self.head_status,
            f"{src_classes} -> {new_classes} classes: rows of {', '.join(self.kept_classes)} copied (same label "
            f"names), {', '.join(self.new_classes) or 'none'} re-initialised",
        )
        rows = [
            ("source", f"{self.source} ({self.source_dataset}, {self.architecture})"),
            ("sha256", self.sha256),
            (
                "encoder/decoder",
                f"{self.copied_tensors} tensors, {self.copied_params / 1e6:.2f} M params copied",
            ),
            ("first conv", first),
            (
                "heads",
                heads
                + (f"; {self.reinitialised_tensors} tensor(s) not copied whole" if self.reinitialised_tensors else ""),
            ),
        ]
        if self.unused_source_tensors:
            rows.append(("unused", f"{self.unused_source_tensors} source tensor(s) (heads this network lacks)"))
        width = max(len(name) for name, _ in rows)
        return "pretrained weights:\n" + "\n".join(f"  {name:<{width}}  {text}" for name, text in rows)

    def as_params(self) -> dict[str, Any]:
        """What the MLflow run records (``pretrained.*`` parameters)."""
        return {
            "checkpoint": self.source,
            "sha256": self.sha256,
            "source_dataset": self.source_dataset,
            "copied_tensors": self.copied_tensors,
            "copied_params": self.copied_params,
            "input_adaptation": f"{self.channels[0]} -> {self.channels[1]}: {self.input_rule or 'none'}",
            "heads": f"{self.classes[0]} -> {self.classes[1]}: {self.head_status}",
            "kept_classes": list(self.kept_classes),
        }


@dataclass
class _Tally:
    copied: set[int] = field(default_factory=set)
    copied_params: int = 0
    adapted: list[str] = field(default_factory=list)
    adapted_ids: set[int] = field(default_factory=set)
    reinitialised: set[int] = field(default_factory=set)
    fresh_heads: set[int] = field(default_factory=set)


def transfer_weights(
    network: nn.Module,
    source: Checkpoint | str | os.PathLike,
    *,
    in_channels: int,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> TransferReport:
    """Initialise ``network`` (freshly built for ``in_channels`` and ``num_classes``) from ``source``.

    Args:
        network: the new network (not wrapped in DDP or ``torch.compile``); its tensors keep their device.
        source: a checkpoint or its file (loaded with :meth:`Checkpoint.load`: weights only).
        in_channels: the new network's input channels.
        num_classes: its output classes.
        class_names: label names in output order; when given, head rows of classes named in both plans are
            kept (otherwise heads are copied only when their shapes match).

    Raises:
        CheckpointError: the file cannot be read, or its network does not fit this one (another architecture or
            topology); the message names the file and the fix.
    """
    if isinstance(source, Checkpoint):
        checkpoint, where, digest = source, "<in-memory checkpoint>", _state_digest(source.network_state)
    else:
        from nnseg.digest import file_sha256

        checkpoint, where = Checkpoint.load(source), str(source)
        digest = file_sha256(source)
    source_plan = checkpoint.plan
    src_in, src_classes = len(source_plan.channel_names), source_plan.num_classes
    fix = (
        f"plan this dataset with the source's network: `nnseg plan DATASET --transfer-plan <work folder of "
        f"{source_plan.dataset_name}>`, then preprocess and train with --pretrained again"
    )
    source_net = _build_on_meta(checkpoint, src_in, src_classes, where)
    if type(source_net) is not type(network):
        raise CheckpointError(
            f"{where}: holds a {checkpoint.architecture.architecture} ({type(source_net).__name__}), this plan "
            f"builds a {type(network).__name__}; {fix}"
        )
    src_state = checkpoint.network_state
    src_heads = _head_keys(source_net)
    if set(source_net.state_dict()) != set(src_state):
        raise CheckpointError(f"{where}: damaged checkpoint (its weights do not fit its own plan's network)")
    new_vars = network.state_dict(keep_vars=True)
    new_heads = _head_keys(network)
    names_src = _class_names(source_plan)
    names_new = list(class_names) if class_names is not None else None
    same_labels = (names_new == names_src) if names_new is not None else src_classes == num_classes

    def refuse(detail: str) -> CheckpointError:
        return CheckpointError(f"{where}: its network does not fit the one planned here ({detail}); {fix}")

    extra = sorted(set(src_state) - set(new_vars) - src_heads)
    if extra:
        raise refuse(f"the new network has no {extra[0]} ({len(extra)} tensor(s) unmatched)")
    state: dict[str, torch.Tensor] = {}
    tally = _Tally()
    kept: list[str] = []
    for key, tensor in new_vars.items():
        new_shape = tuple(tensor.shape)
        if key not in src_state:
            if key in new_heads:  # e.g. a deep-supervision head the source never had
                tally.reinitialised.add(id(tensor))
                continue
            raise refuse(f"the checkpoint has no {key}")
        old = src_state[key]
        old_shape = tuple(old.shape)
        if key in new_heads:
            if old_shape == new_shape and same_labels:
                state[key] = old
                continue
            kept = _copy_head_rows(key, old, tensor, names_src, names_new, state, refuse)
            tally.reinitialised.add(id(tensor))
            tally.fresh_heads.add(id(tensor))
            continue
        if old_shape == new_shape:
            state[key] = old
            if id(tensor) not in tally.copied:
                tally.copied.add(id(tensor))
                tally.copied_params += tensor.numel()
        elif _differs_only(old_shape, new_shape, {1: (src_in, in_channels)}):
            state[key] = adapt_input_channels(old, in_channels, fresh=tensor.detach())
            if id(tensor) not in tally.adapted_ids:  # a shared module appears under several names
                tally.adapted_ids.add(id(tensor))
                tally.adapted.append(key)
        elif _class_dependent(old_shape, new_shape, src_classes, num_classes):
            tally.reinitialised.add(id(tensor))  # keeps its fresh initialisation
        else:
            raise refuse(f"{key}: checkpoint {list(old_shape)}, network {list(new_shape)}")
    with torch.no_grad():
        for key, value in state.items():
            new_vars[key].copy_(value.to(device=new_vars[key].device, dtype=new_vars[key].dtype))
    adapted = tuple(dict.fromkeys(k.rsplit(".", 1)[0] for k in tally.adapted))
    rule = ""
    if adapted:
        rule = (
            REPEAT_RULE.format(copies=_copies(src_in, in_channels))
            if in_channels > src_in
            else AVERAGE_RULE.format(new=in_channels)
        ) + (FRESH_RULE if in_channels > 1 else "")
    head_status = "copied" if not tally.fresh_heads else "partly copied" if kept else "re-initialised"
    return TransferReport(
        source=where,
        sha256=digest,
        architecture=checkpoint.architecture.architecture,
        source_dataset=source_plan.dataset_name,
        copied_tensors=len(tally.copied),
        copied_params=tally.copied_params,
        input_layers=adapted,
        channels=(src_in, in_channels),
        input_rule=rule,
        classes=(src_classes, num_classes),
        head_status=head_status,
        kept_classes=tuple(kept),
        new_classes=tuple(n for n in (names_new or []) if n not in kept) if head_status == "partly copied" else (),
        reinitialised_tensors=len(tally.reinitialised),
        unused_source_tensors=len(set(src_state) - set(new_vars)),
    )


def adapt_input_channels(weight: torch.Tensor, channels: int, fresh: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` (out, source channels, ...) for ``channels`` input channels (see the module docstring).

    The summed response to one image fed to every channel is unchanged: more channels repeat the source's kernels
    cyclically, each copy divided by the number of copies of its source channel (``new / source`` when that
    divides); fewer give every channel the sum of the source's kernels / ``new``. ``fresh`` (the new layer's own
    initialisation, ``(out, channels, ...)``): within each group of channels that start as copies of the same
    kernel, its deviation from the group's mean is added, so that those channels differ from the first step (the
    network sees their contrast, e.g. T1 against T2) while the summed response stays the source's.
    """
    source = weight.shape[1]
    if channels >= source:
        group = torch.arange(channels, device=weight.device) % source
        copies = torch.bincount(group, minlength=source).to(weight.dtype)
        shape = (1, channels) + (1,) * (weight.ndim - 2)
        adapted = weight[:, group] / copies[group].reshape(shape)
    else:
        group = torch.zeros(channels, dtype=torch.long, device=weight.device)
        adapted = (weight.sum(dim=1, keepdim=True) / channels).expand(-1, channels, *weight.shape[2:]).clone()
    if fresh is not None:
        if tuple(fresh.shape) != tuple(adapted.shape):
            raise ValueError(f"fresh kernels of shape {tuple(fresh.shape)} for an adapted {tuple(adapted.shape)}")
        fresh = fresh.to(adapted)
        for members in (torch.nonzero(group == g).flatten() for g in group.unique()):
            part = fresh[:, members]
            adapted[:, members] += part - part.mean(dim=1, keepdim=True)
    return adapted


def start_from_pretrained(
    network: nn.Module,
    checkpoint: str | None,
    plan: Plan,
    configuration: str,
    *,
    resuming: bool,
    show: bool,
) -> TransferReport | None:
    """The trainer's hook: transfer ``checkpoint`` into a new run's network and print the table.

    Nothing happens without ``--pretrained`` or when the run resumes (its own checkpoint holds the trained weights).
    """
    if checkpoint is None:
        return None
    if resuming:
        if show:
            print(f"resuming: --pretrained {checkpoint} is not applied again (the run's checkpoint holds its weights)")
        return None
    report = transfer_weights(
        network,
        Path(checkpoint),
        in_channels=plan.input_channels(configuration),
        num_classes=plan.num_classes,
        class_names=_class_names(plan),
    )
    if show:
        print(report.table())
    return report


# ---------------------------------------------------------------------------------------------- helpers


def _class_names(plan: Plan) -> list[str]:
    """The name of each network output, in order."""
    return list(plan.scheme.output_names)


def _copies(source: int, channels: int) -> str:
    """How many copies each source channel gets: "2", or "2 or 3" when ``source`` does not divide ``channels``."""
    low, extra = divmod(channels, source)
    return str(low) if not extra else f"{low} or {low + 1}"


def _build_on_meta(checkpoint: Checkpoint, in_channels: int, num_classes: int, where: str) -> nn.Module:
    """The checkpoint's network without memory (only its structure: tensor names, shapes and heads)."""
    from nnseg.networks.registry import build_network

    try:
        with torch.device("meta"):
            return build_network(
                checkpoint.architecture, in_channels, num_classes, deep_supervision=checkpoint.deep_supervision
            )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{where}: this nnseg cannot build the checkpoint's network ({exc})") from None


def _head_keys(network: nn.Module) -> set[str]:
    """State-dict names of the segmentation heads' tensors (by identity: a shared module has several names)."""
    from nnseg.networks.registry import segmentation_heads

    ids = {id(t) for head in segmentation_heads(network) for t in (*head.parameters(), *head.buffers())}
    return {key for key, value in network.state_dict(keep_vars=True).items() if id(value) in ids}


def _differs_only(old: tuple[int, ...], new: tuple[int, ...], allowed: dict[int, tuple[int, int]]) -> bool:
    """Same rank; every differing axis is in ``allowed`` with exactly the (old, new) sizes given there."""
    if len(old) != len(new) or old == new:
        return False
    return all(a == b or allowed.get(axis) == (a, b) for axis, (a, b) in enumerate(zip(old, new)))


def _class_dependent(old: tuple[int, ...], new: tuple[int, ...], src_classes: int, classes: int) -> bool:
    """Shapes that differ only where the source had its class count and the network has its own."""
    if src_classes == classes or len(old) != len(new):
        return False
    return all(a == b or (a, b) == (src_classes, classes) for a, b in zip(old, new))


def _copy_head_rows(
    key: str,
    old: torch.Tensor,
    tensor: torch.Tensor,
    names_src: list[str],
    names_new: list[str] | None,
    state: dict[str, torch.Tensor],
    refuse: Any,
) -> list[str]:
    """Copy the rows of the classes named in both plans into ``state[key]``; returns their names."""
    if old.shape[1:] != tensor.shape[1:]:
        raise refuse(f"{key}: checkpoint {list(old.shape)}, network {list(tensor.shape)}")
    if names_new is None or len(names_src) != old.shape[0] or len(names_new) != tensor.shape[0]:
        return []
    common = [name for name in names_new if name in names_src]
    if not common:
        return []
    merged = tensor.detach().clone()
    for name in common:
        merged[names_new.index(name)] = old[names_src.index(name)].to(merged)
    state[key] = merged
    return common


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names and bytes of a state dict (sorted), for a checkpoint that has no file."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
