"""Image-decoding and transform fixtures for the Data layer's tests, made with PIL and torchvision.

Run with the venv of ../shared/reference (torch, torchvision, Pillow, safetensors):
    /tmp/torchref/bin/python tools/make_image_fixtures.py
Writes Tests/TrainingTests/Fixtures/images/ (one small file per format and mode) and
Tests/TrainingTests/Fixtures/images.safetensors:
  <file>/rgb, <file>/gray   PIL's convert("RGB") / convert("L") pixels, (H, W, 3) / (H, W), as float32 0..255
  resize/<name>             torchvision Resize + CenterCrop on rgb.png (PIL), ToTensor output (3, h, w)
  crop/<name>               torchvision F.resized_crop(rgb.png, box, size), ToTensor output
  rrc/boxes                 8000 RandomResizedCrop.get_params boxes (top, left, h, w) of a 80x100 image, scale (0.08, 1)
"""
import io
import os

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from safetensors.torch import save_file

root = os.path.join(os.path.dirname(__file__), "..", "Tests", "TrainingTests", "Fixtures")
folder = os.path.join(root, "images")
os.makedirs(folder, exist_ok=True)

rng = np.random.default_rng(0)
h, w = 37, 53
y, x = np.mgrid[0:h, 0:w]
base = np.stack([
    128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0),
    128 + 90 * np.cos((x + y) / 9.0),
    60 + 3 * x + 2 * y,
], axis=-1) + rng.normal(0, 12, (h, w, 3))
rgb = np.clip(base, 0, 255).astype(np.uint8)
image = Image.fromarray(rgb, "RGB")
alpha = Image.fromarray((np.arange(h * w).reshape(h, w) % 256).astype(np.uint8), "L")

files = {}
files["rgb.png"] = image
files["gray.png"] = image.convert("L")
files["rgba.png"] = Image.merge("RGBA", (*image.split(), alpha))
files["la.png"] = Image.merge("LA", (image.convert("L"), alpha))
files["palette.png"] = image.convert("P", palette=Image.ADAPTIVE, colors=50)
gray16 = Image.fromarray((np.asarray(image.convert("L"), dtype=np.uint16) * 2 + 3).astype(np.uint16))
files["gray16.png"] = gray16
files["bilevel.png"] = image.convert("1")
files["rgb.jpg"] = image
files["gray.jpg"] = image.convert("L")
files["cmyk.jpg"] = image.convert("CMYK")
files["rgb_lossless.webp"] = image
files["rgba_lossless.webp"] = files["rgba.png"]
files["rgb.webp"] = image
files["rgb.bmp"] = image
files["palette.bmp"] = files["palette.png"]
files["rgb.ppm"] = image
files["gray.pgm"] = image.convert("L")

for name, im in files.items():
    path = os.path.join(folder, name)
    if name.endswith(".jpg"):
        im.save(path, quality=90)
    elif name == "rgb.webp":
        im.save(path, quality=80)
    elif name.endswith(".webp"):
        im.save(path, lossless=True)
    elif name == "palette.png":
        im.save(path, transparency=3)
    else:
        im.save(path)

tensors = {}
for name in files:
    opened = Image.open(os.path.join(folder, name))
    tensors[f"{name}/rgb"] = torch.tensor(np.asarray(opened.convert("RGB")), dtype=torch.float32)
    tensors[f"{name}/gray"] = torch.tensor(np.asarray(opened.convert("L")), dtype=torch.float32)

source = Image.open(os.path.join(folder, "rgb.png")).convert("RGB")
modes = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
for mode, interpolation in modes.items():
    for resize, crop in [(20, 16), (37, 37), (48, 40), (30, 24)]:
        out = T.Compose([T.Resize(resize, interpolation=interpolation), T.CenterCrop(crop), T.ToTensor()])(source)
        tensors[f"resize/{mode}_{resize}_{crop}"] = out
    for (top, left, bh, bw, size) in [(3, 5, 30, 40, 16), (0, 0, 37, 53, 24), (10, 20, 9, 12, 32)]:
        out = F.to_tensor(F.resized_crop(source, top, left, bh, bw, [size, size], interpolation=interpolation))
        tensors[f"crop/{mode}_{top}_{left}_{bh}_{bw}_{size}"] = out

torch.manual_seed(0)
boxes = [T.RandomResizedCrop.get_params(torch.zeros(3, 80, 100), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) for _ in range(8000)]
tensors["rrc/boxes"] = torch.tensor(boxes, dtype=torch.float32)

save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(root, "images.safetensors"))
print(f"wrote {len(files)} images and {len(tensors)} tensors")
