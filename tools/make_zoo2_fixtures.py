"""Parity fixtures for the encoder zoo's hierarchical and convolutional part (vit-pytorch 1.7.14),
as tools/make_zoo_fixtures.py writes them: parameters drawn in float32, forward and backward in
float64, the logits `out`, the fixed weights `out_weight` of the loss sum(out * out_weight), and
every gradient `grad.<name>`. Give fixture names to write only those.

    PYTHONPATH=/tmp/vitpytorch /tmp/torchref/bin/python tools/make_zoo2_fixtures.py [pit ...]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402
from make_fixtures import ROOT, module_fixture  # noqa: E402

make_fixtures.f32 = lambda *shape, scale=1.0: (torch.randn(tuple(shape), dtype=torch.float32) * scale).to(torch.float64)
from vit_pytorch.pit import PiT  # noqa: E402
from vit_pytorch.nest import NesT  # noqa: E402
from vit_pytorch.max_vit import MaxViT  # noqa: E402
from vit_pytorch.levit import LeViT  # noqa: E402
from vit_pytorch.mobile_vit import MobileViT  # noqa: E402
from vit_pytorch import sep_vit  # noqa: E402
from vit_pytorch import twins_svt  # noqa: E402
from vit_pytorch.scalable_vit import ScalableViT  # noqa: E402
from vit_pytorch.crossformer import CrossFormer  # noqa: E402
from vit_pytorch import regionvit  # noqa: E402


def sepvit_with(window, head_width, **kwargs):
    """SepViT whose attention takes window_size and dim_head, as the paper's (1.7.14's Transformer
    drops both arguments and builds DSSA with its defaults, 7 and 32)."""
    original = sep_vit.DSSA.__init__

    def patched(self, dim, heads=8, dim_head=32, dropout=0., window_size=7):
        original(self, dim, heads=heads, dim_head=patched.dim_head, dropout=dropout, window_size=patched.window.pop(0))
    patched.dim_head = head_width
    patched.window = [w for w, d in zip(window, kwargs['depth']) for _ in range(d)]
    sep_vit.DSSA.__init__ = patched
    try:
        return sep_vit.SepViT(**kwargs)
    finally:
        sep_vit.DSSA.__init__ = original

FIXTURES = {
    # 12 px: unfold 4 / 2 gives 5x5 tokens, pooled to 3x3, then 2x2; heads per stage.
    'pit': lambda: (PiT(image_size=12, patch_size=4, num_classes=5, dim=8, depth=(1, 2, 1), heads=(1, 2, 2), mlp_dim=16, dim_head=4,
                        channels=2), (3, 2, 12, 12)),
    # Two stages, one heads value, a head of width 8 with one head (no output projection).
    'pit_2': lambda: (PiT(image_size=8, patch_size=2, num_classes=5, dim=8, depth=(1, 1), heads=1, mlp_dim=16, dim_head=8,
                          channels=3), (2, 3, 8, 8)),
    # 16 px, patch 2: an 8x8 map in 4x4 blocks of 2x2, aggregated to 4x4 in 2x2 blocks, then one 2x2 block.
    'nest': lambda: (NesT(image_size=16, patch_size=2, num_classes=5, dim=8, heads=2, num_hierarchies=3, block_repeats=(1, 2, 1),
                          mlp_mult=2, channels=2), (2, 2, 16, 16)),
    # Two hierarchies, one repeat count, 3 channels, a 6x6 map in 2x2 blocks of 3x3.
    'nest_2': lambda: (NesT(image_size=12, patch_size=2, num_classes=5, dim=8, heads=1, num_hierarchies=2, block_repeats=1,
                            mlp_mult=2, channels=3), (2, 3, 12, 12)),
    # 16 px: the stem gives 8x8, stage 0 4x4 in 2x2 windows, stage 1 2x2 (its second block's MBConv
    # is residual); a stem of its own width; no dropout; training mode, so BatchNorm uses the batch.
    'maxvit': lambda: (MaxViT(num_classes=5, dim=8, depth=(1, 2), dim_head=4, dim_conv_stem=6, window_size=2, mbconv_expansion_rate=2,
                              mbconv_shrinkage_rate=0.25, dropout=0., channels=2), (3, 2, 16, 16)),
    # LeViT hard-codes 3 channels. At 32 px the stem's 2x2 map is the table's (image_size // 16):
    # stage 0 on 2x2, the downsampling block, stage 1 on 1x1.
    'levit': lambda: (LeViT(image_size=32, num_classes=5, dim=(8, 12), depth=(2, 1), heads=(2, 3), mlp_mult=2, stages=2, dim_key=4,
                            dim_value=6), (3, 3, 32, 32)),
    # At 28 px 1.7.14 makes a 1x1 table for the 2x2 map and broadcasts it (bias_grid: vit-pytorch-1.7.14).
    'levit_28': lambda: (LeViT(image_size=28, num_classes=5, dim=8, depth=1, heads=2, mlp_mult=2, stages=2, dim_key=4, dim_value=4),
                         (3, 3, 28, 28)),
    # MobileViT hard-codes 3 channels. 64 px: the blocks see 8x8, 4x4 and 2x2 maps in 2x2 patches.
    'mobilevit': lambda: (MobileViT(image_size=(64, 64), dims=(8, 8, 12), channels=(4, 4, 8, 8, 8, 8, 12, 12, 16, 16, 24), num_classes=5,
                                    expansion=2, kernel_size=3, patch_size=(2, 2), depths=(1, 2, 1)), (2, 3, 64, 64)),
    # Expansion 1 (the inverted residuals without their 1x1 expansion) at 16 px, single-position patches.
    'mobilevit_e1': lambda: (MobileViT(image_size=(16, 16), dims=(8, 8, 8), channels=(4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 16), num_classes=5,
                                       expansion=1, kernel_size=3, patch_size=(1, 1), depths=(1, 1, 1)), (3, 3, 16, 16)),
    # The paper's SepViT at 16 px: stage 0's 4x4 map in 2x2 windows (window attention among 4
    # windows), stage 1's 2x2 map in one window of 2; heads 4 wide.
    'sepvit': lambda: (sepvit_with((2, 2), 4, num_classes=5, dim=8, depth=(1, 2), heads=(2, 2), window_size=(2, 2), dim_head=4, ff_mult=2,
                                   channels=2), (2, 2, 16, 16)),
    # 1.7.14 as it is at 28 px: one 7x7 window, heads 32 wide whatever dim_head says.
    'sepvit_1714': lambda: (sep_vit.SepViT(num_classes=5, dim=8, depth=(1,), heads=1, window_size=3, dim_head=4, ff_mult=2, channels=2),
                            (2, 2, 28, 28)),
    # Twins-SVT (3 channels, as 1.7.14 hard-codes) at 16 px: 8x8 in 4x4 windows, 4x4 in 2x2, 2x2 in
    # one window, 1x1 with global attention only; 2 heads of 8 and 2x feed-forwards.
    'twins': lambda: (twins_with(2, 8, 2, num_classes=5, s1_emb_dim=4, s1_patch_size=2, s1_local_patch_size=4, s1_global_k=2, s1_depth=1,
                                 s2_emb_dim=8, s2_patch_size=2, s2_local_patch_size=2, s2_global_k=2, s2_depth=1,
                                 s3_emb_dim=8, s3_patch_size=2, s3_local_patch_size=2, s3_global_k=2, s3_depth=2,
                                 s4_emb_dim=12, s4_patch_size=2, s4_local_patch_size=1, s4_global_k=1, s4_depth=1), (2, 3, 16, 16)),
    # ScalableViT as 1.7.14 runs it (block_order: vit-pytorch-1.7.14) at 32 px: 8x8 with keys from
    # 2x2 patches and 4x4 windows, then 4x4 whole; per-stage widths.
    'scalable_vit_1714': lambda: (ScalableViT(num_classes=5, dim=8, depth=(2, 1), heads=(2, 1), reduction_factor=(2, 1), window_size=(4, None),
                                              iwsa_dim_key=4, iwsa_dim_value=(4, 6), ssa_dim_key=(4, 8), ssa_dim_value=4, ff_expansion_factor=2,
                                              channels=2), (2, 2, 32, 32)),
    'scalable_vit': lambda: (scalable_vit_paper(num_classes=5, dim=8, depth=(2, 1), heads=(2, 1), reduction_factor=(2, 1), window_size=(4, None),
                                                iwsa_dim_key=4, iwsa_dim_value=(4, 6), ssa_dim_key=(4, 8), ssa_dim_value=4, ff_expansion_factor=2,
                                                channels=2), (2, 2, 32, 32)),
    # CrossFormer at 16 px: 8x8 (short windows of 4, long grid of 2), 4x4 (2 and 2), 2x2 (2 and 1),
    # 1x1; three kernel sizes in stage 0.
    'crossformer_1714': lambda: (in_float64(CrossFormer(dim=(32, 32, 32, 32), depth=(1, 1, 1, 1), global_window_size=(2, 2, 1, 1), local_window_size=(4, 2, 2, 1),
                                             cross_embed_kernel_sizes=((2, 4, 6), (2,), (2,), (2,)), cross_embed_strides=(2, 2, 2, 2),
                                             num_classes=5, channels=2)), (2, 2, 16, 16)),
    'crossformer': lambda: (in_float64(crossformer_paper(dim=(32, 32, 32, 32), depth=(1, 1, 1, 1), global_window_size=(2, 2, 1, 1), local_window_size=(4, 2, 2, 1),
                                              cross_embed_kernel_sizes=((2, 4, 6), (2,), (2,), (2,)), cross_embed_strides=(2, 2, 2, 2),
                                              num_classes=5, channels=2)), (2, 2, 16, 16)),
    # RegionViT (3 channels: 1.7.14's local encoder hard-codes them) at 16 px: 2x2 regions of 8 px,
    # a 4x4 local map in 2x2 windows, then 2/1, 1/1, 1/1; 2 heads of 4.
    'regionvit': lambda: (regionvit_with(2, 4, dim=(8, 8, 12, 12), depth=(1, 2, 1, 1), window_size=2, num_classes=5, local_patch_size=4,
                                         channels=3), (2, 3, 16, 16)),
    'regionvit_3conv_peg': lambda: (regionvit_with(2, 4, dim=(8, 8, 8, 8), depth=1, window_size=2, num_classes=5, local_patch_size=4,
                                                   tokenize_local_3_conv=True, use_peg=True, channels=3), (2, 3, 16, 16)),
}

def twins_with(heads, dim_head, mlp_mult, **kwargs):
    """Twins-SVT with its attention and feed-forward sizes set (1.7.14 fixes 8 heads of 64 and 4x)."""
    original = twins_svt.Transformer.__init__

    def patched(self, dim, depth, heads=8, dim_head=64, mlp_mult=4, local_patch_size=7, global_k=7, dropout=0., has_local=True):
        original(self, dim, depth, heads=patched.sizes[0], dim_head=patched.sizes[1], mlp_mult=patched.sizes[2],
                 local_patch_size=local_patch_size, global_k=global_k, dropout=dropout, has_local=has_local)
    patched.sizes = (heads, dim_head, mlp_mult)
    twins_svt.Transformer.__init__ = patched
    try:
        return twins_svt.TwinsSVT(**kwargs)
    finally:
        twins_svt.Transformer.__init__ = original


def scalable_vit_paper(**kwargs):
    """ScalableViT with the paper's block order: vit-pytorch 1.7.14's forward unpacks the block as
    (ssa, ff1, peg, iwsa, ff2) while the ModuleList holds (ssa, ff1, peg, ff2, iwsa)."""
    from vit_pytorch import scalable_vit

    def forward(self, x):
        for ssa, ff1, peg, ff2, iwsa in self.layers:
            x = ssa(x) + x
            x = ff1(x) + x
            if peg is not None:
                x = peg(x)
            x = iwsa(x) + x
            x = ff2(x) + x
        return self.norm(x)
    model = ScalableViT(**kwargs)
    for stage in model.layers:
        stage[0].forward = forward.__get__(stage[0])
    return model


def in_float64(model):
    """1.7.14's CrossFormer casts its relative positions with .float(); in a float64 model they must be float64."""
    forward = model.forward

    def wrapped(x):
        original = torch.Tensor.float
        torch.Tensor.float = lambda self: self.double()
        try:
            return forward(x)
        finally:
            torch.Tensor.float = original
    model.forward = wrapped
    return model


def crossformer_paper(**kwargs):
    """CrossFormer whose every attention reads the bias of its own offset (1.7.14's indices address
    a (2w - 1)^2 table, its biases a (2w + 1)^2 one)."""
    model = CrossFormer(**kwargs)
    for module in model.modules():
        if hasattr(module, 'rel_pos_indices'):
            w = module.window_size
            pos = torch.arange(w)
            grid = torch.stack(torch.meshgrid(pos, pos, indexing='ij')).reshape(2, -1).t()
            rel = grid[:, None] - grid[None, :] + w
            module.rel_pos_indices = (rel * torch.tensor([2 * w + 1, 1])).sum(dim=-1)
    return model


def regionvit_with(heads, dim_head, **kwargs):
    """RegionViT with its attention sizes set (1.7.14's R2LTransformer is always built with 4 heads of 32)."""
    original = regionvit.R2LTransformer.__init__

    def patched(self, dim, *, window_size, depth=4, heads=4, dim_head=32, attn_dropout=0., ff_dropout=0.):
        original(self, dim, window_size=window_size, depth=depth, heads=patched.sizes[0], dim_head=patched.sizes[1],
                 attn_dropout=attn_dropout, ff_dropout=ff_dropout)
    patched.sizes = (heads, dim_head)
    regionvit.R2LTransformer.__init__ = patched
    try:
        return regionvit.RegionViT(**kwargs)
    finally:
        regionvit.R2LTransformer.__init__ = original


if __name__ == '__main__':
    enc = os.path.join(ROOT, 'EncoderTests', 'Fixtures')
    for name in sys.argv[1:] or FIXTURES:
        torch.manual_seed(0)
        module, shape = FIXTURES[name]()
        module_fixture(name, module, shape, enc)
        print(name)
