"""Issue 24's search: does EsViT's region loss pay for itself on the CvT once both sides are tuned?

Each variant is Recipes/esvit.yaml or Recipes/dino_cvt.yaml with `--set` overrides, run at a
screening budget (SCREEN_EPOCHS epochs, everything else as the recipe) on one seed, then the
linear probe and kNN on the teacher's pooled feature. The same knobs are turned on both sides
where they exist on both (teacher temperature, local crops, the heads' prototypes, the number of
region tokens through the last stage's stride); the region loss's own knob (its weight) exists
only on EsViT's side. esvit.yaml's CvT has one token map to take regions from, its last stage, so
the region layer is varied through that stage's size.
The winners of each side go on to the full budget on seeds 0, 1 and 2 (`--full NAME ...`).

    python3 tools/esvit_search.py OUT_DIR [--reverse]           # runs what has no log yet, then the table
    python3 tools/esvit_search.py OUT_DIR --table               # the table only (needs h5py)
    python3 tools/esvit_search.py OUT_DIR --full NAME [NAME ...] # those variants at the full budget, seeds 0-2
    ... --retry                                                 # also resume runs that stopped before their end

One thread a run (WORKBENCH_THREADS=1): two copies share a 2-core machine (`--reverse` walks the
list from the other end). WORKBENCH_BIN names a copy of the binary, so that builds do not replace
it under the runs.
"""
import argparse
import glob
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKBENCH = os.environ.get('WORKBENCH_BIN') or os.path.join(ROOT, '.build', 'release', 'workbench')
SCREEN_EPOCHS = 2
OBJ = 'stages.0.pretrain.objective.'
STRIDE1 = ['encoder.cvt_stages.2.emb_stride=1']  # last stage 4x4 = 16 region tokens instead of 2x2 = 4

# name: (recipe, overrides)
VARIANTS = {
    'dino': ('dino_cvt', []),
    'esvit': ('esvit', []),
    'dino-16tokens': ('dino_cvt', STRIDE1),
    'esvit-16tokens': ('esvit', STRIDE1),
    'esvit-weight2': ('esvit', [OBJ + 'region_weight=2']),
    'esvit-weight0.5': ('esvit', [OBJ + 'region_weight=0.5']),
    'esvit-16tokens-weight2': ('esvit', STRIDE1 + [OBJ + 'region_weight=2']),
    'dino-tt0.07': ('dino_cvt', [OBJ + 'teacher_temp=0.07']),
    'esvit-tt0.07': ('esvit', [OBJ + 'teacher_temp=0.07']),
    'dino-6local': ('dino_cvt', [OBJ + 'augment.local_crops=6']),
    'esvit-6local': ('esvit', [OBJ + 'augment.local_crops=6']),
    # the heads: 4096 prototypes (EsViT's region head shares the view head's sizes)
    'dino-4096': ('dino_cvt', [OBJ + 'out_dim=4096']),
    'esvit-4096': ('esvit', [OBJ + 'out_dim=4096']),
}


def run_one(out, tag, recipe, overrides, seed, retry=False):
    log = os.path.join(out, tag + '.log')
    if os.path.exists(log):
        if not retry or result(out, tag):
            return
        # Stopped before its end (a session ended, a signal): resume its latest folder from its checkpoint.
        folders = sorted(glob.glob(os.path.join(out, 'runs', tag.replace('.', '_'), '*')))
        if folders:
            with open(log, 'a') as f:
                f.write('--retry: resuming ' + folders[-1] + '\n')
                f.flush()
                # A run another copy of this tool is resuming is locked: the workbench refuses, and this copy moves on.
                subprocess.run([WORKBENCH, 'run', '--resume', folders[-1]], stdout=f, stderr=subprocess.STDOUT,
                               env=dict(os.environ, WORKBENCH_THREADS='1'), check=False)
            return
        os.remove(log)
    sets = [f'name={tag.replace(".", "_")}', f'seed={seed}'] + overrides
    args = [WORKBENCH, 'run', os.path.join(ROOT, 'Recipes', recipe + '.yaml'), '--runs-dir', os.path.join(out, 'runs')]
    for s in sets:
        args += ['--set', s]
    with open(log, 'w') as f:
        f.write(' '.join(args) + '\n')
        f.flush()
        subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, WORKBENCH_THREADS='1'), check=False)


def screen_tag(name):
    return f'screen-{name}'


def full_tag(name, seed):
    return f'full-{name}-seed{seed}'


def result(out, tag):
    """The variant's probe, kNN and final pretraining loss, from its complete run (zoo_results.result)."""
    r = zoo_results.result(out, '', tag.replace('.', '_'))
    return r and dict(r, loss=float(r['loss'][-1]))


def table(out, full):
    if full:
        print('| variant | seed | probe | kNN | final loss |')
        print('|---|---:|---:|---:|---:|')
        for name in full:
            for seed in (0, 1, 2):
                r = result(out, full_tag(name, seed))
                print(f'| {name} | {seed} | ' + (f"{r['probe']:.2f} | {r['knn']:.2f} | {r['loss']:.3f} |" if r else 'not run | | |'))
        return
    print(f'| variant | overrides | probe | kNN | final loss |  ({SCREEN_EPOCHS} epochs, seed 0)')
    print('|---|---|---:|---:|---:|')
    for name, (recipe, overrides) in VARIANTS.items():
        r = result(out, screen_tag(name))
        cells = f"{r['probe']:.2f} | {r['knn']:.2f} | {r['loss']:.3f}" if r else 'not run | |'
        print(f"| {name} | {recipe}.yaml {' '.join(overrides) or '(as committed)'} | {cells} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('--reverse', action='store_true')
    parser.add_argument('--table', action='store_true')
    parser.add_argument('--retry', action='store_true', help='resume (or rerun) variants whose log has no result')
    parser.add_argument('--full', nargs='+', metavar='NAME')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    unknown = [n for n in args.full or [] if n not in VARIANTS]
    if unknown:
        sys.exit(f'unknown variants {unknown}; choose from {list(VARIANTS)}')
    if not args.table:
        if args.full:
            jobs = [(full_tag(n, s), VARIANTS[n][0], VARIANTS[n][1], s) for s in (0, 1, 2) for n in args.full]
        else:
            jobs = [(screen_tag(n), r, o + [f'stages.0.pretrain.epochs={SCREEN_EPOCHS}'], 0) for n, (r, o) in VARIANTS.items()]
        for tag, recipe, overrides, seed in reversed(jobs) if args.reverse else jobs:
            run_one(args.out, tag, recipe, overrides, seed, retry=args.retry)
    table(args.out, args.full)


if __name__ == '__main__':
    main()
