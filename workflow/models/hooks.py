"""Forward hooks: one helper that registers them and always removes them.

`Hooks` registers a list of (module, kind, fn) on entry and removes every one on
exit, however the block ends; every capture, patch and splice of the study is a
`Hooks`. Kinds: ``forward`` (fn(module, args, output); a return value replaces
the output), ``pre`` (fn(module, args); a return value replaces the args) and
``pre_kwargs`` (fn(module, args, kwargs); returns (args, kwargs) or None).

Two of them read and write sites (`workflow.models.sites`):

- `Capture` stores the wanted (site, layer) activations of one call and, with
  ``stop=True``, cuts the forward after the deepest block it needs (`StopForward`);
- `Splice` replaces one (site, layer) activation by ``fn(activation)``: an SAE
  reconstruction, zeros, anything of the same shape.

Activations are read with hooks, not ``output_hidden_states``: that keeps every
layer in memory, and GPT-2's last hidden state has the final LayerNorm applied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from workflow.models.families import Blocks, locate
from workflow.models.sites import hook_name

KINDS = ("forward", "pre", "pre_kwargs")


def _register(module, kind: str, fn):
    if kind == "forward":
        return module.register_forward_hook(fn)
    if kind == "pre":
        return module.register_forward_pre_hook(fn)
    if kind == "pre_kwargs":
        return module.register_forward_pre_hook(fn, with_kwargs=True)
    raise ValueError(f"hook kind {kind!r}; known: {', '.join(KINDS)}")


class Hooks(contextlib.AbstractContextManager):
    """Hooks registered on entry and removed on exit; subclasses list theirs in `hooks()`."""

    def __init__(self, specs=()):
        self.specs = list(specs)
        self._handles: list = []

    def hooks(self) -> list[tuple]:
        """(module, kind, fn) of every hook, in registration order."""
        return self.specs

    def __enter__(self):
        try:
            for module, kind, fn in self.hooks():
                self._handles.append(_register(module, kind, fn))
        except BaseException:
            self._remove()
            raise
        return self

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc):
        self._remove()
        return False


def block_input(args, kwargs):
    """The hidden states a block was called with."""
    return args[0] if args else kwargs["hidden_states"]


def with_block_input(args, kwargs, hidden):
    """(args, kwargs) of a block call with its hidden states replaced."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def first(output):
    return output[0] if isinstance(output, tuple) else output


def site_hook(where: Blocks, site: str, layer: int, on_output: Callable, on_block_input: Callable) -> tuple:
    """(module, kind, fn) that reads or writes (site, layer): `on_output(module, args, output)`, or for
    layer 0 of a model whose embedding output is only seen as block 1's input, `on_block_input(module,
    args, kwargs)`."""
    hook_name(site, layer)  # validates the pair
    if layer > len(where.blocks):
        raise ValueError(f"layer {layer} is beyond the model's {len(where.blocks)} blocks")
    if layer == 0 and where.embed_is_block_input:
        return where.embed_out, "pre_kwargs", on_block_input
    if layer == 0:
        return where.embed_out, "forward", on_output
    if site == "resid_post":
        return where.blocks[layer - 1], "forward", on_output
    module = (where.attn_out if site == "attn_out" else where.mlp_out)[layer - 1]
    return module, "forward", on_output


class StopForward(Exception):  # noqa: N818 (control flow, not an error)
    """Raised from a hook once every wanted activation is captured."""


def _stop(module, args, output):
    raise StopForward


class Capture(Hooks):
    """Forward hooks that store the wanted (site, layer) activations of one call.

    ``captured[(site, layer)]`` is a (batch, seq, d_model) tensor after the
    forward; with ``stop=True`` the forward is cut after the deepest block
    needed (call through `run`, which swallows `StopForward`).
    """

    def __init__(self, base_model, wanted: list[tuple[str, int]], stop: bool = True):
        super().__init__()
        self.model, self.wanted, self.stop = base_model, list(wanted), stop
        self.where = locate(base_model)
        self.deepest = max(layer for _, layer in self.wanted)
        self.captured: dict[tuple[str, int], object] = {}
        self.specs = [self._hook(site, layer) for site, layer in self.wanted]  # validates every pair
        if stop and ("resid_post", self.deepest) not in self.wanted:
            # the deepest wanted site is an inner sublayer: stop once its block ends
            self.specs.append((self.where.blocks[max(self.deepest, 1) - 1], "forward", _stop))

    def _save(self, key, tensor, stop_here: bool):
        self.captured[key] = tensor.detach()
        if stop_here and self.stop:
            raise StopForward

    def _hook(self, site: str, layer: int) -> tuple:
        key, stop_here = (site, layer), layer == self.deepest and site == "resid_post"

        def on_output(module, args, output):
            self._save(key, first(output), stop_here)

        def on_block_input(module, args, kwargs):
            self._save(key, block_input(args, kwargs), stop_here)

        return site_hook(self.where, site, layer, on_output, on_block_input)

    def run(self, **inputs) -> dict:
        """Run the model on `inputs`, returning the captured activations."""
        self.captured = {}
        with contextlib.suppress(StopForward):
            self.model(**inputs)
        missing = [k for k in self.wanted if k not in self.captured]
        if missing:
            raise RuntimeError(f"hooks did not fire for {missing}")
        return self.captured


class Splice(Hooks):
    """Return ``fn(activation)`` in place of the (site, layer) activation: where `Capture` reads."""

    def __init__(self, base_model, site: str, layer: int, fn: Callable):
        super().__init__()
        self.fn = fn

        def on_output(module, args, output):
            if isinstance(output, tuple):
                return (self.fn(output[0]), *output[1:])
            return self.fn(output)

        def on_block_input(module, args, kwargs):
            return with_block_input(args, kwargs, self.fn(block_input(args, kwargs)))

        self.specs = [site_hook(locate(base_model), site, layer, on_output, on_block_input)]
