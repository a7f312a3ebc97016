"""vit-pytorch 1.7.14's side of `workbench bench-step --encoder KIND`: a supervised step (cross
entropy, AdamW) of the zoo's models at the bench's sizes (28x28x1, patch 4, dim 192, depth 6,
3 heads of 64, MLP 768), batch 64 unless B is set; the median of 6 steps after 2 warm-ups.
CaiT and XCiT are built with 3 channels, as 1.7.14 hard-codes them (bench-step --channels 3); CCT
with two tokeniser convolutions (7x7 tokens) and mlp_ratio = MLP / dim; T2T-ViT with t2t_layers
((3, 2), (3, 2)) (7x7 tokens).

    PYTHONPATH=/tmp/vitpytorch /tmp/torchref/bin/python tools/zoo_step_bench.py [deepvit parallel-vit cait vit ...]
"""
import os
import sys
import time

import torch

B = int(os.environ.get('B', 64))
cfg = dict(image_size=28, patch_size=4, num_classes=10, dim=192, depth=6, heads=3, mlp_dim=768, channels=1, dim_head=64)


def make(kind):
    if kind == 'vit':
        from vit_pytorch import ViT
        return ViT(**cfg)
    if kind == 'deepvit':
        from vit_pytorch.deepvit import DeepViT
        return DeepViT(**cfg)
    if kind == 'parallel-vit':
        from vit_pytorch.parallel_vit import ViT as ParallelViT
        return ParallelViT(**cfg)
    if kind == 'cait':
        from vit_pytorch.cait import CaiT
        return CaiT(cls_depth=2, **{k: v for k, v in cfg.items() if k != 'channels'})
    if kind == 'cct':
        from vit_pytorch.cct import CCT
        return CCT(img_size=28, embedding_dim=cfg['dim'], n_input_channels=1, n_conv_layers=2, kernel_size=3, stride=1, padding=1,
                   num_layers=cfg['depth'], num_heads=cfg['heads'], mlp_ratio=cfg['mlp_dim'] / cfg['dim'], num_classes=10)
    if kind == 't2t-vit':
        from vit_pytorch.t2t import T2TViT
        return T2TViT(t2t_layers=((3, 2), (3, 2)), **{k: v for k, v in cfg.items() if k != 'patch_size'})
    if kind == 'rvt':
        from vit_pytorch.rvt import RvT
        return RvT(**cfg)
    if kind == 'xcit':
        from vit_pytorch.xcit import XCiT
        return XCiT(cls_depth=2, **{k: v for k, v in cfg.items() if k != 'channels'})
    if kind == 'cross-vit':
        # The workbench's cross-vit defaults (sized for 28 px), not the bench's ViT sizes.
        from vit_pytorch.cross_vit import CrossViT
        return CrossViT(image_size=28, num_classes=10, channels=1, sm_dim=64, lg_dim=128, sm_patch_size=4, sm_enc_depth=1,
                        sm_enc_heads=4, sm_enc_mlp_dim=128, sm_enc_dim_head=16, lg_patch_size=7, lg_enc_depth=2, lg_enc_heads=4,
                        lg_enc_mlp_dim=256, lg_enc_dim_head=32, cross_attn_depth=1, cross_attn_heads=4, cross_attn_dim_head=16,
                        depth=2, dropout=0.1, emb_dropout=0.1)
    if kind == 'pit':
        # The workbench's pit defaults (three stages at 13, 7 and 4 tokens a side), not the bench's ViT sizes.
        from vit_pytorch.pit import PiT
        return PiT(image_size=28, patch_size=4, num_classes=10, dim=64, depth=(1, 1, 1), heads=(2, 4, 8), mlp_dim=256, dim_head=32,
                   channels=1)
    if kind == 'nest':
        # The workbench's nest defaults (a 14x14 map in 2x2 blocks, then 7x7 whole).
        from vit_pytorch.nest import NesT
        return NesT(image_size=28, patch_size=2, num_classes=10, dim=64, heads=2, num_hierarchies=2, block_repeats=2, mlp_mult=4,
                    channels=1)
    if kind == 'maxvit':
        # The workbench's maxvit defaults (one stage of two blocks on a 7x7 map, 7x7 windows).
        from vit_pytorch.max_vit import MaxViT
        return MaxViT(num_classes=10, dim=64, depth=(2,), dim_head=32, window_size=7, dropout=0.1, channels=1)
    if kind == 'levit':
        # The workbench's levit defaults (3 channels: 1.7.14 hard-codes them; bench-step --channels 3).
        from vit_pytorch.levit import LeViT
        return LeViT(image_size=28, num_classes=10, dim=(64, 128), depth=(2, 2), heads=(2, 4), mlp_mult=2, stages=2, dim_key=16,
                     dim_value=32)
    if kind == 'mobilevit':
        # The workbench's mobilevit defaults (MobileViT-XXS's widths, single-position patches at 28 px; 3 channels as 1.7.14 hard-codes).
        from vit_pytorch.mobile_vit import MobileViT
        return MobileViT(image_size=(28, 28), dims=(64, 80, 96), channels=(16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320), num_classes=10,
                         expansion=2, kernel_size=3, patch_size=(1, 1), depths=(2, 4, 3))
    if kind == 'sepvit':
        # The workbench's sepvit defaults (one stage, one 7x7 window at 28 px; 1.7.14 builds 7 and 32 whatever it is told).
        from vit_pytorch.sep_vit import SepViT
        return SepViT(num_classes=10, dim=96, depth=(3,), heads=3, window_size=7, dim_head=32, ff_mult=4, channels=1)
    if kind == 'twins-svt':
        # The workbench's twins-svt defaults; 1.7.14 fixes 8 heads of 64 and 4x feed-forwards, so its
        # Transformer is built with the workbench's 2 heads of 32 (3 channels, as 1.7.14 hard-codes).
        from vit_pytorch import twins_svt
        original = twins_svt.Transformer.__init__

        def patched(self, dim, depth, heads=8, dim_head=64, mlp_mult=4, local_patch_size=7, global_k=7, dropout=0., has_local=True):
            original(self, dim, depth, heads=2, dim_head=32, mlp_mult=4, local_patch_size=local_patch_size, global_k=global_k,
                     dropout=dropout, has_local=has_local)
        twins_svt.Transformer.__init__ = patched
        return twins_svt.TwinsSVT(num_classes=10, s1_emb_dim=32, s1_patch_size=2, s1_local_patch_size=7, s1_global_k=2, s1_depth=1,
                                  s2_emb_dim=64, s2_patch_size=2, s2_local_patch_size=7, s2_global_k=1, s2_depth=1,
                                  s3_emb_dim=96, s3_patch_size=7, s3_local_patch_size=1, s3_global_k=1, s3_depth=1,
                                  s4_emb_dim=96, s4_patch_size=1, s4_local_patch_size=1, s4_global_k=1, s4_depth=1)
    if kind == 'scalable-vit':
        # The workbench's scalable-vit defaults (1.7.14's block order; the same products).
        from vit_pytorch.scalable_vit import ScalableViT
        return ScalableViT(num_classes=10, dim=64, depth=(2, 2), heads=2, reduction_factor=(2, 1), window_size=None, channels=1)
    if kind == 'crossformer':
        # The workbench's crossformer defaults (maps of 14, 7, 3 and 1).
        from vit_pytorch.crossformer import CrossFormer
        return CrossFormer(dim=(32, 64, 128, 128), depth=(1, 1, 2, 1), global_window_size=(2, 1, 1, 1), local_window_size=(7, 7, 3, 1),
                           cross_embed_kernel_sizes=((2, 4, 8), (2, 4), (2, 4), (2, 4)), cross_embed_strides=(2, 2, 2, 2), num_classes=10, channels=1)
    if kind == 'regionvit':
        # The workbench's regionvit defaults (3 channels, as 1.7.14's local encoder hard-codes them).
        from vit_pytorch.regionvit import RegionViT
        return RegionViT(dim=(32, 64, 128, 128), depth=(1, 1, 2, 1), window_size=7, num_classes=10, local_patch_size=4, channels=3)
    raise SystemExit('unknown ' + kind)


CHANNELS = {'cait': 3, 'xcit': 3, 'levit': 3, 'mobilevit': 3, 'twins-svt': 3, 'regionvit': 3}


torch.manual_seed(0)
y = torch.randint(0, 10, (B,))
for kind in sys.argv[1:] or ['deepvit', 'parallel-vit', 'cait', 'cct', 't2t-vit', 'rvt', 'xcit', 'cross-vit']:
    x = torch.rand(B, CHANNELS.get(kind, 1), 28, 28)
    model = make(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(8):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    med = sorted(times[2:])[len(times[2:]) // 2]
    print(f"{kind:14s} batch {B}  step median {med * 1000:8.1f} ms  {B / med:8.1f} img/s  threads {torch.get_num_threads()}", flush=True)
