"""Writes stand-in CIFAR-10 binary files (the format of cifar-10-batches-bin: records of a label
byte and 3072 pixel bytes) with random pixels, for CI, where the real data set is not installable.

    python3 tools/write_cifar_standin.py FOLDER [IMAGES_PER_FILE]
"""
import os, random, sys

folder = sys.argv[1]
per_file = int(sys.argv[2]) if len(sys.argv) > 2 else 64
os.makedirs(folder, exist_ok=True)
rng = random.Random(0)
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    with open(os.path.join(folder, name), "wb") as f:
        for r in range(per_file):
            f.write(bytes([r % 10]) + rng.randbytes(3072))
print(f"{folder}: 6 stand-in CIFAR-10 files of {per_file} images")
