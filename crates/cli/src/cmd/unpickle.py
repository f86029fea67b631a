"""Extract the tensors of a PyTorch checkpoint into a safetensors file, running none of its code.

Usage: python unpickle.py IN OUT.safetensors
A pickle names the functions it calls. Ours resolves only the few that rebuild tensors and
containers; every other name (a Lightning class, an argparse Namespace, or `os.system` in a
hostile file) becomes `Opaque`, whose construction does nothing, so no code from the file runs.
The state dict (`state_dict` entry of a Lightning checkpoint, or the whole object when it
is a mapping of tensors) is written out; `act_mode` from the hyper-parameters, if plain, is
kept as metadata. Errors go to stderr as one line, exit code 2."""
import collections
import pickle
import sys

import torch
from safetensors.torch import save_file

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


def main(src, dst):
    try:
        obj = torch.load(src, map_location="cpu", weights_only=False, pickle_module=RestrictedPickleModule)
    except Exception as e:  # noqa: BLE001 - reported as one line
        sys.exit(f"{src}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})")
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
        sys.exit(f"{src}: holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v.detach().float().contiguous() for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        sys.exit(f"{src}: no tensors in its state dict")
    save_file(tensors, dst, metadata=meta)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
