"""The zoo's part-2 results table (README, "The encoder zoo, part 2"): every hierarchical encoder of
Recipes/zoo pretrained with DINO and, separately, with EsViT at one budget, then the linear probe
and kNN on the teacher's pooled feature, against the same encoder at its random initialisation.

The budget is zoo part 1's (tools/zoo_results.py): the first 30000 Fashion-MNIST training images,
2 epochs of batch 128 (468 steps), lr 5e-4 with a one-epoch warmup, EMA 0.99; bank: those 30000
images, test: all 10000. DINO and EsViT share esvit.yaml's heads and views (1024 prototypes, the
last layer trained from the first step, 2 global crops and 2 local crops of 12 px where the
encoder's windows split a 12 px crop, none where they do not, as in its Recipes/zoo recipe), so the
only difference between the two columns is EsViT's region loss on the last stage's token map.
Each run uses one thread (WORKBENCH_THREADS=1), so two copies of this script can share a 2-core
machine (`--reverse` walks the list from the other end; a run that has a log is skipped).

    python3 tools/zoo2_results.py OUT_DIR [--reverse]     # runs what is missing, then prints the table
    python3 tools/zoo2_results.py OUT_DIR --table         # the table only (needs h5py)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_results  # noqa: E402
from zoo_results import ROOT, block, result  # noqa: E402

ORDER = ['pit', 'nest', 'maxvit', 'levit', 'mobilevit', 'sepvit', 'twins_svt', 'scalable_vit', 'crossformer', 'regionvit']
LABEL = {'pit': 'pit', 'nest': 'nest', 'maxvit': 'maxvit', 'levit': 'levit', 'mobilevit': 'mobilevit', 'sepvit': 'sepvit',
         'twins_svt': 'twins-svt', 'scalable_vit': 'scalable-vit', 'crossformer': 'crossformer', 'regionvit': 'regionvit'}
KINDS = ('zoo2_random_', 'zoo2_dino_', 'zoo2_esvit_')


def objective(kind, local_crops):
    lines = ['      objective:', f'        kind: {kind}']
    if kind == 'esvit':
        lines.append('        region_layer: tokens')
    lines += ['        out_dim: 1024', '        hidden_dim: 512', '        bottleneck_dim: 256', '        student_temp: 0.1',
              '        teacher_temp: 0.04', '        warmup_teacher_temp_epochs: 0', '        teacher_momentum: 0.99',
              '        freeze_last_layer_epochs: 0', '        augment:', '          global_scale: [0.4, 1.0]',
              f'          local_crops: {local_crops}']
    if local_crops:
        lines += ['          local_size: 12', '          local_scale: [0.05, 0.4]']
    return lines


def recipes(out):
    schedule = ['      epochs: 2', '      batch_size: 128', '      lr: 5.0e-4', '      min_lr: 1.0e-6', '      warmup_epochs: 1',
                '      weight_decay: 0.04', '      weight_decay_end: 0.4', '      gradient_clip: 3.0']
    evaluation = ['  - linear_probe:', '      hidden_layer: pooled', '  - knn:', '      hidden_layer: pooled']
    data = ['data:', '  dataset: fashion-mnist', '  train_subset: 30000', '  workers: 1']
    for name in ORDER:
        text = open(os.path.join(ROOT, 'Recipes', 'zoo', name + '.yaml')).read()
        encoder = block(text, 'encoder')
        local = 0 if 'local_crops: 0' in text else 2
        for kind in KINDS:
            stages = ['stages:']
            if kind != 'zoo2_random_':
                stages += ['  - pretrain:'] + objective(kind[5:-1], local) + schedule
            text_out = '\n'.join([f'name: {kind}{name}', 'seed: 0'] + data + encoder + stages + evaluation) + '\n'
            with open(os.path.join(out, f'{kind}{name}.yaml'), 'w') as f:
                f.write(text_out)


def run(out, reverse):
    zoo_results.run(out, reverse, order=ORDER, kinds=KINDS)


def table(out):
    print('| encoder | random probe | random kNN | DINO probe | DINO kNN | EsViT probe | EsViT kNN | DINO loss, epoch 1 -> 2 | EsViT loss, epoch 1 -> 2 |')
    print('|---|---:|---:|---:|---:|---:|---:|---|---|')
    for name in ORDER:
        r, d, e = (result(out, kind, name) for kind in KINDS)
        cell = lambda x, k: f'{x[k]:.2f}' if x else 'not run'
        gain = lambda x, k: f'{x[k]:.2f} ({x[k] - r[k]:+.2f})' if x and r else cell(x, k)
        loss = lambda x: f"{x['loss'][0]:.3f} -> {x['loss'][-1]:.3f}" if x else '-'
        print(f'| {LABEL[name]} | {cell(r, "probe")} | {cell(r, "knn")} | {gain(d, "probe")} | {gain(d, "knn")} | '
              f'{gain(e, "probe")} | {gain(e, "knn")} | {loss(d)} | {loss(e)} |')


if __name__ == '__main__':
    sys.exit(zoo_results.main(recipes, run, table))
