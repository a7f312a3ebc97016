"""Writes the PyTorch parity fixtures under Tests/TensorCoreTests/Fixtures/ (safetensors files).

Run by a developer, never by CI (CI has no PyTorch), in a venv outside the repository as
tools/reference/README.md sets up:

    PYTHONPATH=/tmp/vitpytorch /tmp/torchref/bin/python tools/make_fixtures.py

Inputs and parameters are drawn in float32 (so the Swift side loads exactly the same numbers),
then every forward and backward is computed in float64: the fixtures hold the exact answer and
the tests measure the Swift engine's float32 error against it. Each fixture reduces its output
to a scalar with fixed random weights `out_weight` (loss = sum(out * out_weight)) and stores the
gradients of that loss as `grad.<name>`.
"""
import json, math, os, struct, sys
import torch
from torch import nn
from vit_pytorch.vit import Attention, Transformer, ViT
from vit_pytorch.simple_vit import SimpleViT
from vit_pytorch.mp3 import Attention as CrossAttention

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'Tests')
OUT = os.path.join(ROOT, 'TensorCoreTests', 'Fixtures')


def save(name, tensors, out=None):
    """Minimal safetensors writer (F32 only): 8-byte header length, JSON header, raw data."""
    header, blobs, offset = {}, [], 0
    for key in sorted(tensors):
        t = tensors[key].detach().to(torch.float32).contiguous().cpu()
        raw = t.numpy().tobytes()
        header[key] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    path = os.path.join(out or OUT, name + '.safetensors')
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
    print(f'{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes')


def f32(*shape, scale=1.0):
    """float32 draws promoted to float64, so both sides see identical inputs."""
    return (torch.randn(*shape, dtype=torch.float32) * scale).to(torch.float64)


def with_grads(named, loss):
    loss.backward()
    out = {}
    for k, v in named.items():
        out[k] = v
        if v.grad is not None:
            out['grad.' + k] = v.grad
    return out


def linear_gelu_layernorm():
    x = f32(4, 6).requires_grad_()
    w = f32(8, 6, scale=0.4).requires_grad_()
    b = f32(8, scale=0.1).requires_grad_()
    ln_w = (1 + f32(8, scale=0.2)).requires_grad_()
    ln_b = f32(8, scale=0.2).requires_grad_()
    y = nn.functional.layer_norm(nn.functional.gelu(x @ w.T + b), (8,), ln_w, ln_b, eps=1e-5)
    ow = f32(*y.shape)
    named = {'x': x, 'linear.weight': w, 'linear.bias': b, 'norm.weight': ln_w, 'norm.bias': ln_b}
    save('linear_gelu_layernorm', {**with_grads(named, (y * ow).sum()), 'out': y, 'out_weight': ow})


def softmax_cross_entropy():
    logits = f32(6, 10, scale=2).requires_grad_()
    labels = torch.tensor([3, 0, 9, 9, 5, 1])
    soft = torch.softmax(f32(6, 10), dim=-1).to(torch.float32).to(torch.float64)
    out = {'logits': logits, 'labels': labels.to(torch.float32), 'soft_targets': soft}
    for name, kwargs, target in [('hard', {}, labels), ('smoothed', {'label_smoothing': 0.1}, labels),
                                 ('soft', {'label_smoothing': 0.05}, soft)]:
        logits.grad = None
        loss = nn.functional.cross_entropy(logits, target, **kwargs)
        loss.backward()
        out['loss.' + name] = loss.reshape(1)
        out['grad.logits.' + name] = logits.grad.clone()
    save('softmax_cross_entropy', out)


def cross_attention_fixture(name, out):
    """vit-pytorch MP3's Attention with a context: keys and values from another sequence."""
    torch.manual_seed(2)
    module = CrossAttention(dim=16, heads=2, dim_head=8).double()
    with torch.no_grad():
        for key, p in module.named_parameters():
            is_norm_weight = p.ndim == 1 and key.endswith('weight')
            p.copy_((1.0 if is_norm_weight else 0.0) + f32(*p.shape, scale=0.3 if p.ndim == 1 else 0.25))
    x = f32(2, 5, 16).requires_grad_()
    context = f32(2, 7, 16).requires_grad_()
    y = module(x, context=context)
    ow = f32(*y.shape)
    named = {'x': x, 'context': context, **dict(module.named_parameters())}
    save(name, {**with_grads(named, (y * ow).sum()), 'out': y, 'out_weight': ow}, out)


def training_steps_fixture(name, out, steps=3):
    """The supervised recipe's update loop on fixed batches: AdamW(lr 1e-3, wd 0.05, every
    parameter), per-step cosine to 0 over `steps`, cross-entropy. Saves the initial weights,
    each step's batch, and the weights after the last step (float64 throughout)."""
    torch.manual_seed(3)
    cfg = dict(image_size=8, patch_size=4, num_classes=5, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32, channels=1)
    vit = ViT(**cfg).double()
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(p.to(torch.float32).to(torch.float64))
    saved = {'init.' + k: v.detach().clone() for k, v in vit.state_dict().items()}
    opt = torch.optim.AdamW(vit.parameters(), lr=1e-3, weight_decay=0.05)
    for step in range(steps):
        lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g['lr'] = lr
        x = f32(6, 1, 8, 8)
        y = torch.randint(0, 5, (6,))
        loss = nn.functional.cross_entropy(vit(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        saved[f'batch{step}.x'] = x
        saved[f'batch{step}.y'] = y.to(torch.float64)
        saved[f'batch{step}.loss'] = loss.detach().reshape(1)
    saved.update({'final.' + k: v.detach().clone() for k, v in vit.state_dict().items()})
    save(name, saved, out)


def module_fixture(name, module, x_shape, out=None):
    torch.manual_seed(1)
    module = module.double()
    with torch.no_grad():
        for key, p in module.named_parameters():
            # LayerNorm weights near 1, everything else small and random (float32-exact draws).
            is_norm_weight = p.ndim == 1 and key.endswith('weight')
            p.copy_((1.0 if is_norm_weight else 0.0) + f32(*p.shape, scale=0.3 if p.ndim == 1 else 0.25))
    x = f32(*x_shape).requires_grad_()
    y = module(x)
    ow = f32(*y.shape)
    named = {'x': x, **dict(module.named_parameters())}
    save(name, {**with_grads(named, (y * ow).sum()), 'out': y, 'out_weight': ow}, out)


def init_params(module):
    with torch.no_grad():
        for key, p in module.named_parameters():
            is_norm_weight = p.ndim == 1 and key.endswith('weight')
            p.copy_((1.0 if is_norm_weight else 0.0) + f32(*p.shape, scale=0.3 if p.ndim == 1 else 0.25))


def fixed_rand(perm, descending=False):
    """Ranks whose argsort (or, descending, top-k) lists each row of `perm` in order: returned by a
    stand-in for torch.rand so that vit-pytorch draws exactly the mask we store."""
    batch, n = perm.shape
    order = torch.arange(n, dtype=torch.float64) / n
    ranks = torch.empty(batch, n, dtype=torch.float64)
    ranks.scatter_(1, perm, ((1 - order) if descending else order).expand(batch, n).contiguous())
    return ranks


def run_with_rand(ranks, forward, default_float64=True):
    original = torch.rand
    torch.rand = lambda *args, **kwargs: ranks.clone()
    if default_float64:
        torch.set_default_dtype(torch.float64)  # vit-pytorch builds some tensors with torch.zeros
    try:
        return forward()
    finally:
        torch.rand = original
        torch.set_default_dtype(torch.float32)


def mae_fixture(name, out, decoder_dim):
    """vit-pytorch 1.7.14's MAE on a cls-pooled ViT with a fixed mask: torch.rand is replaced
    during the forward by ranks whose argsort is the stored permutation `perm`."""
    from vit_pytorch.mae import MAE
    torch.manual_seed(2)
    cfg = dict(image_size=8, patch_size=2, num_classes=5, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32, channels=2)
    mae = MAE(encoder=ViT(**cfg), decoder_dim=decoder_dim, masking_ratio=0.75, decoder_depth=1, decoder_heads=2,
              decoder_dim_head=8).double()
    init_params(mae)
    batch, n = 3, 16
    x = f32(batch, 2, 8, 8).requires_grad_()
    perm = torch.stack([torch.randperm(n) for _ in range(batch)])
    loss = run_with_rand(fixed_rand(perm), lambda: mae(x))
    named = {'x': x, **dict(mae.named_parameters())}
    save(name, {**with_grads(named, loss), 'loss': loss.reshape(1), 'perm': perm.to(torch.float64)}, out)


def simmim_fixture(name, out):
    """vit-pytorch 1.7.14's SimMIM with a fixed mask: torch.rand returns ranks whose top-k are
    the first `masked` entries of the stored permutation `perm`, in that order."""
    from vit_pytorch.simmim import SimMIM
    torch.manual_seed(3)
    cfg = dict(image_size=8, patch_size=2, num_classes=5, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32, channels=2)
    simmim = SimMIM(encoder=ViT(**cfg), masking_ratio=0.5).double()
    init_params(simmim)
    batch, n = 3, 16
    x = f32(batch, 2, 8, 8).requires_grad_()
    perm = torch.stack([torch.randperm(n) for _ in range(batch)])
    loss = run_with_rand(fixed_rand(perm, descending=True), lambda: simmim(x))
    named = {'x': x, **dict(simmim.named_parameters())}
    save(name, {**with_grads(named, loss), 'loss': loss.reshape(1), 'perm': perm.to(torch.float64)}, out)


def mpp_fixture(name, out):
    """vit-pytorch 1.7.14's MPP with fixed corruption: the chosen patches, the random-patch and
    replace draws and the random sources are stored and patched into vit_pytorch.mpp."""
    import vit_pytorch.mpp as mpp_module
    torch.manual_seed(4)
    cfg = dict(image_size=8, patch_size=2, num_classes=5, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32, channels=2)
    mean, std = [0.3, 0.4], [0.5, 0.25]
    mpp = mpp_module.MPP(transformer=ViT(**cfg), patch_size=2, dim=16, output_channel_bits=3, channels=2, mask_prob=0.3,
                         replace_prob=0.5, random_patch_prob=0.5, mean=mean, std=std).double()
    init_params(mpp)
    batch, n = 3, 16
    # Normalised images whose pixels stay within [0, 1] once un-normalised (and exercise the clamp).
    pixels = torch.rand(batch, 2, 8, 8, dtype=torch.float32) * 1.1
    x = ((pixels - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)).to(torch.float64).requires_grad_()
    chosen = torch.zeros(batch, n, dtype=torch.bool)
    for b in range(batch):
        chosen[b, torch.randperm(n)[:5]] = True
    random_flags = torch.rand(batch, n) < 0.6
    replace_flags = torch.rand(batch, n) < 0.5
    sources = torch.randint(0, n, (batch, n))
    flags = [random_flags, replace_flags]
    saved = (mpp_module.get_mask_subset_with_prob, mpp_module.prob_mask_like, torch.randint)
    mpp_module.get_mask_subset_with_prob = lambda t, prob: chosen.clone()
    mpp_module.prob_mask_like = lambda t, prob: flags.pop(0).clone()
    torch.randint = lambda *args, **kwargs: sources.clone()
    try:
        loss = mpp(x)
    finally:
        mpp_module.get_mask_subset_with_prob, mpp_module.prob_mask_like, torch.randint = saved
    named = {'x': x, **dict(mpp.named_parameters())}
    save(name, {**with_grads(named, loss), 'loss': loss.reshape(1), 'chosen': chosen.to(torch.float64),
                'random': random_flags.to(torch.float64), 'replace': replace_flags.to(torch.float64),
                'sources': sources.to(torch.float64)}, out)


def mp3_fixture(name, out):
    """vit-pytorch 1.7.14's MP3 with a fixed mask. The workbench's encoders end their transformer
    with a LayerNorm and pack q, k, v into one to_qkv; vit-pytorch's MP3 ViT has no final norm and
    separate to_q / to_kv. So a LayerNorm is added after its transformer (the one difference in
    the computation), and the fixture stores to_qkv = cat(to_q, to_kv) and its gradient."""
    from vit_pytorch.mp3 import ViT as MP3ViT, MP3
    torch.manual_seed(5)
    vit = MP3ViT(num_classes=5, image_size=8, patch_size=2, dim=16, depth=2, heads=2, mlp_dim=32, channels=2, dim_head=8)
    transformer = vit.transformer
    transformer.norm = nn.LayerNorm(16)
    plain_forward = transformer.forward
    transformer.forward = lambda x, context=None: transformer.norm(plain_forward(x, context))
    mp3 = MP3(vit, masking_ratio=0.75).double()
    init_params(mp3)
    batch, n = 3, 16
    x = f32(batch, 2, 8, 8).requires_grad_()
    perm = torch.stack([torch.randperm(n) for _ in range(batch)])
    loss = run_with_rand(fixed_rand(perm), lambda: mp3(x), default_float64=False)
    named = {'x': x, **dict(mp3.named_parameters())}
    tensors = with_grads(named, loss)
    renamed = {}
    for key, value in tensors.items():
        if 'linear_head' in key:
            continue
        renamed[key.replace('vit.', 'encoder.')] = value
    for i in range(2):
        for prefix in ('', 'grad.'):
            base = f'{prefix}encoder.transformer.layers.{i}.0.'
            renamed[base + 'to_qkv.weight'] = torch.cat([renamed.pop(base + 'to_q.weight'), renamed.pop(base + 'to_kv.weight')])
    save(name, {**renamed, 'loss': loss.reshape(1), 'perm': perm.to(torch.float64)}, out)


def augment_fixture(name, out):
    """torchvision 0.29's functional transforms on float tensors in [0, 1], with fixed parameters
    (the Swift side draws its own parameters; these tests check the pixel arithmetic)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode
    g = torch.Generator().manual_seed(5)
    img3 = torch.rand(3, 13, 11, generator=g)
    img1 = torch.rand(1, 13, 11, generator=g)
    saved = {'img3': img3, 'img1': img1}
    boxes = [(2, 1, 9, 8, 5, 6), (1, 2, 6, 5, 12, 10), (0, 0, 13, 11, 13, 11), (3, 2, 7, 9, 4, 12), (0, 3, 13, 4, 5, 3)]
    for i, (top, left, h, w, oh, ow) in enumerate(boxes):
        saved[f'crop{i}.params'] = torch.tensor([top, left, h, w, oh, ow], dtype=torch.float64)
        saved[f'crop{i}'] = TF.resized_crop(img3, top, left, h, w, [oh, ow], InterpolationMode.BILINEAR, antialias=True)
    for tag, img in (('3', img3), ('1', img1)):
        saved[f'brightness{tag}'] = TF.adjust_brightness(img, 1.3)
        saved[f'contrast{tag}'] = TF.adjust_contrast(img, 0.6)
        saved[f'contrast_up{tag}'] = TF.adjust_contrast(img, 1.8)
        saved[f'hflip{tag}'] = TF.hflip(img)
        saved[f'blur3_{tag}'] = TF.gaussian_blur(img, [3, 3], [1.3, 1.3])
        saved[f'blur5_{tag}'] = TF.gaussian_blur(img, [5, 5], [0.7, 0.7])
        saved[f'solarize{tag}'] = TF.solarize(img, 0.5)
    saved['saturation3'] = TF.adjust_saturation(img3, 1.7)
    saved['desaturation3'] = TF.adjust_saturation(img3, 0.3)
    saved['hue3'] = TF.adjust_hue(img3, 0.23)
    saved['hue_neg3'] = TF.adjust_hue(img3, -0.41)
    saved['gray3'] = TF.rgb_to_grayscale(img3, num_output_channels=3)
    save(name, saved, out)


class Feed(nn.Module):
    """Stands in for a reference's augmentation or crop module: returns the stored views in order."""
    def __init__(self, views):
        super().__init__()
        self.views = list(views)

    def forward(self, x):
        return self.views.pop(0)


def named_tensors(module, prefix):
    out = {}
    for k, v in module.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            out[prefix + k] = v
    for k, p in module.named_parameters():
        if p.grad is not None:
            out['grad.' + prefix + k] = p.grad
    return out


def dino_vitpytorch_fixture(name, out):
    """vit-pytorch 1.7.14's Dino with its four crops given (global 1, global 2, local 1, local 2),
    distinct student and teacher weights and a non-zero centre; then one update_moving_average."""
    from vit_pytorch.dino import Dino
    import random
    random.seed(0)  # the constructor's mock forward draws its augmentations with Python's random
    torch.manual_seed(7)
    vit = ViT(image_size=8, patch_size=4, num_classes=5, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32, channels=3)
    learner = Dino(vit, image_size=8, hidden_layer='to_latent', projection_hidden_size=32, projection_layers=3,
                   num_classes_K=24, student_temp=0.9, teacher_temp=0.04).double()
    torch.manual_seed(70)  # the constructor's mock forward draws a varying amount (Python-random augmentations)
    init_params(learner.student_encoder)
    init_params(learner.teacher_encoder)
    with torch.no_grad():
        learner.teacher_centers.copy_(f32(1, 24, scale=0.5))
    views = [f32(3, 3, 8, 8) for _ in range(4)]
    learner.augment1, learner.augment2 = nn.Identity(), nn.Identity()
    learner.global_crop, learner.local_crop = Feed(views[:2]), Feed(views[2:])
    loss = learner(torch.zeros(3, 3, 8, 8, dtype=torch.float64))
    loss.backward()
    saved = {**named_tensors(learner.student_encoder, 'student_encoder.'), **named_tensors(learner.teacher_encoder, 'teacher_encoder.'),
             'teacher_centers': learner.teacher_centers.clone(), 'loss': loss.reshape(1)}
    saved.update({f'view{i}': v for i, v in enumerate(views)})
    learner.update_moving_average()
    saved.update({'after.' + k: v for k, v in named_tensors(learner.teacher_encoder, 'teacher_encoder.').items() if not k.startswith('grad.')})
    saved['after.teacher_centers'] = learner.teacher_centers.clone()
    save(name, saved, out)


def vit_latent(v, img):
    """vit-pytorch 1.7.14's ViT up to to_latent, with the position grid resized bicubically for
    images smaller than the training size (as the official DINO's interpolate_pos_encoding, by size)."""
    import torch.nn.functional as F
    x = v.to_patch_embedding(img)
    b, n, _ = x.shape
    pos = v.pos_embedding
    if n + 1 != pos.shape[1]:
        g, o = int(math.isqrt(pos.shape[1] - 1)), int(math.isqrt(n))
        grid = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(o, o), mode='bicubic', align_corners=False)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, o * o, -1)], dim=1)
    x = torch.cat([v.cls_token.expand(b, -1, -1), x], dim=1) + pos
    x = v.transformer(v.dropout(x))
    return v.to_latent(x.mean(dim=1) if v.pool == 'mean' else x[:, 0])


class DINOHeadRef(nn.Module):
    """facebookresearch/dino's DINOHead (use_bn False, norm_last_layer True), written from its definition."""
    def __init__(self, in_dim, out_dim, hidden_dim, bottleneck_dim, nlayers):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
        for _ in range(nlayers - 2):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=False)
        self.weight_v = nn.Parameter(self.last_layer.weight.detach().clone())
        del self.last_layer

    def forward(self, x):
        import torch.nn.functional as F
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        w = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)
        return x @ w.t()


def head_tensors(head, prefix):
    """A DINOHeadRef's tensors and gradients under the workbench's names (mlp.i, last_layer.weight_g/v)."""
    d = {f'{prefix}mlp.{k}': v for k, v in head.mlp.state_dict().items()}
    d[prefix + 'last_layer.weight_g'] = head.weight_g
    d[prefix + 'last_layer.weight_v'] = head.weight_v
    for k, p in head.mlp.named_parameters():
        if p.grad is not None:
            d[f'grad.{prefix}mlp.{k}'] = p.grad
    if head.weight_v.grad is not None:
        d[f'grad.{prefix}last_layer.weight_v'] = head.weight_v.grad
    return d


def dino_official_fixture(name, out):
    """The official DINO loss (DINOLoss.forward) over 2 global crops (12 px) and 3 local crops
    (8 px, positions resized), with its head; the student runs each crop size as one batch."""
    import torch.nn.functional as F
    torch.manual_seed(8)
    cfg = dict(image_size=12, patch_size=4, num_classes=5, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32, channels=1)
    student, teacher = ViT(**cfg).double(), ViT(**cfg).double()
    shead, thead = DINOHeadRef(16, 24, 20, 10, 3).double(), DINOHeadRef(16, 24, 20, 10, 3).double()
    for m in (student, teacher, shead, thead):
        init_params(m)
    with torch.no_grad():
        shead.weight_g.fill_(1)
        thead.weight_g.fill_(1)
    center = f32(1, 24, scale=0.5)
    views = [f32(3, 1, 12, 12) for _ in range(2)] + [f32(3, 1, 8, 8) for _ in range(3)]
    student_out = torch.cat([shead(vit_latent(student, torch.cat(views[:2]))), shead(vit_latent(student, torch.cat(views[2:])))])
    with torch.no_grad():
        teacher_out = thead(vit_latent(teacher, torch.cat(views[:2])))
    student_temp, teacher_temp = 0.1, 0.055
    s = (student_out / student_temp).chunk(5)
    t = F.softmax((teacher_out - center) / teacher_temp, dim=-1).chunk(2)
    total, n = 0, 0
    for iq, q in enumerate(t):
        for v in range(len(s)):
            if v != iq:
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
    loss = total / n
    loss.backward()
    saved = {**named_tensors(student, 'student_encoder.net.'), **named_tensors(teacher, 'teacher_encoder.net.'),
             **head_tensors(shead, 'student_encoder.projector.'), **head_tensors(thead, 'teacher_encoder.projector.'),
             'teacher_centers': center, 'loss': loss.reshape(1),
             'new_center': center * 0.9 + teacher_out.mean(dim=0, keepdim=True) * 0.1}
    saved.update({f'view{i}': v for i, v in enumerate(views)})
    save(name, saved, out)


def byol_fixture(name, out):
    """byol-pytorch 0.9.1's BYOL (classic projector, use_simplicial_embeddings=False) with its two
    views given, distinct online and target weights; then one update_moving_average."""
    import importlib.util, glob
    path = glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'byol_pytorch', 'byol_pytorch.py'))[0]
    spec = importlib.util.spec_from_file_location('byol_module', path)
    byol_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(byol_module)
    import random
    random.seed(0)  # the constructor's mock forward (batch-norm statistics) uses Python-random augmentations
    torch.manual_seed(9)
    vit = ViT(image_size=8, patch_size=4, num_classes=5, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32, channels=3)
    learner = byol_module.BYOL(vit, image_size=8, hidden_layer='to_latent', projection_size=12, projection_hidden_size=20,
                               use_simplicial_embeddings=False, moving_average_decay=0.99).double()
    torch.manual_seed(90)  # as in the Dino fixture: the mock forward's draws vary
    init_params(learner.online_encoder)
    init_params(learner.online_predictor)
    init_params(learner.target_encoder)
    views = [f32(4, 3, 8, 8), f32(4, 3, 8, 8)]
    learner.augment1, learner.augment2 = Feed(views[:1]), Feed(views[1:])
    loss = learner(torch.zeros(4, 3, 8, 8, dtype=torch.float64))
    loss.backward()
    saved = {**named_tensors(learner.online_encoder, 'online_encoder.'), **named_tensors(learner.online_predictor, 'online_predictor.'),
             **named_tensors(learner.target_encoder, 'target_encoder.'), 'loss': loss.reshape(1), 'view0': views[0], 'view1': views[1]}
    learner.update_moving_average()
    saved.update({'after.' + k: v for k, v in named_tensors(learner.target_encoder, 'target_encoder.').items() if not k.startswith('grad.')})
    save(name, saved, out)


def small_cvt(channels):
    from vit_pytorch.cvt import CvT
    return CvT(num_classes=5, channels=channels, s1_emb_dim=8, s1_heads=1, s1_depth=1, s2_emb_dim=12, s2_heads=2, s2_depth=1,
               s3_emb_dim=16, s3_heads=2, s3_depth=1)


def esvit_vitpytorch_fixture(name, out):
    """vit-pytorch 1.7.14's EsViTTrainer on a small CvT (regions: the last stage's 2x2 map), its four
    crops given, distinct student and teacher weights, non-zero centres; then one update."""
    from vit_pytorch.es_vit import EsViTTrainer
    import random
    random.seed(0)
    torch.manual_seed(11)
    learner = EsViTTrainer(small_cvt(3), image_size=28, hidden_layer='layers', projection_hidden_size=20, projection_layers=3,
                           num_classes_K=24, student_temp=0.9, teacher_temp=0.04).double()
    torch.manual_seed(110)
    init_params(learner.student_encoder)
    init_params(learner.teacher_encoder)
    with torch.no_grad():
        learner.teacher_view_centers.copy_(f32(1, 24, scale=0.5))
        learner.teacher_region_centers.copy_(f32(1, 24, scale=0.5))
    # Region matching is an argmax: draw views whose best teacher region wins by a clear margin, so
    # that float32 rounding cannot pick another match than float64 does.
    def margin(student_view, teacher_view):
        with torch.no_grad():
            st = learner.student_encoder.net.layers(student_view).flatten(2).transpose(1, 2)
            tt = learner.teacher_encoder.net.layers(teacher_view).flatten(2).transpose(1, 2)
            sim = torch.einsum('bid,bjd->bij', st, tt)
            top = sim.topk(2, dim=-1).values
            return ((top[..., 0] - top[..., 1]) / sim.abs().amax(dim=-1)).min().item()
    while True:
        views = [f32(3, 3, 28, 28) for _ in range(4)]
        if min(margin(views[3], views[0]), margin(views[2], views[1])) > 0.02:
            break
    learner.augment1, learner.augment2 = nn.Identity(), nn.Identity()
    learner.global_crop, learner.local_crop = Feed(views[:2]), Feed(views[2:])
    loss = learner(torch.zeros(3, 3, 28, 28, dtype=torch.float64))
    loss.backward()
    saved = {**named_tensors(learner.student_encoder, 'student_encoder.'), **named_tensors(learner.teacher_encoder, 'teacher_encoder.'),
             'teacher_view_centers': learner.teacher_view_centers.clone(), 'teacher_region_centers': learner.teacher_region_centers.clone(),
             'loss': loss.reshape(1)}
    saved.update({f'view{i}': v for i, v in enumerate(views)})
    learner.update_moving_average()
    saved.update({'after.' + k: v for k, v in named_tensors(learner.teacher_encoder, 'teacher_encoder.').items() if not k.startswith('grad.')})
    saved['after.teacher_view_centers'] = learner.teacher_view_centers.clone()
    saved['after.teacher_region_centers'] = learner.teacher_region_centers.clone()
    save(name, saved, out)


def esvit_official_fixture(name, out):
    """The official EsViT loss (view + region, regions matched by cosine similarity of the
    backbone features) over 2 global crops (28 px) and 2 local crops (12 px) of a small CvT, with
    DINO heads; the student runs each crop size as one batch (batch norm statistics per size)."""
    import torch.nn.functional as F
    torch.manual_seed(12)
    student, teacher = small_cvt(1).double(), small_cvt(1).double()
    heads = {k: DINOHeadRef(16, 24, 20, 10, 3).double() for k in ('sv', 'sr', 'tv', 'tr')}
    for m in [student, teacher, *heads.values()]:
        init_params(m)
    with torch.no_grad():
        for h in heads.values():
            h.weight_g.fill_(1)
    view_center, region_center = f32(1, 24, scale=0.5), f32(1, 24, scale=0.5)
    views = [f32(3, 1, 28, 28) for _ in range(2)] + [f32(3, 1, 12, 12) for _ in range(2)]
    def run(net, vh, rh, xs):
        fmap = net.layers(torch.cat(xs))
        tokens = fmap.flatten(2).transpose(1, 2)  # b (h w) c
        b, n, c = tokens.shape
        k = len(xs)
        v, r = vh(tokens.mean(dim=1)), rh(tokens.reshape(b * n, c)).reshape(b, n, -1)
        return [(v.chunk(k)[i], r.chunk(k)[i], tokens.chunk(k)[i]) for i in range(k)]
    s_out = run(student, heads['sv'], heads['sr'], views[:2]) + run(student, heads['sv'], heads['sr'], views[2:])
    with torch.no_grad():
        t_out = run(teacher, heads['tv'], heads['tr'], views[:2])
    student_temp, temp = 0.1, 0.04
    view_loss, region_loss, n = 0, 0, 0
    for iq, (tv, tr, tf) in enumerate(t_out):
        q = F.softmax((tv - view_center) / temp, dim=-1)
        qr = F.softmax((tr - region_center) / temp, dim=-1)
        for v, (sv, sr, sf) in enumerate(s_out):
            if v == iq:
                continue
            sim = torch.matmul(F.normalize(sf, p=2, dim=-1), F.normalize(tf, p=2, dim=-1).permute(0, 2, 1))
            ind = sim.max(dim=2)[1]
            t_indexed = torch.gather(qr, 1, ind.unsqueeze(2).expand(-1, -1, qr.size(2)))
            region_loss = region_loss + 0.5 * torch.sum(-t_indexed * F.log_softmax(sr / student_temp, dim=-1), dim=-1).mean(-1).mean()
            view_loss = view_loss + 0.5 * torch.sum(-q * F.log_softmax(sv / student_temp, dim=-1), dim=-1).mean()
            n += 1
    loss = view_loss / n + region_loss / n
    loss.backward()
    saved = {**named_tensors(student, 'student_encoder.net.'), **named_tensors(teacher, 'teacher_encoder.net.'),
             **head_tensors(heads['sv'], 'student_encoder.view_projector.'), **head_tensors(heads['sr'], 'student_encoder.region_projector.'),
             **head_tensors(heads['tv'], 'teacher_encoder.view_projector.'), **head_tensors(heads['tr'], 'teacher_encoder.region_projector.'),
             'teacher_view_centers': view_center, 'teacher_region_centers': region_center, 'loss': loss.reshape(1)}
    saved.update({f'view{i}': v for i, v in enumerate(views)})
    save(name, saved, out)


if __name__ == '__main__':
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    linear_gelu_layernorm()
    softmax_cross_entropy()
    # vit-pytorch 1.7.14's pre-norm multi-head attention and one Transformer block (with its final norm).
    module_fixture('vit_attention', Attention(dim=16, heads=4, dim_head=8), (2, 5, 16))
    module_fixture('vit_transformer_block', Transformer(dim=16, depth=1, heads=4, dim_head=8, mlp_dim=32), (2, 5, 16))
    # Whole encoders, by state_dict name: 2 channels so that the patch layout is exercised.
    enc = os.path.join(ROOT, 'EncoderTests', 'Fixtures')
    os.makedirs(enc, exist_ok=True)
    cfg = dict(image_size=8, patch_size=4, num_classes=5, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32, channels=2)
    module_fixture('vit_cls', ViT(**cfg), (3, 2, 8, 8), enc)
    module_fixture('vit_mean', ViT(pool='mean', **cfg), (3, 2, 8, 8), enc)
    module_fixture('simple_vit', SimpleViT(**cfg), (3, 2, 8, 8), enc)
    cross_attention_fixture('mp3_cross_attention', enc)
    training_steps_fixture('vit_adamw_steps', enc)
    # The objectives, with fixed masks.
    objectives = os.path.join(ROOT, 'ObjectiveTests', 'Fixtures')
    os.makedirs(objectives, exist_ok=True)
    mae_fixture('mae', objectives, decoder_dim=12)
    mae_fixture('mae_identity', objectives, decoder_dim=16)
    simmim_fixture('simmim', objectives)
    mpp_fixture('mpp', objectives)
    mp3_fixture('mp3', objectives)
    # Augmentations (torchvision) for the Data layer.
    data = os.path.join(ROOT, 'TrainingTests', 'Fixtures')
    os.makedirs(data, exist_ok=True)
    augment_fixture('augment', data)
    # The siamese objectives (appended last so the earlier fixtures' random draws stay put).
    dino_vitpytorch_fixture('dino_vitpytorch', objectives)
    dino_official_fixture('dino_official', objectives)
    byol_fixture('byol', objectives)
    # vit-pytorch 1.7.14's CvT, small (28 px -> 7 -> 4 -> 2), batch norm in training mode.
    from vit_pytorch.cvt import CvT
    cvt = CvT(num_classes=5, channels=1, s1_emb_dim=8, s1_heads=1, s1_depth=1, s2_emb_dim=12, s2_heads=2, s2_depth=1,
              s3_emb_dim=16, s3_heads=2, s3_depth=2)
    module_fixture('cvt', cvt, (3, 1, 28, 28), enc)
    esvit_vitpytorch_fixture('esvit_vitpytorch', objectives)
    esvit_official_fixture('esvit_official', objectives)
    print('torch', torch.__version__, file=sys.stderr)
