"""Parity fixtures for the encoder zoo (vit-pytorch 1.7.14), as tools/make_fixtures.py writes them:
parameters drawn in float32, forward and backward in float64, the logits `out`, the fixed weights
`out_weight` of the loss sum(out * out_weight), and every gradient `grad.<name>`.

    PYTHONPATH=/tmp/vitpytorch /tmp/torchref/bin/python tools/make_zoo_fixtures.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402
from make_fixtures import ROOT, module_fixture  # noqa: E402

# make_fixtures' draws, also for 0-dimensional parameters (LSA's temperature); the same numbers otherwise.
make_fixtures.f32 = lambda *shape, scale=1.0: (torch.randn(tuple(shape), dtype=torch.float32) * scale).to(torch.float64)
from vit_pytorch.deepvit import DeepViT  # noqa: E402
from vit_pytorch.parallel_vit import ViT as ParallelViT  # noqa: E402
from vit_pytorch.simple_vit_with_register_tokens import SimpleViT as RegisterViT  # noqa: E402
from vit_pytorch.simple_vit_with_qk_norm import SimpleViT as QKNormViT  # noqa: E402
from vit_pytorch.simple_vit_with_patch_dropout import SimpleViT as PatchDropoutViT  # noqa: E402
from vit_pytorch.vit_for_small_dataset import ViT as SmallDatasetViT  # noqa: E402
from vit_pytorch.cait import CaiT  # noqa: E402
from vit_pytorch.t2t import T2TViT  # noqa: E402
from vit_pytorch.rvt import RvT  # noqa: E402
from vit_pytorch.xcit import XCiT  # noqa: E402
from vit_pytorch.cross_vit import CrossViT  # noqa: E402
from vit_pytorch.cct import CCT, sinusoidal_embedding  # noqa: E402
from make_fixtures import save  # noqa: E402

if __name__ == '__main__':
    enc = os.path.join(ROOT, 'EncoderTests', 'Fixtures')
    torch.manual_seed(0)
    cfg = dict(image_size=8, patch_size=4, num_classes=5, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32, channels=2)
    module_fixture('deepvit', DeepViT(**cfg), (3, 2, 8, 8), enc)
    module_fixture('deepvit_mean', DeepViT(pool='mean', **cfg), (3, 2, 8, 8), enc)
    module_fixture('parallel_vit', ParallelViT(**cfg), (3, 2, 8, 8), enc)
    module_fixture('parallel_vit_3', ParallelViT(num_parallel_branches=3, pool='mean', **cfg), (3, 2, 8, 8), enc)
    module_fixture('simple_vit_registers', RegisterViT(num_register_tokens=3, **cfg), (3, 2, 8, 8), enc)
    # 1.7.14's qk-norm SimpleViT returns a LayerNorm as its head (a defect): the paper's Linear head.
    qk = QKNormViT(**cfg)
    qk.linear_head = torch.nn.Linear(cfg['dim'], cfg['num_classes'])
    module_fixture('simple_vit_qk_norm', qk, (3, 2, 8, 8), enc)
    # Patch dropout acts in training only (torch's randn draws are not the workbench's): the fixture
    # is the evaluation-mode model.
    module_fixture('vit_small_datasets', SmallDatasetViT(**cfg), (3, 2, 8, 8), enc)
    module_fixture('simple_vit_patch_dropout', PatchDropoutViT(patch_dropout=0.5, **cfg).eval(), (3, 2, 8, 8), enc)
    # CaiT hard-codes 3 channels in 1.7.14 (patch_dim = 3 p^2).
    cait = {k: v for k, v in cfg.items() if k != 'channels'}
    module_fixture('cait', CaiT(cls_depth=2, **cait), (3, 3, 8, 8), enc)
    # CCT in 1.7.14 forces attention dropout and stochastic depth 0.1: the fixtures are evaluation-mode.
    cct = dict(img_size=12, embedding_dim=16, n_input_channels=2, n_conv_layers=2, kernel_size=3, stride=1, padding=1,
               num_layers=2, num_heads=2, mlp_ratio=2, num_classes=5)
    module_fixture('cct_learnable', CCT(positional_embedding='learnable', **cct).eval(), (3, 2, 12, 12), enc)
    module_fixture('cct_sine', CCT(positional_embedding='sine', **cct).eval(), (3, 2, 12, 12), enc)
    save('cct_sine_table', {'table': sinusoidal_embedding(49, 32).double()}, enc)
    t2t = {k: v for k, v in cfg.items() if k != 'patch_size'}
    module_fixture('t2t', T2TViT(t2t_layers=((3, 2), (3, 2)), **t2t), (3, 2, 8, 8), enc)
    t2t['image_size'] = 12
    module_fixture('t2t_74_mean', T2TViT(t2t_layers=((7, 4), (3, 2)), pool='mean', **t2t), (3, 2, 12, 12), enc)
    rvt = dict(cfg, patch_size=2)
    module_fixture('rvt', RvT(**rvt), (3, 2, 8, 8), enc)
    # A head width whose rotary part is 4 of 6 channels, a Linear query and a GELU feed-forward.
    module_fixture('rvt_plain', RvT(**dict(rvt, dim_head=6), use_ds_conv=False, use_glu=False), (3, 2, 8, 8), enc)
    # XCiT hard-codes 3 channels in 1.7.14; training mode, so its BatchNorm uses the batch's statistics.
    xcit = {k: v for k, v in dict(cfg, patch_size=2).items() if k != 'channels'}
    module_fixture('xcit', XCiT(cls_depth=2, **xcit), (3, 3, 8, 8), enc)
    # CrossViT: branches of different widths (so the cross-attention projects in and out), no dropout.
    cross = dict(image_size=8, num_classes=5, channels=2, sm_dim=8, lg_dim=16, sm_patch_size=2, sm_enc_depth=1, sm_enc_heads=2,
                 sm_enc_mlp_dim=16, sm_enc_dim_head=4, lg_patch_size=4, lg_enc_depth=2, lg_enc_heads=2, lg_enc_mlp_dim=32,
                 lg_enc_dim_head=8, cross_attn_depth=2, cross_attn_heads=2, cross_attn_dim_head=4, depth=2, dropout=0., emb_dropout=0.)
    module_fixture('cross_vit', CrossViT(**cross), (3, 2, 8, 8), enc)
