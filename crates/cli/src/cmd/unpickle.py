"""Extract the network tensors of a PyTorch checkpoint as safetensors bytes, running none of its code.

Usage: python -I -c "$(cat unpickle.py)" IN MAX_ELEMENTS  (safetensors bytes on stdout)
`gradstep import` passes this text with `-c` to an isolated interpreter, so that no folder
(its own, the current one, PYTHONPATH) is searched for modules and nothing is written to disk.

A pickle names the functions it calls. Ours resolves only the few that rebuild tensors and
containers; every other name (a Lightning class, an argparse Namespace, or `os.system` in a
hostile file) becomes `Opaque`, whose construction does nothing, so no code from the file runs.

A rebuilt tensor is a view (size, stride, offset) over a storage read from the file: a
1.5 KB file can hold `zeros(1).expand(60000, 60000)`, whose copy would take 14 GB. Nothing is
copied before every network tensor (a key with a DRUNet layer name: `m_head`, `m_down1`, ...,
`m_tail`) has been checked: no more elements than its storage, no overlapping or stride-0
layout, a 4-D convolution kernel [out, in, k, k] with k <= MAX_KERNEL and at most MAX_CHANNELS
channels, and all of them together at most MAX_ELEMENTS elements. The file, or the archive it
unpacks to, may hold at most 4 * MAX_ELEMENTS bytes. Other keys (optimizer state, other
modules) are never copied. The state dict (`state_dict` entry of a Lightning checkpoint, or
the whole object when it is a mapping of tensors) is written out; `act_mode` from the
hyper-parameters, if plain, is kept as metadata. Errors go to stderr as one line naming the
file (and the key), exit code 1."""
import os
import sys

# stdout carries the result alone: keep a private handle on it and send anything else that
# would be printed there (a library's message) to stderr instead.
RESULT = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
sys.stdout = sys.stderr

import collections  # noqa: E402
import pickle  # noqa: E402
import re  # noqa: E402
import zipfile  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save  # noqa: E402

MAX_KERNEL = 7
MAX_CHANNELS = 4096
MAX_NETWORK_TENSORS = 4096
NETWORK_KEY = re.compile(r"(^|\.)m_(head|tail|body|down\d+|up\d+)(\.|$)")

ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
}


class Opaque:
    """Stands for anything the file names that is not a tensor or a container."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return Opaque()


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return ALLOWED.get((module, name), Opaque)


class RestrictedPickleModule:
    """What torch.load needs of a pickle module, with the restricted unpickler."""

    Unpickler = RestrictedUnpickler
    __name__ = "gradstep_restricted_pickle"

    @staticmethod
    def load(f, **kwargs):
        return RestrictedUnpickler(f, **kwargs).load()


def fail(message):
    sys.exit(" ".join(str(message).split()))


def check_size(src, max_bytes):
    """Storages are read whole into memory: bound the file and, for the zip format (whose
    entries may be compressed), what it unpacks to, before torch reads anything."""
    size = os.path.getsize(src)
    if size > max_bytes:
        fail(f"{src}: {size} bytes, more than the import limit of {max_bytes} bytes")
    if not zipfile.is_zipfile(src):
        return
    try:
        with zipfile.ZipFile(src) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        fail(f"{src}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})")
    if unpacked > max_bytes:
        fail(f"{src}: its archive unpacks to {unpacked} bytes, more than the import limit of {max_bytes} bytes")


def layout_problem(t):
    """Why copying view `t` would cost more than its storage, or None."""
    storage = t.untyped_storage().nbytes() // t.element_size()
    if t.numel() > storage:
        return f"a view of {t.numel()} elements over a storage of {storage} elements (an expanded or overlapping tensor)"
    # Dimensions by increasing stride: each stride must step over everything the smaller
    # ones reach, or two indices share an element (stride 0 is the extreme case).
    reach = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride < reach:
            return f"overlapping layout: size {list(t.shape)}, stride {list(t.stride())}"
        reach += stride * (size - 1)
    if t.numel() > 0 and t.storage_offset() + reach > storage:
        return f"extends past its storage of {storage} elements"
    return None


def shape_problem(t):
    """Why `t` cannot be a DRUNet convolution kernel [out, in, k, k], or None."""
    if not t.is_floating_point():
        return f"dtype {t.dtype}, not a floating-point weight"
    s = list(t.shape)
    if len(s) != 4 or not (1 <= s[2] == s[3] <= MAX_KERNEL) or not all(1 <= c <= MAX_CHANNELS for c in s[:2]):
        return f"shape {s} is not a DRUNet convolution kernel [out, in, k, k] (k <= {MAX_KERNEL}, at most {MAX_CHANNELS} channels)"
    return None


def network_tensors(src, state, max_elements):
    """The network's tensors of `state`, checked, not yet copied."""
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor) and NETWORK_KEY.search(k)}
    if len(tensors) > MAX_NETWORK_TENSORS:
        fail(f"{src}: {len(tensors)} network tensors, more than the import limit of {MAX_NETWORK_TENSORS}")
    total = 0
    for key in sorted(tensors):
        t = tensors[key]
        problem = layout_problem(t) or shape_problem(t)
        if problem:
            fail(f"{src}: key `{key}`: {problem}")
        total += t.numel()
        if total > max_elements:
            fail(f"{src}: the network tensors hold more than {max_elements} elements, the import limit")
    return tensors


def main(src, max_elements):
    check_size(src, 4 * max_elements)
    try:
        obj = torch.load(src, map_location="cpu", weights_only=False, pickle_module=RestrictedPickleModule)
    except Exception as e:  # noqa: BLE001 - reported as one line
        fail(f"{src}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})")
    meta = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        meta["source_format"] = "lightning"
        hp = obj.get("hyper_parameters")
        if isinstance(hp, dict) and isinstance(hp.get("act_mode"), str):
            meta["act_mode"] = hp["act_mode"]
    elif isinstance(obj, dict):
        state = obj
        meta["source_format"] = "state_dict"
    else:
        fail(f"{src}: holds a {type(obj).__name__}, not a state dict")
    tensors = network_tensors(src, state, max_elements)
    if not tensors:
        fail(f"{src}: no DRUNet tensors (m_head, m_down1, ..., m_tail) in its state dict")
    copies = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    RESULT.write(save(copies, metadata=meta))
    RESULT.flush()


main(sys.argv[1], int(sys.argv[2]))
