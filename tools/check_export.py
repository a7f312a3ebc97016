"""Developer check (needs PyTorch and vit-pytorch; never run by CI): files written by
`workbench export --to vit-pytorch` load with torch.load(weights_only=True) and strict=True into
vit-pytorch 1.7.14's model (timm's VisionTransformer for --to timm), and hold exactly the
checkpoint's tensors.

    PYTHONPATH=/tmp/vitpytorch /tmp/torchref/bin/python tools/check_export.py EXPORTED CHECKPOINT 'vit_pytorch.ViT(...)'

EXPORTED is the .pt or .safetensors file, CHECKPOINT the workbench checkpoint it came from, and the
last argument the constructor `workbench export` printed.
"""
import json, struct, sys
import torch, vit_pytorch
from safetensors.torch import load_file

exported, checkpoint, constructor = sys.argv[1:4]
state = torch.load(exported, weights_only=True) if not exported.endswith(".safetensors") else load_file(exported)
import timm
model = eval(constructor, {"vit_pytorch": vit_pytorch, "timm": timm})
missing, unexpected = model.load_state_dict(state, strict=True)
source = load_file(checkpoint)
with open(checkpoint, "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
prefix = header.get("__metadata__", {}).get("encoder_prefix", "")
for name, tensor in state.items():
    assert torch.equal(tensor, source[prefix + name]), name
print(f"{exported}: {len(state)} tensors load strictly into {constructor.split('(')[0]} and equal {checkpoint}'s (prefix '{prefix}')")
