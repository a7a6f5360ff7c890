"""Memory as the cache really holds it, not as a formula says it should be.

``cache_bytes`` walks the tensors every cache layer holds (keys, values and whatever else a
compressed layer keeps: masks, indices, statistics) and adds up the bytes of their storages,
each storage once. A view into a larger buffer counts the whole buffer, because that is what
stays allocated.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from transformers import Cache


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, field.name))
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors ``obj`` holds (a tensor, or a dataclass, list, tuple or dict of
    them), counted by their elements: what storing ``obj`` costs, views aside."""
    return sum(tensor.numel() * tensor.element_size() for tensor in _tensors(obj))


def layer_tensors(layer: Any) -> Iterator[torch.Tensor]:
    """Every tensor a cache layer holds as an attribute (directly, or in a list, tuple, dict or
    dataclass such as the channel-sparse cache's packed keys)."""
    for value in vars(layer).values():
        yield from _tensors(value)


def cache_bytes(cache: Cache) -> int:
    """Bytes of every storage the cache's layers hold, all layers, each storage counted once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for layer in cache.layers:
        for tensor in layer_tensors(layer):
            storage = tensor.untyped_storage()
            key = (str(tensor.device), storage.data_ptr())
            if storage.nbytes() == 0 or key in seen:
                continue
            seen.add(key)
            total += storage.nbytes()
    return total


def dense_cache_bytes(cache: Cache, num_tokens: int) -> int:
    """Bytes an uncompressed cache of ``num_tokens`` tokens takes with this cache's layer shapes
    and dtypes: keys and values of shape [batch, kv_heads, num_tokens, head_dim] per layer."""
    total = 0
    for layer in cache.layers:
        if hasattr(layer, "dense_shapes"):  # a channel-sparse layer: do not rebuild it to ask
            shapes = layer.dense_shapes()
        else:
            shapes = (layer.keys.shape, layer.values.shape)
        element = torch.empty((), dtype=layer.dtype).element_size()
        for batch, heads, _, head_dim in shapes:
            total += batch * heads * num_tokens * head_dim * element
    return total


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def reset_peak_gpu() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gpu_bytes() -> int | None:
    """Peak CUDA memory allocated since the last reset, over all GPUs; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return int(sum(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())))


_MEASURED = "spark_bench.memory.measured"  # profiler range around the measured call


def peak_tensor_bytes(
    setup: Callable[[], Any], measured: Callable[[], Any], device: torch.device
) -> tuple[int, int] | None:
    """Runs ``setup`` then ``measured`` and returns the tensor bytes on ``device`` that were
    allocated since ``setup`` began and still held when ``measured`` began, and the most held at
    any moment while it ran (both counted from the start of ``setup``: what was allocated before
    is not counted, so let ``setup`` build what ``measured`` uses, a cache for instance).

    On CUDA, the allocator's own counters. On a CPU, which keeps no peak, the profiler's
    allocation and free events are replayed in order, each free matched to an allocation of this
    session by its address (a free of a block allocated before is ignored: the profiler may or
    may not report it), hence ``setup`` runs under it too. It slows both calls: do not time this
    run. None where this torch's profiler does not expose its event tree.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        setup()
        torch.cuda.synchronize(device)
        held = torch.cuda.memory_allocated(device) - before
        torch.cuda.reset_peak_memory_stats(device)
        measured()
        torch.cuda.synchronize(device)
        return held, int(torch.cuda.max_memory_allocated(device) - before)
    try:  # private API, read only here: the runner imports this module and must not depend on it
        from torch._C._profiler import _EventType
    except ImportError:
        return None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        setup()
        with record_function(_MEASURED):
            measured()
    results = getattr(profiler.profiler, "kineto_results", None)
    if results is None or not hasattr(results, "experimental_event_tree"):
        return None
    events = list(_walk(results.experimental_event_tree()))
    begins = [event.start_time_ns for event in events if event.name == _MEASURED]
    if not begins:
        return None
    allocations = sorted(  # by time only: the sort is stable, the tree keeps each thread's order
        (event for event in events if event.tag == _EventType.Allocation),
        key=lambda event: event.start_time_ns,
    )
    sizes: dict[int, int] = {}  # blocks allocated in this session: a free of any other is ignored
    running, held, peak = 0, None, 0
    for event in allocations:
        fields = event.extra_fields
        if fields.device.type != "cpu":
            continue
        if held is None and event.start_time_ns >= begins[0]:
            held = peak = running
        if fields.alloc_size > 0:
            sizes[fields.ptr] = fields.alloc_size
            running += fields.alloc_size
        elif fields.ptr in sizes:
            running -= sizes.pop(fields.ptr)
        if held is not None:
            peak = max(peak, running)
    return (running, running) if held is None else (held, peak)


def _walk(nodes: Iterable[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _walk(node.children)
