"""Position-table resampling fixtures: the tiny timm ViT of make_weight_fixtures.py (8 px, a 2x2
grid) loaded at 16 px (4x4) and 4 px (1x1) as timm loads it.

    /tmp/torchref/bin/python tools/make_resample_fixtures.py      (after make_weight_fixtures.py)

- timm_tiny_token_{16,4}_expected.safetensors: timm.create_model's path for a hub checkpoint,
  checkpoint_filter_fn (resample_abs_pos_embed, bicubic, antialias=True), then x, tokens, pooled, logits.
- google_tiny_{16,4}_expected.safetensors: timm's _load_weights of google_tiny.npz (bilinear,
  antialias=False), then the same outputs.
"""
import os

import torch
import timm.models.vision_transformer as tv
from safetensors.torch import load_file, save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "RunnerTests", "Fixtures")
state = load_file(os.path.join(OUT, "timm_tiny_token.safetensors"))
for size in (16, 4):
    def model():
        return tv.VisionTransformer(img_size=size, patch_size=4, in_chans=1, num_classes=5, embed_dim=16, depth=2, num_heads=2,
                                    mlp_ratio=2.0, qkv_bias=True, global_pool="token").eval()
    torch.manual_seed(size)
    x = torch.randn(2, 1, size, size)
    for name, build in (("timm_tiny_token", lambda m: m.load_state_dict(tv.checkpoint_filter_fn(dict(state), m), strict=True)),
                        ("google_tiny", lambda m: tv._load_weights(m, os.path.join(OUT, "google_tiny.npz")))):
        m = model()
        with torch.no_grad():
            build(m)
            tokens = m.forward_features(x)
            out = {"x": x, "pos_embed": m.pos_embed.detach().clone(), "tokens": tokens,
                   "pooled": m.forward_head(tokens, pre_logits=True), "logits": m.forward_head(tokens)}
        save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, f"{name}_{size}_expected.safetensors"))
print("wrote the 16 and 4 pixel expectations")
