"""Writes the weight-file fixtures under Tests/RunnerTests/Fixtures/ with real PyTorch.

Run by a developer, never by CI (CI has no PyTorch), in the venv tools/reference/README.md sets
up (plus torchvision, which vit_pytorch imports):

    PYTHONPATH=/tmp/vitpytorch /tmp/torchref/bin/python tools/make_weight_fixtures.py

- vit_tiny.pt: torch.save(model.state_dict()) of a seeded vit-pytorch 1.7.14 ViT (8x8 images,
  1 channel, patch 4, dim 16, depth 2, 2 heads of 8, MLP 32, 5 classes) whose norms and biases are
  moved away from their initial values, so that a loader that skips them fails.
- vit_tiny_nested.pth: the same weights as {"state_dict": {"module." + name: tensor}, "epoch": 3}
  (what DataParallel training scripts save), with a float64 and a float16 copy of one tensor
  beside it and a non-contiguous (transposed) tensor, to exercise dtypes and strides.
- vit_tiny_expected.safetensors: an input x (3, 1, 8, 8) and the model's logits and pooled
  features (to_latent output) for it, in float32.
- evil.pt: a pickle whose object asks for os.system when unpickled; the workbench must refuse it.
- timm_tiny_{token,avg}.safetensors: timm 1.0's VisionTransformer (8x8 images, 1 channel,
  patch 4, embed_dim 16, depth 2, 2 heads, MLP ratio 2, 5 classes; global_pool 'token', and 'avg'
  with its fc_norm), norms and biases moved off their initial values, as timm's state_dict;
  timm_tiny_{token,avg}_expected.safetensors: x, forward_features (tokens), pre-logits (pooled)
  and logits. Needs timm (pip install timm) in the same venv.
- google_tiny.npz: the token model's weights as Google's original ViT .npz (timm's _load_weights
  inverted), checked by loading it back with timm's _load_weights: every tensor equal.
"""
import os, json, struct
import torch
from vit_pytorch.vit import ViT

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'Tests', 'RunnerTests', 'Fixtures')


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for key in sorted(tensors):
        raw = tensors[key].detach().to(torch.float32).contiguous().numpy().tobytes()
        header[key] = {"dtype": "F32", "shape": list(tensors[key].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b' ' * (-len(text) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text + b''.join(blobs))


class Evil:
    def __reduce__(self):
        return (os.system, ('echo this ran code from a checkpoint',))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    model = ViT(image_size=8, patch_size=4, num_classes=5, dim=16, depth=2, heads=2, mlp_dim=32, channels=1, dim_head=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.eval()
    state = model.state_dict()
    torch.save(state, os.path.join(OUT, 'vit_tiny.pt'))
    nested = {"module." + k: v for k, v in state.items()}
    extra = {"extra.double": state['mlp_head.weight'].double(), "extra.half": state['mlp_head.weight'].half(),
             "extra.transposed": state['mlp_head.weight'].t()}
    torch.save({"state_dict": {**nested, **extra}, "epoch": 3, "note": "trained with DataParallel"},
               os.path.join(OUT, 'vit_tiny_nested.pth'))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        logits = model(x)
        pooled = {}
        model.to_latent.register_forward_hook(lambda m, i, o: pooled.setdefault('pooled', o))
        model(x)
    save_safetensors(os.path.join(OUT, 'vit_tiny_expected.safetensors'),
                     {"x": x, "logits": logits, "pooled": pooled['pooled'], "mlp_head.weight": state['mlp_head.weight']})
    torch.save({"weights": torch.zeros(2), "payload": Evil()}, os.path.join(OUT, 'evil.pt'))
    # torch itself refuses to load it with weights_only=True, as the workbench must.
    try:
        torch.load(os.path.join(OUT, 'evil.pt'), weights_only=True)
        raise SystemExit("torch loaded evil.pt with weights_only=True")
    except Exception as error:
        print("torch refuses evil.pt too:", type(error).__name__)
    import timm.models.vision_transformer as tv
    for pool in ("token", "avg"):
        torch.manual_seed(1)
        vit = tv.VisionTransformer(img_size=8, patch_size=4, in_chans=1, num_classes=5, embed_dim=16, depth=2, num_heads=2,
                                   mlp_ratio=2.0, qkv_bias=True, global_pool=pool)
        with torch.no_grad():
            for name, p in vit.named_parameters():
                if p.dim() == 1 or name in ("cls_token", "pos_embed"):
                    p.add_(0.1 * torch.randn_like(p))
        vit.eval()
        save_safetensors(os.path.join(OUT, f"timm_tiny_{pool}.safetensors"), vit.state_dict())
        x = torch.randn(3, 1, 8, 8)
        with torch.no_grad():
            tokens = vit.forward_features(x)
            pooled = vit.forward_head(tokens, pre_logits=True)
            logits = vit.forward_head(tokens)
        save_safetensors(os.path.join(OUT, f"timm_tiny_{pool}_expected.safetensors"), {"x": x, "tokens": tokens, "pooled": pooled, "logits": logits})
        if pool == "token":
            write_google_npz(vit, os.path.join(OUT, "google_tiny.npz"))
            fresh = tv.VisionTransformer(img_size=8, patch_size=4, in_chans=1, num_classes=5, embed_dim=16, depth=2, num_heads=2,
                                         mlp_ratio=2.0, qkv_bias=True, global_pool=pool)
            tv._load_weights(fresh, os.path.join(OUT, "google_tiny.npz"))
            for name, tensor in vit.state_dict().items():
                assert torch.equal(tensor, fresh.state_dict()[name]), name
            print("timm's _load_weights reads google_tiny.npz back exactly")
    print("wrote", sorted(os.listdir(OUT)))


def write_google_npz(vit, path):
    """timm's _load_weights, inverted: OIHW conv kernels to HWIO, dense kernels to (in, out), qkv
    split into per-head query/key/value kernels (D, heads, head_dim)."""
    import numpy as np
    sd = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    d, heads = vit.embed_dim, vit.blocks[0].attn.num_heads
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0), "embedding/bias": sd["patch_embed.proj.bias"],
         "cls": sd["cls_token"], "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
         "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"],
         "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
    for i in range(len(vit.blocks)):
        b, m, p = f"Transformer/encoderblock_{i}/", f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/", f"blocks.{i}."
        w[b + "LayerNorm_0/scale"], w[b + "LayerNorm_0/bias"] = sd[p + "norm1.weight"], sd[p + "norm1.bias"]
        qkv, qkv_bias = sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w[m + f"{n}/kernel"] = qkv[j * d:(j + 1) * d].T.reshape(d, heads, d // heads)
            w[m + f"{n}/bias"] = qkv_bias[j * d:(j + 1) * d].reshape(heads, d // heads)
        w[m + "out/kernel"] = sd[p + "attn.proj.weight"].reshape(d, heads, d // heads).transpose(1, 2, 0)
        w[m + "out/bias"] = sd[p + "attn.proj.bias"]
        w[b + "LayerNorm_2/scale"], w[b + "LayerNorm_2/bias"] = sd[p + "norm2.weight"], sd[p + "norm2.bias"]
        w[b + "MlpBlock_3/Dense_0/kernel"], w[b + "MlpBlock_3/Dense_0/bias"] = sd[p + "mlp.fc1.weight"].T, sd[p + "mlp.fc1.bias"]
        w[b + "MlpBlock_3/Dense_1/kernel"], w[b + "MlpBlock_3/Dense_1/bias"] = sd[p + "mlp.fc2.weight"].T, sd[p + "mlp.fc2.bias"]
    np.savez(path, **w)


if __name__ == '__main__':
    main()
