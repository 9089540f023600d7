"""Where each Parameter goes in a train step: one slot per Parameter (tied weights share one),
with its optimizer group, the rule's structural flags, and the positions of its numeric
hyper-parameters in the step's packed hyper vector."""

from __future__ import annotations

from dataclasses import dataclass

from runtime import Parameter
from runtime.optim import Optimizer


@dataclass
class Slot:
    """One parameter in the step: its optimizer group, static flags, and hyper positions."""

    name: str
    param: Parameter
    group: dict
    flags: dict[str, bool]
    hyper_index: dict[str, int]  # option name -> position in the packed hyper vector
    frozen: bool  # requires_grad is False: no gradient, so the optimizer leaves it alone

    def traced_as(self) -> tuple:
        """What the step's trace depends on for this parameter."""
        return self.param, id(self.group), tuple(self.flags.items()), self.frozen


def structural_flags(options: dict) -> dict[str, bool]:
    """The rule options that change what is traced (nesterov, amsgrad, ...): the booleans."""
    return {n: v for n, v in options.items() if isinstance(v, bool)}


def plan_slots(names: list[str], leaves: list, optimizer: Optimizer
               ) -> tuple[list[Slot], list[int]]:
    """A slot per Parameter (one for a Parameter the tree holds twice: tied weights get
    the sum of their gradients and one update), and each leaf's slot."""
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    options_of: dict[int, dict] = {}  # rule_options per group, asked once
    slots: list[Slot] = []
    slot_of: dict[int, int] = {}
    leaf_slots, k = [], 0
    for name, leaf in zip(names, leaves):
        if not isinstance(leaf, Parameter) or id(leaf) not in groups:
            frozen = isinstance(leaf, Parameter) and not leaf.requires_grad
            raise TypeError(
                "train_step needs every leaf of params to be a Parameter that the optimizer "
                f"updates; '{name}' is not" + (
                    " (a frozen Parameter left out of the optimizer, as PyTorch code does: "
                    "give it to the optimizer too, which leaves it alone while its "
                    "requires_grad is False)" if frozen else ""))
        if leaf._hooks:
            raise RuntimeError(
                f"train_step cannot run the hooks registered on '{name}' (its kernel runs "
                "no Python): remove them, or train with loss.backward(); opt.step()")
        if id(leaf) not in slot_of:
            group = groups[id(leaf)]
            options = options_of.get(id(group))
            if options is None:
                options = options_of[id(group)] = optimizer.rule_options(group)
            flags = structural_flags(options)
            numeric = [n for n, v in options.items() if not isinstance(v, bool)]
            slot_of[id(leaf)] = len(slots)
            slots.append(Slot(name, leaf, group, flags,
                              {n: k + i for i, n in enumerate(numeric)},
                              frozen=not leaf.requires_grad))
            k += len(numeric)
        leaf_slots.append(slot_of[id(leaf)])
    return slots, leaf_slots
