"""Issue 22's speed table: every row of ../shared/reference/torch_step_bench.py against the
`workbench bench-step` configuration that matches it, as a sandwich (torch, workbench, torch again,
each its own process), with the ratio over the two torch figures' mean, the workbench step's
fraction of its roofline (its products' FLOPs over raw sgemm at the same shapes) and the peak
resident set of each process (ru_maxrss from wait4: the model, its optimizer state and the step's
largest moment, plus each runtime's own baseline), and the same peak above that baseline (a process
that only imports torch, torchvision and vit-pytorch; the workbench binary printing its help).

    python3 tools/step_bench_table.py [ROW ...] [--steps N]
        --python /tmp/torchref/bin/python --torch-bench ../shared/reference/torch_step_bench.py

Rows: supervised mae simmim mpp mp3 dino byol cvt esvit supervised-b8 (all by default). Each
process runs alone: time nothing else on the machine meanwhile. Needs torch, vit-pytorch 1.7.14
and byol-pytorch 0.9.1 on the Python's path (PYTHONPATH), as ../shared/reference/README.md sets up.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# row: (torch_step_bench.py's name, its batch, the workbench bench-step arguments that match it)
ROWS = {
    'supervised': ('supervised', 256, []),
    'mae': ('mae', 256, ['--objective', 'mae']),
    'simmim': ('simmim', 256, ['--objective', 'simmim']),
    'mpp': ('mpp', 256, ['--objective', 'mpp']),
    'mp3': ('mp3', 256, ['--objective', 'mp3']),
    'dino': ('dino', 256, ['--objective', 'dino']),
    'byol': ('byol', 256, ['--objective', 'byol-pytorch']),
    'cvt': ('cvt', 256, ['--recipe', os.path.join(ROOT, 'tools', 'bench', 'cvt_supervised.yaml')]),
    'esvit': ('esvit', 256, ['--recipe', os.path.join(ROOT, 'tools', 'bench', 'esvit_vitpytorch.yaml')]),
    'supervised-b8': ('supervised', 8, ['--batch', '8']),
}


def measure(command, env=None):
    """Runs `command` alone; returns its output and its peak resident set in MiB."""
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    except OSError as e:
        sys.exit(f'cannot run {command[0]}: {e.strerror}; give the Python with torch as --python, the workbench as --workbench '
                 '(or build it: swift build -c release)')
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f'{" ".join(command)} failed ({proc.returncode}):\n{out}')
    return out, usage.ru_maxrss / 1024


def torch_row(args, name, batch):
    env = dict(os.environ, B=str(batch))
    out, peak = measure([args.python, args.torch_bench, name], env)
    m = re.search(r'step median\s+([\d.]+) ms\s+([\d.]+) img/s', out)
    if not m:
        sys.exit(f'torch_step_bench.py {name}: no step line in\n{out}')
    return float(m.group(2)), peak


def workbench_row(args, extra):
    out, peak = measure([args.workbench, 'bench-step', '--steps', str(args.steps)] + extra)
    step = re.search(r'step median ([\d.]+) ms\s+([\d.]+) img/s', out)
    roof = re.search(r'= ([\d.]+) of the roofline', out)
    if not step or not roof:
        sys.exit(f'bench-step {" ".join(extra)}: no step or roofline line in\n{out}')
    return float(step.group(2)), float(roof.group(1)), peak


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('rows', nargs='*', default=list(ROWS))
    parser.add_argument('--python', default='/tmp/torchref/bin/python')
    parser.add_argument('--torch-bench', default=os.path.join(ROOT, '..', 'shared', 'reference', 'torch_step_bench.py'))
    parser.add_argument('--workbench', default=os.environ.get('WORKBENCH_BIN') or os.path.join(ROOT, '.build', 'release', 'workbench'))
    parser.add_argument('--steps', type=int, default=10)
    args = parser.parse_args()
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        sys.exit(f'unknown rows {unknown}; choose from {list(ROWS)}')
    _, torch_base = measure([args.python, '-c', 'import torch, torchvision, vit_pytorch'])
    _, workbench_base = measure([args.workbench, '--help'])
    print(f'Peak resident set in MiB, and in brackets above the runtime alone ({torch_base:.0f} MiB for Python with torch, '
          f'{workbench_base:.0f} MiB for the workbench).')
    print()
    print('| step | batch | PyTorch img/s (before / after) | workbench img/s | workbench / PyTorch | roofline fraction | peak MiB, PyTorch | peak MiB, workbench |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for row in args.rows:
        name, batch, extra = ROWS[row]
        t1, p1 = torch_row(args, name, batch)
        w, roof, pw = workbench_row(args, extra)
        t2, p2 = torch_row(args, name, batch)
        print(f'| {row} | {batch} | {t1:.1f} / {t2:.1f} | {w:.1f} | {w / ((t1 + t2) / 2):.2f}x | {roof:.2f} | {max(p1, p2):.0f} ({max(p1, p2) - torch_base:.0f}) | {pw:.0f} ({pw - workbench_base:.0f}) |', flush=True)


if __name__ == '__main__':
    main()
