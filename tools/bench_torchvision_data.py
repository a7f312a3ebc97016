"""torchvision's side of `workbench bench-data`: ImageFolder + RandomResizedCrop(224) (PIL) +
RandomHorizontalFlip + ToTensor + Normalize over the same folder, in one process (images/s per
thread, torch.set_num_threads(1)) and with a DataLoader of N workers.

    /tmp/torchref/bin/python tools/bench_torchvision_data.py FOLDER [--size 224] [--workers 2]
"""
import argparse
import time

import torch
import torchvision.datasets as datasets
import torchvision.transforms as T

parser = argparse.ArgumentParser()
parser.add_argument("folder")
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--workers", type=int, default=2)
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--passes", type=int, default=3)
args = parser.parse_args()
torch.set_num_threads(1)
transform = T.Compose([T.RandomResizedCrop(args.size), T.RandomHorizontalFlip(), T.ToTensor(),
                       T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
dataset = datasets.ImageFolder(args.folder, transform=transform)
print(f"torchvision {torch.__version__}: {len(dataset)} images in {len(dataset.classes)} classes under {args.folder}")


def measure(workers):
    best = 0
    for _ in range(args.passes):
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=workers)
        start = time.perf_counter()
        images = sum(len(labels) for _, labels in loader)
        best = max(best, images / (time.perf_counter() - start))
    return best


one, many = measure(0), measure(args.workers)
print(f"folder, RandomResizedCrop({args.size}): {one:8.1f} img/s in the main process, {many:8.1f} img/s with {args.workers} workers")
