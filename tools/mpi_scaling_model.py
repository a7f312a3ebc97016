"""On paper: how data-parallel pretraining of ViT-S/16 and ViT-B/16 (224 px) scales over MPI
processes, from the bytes each step must all-reduce and the cost model of the all-reduce.

Assumptions (change them below and rerun):
- each process is one CPU node that sustains F = 1 TFLOP/s on the step's products (a dual-socket
  AVX-512 server at about half its peak; this 2-core machine does about 0.11);
- the global batch is 4096 images (DeiT's, MAE's), split evenly; a training step costs three
  forward passes' FLOPs (forward, and backward at twice that);
- gradients are float32 and all-reduced in 16 MiB buckets, as the workbench does;
- the all-reduce is Open MPI's choice for large messages, a ring: per bucket, 2 (N - 1) messages
  of size/N each way, i.e. time 2 (N - 1) alpha + 2 (N - 1) / N * bytes / bandwidth, with a
  per-message latency alpha of 5 microseconds (RDMA; TCP is several times that);
- without overlap the exchange follows backward (what the workbench does today); with overlap
  (buckets started as backward completes them) it hides behind backward, which is 2/3 of the step.

    python3 tools/mpi_scaling_model.py
"""
import math

F = 1.0e12                      # FLOP/s per process
GLOBAL_BATCH = 4096
BUCKET = 16 * 2 ** 20           # bytes
ALPHA = 5e-6                    # seconds per message
MODELS = {'ViT-S/16': (22.05e6, 4.6e9), 'ViT-B/16': (86.57e6, 17.6e9)}   # parameters, forward FLOPs per image


def allreduce_seconds(nbytes, n, gbit):
    if n == 1:
        return 0.0
    bandwidth = gbit * 1e9 / 8
    buckets = math.ceil(nbytes / BUCKET)
    return buckets * 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * nbytes / bandwidth


def main():
    print('| model | processes | images per process | compute per step | network | all-reduce | efficiency, no overlap | efficiency, overlapped |')
    print('|---|---:|---:|---:|---|---:|---:|---:|')
    for model, (params, flops) in MODELS.items():
        nbytes = 4 * params
        for n in (8, 64, 512):
            local = GLOBAL_BATCH / n
            compute = 3 * flops * local / F
            for gbit in (25, 100):
                comm = allreduce_seconds(nbytes, n, gbit)
                plain = compute / (compute + comm)
                overlapped = compute / (compute + max(0.0, comm - 2 / 3 * compute))
                print(f'| {model} ({nbytes / 2 ** 20:.0f} MiB of gradients) | {n} | {local:g} | {compute * 1000:.0f} ms | {gbit} Gbit/s | '
                      f'{comm * 1000:.0f} ms | {100 * plain:.0f}% | {100 * overlapped:.0f}% |')


if __name__ == '__main__':
    main()
