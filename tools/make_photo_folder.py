"""Writes an image folder of JPEG photographs for `workbench bench-data` and
tools/bench_torchvision_data.py: scikit-image's colour photographs (about 0.2-2 MP each),
re-encoded at quality 90 with small crops and flips so that no two files are the same.

    /tmp/torchref/bin/python tools/make_photo_folder.py FOLDER [FILES_PER_CLASS]
(the venv of ../shared/reference, plus scikit-image)
"""
import os
import sys

import numpy as np
from PIL import Image
from skimage import data

folder = sys.argv[1]
per_class = int(sys.argv[2]) if len(sys.argv) > 2 else 40
names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina"]
for c, name in enumerate(names):
    photo = getattr(data, name)()
    photo = photo[..., :3] if photo.ndim == 3 else np.stack([photo] * 3, -1)
    target = os.path.join(folder, name)
    os.makedirs(target, exist_ok=True)
    for i in range(per_class):
        h, w = photo.shape[:2]
        top, left = (i * 7) % max(1, h // 10), (i * 13) % max(1, w // 10)
        crop = photo[top:h - (i % 5), left:w - (i % 3)]
        if i % 2:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(os.path.join(target, f"{i:04d}.jpg"), quality=90)
print(f"{folder}: {len(names) * per_class} JPEG files in {len(names)} classes")
