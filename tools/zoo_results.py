"""The zoo's results table (README, "The encoder zoo"): every Recipes/zoo encoder (plus vit and
simple-vit) pretrained with Recipes/byol.yaml's BYOL and schedule (2 epochs, batch 128) on the first
30000 Fashion-MNIST training images, then the linear probe and kNN (bank: those 30000 images,
test: all 10000), against the same encoder at its random initialisation. Each run uses one thread
(WORKBENCH_THREADS=1), so two copies of this script can share a 2-core machine (`--reverse` walks
the list from the other end; a run that has a log is skipped).

    python3 tools/zoo_results.py OUT_DIR [--reverse]     # runs what is missing, then prints the table
    python3 tools/zoo_results.py OUT_DIR --table         # the table only (needs h5py)

Only the standard library is needed to run; the table reads metrics.h5 with h5py.
"""
import argparse
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# WORKBENCH_BIN: a copy of the binary, so that a build during the runs does not replace it under them.
WORKBENCH = os.environ.get('WORKBENCH_BIN') or os.path.join(ROOT, '.build', 'release', 'workbench')
ORDER = ['deepvit', 'parallel_vit', 'vit_small_datasets', 'cait', 'cct', 't2t_vit', 'rvt', 'xcit', 'cross_vit',
         'simple_vit_reg_qknorm', 'simple_vit', 'vit']
LABEL = {'deepvit': 'deepvit', 'parallel_vit': 'parallel-vit', 'vit_small_datasets': 'vit-small-datasets', 'cait': 'cait',
         'cct': 'cct (cct_2)', 't2t_vit': 't2t-vit', 'rvt': 'rvt', 'xcit': 'xcit', 'cross_vit': 'cross-vit',
         'simple_vit_reg_qknorm': 'simple-vit, 4 registers + qk-norm', 'simple_vit': 'simple-vit', 'vit': 'vit'}


def block(text, key):
    """The lines of a top-level YAML section (`key:` and its indented lines)."""
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if line.startswith(key + ':'):
            inside = True
        elif inside and line and not line.startswith(' '):
            break
        if inside:
            out.append(line)
    return out


def recipes(out):
    byol = open(os.path.join(ROOT, 'Recipes', 'byol.yaml')).read()
    # byol.yaml's stages without the extract stage.
    stages = block(byol, 'stages')
    cut = next(i for i, line in enumerate(stages) if line.strip().startswith('- extract'))
    stages = stages[:cut]
    vit = block(byol, 'encoder')
    encoders = {name: block(open(os.path.join(ROOT, 'Recipes', 'zoo', name + '.yaml')).read(), 'encoder')
                for name in ORDER if os.path.exists(os.path.join(ROOT, 'Recipes', 'zoo', name + '.yaml'))}
    encoders['vit'] = vit
    simple = [line.replace('kind: vit', 'kind: simple-vit') for line in vit if 'pool:' not in line]
    encoders['simple_vit'] = simple
    encoders['simple_vit_reg_qknorm'] = simple + ['  register_tokens: 4', '  qk_norm: true']
    data = ['data:', '  dataset: fashion-mnist', '  train_subset: 30000', '  workers: 1']
    for name in ORDER:
        for kind, stage_lines in (('zoo_byol_', stages), ('zoo_random_', ['stages:'] + stages[stages.index(next(l for l in stages if 'linear_probe' in l)):])):
            text = '\n'.join([f'name: {kind}{name}', 'seed: 0'] + data + encoders[name] + stage_lines) + '\n'
            with open(os.path.join(out, f'{kind}{name}.yaml'), 'w') as f:
                f.write(text)


def run(out, reverse, order=None, kinds=('zoo_random_', 'zoo_byol_')):
    """Runs every (encoder, kind) recipe in `out` that has no log yet, one thread each."""
    env = dict(os.environ, WORKBENCH_THREADS='1')
    order = order or ORDER
    for name in reversed(order) if reverse else order:
        for kind in kinds:
            log = os.path.join(out, f'{kind}{name}.log')
            if os.path.exists(log):
                continue
            with open(log, 'w') as f:
                subprocess.run([WORKBENCH, 'run', os.path.join(out, f'{kind}{name}.yaml'), '--runs-dir', os.path.join(out, 'runs')],
                               stdout=f, stderr=subprocess.STDOUT, env=env, check=False)


def result(out, kind, name):
    import h5py
    for path in sorted(glob.glob(os.path.join(out, 'runs', kind + name, '*', 'metrics.h5')), reverse=True):
        with h5py.File(path, 'r') as f:
            status = f.attrs['status']
            if (status.decode() if isinstance(status, bytes) else status) != 'complete':
                continue
            d = {'probe': 100 * f['linear_probe'].attrs['test_top1'], 'knn': 100 * f['knn'].attrs['test_top1']}
            if 'pretrain' in f:
                d['loss'] = list(f['pretrain/epochs/loss'][()])
            return d
    return None


def table(out):
    print('| encoder | BYOL probe | BYOL kNN | random probe | random kNN | probe gain | kNN gain | BYOL loss, epoch 1 -> 2 |')
    print('|---|---:|---:|---:|---:|---:|---:|---|')
    for name in ORDER:
        b, r = result(out, 'zoo_byol_', name), result(out, 'zoo_random_', name)
        cell = lambda d, k: f'{d[k]:.2f}' if d else 'not run'
        gain = lambda k: f'{b[k] - r[k]:+.2f}' if b and r else '-'
        loss = f"{b['loss'][0]:.3f} -> {b['loss'][-1]:.3f}" if b else '-'
        print(f'| {LABEL[name]} | {cell(b, "probe")} | {cell(b, "knn")} | {cell(r, "probe")} | {cell(r, "knn")} | {gain("probe")} | {gain("knn")} | {loss} |')


def main(recipes=recipes, run=run, table=table):
    """The command line both results tools share: OUT_DIR [--reverse] [--table]."""
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('--reverse', action='store_true')
    parser.add_argument('--table', action='store_true')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not args.table:
        recipes(args.out)
        run(args.out, args.reverse)
    table(args.out)


if __name__ == '__main__':
    sys.exit(main())
