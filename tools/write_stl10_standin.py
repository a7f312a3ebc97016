"""Writes stand-in STL-10 binary files (the format of stl10_binary: 96x96x3 uint8 images stored
planar and column-major, labels 1-10 as bytes, fold_indices.txt) with random pixels, for CI, where
the real data set is not installable.

    python3 tools/write_stl10_standin.py FOLDER [TRAIN] [TEST] [UNLABELLED]
"""
import os, random, sys

folder = sys.argv[1]
train, test, unlabelled = (int(a) for a in (sys.argv[2:5] + ["100", "60", "200"][len(sys.argv[2:5]):]))
os.makedirs(folder, exist_ok=True)
rng = random.Random(0)
image = 96 * 96 * 3
for name, count in [("train", train), ("test", test)]:
    with open(os.path.join(folder, f"{name}_X.bin"), "wb") as f:
        f.write(rng.randbytes(count * image))
    with open(os.path.join(folder, f"{name}_y.bin"), "wb") as f:
        f.write(bytes(1 + i % 10 for i in range(count)))
with open(os.path.join(folder, "unlabeled_X.bin"), "wb") as f:
    f.write(rng.randbytes(unlabelled * image))
with open(os.path.join(folder, "fold_indices.txt"), "w") as f:
    for k in range(10):
        f.write(" ".join(str((k * 7 + i) % train) for i in range(min(train, 10))) + "\n")
with open(os.path.join(folder, "class_names.txt"), "w") as f:
    f.write("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
print(f"{folder}: stand-in STL-10 with {train} train, {test} test and {unlabelled} unlabelled images")
